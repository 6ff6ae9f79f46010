//! Shared helpers for reel's integration tests (`mod common;` in each test file).
//!
//! Why it is built this way: the fidelity promises of reel (a restore equals the tree as it was
//! that day, metadata included) can only be checked against real directories, so the helpers
//! here build real trees with every kind of entry a volume can hold, change them day by day in
//! a deterministic way, keep exact copies of them (`cp -a`, which is independent of reel), and
//! compare two trees field by field. The comparer collects every difference before it panics, so
//! one failing test shows the whole picture. `tests/harness_selftest.rs` proves the comparer can
//! fail, so a passing fidelity test means something.
//!
//! Everything is deterministic (a small SplitMix64 PRNG, no `rand`), except the mtimes the
//! kernel gives to entries that a day's changes create or write; those are kept by the snapshot
//! and compared like any other.
//!
//! Root-only parts (chown, `trusted.*` xattrs, device nodes) are built only when the tests run
//! as root (`is_root()`); everything else works as an ordinary user.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod faults;
pub mod sha256;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// A `Command` for the `reel` binary under test, with `REEL_SPOOL` removed from its environment
/// so a developer's own spool can never be touched by a test. `REEL_TEST_BIN` names another
/// binary to run instead (an older build, to see a new test fail where the behaviour it tests
/// is missing).
pub fn reel() -> Command {
    // option_env!, not env!: this module must compile even in a tree without the binary target.
    let Some(built) = option_env!("CARGO_BIN_EXE_reel") else {
        panic!("the reel binary target is missing (CARGO_BIN_EXE_reel not set)");
    };
    let exe = std::env::var_os("REEL_TEST_BIN").unwrap_or_else(|| built.into());
    let mut cmd = Command::new(exe);
    cmd.env_remove("REEL_SPOOL");
    cmd.stdin(Stdio::null());
    cmd
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panics (showing stdout and stderr) unless it exits 0, and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("expected success\n{}", describe(cmd, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd`, panics if it succeeds or dies by a signal, and returns (exit code, stderr).
pub fn run_fail(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    match out.status.code() {
        Some(0) => panic!("expected failure\n{}", describe(cmd, &out)),
        Some(code) => (code, String::from_utf8_lossy(&out.stderr).into_owned()),
        None => panic!("killed by a signal\n{}", describe(cmd, &out)),
    }
}

/// What kind of spool a test runs on: the tests of what a spool keeps and restores run on
/// both ([`both_kinds!`]), so an encrypted spool is held to the same fidelity as a plain one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `reel init`.
    Plain,
    /// `reel init --encrypt`, with [`PASSWORD`] in `REEL_PASSWORD` for every command.
    Encrypted,
}

/// The passphrase of the tests' encrypted spools.
pub const PASSWORD: &str = "correct horse battery staple";

/// For a test function `fn NAME(kind: Kind)`, the tests `NAME::plain` and `NAME::encrypted`
/// (a module of the same name), each running it on its kind of spool: `both_kinds!(NAME);`.
#[macro_export]
macro_rules! both_kinds {
    ($name:ident) => {
        mod $name {
            #[test]
            fn plain() {
                super::$name(super::Kind::Plain)
            }
            #[test]
            fn encrypted() {
                super::$name(super::Kind::Encrypted)
            }
        }
    };
}

/// A spool in a temporary directory, removed when dropped.
pub struct Spool {
    pub dir: tempfile::TempDir,
    pub kind: Kind,
}

impl Spool {
    /// A fresh empty directory for a spool; `reel init` has not run yet.
    pub fn empty() -> Spool {
        Spool::empty_of(Kind::Plain)
    }

    /// [`Spool::empty`] for a spool of `kind` (its commands carry the passphrase).
    pub fn empty_of(kind: Kind) -> Spool {
        Spool {
            dir: tempfile::tempdir().expect("cannot create a temporary spool directory"),
            kind,
        }
    }

    /// A fresh spool on which `reel init` has succeeded.
    pub fn new() -> Spool {
        Spool::of(Kind::Plain)
    }

    /// A fresh spool of `kind`: `reel init`, or `reel init --encrypt`.
    pub fn of(kind: Kind) -> Spool {
        let s = Spool::empty_of(kind);
        match kind {
            Kind::Plain => run_ok(s.cmd().arg("init")),
            Kind::Encrypted => run_ok(s.cmd().args(["init", "--encrypt"])),
        };
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commit the catalog after every sealed pack (`checkpoint_mb = 0` in reel.toml; 256 MiB
    /// by default), so that a test killing a dump between pack and commit reaches those
    /// points with a few dozen MiB of data.
    pub fn checkpoint_every_pack(&self) {
        let path = self.path().join("reel.toml");
        let before = fs::read_to_string(&path).expect("reel.toml");
        let after = before.replace("checkpoint_mb = 256", "checkpoint_mb = 0");
        assert_ne!(
            before, after,
            "reel.toml has no default checkpoint_mb:\n{before}"
        );
        fs::write(&path, after).expect("write reel.toml");
    }

    /// `reel --spool DIR` (add the subcommand and its arguments).
    pub fn cmd(&self) -> Command {
        let mut c = reel();
        c.arg("--spool").arg(self.dir.path());
        if self.kind == Kind::Encrypted {
            c.env("REEL_PASSWORD", PASSWORD);
        }
        c
    }

    /// The spool opened with reel's library (its key unlocked by [`PASSWORD`] when
    /// encrypted), for a test that changes the catalog as no command does.
    pub fn open_lib(&self, access: reel::spool::Access) -> reel::spool::Spool {
        let unlock = |ring: &reel::keyring::KeyRing, _| ring.unlock(PASSWORD.as_bytes());
        reel::spool::Spool::open_keyed(self.path(), access, &unlock).expect("open the spool")
    }

    /// `reel --spool DIR ARGS...`, which must succeed; returns stdout.
    pub fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(self.cmd().args(args))
    }

    /// `reel --spool DIR nightly ARGS... --json`, which may fail: (exit status 0, the report).
    pub fn nightly_json(&self, args: &[&str]) -> (bool, serde_json::Value) {
        let out = self
            .cmd()
            .arg("nightly")
            .args(args)
            .arg("--json")
            .output()
            .expect("run reel nightly");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "nightly --json: {e}\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), v)
    }

    /// `reel --spool DIR ARGS...`, which must fail; returns (exit code, stderr).
    pub fn fail<I, S>(&self, args: I) -> (i32, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_fail(self.cmd().args(args))
    }

    /// `reel volume add NAME PATH`.
    pub fn add_volume(&self, name: &str, path: &Path) {
        run_ok(
            self.cmd()
                .args(["volume", "add", name])
                .arg(path.as_os_str()),
        );
    }

    /// `reel list --json`, parsed.
    pub fn list_json(&self) -> serde_json::Value {
        let out = self.run(["list", "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("reel list --json: {e}\n{out}"))
    }

    /// `reel restore ARGS... --to TARGET`, ARGS naming the volume and picking the dump and
    /// its source (`v --dump 3`, `v --at 2026-11-02 --tapes DIR`), then assert the restored
    /// tree equals `expected`.
    pub fn restore_equals(&self, args: &[&str], expected: &Path, target: &Path) {
        run_ok(self.cmd().arg("restore").args(args).arg("--to").arg(target));
        assert_trees_equal(expected, target);
    }

    /// Both days of a two-day history of volume `v` (trees `work/day1` and `work/day2`,
    /// dumped 2026-11-01 and 2026-11-02) restore with `--at` and `extra` into
    /// `work/<tag><day>` and equal their trees.
    pub fn restore_two_days_equal(&self, work: &Path, tag: &str, extra: &[&str]) {
        for (day, at) in [(1, "2026-11-01"), (2, "2026-11-02")] {
            let mut args = vec!["v", "--at", at];
            args.extend_from_slice(extra);
            let target = work.join(format!("{tag}{day}"));
            self.restore_equals(&args, &work.join(format!("day{day}")), &target);
        }
    }

    /// The days `days` of a history of volume `v` (trees `work/dayN`, dumped on 2026-11-N)
    /// restore with `--at` and `extra` into `work/<tag>N` and equal their trees.
    pub fn restore_days_equal(&self, work: &Path, tag: &str, extra: &[&str], days: &[u32]) {
        for day in days {
            let at = format!("2026-11-{day:02}");
            let mut args = vec!["v", "--at", &at];
            args.extend_from_slice(extra);
            let target = work.join(format!("{tag}{day}"));
            self.restore_equals(&args, &work.join(format!("day{day}")), &target);
        }
    }

    /// The last row of `reel list --json`: the newest dump.
    pub fn last_dump(&self) -> serde_json::Value {
        let list = self.list_json();
        let rows = list.as_array().expect("reel list --json gives an array");
        rows.last().expect("a dump is listed").clone()
    }
}

/// A new spool with volume `v` at `vol` and its level 0 dump dated 2026-11-01.
pub fn spool_with_full_dump(vol: &Path) -> Spool {
    spool_of_with_full_dump(Kind::Plain, vol)
}

/// [`spool_with_full_dump`] on a spool of `kind`.
pub fn spool_of_with_full_dump(kind: Kind, vol: &Path) -> Spool {
    let spool = Spool::of(kind);
    spool.add_volume("v", vol);
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    spool
}

/// Volume `v` at `work/vol` (`rich_tree` plus `big/x.bin`, 2 MiB of random bytes) taken with
/// `reel backup` on 2026-11-01 (level 0), then on the 2nd and the 3rd (level 1) after
/// rewriting only `big/x.bin`; `work/dayN` holds each day's tree. Every backup writes packs of
/// its own, and only the 2nd's hold no data that the latest dump references: after an export,
/// `purge --exported` can free exactly those.
pub fn replaced_file_days(work: &Path) -> Spool {
    let vol = work.join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let mut rng = Rng::new(0xB16F11E);
    fs::create_dir_all(vol.join("big")).expect("mkdir big");
    for day in 1..=3u32 {
        fs::write(vol.join("big/x.bin"), rng.bytes(2 << 20)).expect("write x.bin");
        snapshot(&vol, &work.join(format!("day{day}")));
        let level = if day == 1 { "0" } else { "1" };
        let date = format!("2026-11-{day:02}");
        spool.run(["backup", "v", "--level", level, "--date", &date]);
    }
    spool
}

/// Bytes of the files under `p`, recursively.
pub fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())) {
        let e = e.expect("directory entry");
        let md = e.metadata().expect("metadata");
        n += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-random data
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `n` incompressible bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// About `n` bytes of compressible, word-like text (never a zero byte).
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "volume", "spool", "dump", "level", "chunk", "pack", "tape", "restore", "clone",
            "catalog", "coda", "venus", "vice", "backup", "the", "a", "of", "and", "to", "in",
            "fn", "let", "mut", "return", "struct", "impl", "error", "ok", "42", "0x1f",
        ];
        let mut out = Vec::with_capacity(n + 16);
        let mut col = 0;
        while out.len() < n {
            let w = WORDS[self.below(WORDS.len() as u64) as usize];
            out.extend_from_slice(w.as_bytes());
            col += w.len() + 1;
            if col > 72 {
                out.push(b'\n');
                col = 0;
            } else {
                out.push(b' ');
            }
        }
        out.truncate(n);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Small file-system helpers (libc where std has no call)
// ---------------------------------------------------------------------------------------------

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with a NUL byte")
}

fn check(rc: libc::c_int, what: &str, p: &Path) {
    if rc != 0 {
        panic!(
            "{what} {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Sets a path's mtime (and atime, to the same value) without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    let c = cpath(p);
    // SAFETY: c is a valid C string and times points at two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(rc, "utimensat", p);
}

/// (seconds, nanoseconds) of a path's mtime, not following a symlink.
pub fn mtime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (m.mtime(), m.mtime_nsec())
}

pub fn mkfifo(p: &Path, mode: u32) {
    let c = cpath(p);
    // SAFETY: c is a valid C string.
    check(
        unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) },
        "mkfifo",
        p,
    );
}

/// Creates a character device node (needs root).
pub fn mknod_char(p: &Path, major: u32, minor: u32, mode: u32) {
    let c = cpath(p);
    let dev = libc::makedev(major, minor);
    // SAFETY: c is a valid C string.
    check(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode as libc::mode_t, dev) },
        "mknod",
        p,
    );
}

/// Changes owner without following a symlink (needs root for foreign ids).
pub fn lchown(p: &Path, uid: u32, gid: u32) {
    let c = cpath(p);
    // SAFETY: c is a valid C string.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) }, "lchown", p);
}

/// Sets an xattr without following a symlink; returns false if the file system refuses.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> bool {
    let c = cpath(p);
    let n = CString::new(name).expect("xattr name");
    // SAFETY: valid C strings; value pointer and length describe a live slice.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    };
    rc == 0
}

/// Removes an xattr; returns false if it was not there or the file system refuses.
pub fn remove_xattr(p: &Path, name: &str) -> bool {
    let c = cpath(p);
    let n = CString::new(name).expect("xattr name");
    // SAFETY: valid C strings.
    unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) == 0 }
}

/// All xattrs of a path that can be read (every namespace the caller may see), sorted by name.
/// A file system without xattr support gives an empty list.
pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = cpath(p);
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: the buffer pointer and length describe `names`.
        let n = unsafe {
            libc::llistxattr(
                c.as_ptr(),
                names.as_mut_ptr() as *mut libc::c_char,
                names.len(),
            )
        };
        if n >= 0 {
            break n as usize;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Vec::new(),
            _ => panic!(
                "llistxattr {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            ),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("xattr name from the kernel");
        let mut val = vec![0u8; 256];
        loop {
            // SAFETY: valid C strings; the buffer pointer and length describe `val`.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    val.as_mut_ptr() as *mut libc::c_void,
                    val.len(),
                )
            };
            if n >= 0 {
                val.truncate(n as usize);
                out.push((name.to_vec(), val));
                break;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ERANGE) => val.resize(val.len() * 16, 0),
                // Listed but not readable by us (or gone): not part of what we compare.
                Some(libc::ENODATA) | Some(libc::EPERM) | Some(libc::EACCES) => break,
                _ => panic!(
                    "lgetxattr {} {}: {}",
                    p.display(),
                    String::from_utf8_lossy(name),
                    std::io::Error::last_os_error()
                ),
            }
        }
    }
    out.sort();
    out
}

fn write_new(p: &Path, data: &[u8]) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Overwrites `data.len()` bytes at `offset` without changing the file's size or inode.
fn write_at(p: &Path, offset: u64, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// One 8 KiB "database page": a header naming the page and a version, then compressible
/// records. Pages are all different and never contain an all-zero block.
pub fn db_page(page: u64, version: u64) -> Vec<u8> {
    const PAGE: usize = 8192;
    let mut out = Vec::with_capacity(PAGE);
    out.extend_from_slice(format!("PAGE{page:010}v{version:06}|").as_bytes());
    let mut rec = 0u64;
    while out.len() < PAGE {
        out.extend_from_slice(
            format!(
                "row{:06}:{:08x};",
                page * 64 + rec,
                (page ^ version).wrapping_mul(rec + 7)
            )
            .as_bytes(),
        );
        rec += 1;
    }
    out.truncate(PAGE);
    out
}

// ---------------------------------------------------------------------------------------------
// The rich tree
// ---------------------------------------------------------------------------------------------

/// Size of `data/structured.db` (~10 MB of 8 KiB pages).
pub const DB_PAGES: u64 = 1280;
/// Size of the leading hole of `sparse.img`.
pub const SPARSE_HOLE: u64 = 1 << 20;
/// Logical size of `sparse.img` (the end is a hole made by set_len).
pub const SPARSE_LEN: u64 = 9 << 20;

/// Builds, under an existing empty directory `root`, a tree with every kind of entry reel must
/// restore exactly. The layout is fixed (tests may name these paths):
///
/// - `empty.txt` (0 bytes), `small.txt`, `stealth.dat`, `times/touched.txt`, `xattr.txt`
///   (with `user.comment` and a binary `user.blob`, if the file system takes them)
/// - `bin/random3m.bin` (3 MB incompressible), `data/structured.db` (~10 MB of 8 KiB pages)
/// - `sparse.img`: a 1 MiB hole, 64 KiB of data, then a hole up to 9 MiB
/// - `empty_dir/`, `src/a/b/c/...` nested dirs, `docs/old_1.txt` ..`old_9.txt`
/// - `links/to_small` -> `../small.txt`, `links/dangling` -> `nowhere/missing`,
///   `links/moving` -> `../small.txt`, `links/abs` -> `/etc/hostname-does-not-matter`
/// - `hard/a` = `hard/b` = `docs/hard_c` (one inode, three names)
/// - `fifo`, `modes/setuid` (4755), `modes/setgid` (2755), `modes/sticky` (dir 1777),
///   `modes/flip.txt`, `modes/ro_dir/` (0555 dir with a file inside: restores must set a
///   directory's mode after filling it)
/// - `caf\xe9` (a file name that is not UTF-8), `rot/gen_0/` (a directory the days rename),
///   `names/walker_0.txt` (a file the days rename), `logs/app.log`
/// - root only: `owned` chowned to 1234:1234, `trusted.txt` with a `trusted.reel` xattr,
///   `dev/null_like` (char device 1,3)
///
/// Every entry, directories and the root included, gets a distinct mtime with nanoseconds.
pub fn rich_tree(root: &Path) {
    let mut rng = Rng::new(0x7EE1);
    fs::create_dir_all(root).expect("create root");

    write_new(&root.join("empty.txt"), b"");
    write_new(&root.join("small.txt"), b"hello, reel\n");
    write_new(&root.join("stealth.dat"), &rng.text(4096));
    write_new(&root.join("times/touched.txt"), b"only my mtime changes\n");
    write_new(&root.join("bin/random3m.bin"), &rng.bytes(3_000_000));
    write_new(&root.join("logs/app.log"), &rng.text(20_000));

    // ~10 MB with repeated structure: compressible, dedup-friendly across days.
    {
        let p = root.join("data/structured.db");
        write_new(&p, b"");
        let mut f = OpenOptions::new().append(true).open(&p).expect("open db");
        for page in 0..DB_PAGES {
            f.write_all(&db_page(page, 0)).expect("write db");
        }
    }

    // Sparse: hole, data, hole (the trailing hole comes from set_len).
    {
        let p = root.join("sparse.img");
        let mut f = File::create(&p).expect("create sparse.img");
        f.seek(SeekFrom::Start(SPARSE_HOLE)).expect("seek");
        f.write_all(&rng.bytes(64 * 1024))
            .expect("write sparse.img");
        f.set_len(SPARSE_LEN).expect("set_len sparse.img");
    }

    fs::create_dir_all(root.join("empty_dir")).expect("mkdir");
    for (i, p) in [
        "src/main.rs",
        "src/a/lib.rs",
        "src/a/b/mod.rs",
        "src/a/b/c/deep.rs",
    ]
    .iter()
    .enumerate()
    {
        write_new(&root.join(p), &rng.text(500 + 3000 * i));
    }
    for i in 1..=9 {
        write_new(
            &root.join(format!("docs/old_{i}.txt")),
            &rng.text(1000 + 100 * i),
        );
    }
    write_new(&root.join("docs/readme.md"), &rng.text(6000));

    fs::create_dir_all(root.join("links")).expect("mkdir links");
    std::os::unix::fs::symlink("../small.txt", root.join("links/to_small")).expect("symlink");
    std::os::unix::fs::symlink("nowhere/missing", root.join("links/dangling")).expect("symlink");
    std::os::unix::fs::symlink("../small.txt", root.join("links/moving")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname-does-not-matter", root.join("links/abs"))
        .expect("symlink");

    write_new(&root.join("hard/a"), &rng.text(3000));
    fs::hard_link(root.join("hard/a"), root.join("hard/b")).expect("link");
    fs::hard_link(root.join("hard/a"), root.join("docs/hard_c")).expect("link");

    mkfifo(&root.join("fifo"), 0o640);

    write_new(&root.join("modes/setuid"), b"#!/bin/sh\n");
    chmod(&root.join("modes/setuid"), 0o4755);
    write_new(&root.join("modes/setgid"), b"#!/bin/sh\n");
    chmod(&root.join("modes/setgid"), 0o2755);
    fs::create_dir_all(root.join("modes/sticky")).expect("mkdir");
    chmod(&root.join("modes/sticky"), 0o1777);
    write_new(&root.join("modes/flip.txt"), b"my mode changes\n");
    chmod(&root.join("modes/flip.txt"), 0o644);
    write_new(
        &root.join("modes/ro_dir/inside.txt"),
        b"in a read-only directory\n",
    );

    write_new(
        &root.join(OsStr::from_bytes(b"caf\xe9")),
        b"a name that is not UTF-8\n",
    );
    write_new(&root.join("rot/gen_0/one.txt"), &rng.text(800));
    write_new(&root.join("rot/gen_0/sub/two.txt"), &rng.text(900));
    write_new(&root.join("names/walker_0.txt"), &rng.text(700));

    write_new(&root.join("xattr.txt"), b"has extended attributes\n");
    // Skipped silently where the file system refuses user xattrs (e.g. tmpfs on old kernels).
    if set_xattr(&root.join("xattr.txt"), "user.comment", b"hello") {
        set_xattr(&root.join("xattr.txt"), "user.blob", &[0, 1, 2, 255, 0]);
    }

    if is_root() {
        // Needs root: foreign owner, trusted.* namespace, device nodes.
        write_new(&root.join("owned"), b"owned by 1234\n");
        lchown(&root.join("owned"), 1234, 1234);
        write_new(&root.join("trusted.txt"), b"trusted xattr\n");
        set_xattr(&root.join("trusted.txt"), "trusted.reel", b"root only");
        fs::create_dir_all(root.join("dev")).expect("mkdir dev");
        mknod_char(&root.join("dev/null_like"), 1, 3, 0o666);
        lchown(&root.join("dev"), 1234, 4321);
    }

    // Modes last among content changes (ro_dir must be filled first).
    chmod(&root.join("modes/ro_dir"), 0o555);

    // Distinct mtimes with nanoseconds on everything, root included. Setting a time does not
    // change the parent directory's mtime, so the order does not matter.
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    all.sort();
    for (i, p) in all.iter().enumerate() {
        let i = i as i64;
        set_mtime(
            p,
            1_600_000_000 + i * 3_607,
            (i * 7_919_123 + 1) % 1_000_000_000,
        );
    }
    set_mtime(root, 1_600_000_000 - 86_400, 123_456_789);
}

/// Every path under `root` (not `root` itself), depth first.
fn collect_paths(root: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let is_dir = fs::symlink_metadata(&p).expect("lstat").is_dir();
        out.push(p.clone());
        if is_dir {
            collect_paths(&p, out);
        }
    }
}

/// The one entry of `dir` whose name starts with `prefix`, if any.
fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let rd = fs::read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().as_bytes().starts_with(prefix.as_bytes()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop()
}

/// Applies day `day`'s changes (day >= 1) to a tree made by [`rich_tree`]. Deterministic given
/// the day; each day differs. Each day:
///
/// - adds `daily/d{day}/new_0.txt` (text), `new_1.bin` (random), `new_2.txt` (a copy of
///   `docs/readme.md` plus a line: content shared across files)
/// - modifies in place 16 bytes of `docs/readme.md`, rewrites 3 pages in the middle of
///   `data/structured.db`, appends to `logs/app.log`; on even days inserts 8 bytes in the middle
///   of `bin/random3m.bin` (content shifts: a test for content-defined chunking)
/// - deletes `docs/old_{day}.txt` and `daily/d{day-2}/new_0.txt`
/// - renames a file (`names/walker_*` -> `walker_{day}.txt`, and `daily/d{day-1}/new_1.bin` ->
///   `daily/renamed_{day}.bin`) and a directory (`rot/gen_*` -> `rot/gen_{day}`)
/// - mode only: `modes/flip.txt`; mtime only: `times/touched.txt`
/// - hard links: adds `hard/link_d{day}` to `hard/a`, removes `hard/link_d{day-1}`
/// - symlink target: `links/moving` -> `../daily/d{day}/new_0.txt`
/// - xattr: sets `user.day` on `xattr.txt` (skipped if refused)
/// - a "stealth" change: rewrites 32 bytes of `stealth.dat` and puts its old mtime back, so only
///   ctime (and inode data) show the change, as after `rsync -t` or `tar x`.
pub fn mutate_day(root: &Path, day: u32) {
    assert!(day >= 1, "days start at 1");
    let d = day as u64;
    let mut rng = Rng::new(0xDA7_0000 + d * 0x1_0001);

    // Additions.
    let daily = root.join(format!("daily/d{day}"));
    let (n0, n1) = (rng.range(100, 20_000), rng.range(1_000, 100_000));
    write_new(&daily.join("new_0.txt"), &rng.text(n0 as usize));
    write_new(&daily.join("new_1.bin"), &rng.bytes(n1 as usize));
    let mut shared = fs::read(root.join("docs/readme.md")).unwrap_or_default();
    shared.extend_from_slice(format!("\ncopied on day {day}\n").as_bytes());
    write_new(&daily.join("new_2.txt"), &shared);

    // In-place edit of a small file.
    let readme = root.join("docs/readme.md");
    let len = fs::metadata(&readme).map(|m| m.len()).unwrap_or(0);
    if len > 16 {
        write_at(&readme, rng.below(len - 16), &rng.text(16));
    }

    // Pages rewritten in the middle of the large file.
    let db = root.join("data/structured.db");
    if db.exists() {
        for _ in 0..3 {
            let page = rng.range(DB_PAGES / 4, DB_PAGES * 3 / 4);
            write_at(&db, page * 8192, &db_page(page, d));
        }
    }

    // Append.
    {
        let log = root.join("logs/app.log");
        if let Some(parent) = log.parent() {
            fs::create_dir_all(parent).expect("mkdir logs");
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open app.log");
        for i in 0..50 {
            writeln!(
                f,
                "day {day} line {i}: {}",
                String::from_utf8_lossy(&rng.text(60))
            )
            .expect("append app.log");
        }
    }

    // Insertion that shifts content (same inode: rewritten in place).
    if day.is_multiple_of(2) {
        let p = root.join("bin/random3m.bin");
        if let Ok(mut data) = fs::read(&p) {
            let mid = data.len() / 2 + rng.below(1000) as usize;
            let mid = mid.min(data.len());
            data.splice(mid..mid, rng.bytes(8));
            let mut f = OpenOptions::new().write(true).open(&p).expect("open");
            f.write_all(&data).expect("rewrite random3m.bin");
        }
    }

    // Deletions.
    let _ = fs::remove_file(root.join(format!("docs/old_{day}.txt")));
    if day >= 2 {
        let _ = fs::remove_file(root.join(format!("daily/d{}/new_0.txt", day - 2)));
    }

    // Renames: a file, and a directory (with its contents).
    fs::create_dir_all(root.join("names")).expect("mkdir names");
    match find_prefixed(&root.join("names"), "walker_") {
        Some(old) => fs::rename(&old, root.join(format!("names/walker_{day}.txt"))).expect("mv"),
        None => write_new(&root.join(format!("names/walker_{day}.txt")), b"walker\n"),
    }
    if day >= 2 {
        let from = root.join(format!("daily/d{}/new_1.bin", day - 1));
        if from.exists() {
            fs::rename(&from, root.join(format!("daily/renamed_{day}.bin"))).expect("mv");
        }
    }
    fs::create_dir_all(root.join("rot")).expect("mkdir rot");
    match find_prefixed(&root.join("rot"), "gen_") {
        Some(old) => fs::rename(&old, root.join(format!("rot/gen_{day}"))).expect("mv dir"),
        None => write_new(&root.join(format!("rot/gen_{day}/one.txt")), b"one\n"),
    }

    // Mode-only change: consecutive days always differ.
    const MODES: [u32; 7] = [0o644, 0o640, 0o600, 0o664, 0o604, 0o660, 0o444];
    let flip = root.join("modes/flip.txt");
    if !flip.exists() {
        write_new(&flip, b"my mode changes\n");
    }
    chmod(&flip, MODES[(day % 7) as usize]);

    // Mtime-only change.
    let touched = root.join("times/touched.txt");
    if !touched.exists() {
        write_new(&touched, b"only my mtime changes\n");
    }
    set_mtime(
        &touched,
        1_700_000_000 + d as i64 * 86_400,
        (d as i64 * 123_456_789) % 1_000_000_000,
    );

    // Hard links come and go.
    let a = root.join("hard/a");
    if a.exists() {
        let _ = fs::hard_link(&a, root.join(format!("hard/link_d{day}")));
    }
    let _ = fs::remove_file(root.join(format!("hard/link_d{}", day - 1)));

    // Symlink retargeted.
    let moving = root.join("links/moving");
    let _ = fs::remove_file(&moving);
    fs::create_dir_all(root.join("links")).expect("mkdir links");
    std::os::unix::fs::symlink(format!("../daily/d{day}/new_0.txt"), &moving).expect("symlink");

    // Xattr changes (only where user xattrs work).
    let xf = root.join("xattr.txt");
    if xf.exists() {
        set_xattr(&xf, "user.day", format!("{day}").as_bytes());
    }

    // Stealth change: same size, same mtime, new bytes.
    let stealth = root.join("stealth.dat");
    if let Ok(m) = fs::symlink_metadata(&stealth) {
        let (sec, nsec) = (m.mtime(), m.mtime_nsec());
        if m.len() > 32 {
            write_at(&stealth, rng.below(m.len() - 32), &rng.bytes(32));
        }
        set_mtime(&stealth, sec, nsec);
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots and comparison
// ---------------------------------------------------------------------------------------------

/// Copies `src` to `dst` exactly (contents, hard links, xattrs, times, owners and devices as
/// root, holes) with `cp -a --sparse=always`, which does not depend on reel. `dst` must not
/// exist or be an empty directory; it receives `src`'s own mode and times too.
pub fn snapshot(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    let mut from = src.as_os_str().to_owned();
    from.push("/.");
    let mut cmd = Command::new("cp");
    cmd.args(["-a", "--sparse=always", "--no-target-directory"])
        .arg(&from)
        .arg(dst);
    run_ok(&mut cmd);
}

/// Allowed excess of a restored file's allocated bytes over the expected file's: a restore may
/// store as data the chunk that straddles a hole's edge. Larger than any sane maximum chunk
/// size but well under the 1 MiB leading hole of `sparse.img`, so a lost hole is caught.
pub const SPARSE_SLACK_BYTES: u64 = 512 * 1024;

#[derive(Debug)]
struct Info {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    alloc: u64,
    rdev: u64,
    ino: (u64, u64),
    target: Option<OsString>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

fn info(p: &Path) -> Info {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    Info {
        kind: kind_of(&ft),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: m.size(),
        alloc: m.blocks() * 512,
        rdev: m.rdev(),
        ino: (m.dev(), m.ino()),
        target: if ft.is_symlink() {
            Some(fs::read_link(p).expect("readlink").into_os_string())
        } else {
            None
        },
        xattrs: xattrs(p),
    }
}

/// Relative path (as bytes, "" for the root) -> Info, sorted.
fn walk(root: &Path) -> BTreeMap<Vec<u8>, Info> {
    let mut out = BTreeMap::new();
    out.insert(Vec::new(), info(root));
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    for p in all {
        let rel = p.strip_prefix(root).expect("under root");
        out.insert(rel.as_os_str().as_bytes().to_vec(), info(&p));
    }
    out
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        "<root>".to_string()
    } else {
        format!("{:?}", OsStr::from_bytes(rel))
    }
}

/// Where two files' bytes first differ, if they do.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if let Some(i) = (0..na.min(nb)).find(|&i| ba[i] != bb[i]) {
            return Some(off + i as u64);
        }
        if na != nb {
            return Some(off + na.min(nb) as u64);
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

/// The names (within its tree) that share each path's inode, for every non-directory.
fn link_groups(tree: &BTreeMap<Vec<u8>, Info>) -> BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> {
    let mut by_ino: BTreeMap<(u64, u64), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (rel, i) in tree {
        if i.kind != "dir" {
            by_ino.entry(i.ino).or_default().insert(rel.clone());
        }
    }
    let mut out = BTreeMap::new();
    for group in by_ino.values() {
        for rel in group {
            out.insert(rel.clone(), group.clone());
        }
    }
    out
}

fn fmt_group(g: &BTreeSet<Vec<u8>>) -> String {
    let names: Vec<String> = g.iter().map(|r| show(r)).collect();
    format!("[{}]", names.join(", "))
}

fn fmt_xattrs(x: &[(Vec<u8>, Vec<u8>)]) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(n, v)| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Every difference between two trees, one line each (empty when they are equal).
pub fn tree_differences(expected: &Path, actual: &Path) -> Vec<String> {
    let e = walk(expected);
    let a = walk(actual);
    let mut diffs = Vec::new();
    for rel in e.keys() {
        if !a.contains_key(rel) {
            diffs.push(format!("{}: missing from the actual tree", show(rel)));
        }
    }
    for rel in a.keys() {
        if !e.contains_key(rel) {
            diffs.push(format!("{}: not in the expected tree", show(rel)));
        }
    }
    for (rel, x) in &e {
        let Some(y) = a.get(rel) else { continue };
        let name = show(rel);
        let mut d = |field: &str, want: String, got: String| {
            diffs.push(format!("{name}: {field}: expected {want}, got {got}"));
        };
        if x.kind != y.kind {
            d("kind", x.kind.into(), y.kind.into());
            continue;
        }
        if x.mode != y.mode {
            d("mode", format!("{:o}", x.mode), format!("{:o}", y.mode));
        }
        if (x.uid, x.gid) != (y.uid, y.gid) {
            d(
                "owner",
                format!("{}:{}", x.uid, x.gid),
                format!("{}:{}", y.uid, y.gid),
            );
        }
        if x.mtime != y.mtime {
            d(
                "mtime",
                format!("{}.{:09}", x.mtime.0, x.mtime.1),
                format!("{}.{:09}", y.mtime.0, y.mtime.1),
            );
        }
        if x.xattrs != y.xattrs {
            d("xattrs", fmt_xattrs(&x.xattrs), fmt_xattrs(&y.xattrs));
        }
        match x.kind {
            "symlink" if x.target != y.target => {
                let t = |t: &Option<OsString>| format!("{:?}", t.as_deref().unwrap_or_default());
                d("target", t(&x.target), t(&y.target));
            }
            "chardev" | "blockdev" if x.rdev != y.rdev => {
                d("rdev", format!("{:#x}", x.rdev), format!("{:#x}", y.rdev));
            }
            "file" => {
                if x.size != y.size {
                    d("size", x.size.to_string(), y.size.to_string());
                } else if let Some(off) = first_difference(
                    &expected.join(OsStr::from_bytes(rel)),
                    &actual.join(OsStr::from_bytes(rel)),
                ) {
                    d(
                        "content",
                        "same bytes".into(),
                        format!("a difference at byte {off}"),
                    );
                }
                // A restore may be sparser than the original, never denser (beyond the slack).
                if y.alloc > x.alloc + SPARSE_SLACK_BYTES {
                    d(
                        "allocated bytes (holes lost?)",
                        format!("<= {} + {SPARSE_SLACK_BYTES}", x.alloc),
                        y.alloc.to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    // Hard links: each group of names sharing an inode in the expected tree must be exactly a
    // group in the actual tree (reported once per group, at its first name).
    let (ge, ga) = (link_groups(&e), link_groups(&a));
    for (rel, g) in &ge {
        if g.iter().next() != Some(rel) {
            continue;
        }
        let got: BTreeSet<String> = g
            .iter()
            .filter_map(|m| ga.get(m))
            .filter(|h| *h != g)
            .map(fmt_group)
            .collect();
        if !got.is_empty() {
            let got: Vec<String> = got.into_iter().collect();
            diffs.push(format!(
                "{}: hard links: expected one inode for {}, got {}",
                show(rel),
                fmt_group(g),
                got.join(" and ")
            ));
        }
    }
    diffs
}

/// Restore dump `id` of volume `v` into `target` with the real binary and assert it equals
/// `expected`.
pub fn restore_and_compare(spool: &Spool, id: u64, expected: &Path, target: &Path) {
    spool.restore_equals(&["v", "--dump", &id.to_string()], expected, target);
}

/// Panics, listing every differing path and field, unless `actual` equals `expected`: entry
/// kinds, file bytes, modes (with setuid/setgid/sticky), mtimes to the nanosecond (directories,
/// symlinks and the root included), owners, symlink targets, device numbers, xattrs, hard-link
/// groups, and holes (the actual file may not use more than [`SPARSE_SLACK_BYTES`] more disk).
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    let diffs = tree_differences(expected, actual);
    if !diffs.is_empty() {
        const MAX: usize = 200;
        let mut msg = format!(
            "trees differ: expected {}, actual {}: {} difference(s)\n",
            expected.display(),
            actual.display(),
            diffs.len()
        );
        for line in diffs.iter().take(MAX) {
            msg.push_str("  ");
            msg.push_str(line);
            msg.push('\n');
        }
        if diffs.len() > MAX {
            msg.push_str(&format!("  ... and {} more\n", diffs.len() - MAX));
        }
        panic!("{msg}");
    }
}

/// A path under `root` from raw bytes (for names that are not UTF-8).
pub fn path_bytes(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsString::from_vec(rel.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// The stock BSD restore
// ---------------------------------------------------------------------------------------------

/// Whether the stock BSD `restore` is installed (Debian's `dump`, which `.ci/run` installs).
pub fn have_restore() -> bool {
    Command::new("sh")
        .args(["-c", "command -v restore"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `restore -x` of the image `img` into `to` (created if missing), as the stock tool extracts
/// it; the extraction must hold a reel payload.
pub fn stock_extract(img: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("echo n | restore -x -a -y -f {}", img.display()))
        .current_dir(to)
        .output()
        .unwrap();
    assert!(
        to.join("reel/LABEL").exists() && to.join("reel/CATALOG").exists(),
        "{st:?}"
    );
}
