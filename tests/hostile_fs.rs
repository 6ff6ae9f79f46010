//! Hostile file systems: trees that change under reel while it scans, reads or restores, and
//! trees that path-based calls cannot reach at all.
//!
//! Why these tests exist: the scan, the file reads and the restore name files by path and
//! check a parent once, so whoever can change the tree between that check and the use wins.
//! Each test here drives the real binary on a real tree and states a rule that must hold
//! whatever the tree does meanwhile:
//!
//! - a restore never creates, chmods, chowns, utimes or sets xattrs on anything outside
//!   `--to` (checked against a *sentinel* tree outside the target: every entry's bytes, mode,
//!   owner, times, ctime, inode, link count and xattrs, and no new entries), whether the
//!   attacker is root in a thread of the test or an unprivileged user (uid/gid 65534, the test
//!   binary re-executed as [`attacker_child`]) who owns the target;
//! - a dump of a volume that changes under it stores only what its scan saw: the untouched
//!   part byte for byte, each changing path in one of the states it was given, never bytes from
//!   outside the volume, and anything left out named in the dump's warnings;
//! - a file that grows while it is read is stored as a prefix of what was written, never with
//!   zeros it never held;
//! - a subset of a hard-link group restores with the dump's content and metadata;
//! - a directory swapped for a file during a dump does not abort the dump;
//! - a tree deeper than PATH_MAX dumps, restores, lists and cats exactly.
//!
//! The racy tests make the race likely: tight loops started before the command, many rounds,
//! atomic swaps (RENAME_EXCHANGE) so that a name is never merely missing, and attackers that
//! strike at a precise moment (when a name appears, or when the scan opens a directory, seen
//! through inotify). They print their counts (`cargo test --release --test hostile_fs --
//! --nocapture`). Round 0 of the dump race runs with no mutation, so its checker is seen to
//! pass on a still tree.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// fd-relative file-system calls (path-based std::fs calls fail beyond PATH_MAX, and a walk
// that must not follow anything is simplest with O_NOFOLLOW at every step)
// ---------------------------------------------------------------------------------------------

fn cname(name: &[u8]) -> CString {
    CString::new(name).expect("a name with a NUL byte")
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: fd was just returned by the kernel and is owned by no one else.
    cvt(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by (short) path; the path may go through symlinks we made ourselves.
fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    let c = cname(p.as_os_str().as_bytes());
    // SAFETY: c is a valid C string.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens the directory `name` in `dir`, never following a symlink.
fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = cname(name);
    // SAFETY: c is a valid C string.
    owned(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Opens the regular file `name` in `dir` for reading, never following a symlink.
fn open_file_at(dir: RawFd, name: &[u8]) -> io::Result<File> {
    let c = cname(name);
    // SAFETY: c is a valid C string.
    let fd = owned(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    Ok(File::from(fd))
}

fn mkdir_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cname(name);
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) })?;
    let d = open_dir_at(dir, name)?;
    // SAFETY: plain fchmod on an fd we own (the umask does not apply).
    cvt(unsafe { libc::fchmod(d.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Creates the regular file `name` in `dir` (it must not exist) with `data` and `mode`.
fn create_file_at(dir: RawFd, name: &[u8], mode: u32, data: &[u8]) -> io::Result<File> {
    let c = cname(name);
    // SAFETY: c is a valid C string.
    let fd = owned(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    let mut f = File::from(fd);
    f.write_all(data)?;
    // SAFETY: plain fchmod on an fd we own.
    cvt(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(f)
}

fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (t, n) = (cname(target), cname(name));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) }).map(drop)
}

fn link_at(old_dir: RawFd, old: &[u8], new_dir: RawFd, new: &[u8]) -> io::Result<()> {
    let (o, n) = (cname(old), cname(new));
    // SAFETY: valid C strings; flags 0 links a symlink itself, never its target.
    cvt(unsafe { libc::linkat(old_dir, o.as_ptr(), new_dir, n.as_ptr(), 0) }).map(drop)
}

/// Sets atime and mtime of `name` in `dir` itself (never a symlink's target).
fn set_times_at(dir: RawFd, name: &[u8], sec: i64, nsec: i64) -> io::Result<()> {
    let c = cname(name);
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: c is a valid C string and times points at two timespecs.
    cvt(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

fn stat_at(dir: RawFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cname(name);
    // SAFETY: stat is plain data, filled in by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st is a valid out pointer.
    cvt(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: as in stat_at.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out pointer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

fn readlink_at(dir: RawFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cname(name);
    let mut buf = vec![0u8; 8192];
    // SAFETY: c is a valid C string; buf is valid for buf.len() bytes.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names in directory `dir` (without `.` and `..`), sorted.
fn list_dir(dir: RawFd) -> io::Result<Vec<Vec<u8>>> {
    // fdopendir takes the fd it is given: hand it a duplicate.
    // SAFETY: dup of an fd we borrow.
    let dup = cvt(unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: dup is an open directory fd that the DIR stream now owns.
    let stream = unsafe { libc::fdopendir(dup) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: dup is ours, fdopendir failed so it was not taken.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // The duplicate shares the offset with `dir`: start from the beginning.
    // SAFETY: stream is a valid DIR pointer until closedir below.
    unsafe { libc::rewinddir(stream) };
    let mut names = Vec::new();
    loop {
        // SAFETY: stream is valid; readdir returns null at the end (or on error).
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    // SAFETY: stream is valid and closed once.
    unsafe { libc::closedir(stream) };
    names.sort();
    Ok(names)
}

/// The xattrs of an open file or directory, sorted by name (empty where unsupported).
fn xattrs_fd(fd: RawFd) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    // SAFETY: the buffer pointer and length describe `names`.
    let n = unsafe { libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c = cname(name);
        let mut val = vec![0u8; 65536];
        // SAFETY: c is a valid C string; the buffer describes `val`.
        let n = unsafe { libc::fgetxattr(fd, c.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if n >= 0 {
            val.truncate(n as usize);
            out.push((name.to_vec(), val));
        }
    }
    out.sort();
    out
}

fn set_xattr_fd(fd: RawFd, name: &str, value: &[u8]) -> bool {
    let c = cname(name.as_bytes());
    // SAFETY: c is a valid C string; value describes a live slice.
    unsafe { libc::fsetxattr(fd, c.as_ptr(), value.as_ptr().cast(), value.len(), 0) == 0 }
}

/// Removes `name` in `dir` and everything below it, by fd at every level (works at any depth).
fn remove_at(dir: RawFd, name: &[u8]) -> io::Result<()> {
    let st = stat_at(dir, name)?;
    let c = cname(name);
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        {
            let d = open_dir_at(dir, name)?;
            // SAFETY: plain fchmod on an fd we own: make sure we may remove its entries.
            unsafe { libc::fchmod(d.as_raw_fd(), 0o700) };
            for child in list_dir(d.as_raw_fd())? {
                remove_at(d.as_raw_fd(), &child)?;
            }
        }
        // SAFETY: c is a valid C string.
        cvt(unsafe { libc::unlinkat(dir, c.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
    } else {
        // SAFETY: c is a valid C string.
        cvt(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) }).map(drop)
    }
}

/// Removes the tree at `p` (a short path whose parent we can open), whatever its depth; a
/// missing `p` is fine.
fn remove_tree(p: &Path) -> io::Result<()> {
    let parent = open_dir_path(p.parent().expect("a path with a parent"))?;
    match remove_at(
        parent.as_raw_fd(),
        p.file_name().expect("a path with a name").as_bytes(),
    ) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Swaps two names atomically (renameat2 RENAME_EXCHANGE): each always exists.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (
        cname(a.as_os_str().as_bytes()),
        cname(b.as_os_str().as_bytes()),
    );
    // SAFETY: valid C strings.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    })
    .map(drop)
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

// ---------------------------------------------------------------------------------------------
// A walker that never follows anything and works at any depth
// ---------------------------------------------------------------------------------------------

/// One entry of a tree as [`walk_tree`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Files and symlinks only (a directory's size is a file-system detail).
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    dev_ino: (u64, u64),
    nlink: u64,
    /// blake3 of a regular file's bytes.
    hash: Option<String>,
    /// A regular file's first 64 bytes (for messages).
    head: Vec<u8>,
    target: Option<Vec<u8>>,
    /// Of regular files and directories (read through an fd).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "dir",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

fn node_of(st: &libc::stat) -> Node {
    let kind = kind_of(st.st_mode);
    Node {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: if kind == "dir" { 0 } else { st.st_size as u64 },
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
        dev_ino: (st.st_dev, st.st_ino),
        nlink: st.st_nlink,
        hash: None,
        head: Vec::new(),
        target: None,
        xattrs: Vec::new(),
    }
}

/// Hash and head of a file's bytes.
fn digest(f: &mut File) -> io::Result<(String, Vec<u8>)> {
    let mut h = blake3::Hasher::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 64 {
            let k = (64 - head.len()).min(n);
            head.extend_from_slice(&buf[..k]);
        }
        h.update(&buf[..n]);
    }
    Ok((h.finalize().to_hex().to_string(), head))
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = parent.to_vec();
    if !rel.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

fn walk_dir(dir: RawFd, rel: &[u8], out: &mut BTreeMap<Vec<u8>, Node>) -> io::Result<()> {
    for name in list_dir(dir)? {
        let child = join_rel(rel, &name);
        let st = stat_at(dir, &name)?;
        let mut node = node_of(&st);
        match node.kind {
            "dir" => {
                let d = open_dir_at(dir, &name)?;
                node.xattrs = xattrs_fd(d.as_raw_fd());
                out.insert(child.clone(), node);
                walk_dir(d.as_raw_fd(), &child, out)?;
                continue;
            }
            "file" => {
                let mut f = open_file_at(dir, &name)?;
                node.xattrs = xattrs_fd(f.as_raw_fd());
                let (hash, head) = digest(&mut f)?;
                node.hash = Some(hash);
                node.head = head;
            }
            "symlink" => node.target = Some(readlink_at(dir, &name)?),
            _ => {}
        }
        out.insert(child, node);
    }
    Ok(())
}

/// Every entry under `root` (the root itself as ""), by fd at every level: no symlink is ever
/// followed and no path is longer than one name.
fn walk_tree(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let fd = open_dir_path(root).unwrap_or_else(|e| panic!("open {}: {e}", root.display()));
    let mut out = BTreeMap::new();
    let st = stat_fd(fd.as_raw_fd()).expect("fstat root");
    let mut node = node_of(&st);
    node.xattrs = xattrs_fd(fd.as_raw_fd());
    out.insert(Vec::new(), node);
    walk_dir(fd.as_raw_fd(), b"", &mut out)
        .unwrap_or_else(|e| panic!("walk {}: {e}", root.display()));
    out
}

/// The first bytes of a file for messages, with a run of NULs shown as its length.
fn show_head(head: &[u8]) -> String {
    if !head.is_empty() && head.iter().all(|b| *b == 0) {
        return format!("<{}+ NUL bytes>", head.len());
    }
    let end = head
        .iter()
        .position(|b| *b == b'\n')
        .map_or(head.len(), |i| i + 1);
    format!("{:?}", String::from_utf8_lossy(&head[..end.min(48)]))
}

/// A relative path for messages: long names cut to their first 12 bytes.
fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        return "<root>".into();
    }
    let parts: Vec<String> = rel
        .split(|b| *b == b'/')
        .map(|c| {
            if c.len() > 16 {
                format!("{}…", String::from_utf8_lossy(&c[..12]))
            } else {
                String::from_utf8_lossy(c).into_owned()
            }
        })
        .collect();
    if parts.len() > 6 {
        let n = parts.len();
        return format!(
            "{}/{}/…{} more…/{}/{}",
            parts[0],
            parts[1],
            n - 4,
            parts[n - 2],
            parts[n - 1]
        );
    }
    parts.join("/")
}

/// Names sharing an inode, per non-directory path.
fn link_groups(tree: &BTreeMap<Vec<u8>, Node>) -> BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> {
    let mut by_ino: BTreeMap<(u64, u64), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (rel, n) in tree {
        if n.kind != "dir" {
            by_ino.entry(n.dev_ino).or_default().insert(rel.clone());
        }
    }
    let mut out = BTreeMap::new();
    for g in by_ino.values() {
        for rel in g {
            out.insert(rel.clone(), g.clone());
        }
    }
    out
}

/// The differences a faithful copy may not have: names, kinds, modes, owners, sizes, mtimes,
/// content hashes, symlink targets, xattrs and hard-link groups (not ctimes, inode numbers).
fn fidelity_diffs(
    expected: &BTreeMap<Vec<u8>, Node>,
    actual: &BTreeMap<Vec<u8>, Node>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for rel in expected.keys().filter(|k| !actual.contains_key(*k)) {
        diffs.push(format!("{}: missing", show(rel)));
    }
    for rel in actual.keys().filter(|k| !expected.contains_key(*k)) {
        diffs.push(format!("{}: not expected", show(rel)));
    }
    for (rel, e) in expected {
        let Some(a) = actual.get(rel) else { continue };
        let mut d = |what: &str, x: String, y: String| {
            diffs.push(format!("{}: {what}: expected {x}, got {y}", show(rel)));
        };
        if e.kind != a.kind {
            d("kind", e.kind.into(), a.kind.into());
            continue;
        }
        if e.mode != a.mode {
            d("mode", format!("{:o}", e.mode), format!("{:o}", a.mode));
        }
        if (e.uid, e.gid) != (a.uid, a.gid) {
            d(
                "owner",
                format!("{}:{}", e.uid, e.gid),
                format!("{}:{}", a.uid, a.gid),
            );
        }
        if e.size != a.size {
            d("size", e.size.to_string(), a.size.to_string());
        }
        if e.mtime != a.mtime {
            d("mtime", format!("{:?}", e.mtime), format!("{:?}", a.mtime));
        }
        if e.hash != a.hash {
            d("content", show_head(&e.head), show_head(&a.head));
        }
        if e.target != a.target {
            d(
                "target",
                format!("{:?}", e.target),
                format!("{:?}", a.target),
            );
        }
        if e.xattrs != a.xattrs {
            d(
                "xattrs",
                format!("{:?}", e.xattrs),
                format!("{:?}", a.xattrs),
            );
        }
    }
    let (ge, ga) = (link_groups(expected), link_groups(actual));
    for (rel, g) in &ge {
        if g.iter().next() != Some(rel) {
            continue;
        }
        for m in g {
            if ga.get(m) != Some(g) {
                let shown: Vec<String> = g.iter().map(|r| show(r)).collect();
                let got: Vec<String> = ga
                    .get(m)
                    .map(|h| h.iter().map(|r| show(r)).collect())
                    .unwrap_or_default();
                diffs.push(format!(
                    "{}: hard links: expected one inode for {shown:?}, got {got:?}",
                    show(m)
                ));
                break;
            }
        }
    }
    diffs
}

fn fail_with(title: &str, lines: &[String]) -> ! {
    const MAX: usize = 40;
    let mut msg = format!("{title}: {} problem(s)\n", lines.len());
    for l in lines.iter().take(MAX) {
        msg.push_str("  ");
        msg.push_str(l);
        msg.push('\n');
    }
    if lines.len() > MAX {
        msg.push_str(&format!("  ... and {} more\n", lines.len() - MAX));
    }
    panic!("{msg}");
}

// ---------------------------------------------------------------------------------------------
// The sentinel: a tree outside every target that nothing may change
// ---------------------------------------------------------------------------------------------

/// Every byte of the sentinel's files starts with this, so a leak into a dump is recognisable.
const SENTINEL_MARK: &[u8] = b"SENTINEL-";

/// A tree outside the restore target (and outside the dumped volume): files and directories
/// with known bytes, modes, owners, mtimes and xattrs, with a root-only `vault/` that attacks
/// point their symlinks at. `extras` are paths created in the vault too (`/` at the end for a
/// directory), named like what the restore or the dump will write or read, so that a write
/// through a swapped-in symlink hits an existing outside file. Everything of every entry is
/// recorded (ctime, inode and link count included, which any chmod, chown, utime, xattr change,
/// write, link or replacement moves), and [`Sentinel::differences`] compares.
struct Sentinel {
    root: PathBuf,
    extras: Vec<String>,
    state: BTreeMap<Vec<u8>, Node>,
}

impl Sentinel {
    fn new(root: &Path, extras: &[&str]) -> Sentinel {
        let mut s = Sentinel {
            root: root.to_path_buf(),
            extras: extras.iter().map(|e| e.to_string()).collect(),
            state: BTreeMap::new(),
        };
        s.build();
        s
    }

    fn vault(&self) -> PathBuf {
        self.root.join("vault")
    }

    fn build(&mut self) {
        let root = &self.root;
        fs::create_dir_all(root.join("vault/inner")).expect("mkdir sentinel");
        let file = |rel: &str, mode: u32| {
            let p = root.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("mkdir sentinel parent");
            }
            let mut data = SENTINEL_MARK.to_vec();
            data.extend_from_slice(
                format!("{rel}: outside every target; never to change\n").as_bytes(),
            );
            fs::write(&p, &data).expect("write sentinel file");
            chmod(&p, mode);
        };
        file("top.txt", 0o644);
        file("vault/secret.txt", 0o600);
        file("vault/inner/deep.txt", 0o640);
        for e in &self.extras {
            match e.strip_suffix('/') {
                Some(dir) => fs::create_dir_all(root.join("vault").join(dir)).expect("mkdir"),
                None => file(&format!("vault/{e}"), 0o600),
            }
        }
        std::os::unix::fs::symlink("secret.txt", root.join("vault/link")).expect("symlink");
        set_xattr(&root.join("vault/secret.txt"), "user.sentinel", b"keep");
        set_xattr(&root.join("vault"), "user.sentinel", b"vault");
        let mut all: Vec<Vec<u8>> = walk_tree(root).into_keys().collect();
        all.reverse(); // children before parents: setting times does not touch the parent
        for (i, rel) in all.iter().enumerate() {
            let p = path_bytes(root, rel);
            let is_dir = !rel.is_empty() && fs::symlink_metadata(&p).expect("lstat").is_dir();
            if is_dir {
                chmod(&p, 0o700);
            }
            if is_root() {
                // Root-only things: a foreign owner on some files (the directories stay
                // root's), trusted xattrs on the directories.
                let (uid, gid) = if !is_dir && i % 3 == 0 {
                    (4242, 4343)
                } else {
                    (0, 0)
                };
                lchown(&p, uid, gid);
                if is_dir {
                    set_xattr(&p, "trusted.sentinel", b"root only");
                }
            }
            set_mtime(
                &p,
                1_234_567_890 + i as i64 * 61,
                100_000_007 * (i as i64 % 9),
            );
        }
        chmod(root, 0o700);
        self.state = walk_tree(root);
    }

    /// Everything that differs from the recorded state (new entries included).
    fn differences(&self) -> Vec<String> {
        let now = walk_tree(&self.root);
        let mut out = Vec::new();
        for rel in self.state.keys().filter(|k| !now.contains_key(*k)) {
            out.push(format!("sentinel {}: gone", show(rel)));
        }
        for (rel, n) in &now {
            match self.state.get(rel) {
                None => out.push(format!(
                    "sentinel {}: new {} (mode {:o}, {}:{}, {} bytes{})",
                    show(rel),
                    n.kind,
                    n.mode,
                    n.uid,
                    n.gid,
                    n.size,
                    if n.kind == "file" {
                        format!(", {}", show_head(&n.head))
                    } else {
                        String::new()
                    }
                )),
                Some(old) if old != n => {
                    let mut what = Vec::new();
                    if old.kind != n.kind {
                        what.push(format!("kind {} -> {}", old.kind, n.kind));
                    }
                    if old.mode != n.mode {
                        what.push(format!("mode {:o} -> {:o}", old.mode, n.mode));
                    }
                    if (old.uid, old.gid) != (n.uid, n.gid) {
                        what.push(format!(
                            "owner {}:{} -> {}:{}",
                            old.uid, old.gid, n.uid, n.gid
                        ));
                    }
                    if old.mtime != n.mtime {
                        what.push(format!("mtime {:?} -> {:?}", old.mtime, n.mtime));
                    }
                    if old.hash != n.hash {
                        what.push(format!("content -> {}", show_head(&n.head)));
                    }
                    if old.xattrs != n.xattrs {
                        what.push("xattrs".into());
                    }
                    if old.dev_ino != n.dev_ino {
                        what.push("replaced (new inode)".into());
                    }
                    if old.nlink != n.nlink {
                        what.push(format!("links {} -> {}", old.nlink, n.nlink));
                    }
                    if old.ctime != n.ctime {
                        what.push("ctime".into());
                    }
                    out.push(format!("sentinel {}: {}", show(rel), what.join(", ")));
                }
                Some(_) => {}
            }
        }
        out
    }

    /// Builds the sentinel again (after a round that changed it, so later rounds count too).
    fn rebuild(&mut self) {
        remove_tree(&self.root).expect("remove the sentinel");
        self.build();
    }
}

/// Can others (an unprivileged attacker) reach `p`: does every directory on the way let them
/// through, and (`exec`) may they run it?
fn reachable_by_others(p: &Path, exec: bool) -> bool {
    let through = p
        .ancestors()
        .skip(1)
        .all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    through && (!exec || fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005))
}

/// A working directory that an unprivileged user can traverse (tempfile makes it 0700; and
/// under a TMPDIR others cannot reach, it is made in /tmp).
fn open_workdir() -> tempfile::TempDir {
    let mut work = tempfile::tempdir().expect("tempdir");
    if !reachable_by_others(work.path(), false) {
        work = tempfile::tempdir_in("/tmp").expect("tempdir in /tmp");
    }
    chmod(work.path(), 0o755);
    work
}

/// The test binary, where uid 65534 may run it: as it is when others can reach it, else a
/// copy in `work` (a checkout under /root is out of their reach).
fn exe_for_others(work: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    if reachable_by_others(&exe, true) {
        return exe;
    }
    let copy = work.join("attacker-exe");
    fs::copy(&exe, &copy).expect("copy the test binary");
    chmod(&copy, 0o755);
    copy
}

// ---------------------------------------------------------------------------------------------
// 1. A restore redirected outside its target
// ---------------------------------------------------------------------------------------------

/// Files in the dump's `d/` (the directory the attacker redirects).
const D_FILES: usize = 6000;
/// Files in `e/`, whose appearance tells the attacker that `d`'s checks are done.
const E_FILES: usize = 500;

/// The environment variable that makes [`attacker_child`] act; unset in a normal run.
const ATTACKER_ENV: &str = "REEL_HOSTILE_ATTACKER";
/// What the child prints once it runs (as its user) and polls.
const ATTACKER_READY: &str = "HOSTILE-ATTACKER-READY";
/// What the child prints when it is done: the outcome follows on the same line.
const ATTACKER_DONE: &str = "HOSTILE-ATTACKER-DONE";
/// The unprivileged attacker's uid and gid (nobody/nogroup).
const NOBODY: u32 = 65534;

/// Waits until `home/trigger` exists, then renames `home/victim` away and puts a symlink to
/// `link_to` in its place, in one step. Returns how long it waited.
fn swap_when_appears(
    home: &Path,
    trigger: &str,
    victim: &str,
    link_to: &Path,
    deadline: Duration,
    stop: &AtomicBool,
) -> Result<Duration, String> {
    let t = home.join(trigger);
    let started = Instant::now();
    while fs::symlink_metadata(&t).is_err() {
        if started.elapsed() > deadline || stop.load(Ordering::Relaxed) {
            return Err(format!("{} never appeared", t.display()));
        }
        std::hint::spin_loop();
    }
    let waited = started.elapsed();
    // The symlink is made under another name, then the two names are exchanged atomically:
    // `victim` is never missing (a restore that found it gone would just fail), and the real
    // directory stays in `home` as `VICTIM.moved`.
    let (v, moved) = (home.join(victim), home.join(format!("{victim}.moved")));
    std::os::unix::fs::symlink(link_to, &moved)
        .map_err(|e| format!("symlink {}: {e}", moved.display()))?;
    exchange(&v, &moved).map_err(|e| format!("exchange {}: {e}", v.display()))?;
    Ok(waited)
}

/// The attacker of the restore race, as an unprivileged user: the test binary re-executed
/// (`--exact attacker_child`) with [`ATTACKER_ENV`] set to `HOME`, `TRIGGER`, `VICTIM` and
/// `LINK_TO`, one a line, and uid/gid 65534. In a normal run the variable is absent and this
/// returns at once.
#[test]
fn attacker_child() {
    let Some(spec) = std::env::var_os(ATTACKER_ENV) else {
        return;
    };
    let parts: Vec<&[u8]> = spec.as_bytes().split(|b| *b == b'\n').collect();
    let [home, trigger, victim, link_to] = parts[..] else {
        panic!("{ATTACKER_ENV}: expected 4 parts, got {}", parts.len());
    };
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).expect("UTF-8 attacker argument");
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    println!("{ATTACKER_READY} uid={uid} gid={gid}");
    io::stdout().flush().expect("flush");
    let outcome = swap_when_appears(
        Path::new(OsStr::from_bytes(home)),
        &s(trigger),
        &s(victim),
        Path::new(OsStr::from_bytes(link_to)),
        Duration::from_secs(60),
        &AtomicBool::new(false),
    );
    match outcome {
        Ok(waited) => println!("{ATTACKER_DONE} ok {}", waited.as_nanos()),
        Err(e) => println!("{ATTACKER_DONE} err {e}"),
    }
    io::stdout().flush().expect("flush");
}

/// Who attacks the restore.
#[derive(Clone, Copy, Debug)]
enum Attacker {
    /// A thread of the test, as root.
    RootThread,
    /// The test binary re-executed as uid/gid 65534, owning the target.
    Nobody,
}

/// A started attacker; `finish` says whether (and after how long) it swapped.
enum Running {
    Thread(
        std::thread::JoinHandle<Result<Duration, String>>,
        Arc<AtomicBool>,
    ),
    Child {
        child: std::process::Child,
        lines: std::sync::mpsc::Receiver<String>,
        stderr: std::thread::JoinHandle<String>,
    },
}

impl Running {
    fn start(
        attacker: Attacker,
        work: &Path,
        home: &Path,
        trigger: &str,
        victim: &str,
        link_to: &Path,
    ) -> Running {
        match attacker {
            Attacker::RootThread => {
                let (home, trigger, victim, link_to) = (
                    home.to_path_buf(),
                    trigger.to_string(),
                    victim.to_string(),
                    link_to.to_path_buf(),
                );
                let stop = Arc::new(AtomicBool::new(false));
                let stop2 = Arc::clone(&stop);
                let t = std::thread::spawn(move || {
                    let deadline = Duration::from_secs(60);
                    swap_when_appears(&home, &trigger, &victim, &link_to, deadline, &stop2)
                });
                Running::Thread(t, stop)
            }
            Attacker::Nobody => {
                let mut spec = home.as_os_str().as_bytes().to_vec();
                for part in [
                    trigger.as_bytes(),
                    victim.as_bytes(),
                    link_to.as_os_str().as_bytes(),
                ] {
                    spec.push(b'\n');
                    spec.extend_from_slice(part);
                }
                let mut child = Command::new(exe_for_others(work))
                    .args([
                        "--exact",
                        "attacker_child",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(ATTACKER_ENV, OsStr::from_bytes(&spec))
                    .current_dir("/")
                    .uid(NOBODY)
                    .gid(NOBODY)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("re-execute the test binary as the attacker");
                let out = child.stdout.take().expect("child stdout");
                let (tx, lines) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    for line in io::BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
                let mut err = child.stderr.take().expect("child stderr");
                let stderr = std::thread::spawn(move || {
                    let mut s = String::new();
                    let _ = err.read_to_string(&mut s);
                    s
                });
                // Wait until it runs as its user and polls, so the race starts with it.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match lines.recv_timeout(left) {
                        Ok(l) if l.contains(ATTACKER_READY) => {
                            assert!(
                                l.contains(&format!("uid={NOBODY}")),
                                "the attacker is not unprivileged: {l}"
                            );
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            let err = stderr.join().unwrap_or_default();
                            panic!("the attacker child never became ready; stderr:\n{err}");
                        }
                    }
                }
                Running::Child {
                    child,
                    lines,
                    stderr,
                }
            }
        }
    }

    fn finish(self) -> Result<Duration, String> {
        match self {
            Running::Thread(t, stop) => {
                // The restore has ended: an attacker still waiting never saw its trigger.
                stop.store(true, Ordering::Relaxed);
                t.join().expect("attacker thread panicked")
            }
            Running::Child {
                mut child,
                lines,
                stderr,
            } => {
                // The restore has ended: a child still waiting then never saw its trigger.
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut outcome = Err("the attacker child said nothing".to_string());
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match lines.recv_timeout(left) {
                        Ok(l) => {
                            // libtest may print its own "test NAME ... " before it.
                            if let Some((_, rest)) = l.split_once(ATTACKER_DONE) {
                                let rest = rest.trim();
                                outcome = match rest.strip_prefix("ok ") {
                                    Some(ns) => Ok(Duration::from_nanos(
                                        ns.trim().parse().unwrap_or_default(),
                                    )),
                                    None => Err(rest.to_string()),
                                };
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            let _ = child.kill();
                            break;
                        }
                    }
                }
                let status = child.wait().expect("wait for the attacker child");
                let err = stderr.join().unwrap_or_default();
                if !status.success() {
                    return Err(format!("attacker child exited {status}: {err}"));
                }
                outcome
            }
        }
    }
}

/// The race of the issue: root restores a dump holding `d/` (6,000 files, mode 0777) and `e/`
/// into `home`, which the attacker owns; when `home/e` appears the attacker renames `home/d`
/// away and puts a symlink to the root-only `vault` of a sentinel in its place. Whatever the
/// restore then does (it may fail), nothing outside `home` may change.
fn restore_race(attacker: Attacker, overwrite: bool) {
    if matches!(attacker, Attacker::Nobody) && !is_root() {
        println!("skipped: re-executing as uid {NOBODY} needs root");
        return;
    }
    let work = open_workdir();
    let vol = work.path().join("vol");
    fs::create_dir_all(vol.join("d")).expect("mkdir d");
    fs::create_dir_all(vol.join("e")).expect("mkdir e");
    for i in 0..D_FILES {
        fs::write(vol.join(format!("d/f{i:05}")), format!("file {i} of d\n")).expect("write");
    }
    for i in 0..E_FILES {
        fs::write(vol.join(format!("e/g{i:04}")), format!("file {i} of e\n")).expect("write");
    }
    chmod(&vol.join("d"), 0o777);
    let spool = spool_with_full_dump(&vol);
    // The vault holds a name the restore writes late (`f05999`): a write through the link
    // would replace or rewrite it. (None it writes first: an early O_EXCL clash would just
    // make the restore fail before the attack shows.)
    let sentinel = Sentinel::new(&work.path().join("outside"), &["f05999"]);
    let home = work.path().join("home");
    fs::create_dir(&home).expect("mkdir home");
    if overwrite {
        fs::write(home.join("notes.txt"), b"the owner's own file\n").expect("write");
        if is_root() {
            lchown(&home.join("notes.txt"), NOBODY, NOBODY);
        }
    }
    if is_root() {
        lchown(&home, NOBODY, NOBODY);
    }
    let running = Running::start(attacker, work.path(), &home, "e", "d", &sentinel.vault());
    let mut cmd = spool.cmd();
    cmd.arg("restore").arg("v").arg("--to").arg(&home);
    if overwrite {
        cmd.arg("--overwrite");
    }
    let started = Instant::now();
    let out = cmd.output().expect("run reel restore");
    let took = started.elapsed();
    let swapped = running.finish();
    let diffs = sentinel.differences();
    println!(
        "restore race ({attacker:?}, overwrite {overwrite}): restore {} in {took:.2?}; attacker: \
         {swapped:?}; sentinel: {} difference(s)\n  stdout: {}  stderr: {}",
        out.status,
        diffs.len(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // A restore that succeeded made `home/e`, so the attacker struck (the race was run); one
    // that failed before that may leave it waiting, which is fine as long as nothing outside
    // changed.
    assert!(
        swapped.is_ok() || !out.status.success(),
        "the restore succeeded but the attacker never swapped, so nothing was tested: \
         {swapped:?}"
    );
    if !diffs.is_empty() {
        fail_with(
            &format!(
                "restore ({attacker:?}, overwrite {overwrite}, {}) changed the outside \
                 through a swapped-in symlink; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            &diffs,
        );
    }
}

#[test]
fn restore_race_root_attacker_with_overwrite_changes_nothing_outside() {
    restore_race(Attacker::RootThread, true);
}

#[test]
fn restore_race_root_attacker_into_empty_target_changes_nothing_outside() {
    restore_race(Attacker::RootThread, false);
}

#[test]
fn restore_race_unprivileged_attacker_with_overwrite_changes_nothing_outside() {
    restore_race(Attacker::Nobody, true);
}

#[test]
fn restore_race_unprivileged_attacker_into_empty_target_changes_nothing_outside() {
    restore_race(Attacker::Nobody, false);
}

// ---------------------------------------------------------------------------------------------
// 2. The race harness
// ---------------------------------------------------------------------------------------------

/// Rounds of each race (restore under attack, dump under mutation).
const RACE_ROUNDS: usize = 10;

/// Runs `f` on a thread until `stop` is set; `f` does one step per call.
fn spawn_mutator<F>(
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicU64>,
    mut f: F,
) -> std::thread::JoinHandle<()>
where
    F: FnMut() + Send + 'static,
{
    let (stop, ops) = (Arc::clone(stop), Arc::clone(ops));
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            f();
            ops.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Waits until a mutator has made a few steps, so that it is running when the race starts.
fn wait_until_running(ops: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ops.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// The first line of a failed command's stderr, for the reports; a very long one (a deep
/// path) keeps its start and its end, where the error is.
fn first_line(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    let line: Vec<char> = text.lines().next().unwrap_or("").chars().collect();
    if line.len() <= 320 {
        return line.into_iter().collect();
    }
    let head: String = line[..100].iter().collect();
    let tail: String = line[line.len() - 200..].iter().collect();
    format!("{head} …{} characters… {tail}", line.len() - 300)
}

/// A failure is clean when reel says what went wrong (exit 1, `reel: ...`) and did not panic.
fn failed_cleanly(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    out.status.code() == Some(1) && err.starts_with("reel: ") && !err.contains("panicked")
}

/// The volume a restore race restores: four directories of files, each with a subdirectory,
/// a hard link across two of them and a symlink.
fn restore_race_volume(vol: &Path) {
    for k in 0..4 {
        let a = vol.join(format!("a{k}"));
        fs::create_dir_all(a.join("s0")).expect("mkdir");
        for i in 0..150 {
            let body = format!("a{k}/f{i:03} restored under attack\n").repeat(8);
            fs::write(a.join(format!("f{i:03}")), body).expect("write");
        }
        for i in 0..30 {
            fs::write(a.join(format!("s0/g{i:02}")), format!("a{k}/s0/g{i:02}\n")).expect("w");
        }
        chmod(&a.join("s0"), 0o750);
    }
    fs::write(vol.join("a0/hl"), b"a hard link across directories\n").expect("write");
    fs::hard_link(vol.join("a0/hl"), vol.join("a3/hl")).expect("link");
    std::os::unix::fs::symlink("f000", vol.join("a1/ln")).expect("symlink");
}

/// The parent directory of `rel` (below the directory `root`) opened without following any
/// symlink, and the last name; None if a component is not a real directory now. The attacker
/// works only through these, so it never acts through a symlink it planted itself.
fn parent_at(root: RawFd, rel: &str) -> Option<(OwnedFd, Vec<u8>)> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let name = parts.pop()?.as_bytes().to_vec();
    let mut fd = open_dir_at(root, b".").ok()?;
    for p in parts {
        fd = open_dir_at(fd.as_raw_fd(), p.as_bytes()).ok()?;
    }
    Some((fd, name))
}

fn rename_at(dir: RawFd, old: &[u8], new: &[u8]) -> io::Result<()> {
    let (o, n) = (cname(old), cname(new));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::renameat(dir, o.as_ptr(), dir, n.as_ptr()) }).map(drop)
}

/// Exchanges two names of directory `dir` atomically (RENAME_EXCHANGE).
fn exchange_at(dir: RawFd, a: &[u8], b: &[u8]) -> io::Result<()> {
    let (ca, cb) = (cname(a), cname(b));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::renameat2(dir, ca.as_ptr(), dir, cb.as_ptr(), libc::RENAME_EXCHANGE) })
        .map(drop)
}

fn unlink_at(dir: RawFd, name: &[u8]) -> io::Result<()> {
    let c = cname(name);
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) }).map(drop)
}

fn kind_at(dir: RawFd, name: &[u8]) -> &'static str {
    stat_at(dir, name).map_or("none", |st| kind_of(st.st_mode))
}

fn with_suffix(name: &[u8], suffix: &str) -> Vec<u8> {
    let mut v = name.to_vec();
    v.extend_from_slice(suffix.as_bytes());
    v
}

/// The restore attacker's state: the target (opened once it exists), the swapped directories
/// to put back, and a step counter.
struct TargetAttacker {
    target: PathBuf,
    root: Option<OwnedFd>,
    vault: PathBuf,
    rng: Rng,
    planted: Vec<(String, Vec<u8>)>,
    n: u64,
}

impl TargetAttacker {
    /// One step: swap a directory for a symlink to the vault (or put one back), a file for a
    /// symlink to a vault file or for a directory, or rename a parent away and back.
    fn step(&mut self) {
        let root = match &self.root {
            Some(fd) => fd.as_raw_fd(),
            None => match open_dir_path(&self.target) {
                Ok(fd) => self.root.insert(fd).as_raw_fd(),
                Err(_) => return, // the restore has not made the target yet
            },
        };
        self.n += 1;
        let rng = &mut self.rng;
        let k = rng.below(4);
        let dir = if rng.below(3) == 0 {
            format!("a{k}/s0")
        } else {
            format!("a{k}")
        };
        let in_s0 = dir.ends_with("s0");
        let vault_dir = if in_s0 {
            self.vault.join("s0")
        } else {
            self.vault.clone()
        };
        let file = match rng.below(10) {
            0 => format!("a{k}/hl"),
            1 => format!("a{k}/s0/g0{}", rng.below(3)),
            _ => format!("a{k}/f{:03}", rng.below(150)),
        };
        match rng.below(10) {
            0..=3 => {
                let Some((p, name)) = parent_at(root, &dir) else {
                    return;
                };
                // The symlink is made under another name, then the names are exchanged: the
                // directory is swapped for it in one step.
                let away = with_suffix(&name, &format!(".away{}", self.n));
                let target = vault_dir.as_os_str().as_bytes();
                if kind_at(p.as_raw_fd(), &name) == "dir"
                    && symlink_at(target, p.as_raw_fd(), &away).is_ok()
                {
                    if exchange_at(p.as_raw_fd(), &name, &away).is_ok() {
                        self.planted.push((dir, away));
                    } else {
                        let _ = unlink_at(p.as_raw_fd(), &away);
                    }
                }
            }
            4 | 5 => {
                let Some((p, name)) = parent_at(root, &file) else {
                    return;
                };
                if kind_at(p.as_raw_fd(), &name) != "file"
                    || unlink_at(p.as_raw_fd(), &name).is_err()
                {
                    return;
                }
                if rng.below(2) == 0 {
                    let in_s0 = file.contains("/s0/");
                    let base = if in_s0 {
                        self.vault.join("s0")
                    } else {
                        self.vault.clone()
                    };
                    let target = base.join(OsStr::from_bytes(&name));
                    let _ = symlink_at(target.as_os_str().as_bytes(), p.as_raw_fd(), &name);
                } else {
                    let _ = mkdir_at(p.as_raw_fd(), &name, 0o755);
                }
            }
            6 => {
                let Some((p, name)) = parent_at(root, &dir) else {
                    return;
                };
                let tmp = with_suffix(&name, ".renamed");
                if rename_at(p.as_raw_fd(), &name, &tmp).is_ok() {
                    for _ in 0..rng.below(2000) {
                        std::hint::spin_loop();
                    }
                    let _ = rename_at(p.as_raw_fd(), &tmp, &name);
                }
            }
            _ => {
                let Some((dir, away)) = self.planted.pop() else {
                    return;
                };
                let Some((p, name)) = parent_at(root, &dir) else {
                    return;
                };
                // Put the directory back, in one step too.
                if kind_at(p.as_raw_fd(), &name) == "symlink"
                    && kind_at(p.as_raw_fd(), &away) == "dir"
                    && exchange_at(p.as_raw_fd(), &name, &away).is_ok()
                {
                    let _ = unlink_at(p.as_raw_fd(), &away);
                }
            }
        }
    }
}

/// Restores of one dump, each raced by an attacker that keeps swapping the target's
/// directories for symlinks into the sentinel's vault (which holds names the restore writes),
/// files for symlinks to vault files and for directories, and renames parents. Every other
/// round restores again over the previous round's target with `--overwrite`. After every
/// round the sentinel must be exactly as it was; the restore itself may fail.
#[test]
fn race_restore_into_a_target_under_attack_never_changes_the_outside() {
    let work = open_workdir();
    let vol = work.path().join("vol");
    restore_race_volume(&vol);
    let spool = spool_with_full_dump(&vol);
    let extras = [
        "f000", "f001", "f002", "hl", "s0/", "s0/g00", "s0/g01", "s0/g02",
    ];
    let mut sentinel = Sentinel::new(&work.path().join("outside"), &extras);
    let vault = sentinel.vault();
    let (mut ok, mut failed, mut ops_total) = (0, 0, 0);
    let mut changed: Vec<(usize, Vec<String>)> = Vec::new();
    let mut target = PathBuf::new();
    for round in 0..RACE_ROUNDS {
        let overwrite = round % 2 == 1;
        if !overwrite {
            target = work.path().join(format!("t{round}"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let mutator = {
            let mut attacker = TargetAttacker {
                target: target.clone(),
                root: None,
                vault: vault.clone(),
                rng: Rng::new(0xA77AC + round as u64),
                planted: Vec::new(),
                n: 0,
            };
            spawn_mutator(&stop, &ops, move || attacker.step())
        };
        let mut cmd = spool.cmd();
        cmd.arg("restore").arg("v").arg("--to").arg(&target);
        if overwrite {
            cmd.arg("--overwrite");
        }
        let out = cmd.output().expect("run reel restore");
        stop.store(true, Ordering::Relaxed);
        mutator.join().expect("mutator panicked");
        ops_total += ops.load(Ordering::Relaxed);
        if out.status.success() {
            ok += 1;
        } else {
            failed += 1;
        }
        let diffs = sentinel.differences();
        println!(
            "restore round {round} (overwrite {overwrite}): {} after {} attacker steps; {}; \
             sentinel: {} difference(s)",
            out.status,
            ops.load(Ordering::Relaxed),
            first_line(&out.stderr),
            diffs.len()
        );
        if !diffs.is_empty() {
            changed.push((round, diffs));
            sentinel.rebuild();
        }
    }
    println!(
        "RACE restore: rounds={RACE_ROUNDS} restore_ok={ok} restore_failed={failed} \
         outside_changed={} attacker_steps={ops_total}",
        changed.len()
    );
    if let Some((round, diffs)) = changed.first() {
        let rounds: Vec<usize> = changed.iter().map(|(r, _)| *r).collect();
        fail_with(
            &format!(
                "{} of {RACE_ROUNDS} restores under attack changed the outside (rounds \
                 {rounds:?}); round {round}",
                changed.len()
            ),
            diffs,
        );
    }
}

/// Groups of three names in the mutated part of the dumped volume.
const HOT_GROUPS: usize = 6;
const HOT_SLOTS: [&str; 3] = ["a", "b", "c"];

/// What the mutator may put at each name of group `k`: a directory (its children below), a
/// file, or a symlink to the sentinel's vault. The vault holds the directory's child names with
/// its own bytes, so a scan that reads through a swapped-in symlink stores the sentinel's bytes.
struct HotModel {
    vault: PathBuf,
    /// Per group: the directory object's children, (path inside it, blake3 of its bytes or
    /// None for a directory).
    children: Vec<Vec<(String, Option<String>)>>,
    /// Per group: blake3 of the file object.
    file_hash: Vec<String>,
}

impl HotModel {
    fn new(vault: PathBuf) -> HotModel {
        let hash = |b: &[u8]| blake3::hash(b).to_hex().to_string();
        HotModel {
            vault,
            children: (0..HOT_GROUPS)
                .map(|k| {
                    Self::dir_children(k)
                        .into_iter()
                        .map(|(rel, c)| (rel, c.map(|c| hash(&c))))
                        .collect()
                })
                .collect(),
            file_hash: (0..HOT_GROUPS)
                .map(|k| hash(&Self::file_object(k)))
                .collect(),
        }
    }

    /// The directory object's children: (path inside it, content or None for a directory).
    fn dir_children(k: usize) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for i in 1..=5 {
            let body = format!("group {k} directory object, child x{i}\n").repeat(40 + 70 * i);
            out.push((format!("x{i}"), Some(body.into_bytes())));
        }
        if k == 0 {
            // One large file (read in segments, on a thread of its own).
            let mut big = Vec::new();
            let mut n = 0u64;
            while big.len() < 5 << 20 {
                big.extend_from_slice(format!("group 0 large child line {n:08}\n").as_bytes());
                n += 1;
            }
            out.push(("x6".into(), Some(big)));
        }
        out.push(("sub".into(), None));
        out.push((
            "sub/y".into(),
            Some(format!("group {k} directory object, sub/y\n").into_bytes()),
        ));
        out
    }

    fn file_object(k: usize) -> Vec<u8> {
        format!("group {k} file object\n").repeat(300).into_bytes()
    }

    fn build(&self, hot: &Path) {
        fs::create_dir_all(hot).expect("mkdir hot");
        for k in 0..HOT_GROUPS {
            let d = hot.join(format!("g{k}_a"));
            for (rel, content) in Self::dir_children(k) {
                match content {
                    None => fs::create_dir_all(d.join(rel)).expect("mkdir"),
                    Some(c) => {
                        fs::create_dir_all(d.join(&rel).parent().expect("parent")).expect("mkdir");
                        fs::write(d.join(rel), c).expect("write");
                    }
                }
            }
            fs::write(hot.join(format!("g{k}_b")), Self::file_object(k)).expect("write");
            std::os::unix::fs::symlink(&self.vault, hot.join(format!("g{k}_c"))).expect("ln");
        }
    }

    /// Everything wrong with a restored dump's `hot/` (`tree`: the whole restored tree).
    fn check(&self, tree: &BTreeMap<Vec<u8>, Node>, warnings: &[String]) -> Vec<String> {
        let mut bad = Vec::new();
        let slot_of = |name: &str| -> Option<usize> {
            let (g, s) = name.strip_prefix('g')?.split_once('_')?;
            let k: usize = g.parse().ok()?;
            (k < HOT_GROUPS && HOT_SLOTS.contains(&s)).then_some(k)
        };
        let describe = |n: &Node| match n.kind {
            "file" if n.head.starts_with(SENTINEL_MARK) => format!(
                "a file holding the SENTINEL's bytes (from outside the volume): {}",
                show_head(&n.head)
            ),
            "file" => format!("a file starting {}", show_head(&n.head)),
            "symlink" => format!("a symlink to {:?}", n.target),
            k => k.to_string(),
        };
        for (rel, n) in tree {
            let rel_s = String::from_utf8_lossy(rel).into_owned();
            if n.kind == "file" && n.head.starts_with(SENTINEL_MARK) && !rel_s.starts_with("hot/") {
                bad.push(format!("{rel_s}: {}", describe(n)));
            }
            let Some(rest) = rel_s.strip_prefix("hot/") else {
                continue;
            };
            let (name, inner) = match rest.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            };
            let Some(k) = slot_of(name) else {
                bad.push(format!(
                    "{rel_s}: a name the volume never held: {}",
                    describe(n)
                ));
                continue;
            };
            match inner {
                None => {
                    let fine = match n.kind {
                        "dir" => true,
                        "file" => n.hash.as_ref() == Some(&self.file_hash[k]),
                        "symlink" => n.target.as_deref() == Some(self.vault.as_os_str().as_bytes()),
                        _ => false,
                    };
                    if !fine {
                        bad.push(format!("{rel_s}: never held {}", describe(n)));
                    }
                }
                Some(inner) => {
                    let want = self.children[k].iter().find(|(r, _)| r == inner);
                    let fine = match (want, n.kind) {
                        (Some((_, None)), "dir") => true,
                        (Some((_, Some(h))), "file") => n.hash.as_ref() == Some(h),
                        _ => false,
                    };
                    if !fine {
                        bad.push(format!(
                            "{rel_s}: {} (the directory object {})",
                            describe(n),
                            if want.is_some() {
                                "never held that there"
                            } else {
                                "has no such entry"
                            }
                        ));
                    }
                }
            }
        }
        // What is missing must be named in the warnings (itself or a parent).
        for k in 0..HOT_GROUPS {
            for s in HOT_SLOTS {
                let top = format!("hot/g{k}_{s}");
                match tree.get(top.as_bytes()) {
                    None => {
                        if !warned(warnings, &top) {
                            bad.push(format!("{top}: missing, and no warning names it"));
                        }
                    }
                    Some(n) if n.kind == "dir" => {
                        for (inner, _) in &self.children[k] {
                            let rel = format!("{top}/{inner}");
                            if !tree.contains_key(rel.as_bytes()) && !warned(warnings, &rel) {
                                bad.push(format!("{rel}: missing, and no warning names it"));
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        bad
    }
}

/// Swaps two names of one group of `hot` (RENAME_EXCHANGE: both always exist).
fn swap_in_a_group(hot: &Path, rng: &mut Rng) {
    let k = rng.below(HOT_GROUPS as u64);
    let i = rng.below(3) as usize;
    let j = (i + 1 + rng.below(2) as usize) % 3;
    let a = hot.join(format!("g{k}_{}", HOT_SLOTS[i]));
    let b = hot.join(format!("g{k}_{}", HOT_SLOTS[j]));
    exchange(&a, &b).expect("RENAME_EXCHANGE");
}

/// Does a warning name `rel` (a path in the volume) or one of its parents below the root?
/// Warnings name paths in full (`/tmp/.../vol/REL: ...`) or relative to the volume; the path
/// must start and end where a name does.
fn warned(warnings: &[String], rel: &str) -> bool {
    let name_byte = |c: u8| c.is_ascii_alphanumeric() || b"_.-".contains(&c);
    let mut p = rel;
    loop {
        let hit = warnings.iter().any(|w| {
            w.match_indices(p).any(|(i, _)| {
                let before = i.checked_sub(1).map(|j| w.as_bytes()[j]);
                let after = w.as_bytes().get(i + p.len()).copied();
                !before.is_some_and(name_byte) && !after.is_some_and(name_byte)
            })
        });
        if hit {
            return true;
        }
        match p.rsplit_once('/') {
            Some((parent, _)) if parent.contains('/') => p = parent,
            _ => return false,
        }
    }
}

/// `reel show ID --json`'s warnings.
fn dump_warnings(spool: &Spool, id: u64) -> Vec<String> {
    let out = spool.run(["show", &id.to_string(), "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("reel show --json: {e}\n{out}"));
    v["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array in reel show --json: {out}"))
        .iter()
        .map(|w| w.as_str().expect("a warning is a string").to_string())
        .collect()
}

/// The paths of dump `id` of volume `v` (`reel ls --json`).
fn dump_paths(spool: &Spool, id: u64) -> BTreeSet<String> {
    let out = spool.run(["ls", "v", "--dump", &id.to_string(), "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("reel ls --json: {e}\n{out}"));
    v.as_array()
        .expect("reel ls --json gives an array")
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect()
}

fn last_dump_id(spool: &Spool) -> u64 {
    spool.last_dump()["id"].as_u64().expect("dump id")
}

/// A stable part of a volume: text, random bytes, nested directories, a symlink, a hard-link
/// pair, an 0600 file and an xattr. Nothing touches it while the volume is dumped.
fn stable_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..20 {
        let p = root.join(format!("docs/d{}/note{i:02}.txt", i % 4));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, rng.text(500 + 300 * i)).expect("write");
    }
    fs::write(root.join("random.bin"), rng.bytes(300_000)).expect("write");
    fs::write(root.join("private.txt"), b"only mine\n").expect("write");
    chmod(&root.join("private.txt"), 0o600);
    fs::hard_link(root.join("random.bin"), root.join("docs/random.link")).expect("link");
    std::os::unix::fs::symlink("docs/d0/note00.txt", root.join("to_note")).expect("symlink");
    set_xattr(&root.join("private.txt"), "user.stable", b"yes");
}

/// Dumps of a volume whose `hot/` part a mutator keeps changing: each group's three names
/// swap a directory (with files and a subdirectory), a file and a symlink to the sentinel's
/// vault among themselves with RENAME_EXCHANGE, so every name always exists in one of the
/// states it was given, directories are replaced by files and symlinks and back, and parents
/// are renamed under the scan. Every dump that succeeds must restore `stable/` byte for byte,
/// every `hot/` path as one of its states (never the sentinel's bytes, never a name the volume
/// did not hold), and anything missing must be named in the dump's warnings. A dump may fail
/// cleanly; most must succeed.
#[test]
fn race_dump_of_a_volume_under_mutation_stores_only_what_it_saw() {
    let work = open_workdir();
    let vol = work.path().join("vol");
    stable_tree(&vol.join("stable"), 0x57AB1E);
    let sentinel = Sentinel::new(
        &work.path().join("outside"),
        &["x1", "x2", "x3", "sub/", "sub/y"],
    );
    let model = HotModel::new(sentinel.vault());
    model.build(&vol.join("hot"));
    let stable = walk_tree(&vol.join("stable"));
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let (mut ok, mut failed, mut ops_total) = (0, 0, 0);
    let mut violations: Vec<String> = Vec::new();
    let mut warned_rounds = 0;
    for round in 0..RACE_ROUNDS {
        // Each round starts from another arrangement; round 0 is dumped with no mutation
        // running (it shows that the checks pass on a still tree), the others while the
        // mutator swaps.
        let mut rng = Rng::new(0xD0_5EED + round as u64);
        for _ in 0..rng.range(1, 20) {
            swap_in_a_group(&vol.join("hot"), &mut rng);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let mutator = (round > 0).then(|| {
            let hot = vol.join("hot");
            // Even rounds swap as fast as they can; odd rounds pause between swaps, so a dump
            // more often gets through its scan and the states it stores can be judged.
            let pause = (round % 2 == 1).then(|| Duration::from_millis(3));
            spawn_mutator(&stop, &ops, move || {
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
                swap_in_a_group(&hot, &mut rng);
            })
        });
        if mutator.is_some() {
            wait_until_running(&ops);
        }
        let level = if round % 2 == 0 { "0" } else { "1" };
        // The swaps may leave a tree far smaller than the last dump's (a directory caught as
        // a file): that is the attack, not a lost volume, so the shrink guard stands aside.
        let out = spool
            .cmd()
            .args(["dump", "v", "--level", level, "--allow-shrink"])
            .output()
            .expect("run reel dump");
        stop.store(true, Ordering::Relaxed);
        if let Some(m) = mutator {
            m.join().expect("mutator panicked");
        }
        let steps = ops.load(Ordering::Relaxed);
        ops_total += steps;
        if !out.status.success() {
            failed += 1;
            println!(
                "dump round {round}: {} after {steps} swaps: {}",
                out.status,
                first_line(&out.stderr)
            );
            if !failed_cleanly(&out) {
                violations.push(format!(
                    "round {round}: the dump did not fail cleanly: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            continue;
        }
        ok += 1;
        let id = last_dump_id(&spool);
        let warnings = dump_warnings(&spool, id);
        if !warnings.is_empty() {
            warned_rounds += 1;
        }
        let r = work.path().join(format!("r{round}"));
        let restore = spool
            .cmd()
            .args(["restore", "v", "--dump", &id.to_string(), "--to"])
            .arg(&r)
            .output()
            .expect("run reel restore");
        if !restore.status.success() {
            violations.push(format!(
                "round {round}: dump {id} succeeded but does not restore: {}",
                first_line(&restore.stderr)
            ));
            continue;
        }
        let tree = walk_tree(&r);
        let mut bad: Vec<String> = fidelity_diffs(&stable, &walk_tree(&r.join("stable")))
            .into_iter()
            .map(|d| format!("stable/{d}"))
            .collect();
        for rel in tree.keys() {
            let top = rel.split(|b| *b == b'/').next().unwrap_or_default();
            if !rel.is_empty() && top != b"stable" && top != b"hot" {
                bad.push(format!("{}: a name the volume never held", show(rel)));
            }
        }
        bad.extend(model.check(&tree, &warnings));
        println!(
            "dump round {round}: dump {id} ok after {steps} swaps, {} warning(s), {} problem(s)",
            warnings.len(),
            bad.len()
        );
        for w in warnings.iter().take(5) {
            println!("    warning: {w}");
        }
        violations.extend(
            bad.into_iter()
                .map(|b| format!("round {round} (dump {id}): {b}")),
        );
    }
    let check = spool.run(["check"]);
    println!(
        "RACE dump: rounds={RACE_ROUNDS} dump_ok={ok} dump_failed={failed} \
         rounds_with_warnings={warned_rounds} violations={} swaps={ops_total}",
        violations.len()
    );
    assert!(check.contains("no problems found"), "reel check: {check}");
    if !violations.is_empty() {
        fail_with(
            "dumps of a changing volume stored what their scan never saw",
            &violations,
        );
    }
    assert!(
        ok * 3 >= RACE_ROUNDS * 2,
        "only {ok} of {RACE_ROUNDS} dumps of a changing volume succeeded ({failed} failed)"
    );
}

/// An inotify watch on one path, for an attacker that strikes at a precise moment of a scan.
struct Watch(OwnedFd);

impl Watch {
    fn new(p: &Path, mask: u32) -> Watch {
        // SAFETY: plain inotify_init1.
        let fd = owned(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) }).expect("inotify_init1");
        let c = cname(p.as_os_str().as_bytes());
        // SAFETY: c is a valid C string.
        cvt(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) })
            .unwrap_or_else(|e| panic!("inotify_add_watch {}: {e}", p.display()));
        Watch(fd)
    }

    /// Waits for an event with a bit of `mask`; false if none came within `timeout`.
    fn wait_for(&self, mask: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if n <= 0 {
                continue;
            }
            // SAFETY: buf is valid for its length.
            let got = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let mut off = 0usize;
            while got > 0 && off + 16 <= got as usize {
                let field = |at: usize| {
                    u32::from_ne_bytes(buf[off + at..off + at + 4].try_into().expect("4 bytes"))
                };
                if field(4) & mask != 0 {
                    return true;
                }
                off += 16 + field(12) as usize;
            }
        }
    }
}

/// Empty files that a scan walks (one window's worth) between a directory it has listed and
/// the reading of that directory's files, which starts when the window is full: the time an
/// attacker woken by inotify on a loaded machine needs.
fn filler(dir: &Path) {
    fs::create_dir_all(dir).expect("mkdir filler");
    for i in 0..5000 {
        File::create(dir.join(format!("e{i:04}"))).expect("create filler");
    }
}

/// Files in the directory the dump attacker swaps for a symlink.
const LEAK_FILES: usize = 2000;

/// A directory of the volume is swapped for a symlink to the sentinel's vault (which holds the
/// same names, with its own bytes) the moment the dump's scan opens it to list it (inotify). A
/// dump that then stats and reads the listed names by path reads the vault. Rule: the dump may fail cleanly, or skip and name what it could not read, but it
/// never stores bytes from outside the volume and every stored file holds the volume's bytes.
#[test]
fn dump_never_stores_bytes_read_through_a_directory_swapped_for_a_symlink() {
    let work = open_workdir();
    let vol = work.path().join("vol");
    let leak = vol.join("hot/leak");
    fs::create_dir_all(&leak).expect("mkdir");
    let own = |i: usize| format!("the volume's own leak/f{i:04}\n").repeat(4);
    for i in 0..LEAK_FILES {
        fs::write(leak.join(format!("f{i:04}")), own(i)).expect("write");
    }
    // Empty files walked after hot/leak and before its files are read: time for the attacker.
    filler(&vol.join("hot/m_filler"));
    stable_tree(&vol.join("stable"), 0x1EAC);
    let names: Vec<String> = (0..LEAK_FILES).map(|i| format!("f{i:04}")).collect();
    let extras: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let sentinel = Sentinel::new(&work.path().join("outside"), &extras);
    let stable = walk_tree(&vol.join("stable"));
    let spool = Spool::new();
    spool.add_volume("v", &vol);

    let watch = Watch::new(&leak, libc::IN_OPEN);
    let attacker = {
        let (leak, vault) = (leak.clone(), sentinel.vault());
        std::thread::spawn(move || {
            if !watch.wait_for(libc::IN_OPEN, Duration::from_secs(60)) {
                return Err("the scan never listed hot/leak".to_string());
            }
            // As in the restore race: the symlink under another name, then one exchange.
            let started = Instant::now();
            let moved = leak.with_file_name("leak.moved");
            std::os::unix::fs::symlink(&vault, &moved).map_err(|e| e.to_string())?;
            exchange(&leak, &moved).map_err(|e| e.to_string())?;
            Ok(started.elapsed())
        })
    };
    let out = spool
        .cmd()
        .args(["dump", "v", "--level", "0"])
        .output()
        .expect("run reel dump");
    let swapped = attacker.join().expect("attacker panicked");
    println!(
        "leak: dump {} ; attacker {swapped:?}\n  stdout: {}  stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        first_line(&out.stderr)
    );
    assert!(swapped.is_ok(), "the race was not run: {swapped:?}");
    let outside = sentinel.differences();
    if !outside.is_empty() {
        fail_with("a dump changed the outside", &outside);
    }
    if !out.status.success() {
        assert!(
            failed_cleanly(&out),
            "the dump did not fail cleanly: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let id = last_dump_id(&spool);
    let warnings = dump_warnings(&spool, id);
    let r = work.path().join("r");
    run_ok(
        spool
            .cmd()
            .args(["restore", "v", "--dump", &id.to_string(), "--to"])
            .arg(&r),
    );
    let tree = walk_tree(&r);
    let mut bad: Vec<String> = fidelity_diffs(&stable, &walk_tree(&r.join("stable")))
        .into_iter()
        .map(|d| format!("stable/{d}"))
        .collect();
    let mut leaked = 0;
    for (rel, n) in &tree {
        let rel_s = String::from_utf8_lossy(rel).into_owned();
        if n.kind == "file" && n.head.starts_with(SENTINEL_MARK) {
            leaked += 1;
            if leaked <= 10 {
                bad.push(format!(
                    "{rel_s}: holds the SENTINEL's bytes, read from outside the volume: {}",
                    show_head(&n.head)
                ));
            }
            continue;
        }
        let Some(name) = rel_s
            .strip_prefix("hot/leak/")
            .or_else(|| rel_s.strip_prefix("hot/leak.moved/"))
        else {
            continue;
        };
        let own_bytes = name
            .strip_prefix('f')
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < LEAK_FILES)
            .map(own);
        let fine = n.kind == "file"
            && own_bytes.is_some_and(|b| {
                n.hash.as_deref() == Some(blake3::hash(b.as_bytes()).to_hex().as_str())
            });
        if !fine {
            bad.push(format!(
                "{rel_s}: never held by the volume: {} {}",
                n.kind,
                show_head(&n.head)
            ));
        }
    }
    if leaked > 10 {
        bad.push(format!(
            "... {leaked} files in all hold the sentinel's bytes"
        ));
    }
    // The volume's files of hot/leak are either where the scan listed them or named.
    if tree.get(&b"hot/leak"[..]).is_some_and(|n| n.kind == "dir") {
        for name in &names {
            let rel = format!("hot/leak/{name}");
            if !tree.contains_key(rel.as_bytes()) && !warned(&warnings, &rel) {
                bad.push(format!("{rel}: missing, and no warning names it"));
            }
        }
    }
    println!(
        "leak: dump {id}: {} warning(s), {leaked} file(s) with the sentinel's bytes",
        warnings.len()
    );
    if !bad.is_empty() {
        fail_with(
            "a dump stored what the volume never held (read through a swapped-in symlink)",
            &bad,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The grower
// ---------------------------------------------------------------------------------------------

/// Bytes per line of the grower's stream.
const LINE: usize = 16;
/// The grower's size when a round starts: 16 MiB of whole lines.
const GROWER_START: u64 = 16 << 20;

/// Line `i` of the grower's stream: a counter, never a NUL byte.
fn stream_line(i: u64) -> [u8; LINE] {
    let mut l = [0u8; LINE];
    l.copy_from_slice(format!("{i:015}\n").as_bytes());
    l
}

/// Where `data` first differs from the stream, if it does (it may end mid-line).
fn stream_mismatch(data: &[u8]) -> Option<usize> {
    for (i, chunk) in data.chunks(LINE).enumerate() {
        let want = stream_line(i as u64);
        if let Some(j) = (0..chunk.len()).find(|&j| chunk[j] != want[j]) {
            return Some(i * LINE + j);
        }
    }
    None
}

/// A 16 MiB file that a writer appends to as fast as it can (one line per write) all through
/// the dump. What the dump stores must be a prefix of the writer's stream at least 16 MiB
/// long (every byte the file held at some moment, never a NUL: the growth after the read is
/// not a hole), and a warning that the file changed while read must name it. Several rounds:
/// the race is timing-dependent.
#[test]
fn grower_is_stored_as_a_prefix_of_what_was_written_never_with_invented_zeros() {
    const ROUNDS: usize = 6;
    let work = tempfile::tempdir().expect("tempdir");
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).expect("mkdir");
    let grow = vol.join("grow.log");
    {
        let mut f = io::BufWriter::new(File::create(&grow).expect("create"));
        for i in 0..GROWER_START / LINE as u64 {
            f.write_all(&stream_line(i)).expect("write");
        }
        f.flush().expect("flush");
    }
    fs::write(vol.join("small.txt"), b"a small file next to the grower\n").expect("write");
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let mut bad = Vec::new();
    for round in 0..ROUNDS {
        // Back to 16 MiB: the same prefix, the writer carries on from there.
        File::options()
            .write(true)
            .open(&grow)
            .and_then(|f| f.set_len(GROWER_START))
            .expect("truncate");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, grow) = (Arc::clone(&stop), grow.clone());
            std::thread::spawn(move || {
                let mut f = File::options().append(true).open(&grow).expect("open");
                let mut i = GROWER_START / LINE as u64;
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(&stream_line(i)).expect("append");
                    i += 1;
                }
                i * LINE as u64
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        let out = spool
            .cmd()
            .args(["dump", "v", "--level", "0"])
            .output()
            .expect("run reel dump");
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let final_len = writer.join().expect("writer panicked");
        if !out.status.success() {
            bad.push(format!(
                "round {round}: the dump failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let id = last_dump_id(&spool);
        let warnings = dump_warnings(&spool, id);
        let data = spool
            .cmd()
            .args(["cat", "v", "--dump", &id.to_string(), "grow.log"])
            .output()
            .expect("run reel cat");
        assert!(data.status.success(), "reel cat: {data:?}");
        let data = data.stdout;
        let nuls = data.iter().filter(|b| **b == 0).count();
        let first_nul = data.iter().position(|b| *b == 0);
        let mismatch = stream_mismatch(&data);
        println!(
            "grower round {round}: dump {id} in {took:.2?}, stored {} bytes (the file reached \
             {final_len}), {nuls} NUL bytes{}, {} warning(s) {:?}",
            data.len(),
            first_nul.map_or(String::new(), |p| format!(" from byte {p}")),
            warnings.len(),
            warnings
        );
        if let Some(at) = mismatch {
            bad.push(format!(
                "round {round}: stored {} bytes that differ from what was written at byte {at} \
                 ({nuls} NUL bytes{}; the file held {GROWER_START} bytes when the dump began \
                 and {final_len} when it ended)",
                data.len(),
                first_nul.map_or(String::new(), |p| format!(", the first at {p}")),
            ));
        }
        if (data.len() as u64) < GROWER_START || data.len() as u64 > final_len {
            bad.push(format!(
                "round {round}: stored {} bytes, but the file held between {GROWER_START} and \
                 {final_len} during the dump",
                data.len()
            ));
        }
        for w in warnings.iter().filter(|w| w.contains("changed")) {
            if !w.contains("grow.log") {
                bad.push(format!("round {round}: a warning that names no file: {w}"));
            }
        }
    }
    if !bad.is_empty() {
        fail_with("a growing file was stored with bytes it never held", &bad);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Subsets of hard-link groups
// ---------------------------------------------------------------------------------------------

/// A volume of hard-link groups split across directories, each with its own mode, mtime and
/// xattr (and owner, as root): `d/a.txt` = `d/b.txt`; `c/first` = `d/hl` (`c/first` comes
/// first in the manifest, so `d/hl` is recorded as a link to it); `a/x` = `b/y` = `b/z`, and
/// `b/other.txt` on its own. Returns the spool (one dump) and the tree as dumped.
fn hardlink_volume(vol: &Path) -> (Spool, BTreeMap<Vec<u8>, Node>) {
    for d in ["a", "b", "c", "d"] {
        fs::create_dir_all(vol.join(d)).expect("mkdir");
    }
    let group = |first: &str, others: &[&str], body: &str, mode: u32, i: i64| {
        let p = vol.join(first);
        fs::write(&p, body).expect("write");
        chmod(&p, mode);
        set_xattr(&p, "user.group", first.as_bytes());
        if is_root() {
            lchown(&p, 1234, 4321);
        }
        set_mtime(
            &p,
            1_700_000_000 + i * 3600,
            123_456_789 * i % 1_000_000_000,
        );
        for o in others {
            fs::hard_link(&p, vol.join(o)).expect("link");
        }
    };
    group(
        "d/a.txt",
        &["d/b.txt"],
        "the dump's content of d/a.txt and d/b.txt\n",
        0o640,
        1,
    );
    group(
        "c/first",
        &["d/hl"],
        "the dump's content of c/first and d/hl\n",
        0o600,
        2,
    );
    group(
        "a/x",
        &["b/y", "b/z"],
        "the dump's content of a/x, b/y and b/z\n",
        0o444,
        3,
    );
    fs::write(vol.join("b/other.txt"), b"alone in b\n").expect("write");
    set_mtime(&vol.join("b/other.txt"), 1_700_100_000, 5);
    for (i, d) in ["a", "b", "c", "d"].iter().enumerate() {
        set_mtime(&vol.join(d), 1_700_200_000 + i as i64, 7);
    }
    let spool = spool_with_full_dump(vol);
    (spool, walk_tree(vol))
}

/// The fields a restored file must share with the dumped one (not its inode or link count).
fn file_diffs(rel: &str, expected: &Node, actual: Option<&Node>) -> Vec<String> {
    let Some(actual) = actual else {
        return vec![format!("{rel}: not restored")];
    };
    let one = |n: &Node| {
        let mut n = n.clone();
        n.ctime = (0, 0);
        n.dev_ino = (0, 0);
        n.nlink = 0;
        n
    };
    let (e, a) = (one(expected), one(actual));
    let single = |n: Node| BTreeMap::from([(rel.as_bytes().to_vec(), n)]);
    fidelity_diffs(&single(e), &single(a))
}

/// Restoring one name of a hard-link group into the live volume, whose other name was
/// rewritten in place after the dump (same inode, new bytes): the restored name must get the
/// dump's content and metadata, and the name not asked for keeps its live content.
#[test]
fn hardlink_subset_into_the_live_volume_restores_the_dumps_content() {
    let work = tempfile::tempdir().expect("tempdir");
    let vol = work.path().join("vol");
    let (spool, dumped) = hardlink_volume(&vol);
    let live = b"NEW: written into d/a.txt after the dump, in place\n";
    fs::write(vol.join("d/a.txt"), live).expect("rewrite in place");
    let out = spool
        .cmd()
        .args(["restore", "v", "--to"])
        .arg(&vol)
        .args(["--overwrite", "d/b.txt"])
        .output()
        .expect("run reel restore");
    let now = walk_tree(&vol);
    let mut bad = Vec::new();
    if !out.status.success() {
        bad.push(format!("the restore failed: {}", first_line(&out.stderr)));
    }
    bad.extend(file_diffs(
        "d/b.txt",
        &dumped[&b"d/b.txt"[..]],
        now.get(&b"d/b.txt"[..]),
    ));
    if fs::read(vol.join("d/a.txt")).ok().as_deref() != Some(&live[..]) {
        bad.push("d/a.txt: was not asked for, yet its content changed".into());
    }
    println!(
        "hard-link subset into the live volume: {}; stdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    if !bad.is_empty() {
        fail_with(
            &format!(
                "restore of d/b.txt (a hard link of the rewritten d/a.txt) into the live \
                 volume; stdout: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            &bad,
        );
    }
}

/// Restoring one name of a group whose other names are not restored, into an empty target:
/// `d/hl` (recorded as a link to `c/first`) and `d/b.txt` (a link to `d/a.txt`) each restore
/// as a file with the dump's content and metadata, and nothing else of the group appears.
#[test]
fn hardlink_single_name_restores_without_its_partner() {
    let work = tempfile::tempdir().expect("tempdir");
    let vol = work.path().join("vol");
    let (spool, dumped) = hardlink_volume(&vol);
    let mut bad = Vec::new();
    for (name, partner) in [("d/hl", "c/first"), ("d/b.txt", "d/a.txt")] {
        let t = work.path().join(format!("t-{}", name.replace('/', "_")));
        let out = spool
            .cmd()
            .args(["restore", "v", "--to"])
            .arg(&t)
            .arg(name)
            .output()
            .expect("run reel restore");
        println!(
            "restore of {name} alone: {} {}",
            out.status,
            first_line(&out.stderr)
        );
        if !out.status.success() {
            bad.push(format!(
                "{name}: the restore failed: {}",
                first_line(&out.stderr)
            ));
            continue;
        }
        let now = walk_tree(&t);
        bad.extend(file_diffs(
            name,
            &dumped[name.as_bytes()],
            now.get(name.as_bytes()),
        ));
        if now.contains_key(partner.as_bytes()) {
            bad.push(format!(
                "{partner}: restored, but only {name} was asked for"
            ));
        }
    }
    if !bad.is_empty() {
        fail_with("restoring one name of a hard-link group", &bad);
    }
}

/// Restoring subtree `b`, whose files `y` and `z` are links to `a/x` (outside the subtree),
/// into an empty target: `b/y` and `b/z` restore as one inode with the dump's content and
/// metadata, `b` equals the dumped `b`, and `a` is not restored.
#[test]
fn hardlink_subtree_restores_without_the_partners_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    let vol = work.path().join("vol");
    let (spool, _) = hardlink_volume(&vol);
    let dumped_b = walk_tree(&vol.join("b"));
    let t = work.path().join("t");
    let out = spool
        .cmd()
        .args(["restore", "v", "--to"])
        .arg(&t)
        .arg("b")
        .output()
        .expect("run reel restore");
    println!("restore of b: {} {}", out.status, first_line(&out.stderr));
    if !out.status.success() {
        fail_with(
            "restore of subtree b (its links' first name is a/x)",
            &[format!("the restore failed: {}", first_line(&out.stderr))],
        );
    }
    let mut bad = fidelity_diffs(&dumped_b, &walk_tree(&t.join("b")));
    if t.join("a").exists() {
        bad.push("a: restored, but only b was asked for".into());
    }
    if !bad.is_empty() {
        fail_with("restore of subtree b", &bad);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A directory swapped for a file during a dump
// ---------------------------------------------------------------------------------------------

/// Files in `m_dir`.
const M_FILES: usize = 60;

fn m_child(i: usize) -> Vec<u8> {
    format!("m_dir/f{i}: the directory's own file\n")
        .repeat(20 + i * 7)
        .into_bytes()
}

const M_FILE: &[u8] = b"m_dir swapped in as a file\n";

/// `m_dir` (60 files) is exchanged with a file (RENAME_EXCHANGE with a name outside the
/// volume) during each of ten dumps: in every other round once, the moment the scan opens
/// the directory to list it (inotify), in the others as fast as possible all through the dump.
/// Every dump must succeed: `m_dir` is stored as the directory (each file with its bytes, or
/// named in a warning) or as the file, or left out and named; the rest of the volume is
/// stored exactly.
#[test]
fn type_swap_during_a_dump_is_skipped_or_reread_and_named() {
    const ROUNDS: usize = 10;
    let work = tempfile::tempdir().expect("tempdir");
    let vol = work.path().join("vol");
    let m_dir = vol.join("m_dir");
    fs::create_dir_all(&m_dir).expect("mkdir");
    for i in 1..=M_FILES {
        fs::write(m_dir.join(format!("f{i}")), m_child(i)).expect("write");
    }
    // Empty files walked after m_dir and before its files are read: time for the attacker.
    filler(&vol.join("n_filler"));
    stable_tree(&vol.join("keep"), 0xC0DE);
    let keep = walk_tree(&vol.join("keep"));
    let park = work.path().join("park");
    fs::create_dir_all(&park).expect("mkdir");
    fs::write(park.join("m_dir"), M_FILE).expect("write");
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let mut bad = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (a, b) = (m_dir.clone(), park.join("m_dir"));
        let timed = round % 2 == 0;
        let mutator = if timed {
            // One swap, at the worst moment: the directory becomes the file as soon as the
            // scan opens it to list it.
            if !fs::symlink_metadata(&a).expect("lstat m_dir").is_dir() {
                exchange(&a, &b).expect("RENAME_EXCHANGE");
            }
            let watch = Watch::new(&a, libc::IN_OPEN);
            let (stop, ops) = (Arc::clone(&stop), Arc::clone(&ops));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if watch.wait_for(libc::IN_OPEN, Duration::from_millis(50)) {
                        exchange(&a, &b).expect("RENAME_EXCHANGE");
                        ops.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            })
        } else {
            // Swaps as fast as it can, already running when the dump starts.
            let m = spawn_mutator(&stop, &ops, move || {
                exchange(&a, &b).expect("RENAME_EXCHANGE")
            });
            wait_until_running(&ops);
            m
        };
        // m_dir caught as a file leaves less than half the bytes of the last dump: that is
        // the attack, not a lost volume, so the shrink guard stands aside.
        let out = spool
            .cmd()
            .args(["dump", "v", "--level", "0", "--allow-shrink"])
            .output()
            .expect("run reel dump");
        stop.store(true, Ordering::Relaxed);
        mutator.join().expect("mutator panicked");
        let swaps = ops.load(Ordering::Relaxed);
        if !out.status.success() {
            failed += 1;
            println!(
                "type swap round {round} ({}): {} after {swaps} swaps: {}",
                if timed { "timed" } else { "fast" },
                out.status,
                first_line(&out.stderr)
            );
            bad.push(format!(
                "round {round}: the dump failed: {}",
                first_line(&out.stderr)
            ));
            continue;
        }
        ok += 1;
        let id = last_dump_id(&spool);
        let warnings = dump_warnings(&spool, id);
        // Restore what is judged (not the filler): `keep`, and `m_dir` if the dump has it.
        let r = work.path().join(format!("r{round}"));
        let listed = dump_paths(&spool, id);
        let mut restore = spool.cmd();
        restore
            .args(["restore", "v", "--dump", &id.to_string(), "--to"])
            .arg(&r)
            .arg("keep");
        if listed.contains("m_dir") {
            restore.arg("m_dir");
        }
        run_ok(&mut restore);
        let tree = walk_tree(&r);
        let mut problems: Vec<String> = fidelity_diffs(&keep, &walk_tree(&r.join("keep")))
            .into_iter()
            .map(|d| format!("keep/{d}"))
            .collect();
        let hash = |b: &[u8]| Some(blake3::hash(b).to_hex().to_string());
        let state = match tree.get(&b"m_dir"[..]) {
            None if warned(&warnings, "m_dir") => "left out (named)",
            None => {
                problems.push("m_dir: missing, and no warning names it".into());
                "missing"
            }
            Some(n) if n.kind == "file" => {
                if n.hash != hash(M_FILE) {
                    problems.push(format!(
                        "m_dir: a file that never was: {}",
                        show_head(&n.head)
                    ));
                }
                "the file"
            }
            Some(n) if n.kind == "dir" => {
                for i in 1..=M_FILES {
                    let rel = format!("m_dir/f{i}");
                    match tree.get(rel.as_bytes()) {
                        None if warned(&warnings, &rel) => {}
                        None => problems.push(format!("{rel}: missing, and no warning names it")),
                        Some(c) if c.kind == "file" && c.hash == hash(&m_child(i)) => {}
                        Some(c) => problems.push(format!(
                            "{rel}: never held {} {}",
                            c.kind,
                            show_head(&c.head)
                        )),
                    }
                }
                "the directory"
            }
            Some(n) => {
                problems.push(format!("m_dir: a {} that never was", n.kind));
                "other"
            }
        };
        for rel in tree.keys() {
            let s = String::from_utf8_lossy(rel);
            let known = s.is_empty()
                || s == "m_dir"
                || s.starts_with("keep")
                || s.strip_prefix("m_dir/f")
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| (1..=M_FILES).contains(&i));
            if !known {
                problems.push(format!("{s}: a name the volume never held"));
            }
        }
        println!(
            "type swap round {round} ({}): dump {id} ok after {swaps} swaps; m_dir stored as \
             {state}; {} warning(s); {} problem(s)",
            if timed { "timed" } else { "fast" },
            warnings.len(),
            problems.len()
        );
        for w in warnings.iter().take(3) {
            println!("    warning: {w}");
        }
        bad.extend(problems.into_iter().map(|p| format!("round {round}: {p}")));
    }
    println!("TYPE SWAP: rounds={ROUNDS} dump_ok={ok} dump_failed={failed}");
    if !bad.is_empty() {
        fail_with(
            &format!("{failed} of {ROUNDS} dumps failed while m_dir changed type"),
            &bad,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Deeper than PATH_MAX
// ---------------------------------------------------------------------------------------------

/// Nesting depth of the deep tree, and the length of each directory's name: a path of about
/// 40 KB, ten times PATH_MAX.
const DEEP_LEVELS: usize = 200;
const DEEP_NAME: usize = 200;

/// The name of the directory at `level` (1-based): unique, 200 bytes.
fn deep_name(level: usize) -> Vec<u8> {
    let mut n = format!("L{level:03}_").into_bytes();
    n.resize(DEEP_NAME, b'a' + (level % 26) as u8);
    n
}

/// The path, in the volume, of the directory at `level` (0: the root).
fn deep_rel(level: usize) -> Vec<u8> {
    let mut rel = Vec::new();
    for l in 1..=level {
        rel = join_rel(&rel, &deep_name(l));
    }
    rel
}

/// Removes the deep trees (by fd: path-based removal fails on them) when dropped, before the
/// temporary directory's own removal runs.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Err(e) = remove_tree(p) {
                eprintln!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// Builds, by fd at every step, 200 nested directories of 200-byte names under `root`, with
/// files at several depths (the deepest level included, one of 5 MiB there so that it is read
/// in segments), a symlink and a hard-link pair deep down, an xattr, and distinct modes and
/// mtimes on everything.
fn build_deep_tree(root: &Path) {
    fs::create_dir_all(root).expect("mkdir");
    let mut fds = vec![open_dir_path(root).expect("open root")];
    for level in 1..=DEEP_LEVELS {
        let parent = fds[level - 1].as_raw_fd();
        let mode = match level % 50 {
            0 => 0o700,
            7 => 0o750,
            _ => 0o755,
        };
        mkdir_at(parent, &deep_name(level), mode).expect("mkdirat");
        fds.push(open_dir_at(parent, &deep_name(level)).expect("open deep dir"));
    }
    let mut rng = Rng::new(0xDEE9);
    for (i, level) in [0usize, 1, 20, 29, 30, 31, 100, 150, 199, 200]
        .iter()
        .enumerate()
    {
        let body = rng.text(100 + 997 * i);
        let mode = [0o644, 0o600, 0o640, 0o444][i % 4];
        create_file_at(
            fds[*level].as_raw_fd(),
            format!("file_{level}.txt").as_bytes(),
            mode,
            &body,
        )
        .expect("create deep file");
    }
    let deepest = fds[DEEP_LEVELS].as_raw_fd();
    let mut big = Vec::with_capacity(5 << 20);
    let mut n = 0u64;
    while big.len() < 5 << 20 {
        big.extend_from_slice(format!("deepest large file, line {n:09}\n").as_bytes());
        n += 1;
    }
    let f = create_file_at(deepest, b"large.bin", 0o640, &big).expect("create large");
    set_xattr_fd(f.as_raw_fd(), "user.deep", b"forty kilobytes down");
    drop(f);
    // A hard link from level 120 to the deepest level, and a symlink at level 150.
    create_file_at(
        fds[120].as_raw_fd(),
        b"hard_a",
        0o600,
        b"one inode, two deep names\n",
    )
    .expect("create");
    link_at(fds[120].as_raw_fd(), b"hard_a", deepest, b"hard_b").expect("linkat");
    symlink_at(b"file_150.txt", fds[150].as_raw_fd(), b"link_150").expect("symlinkat");
    set_xattr_fd(fds[100].as_raw_fd(), "user.level", b"100");
    // Times: files first, then directories deepest first (setting times does not touch the
    // parent), then the root.
    let mut t = 1_650_000_000i64;
    for (level, fd) in fds.iter().enumerate() {
        for name in list_dir(fd.as_raw_fd()).expect("list") {
            if level < DEEP_LEVELS && name == deep_name(level + 1) {
                continue;
            }
            t += 17;
            set_times_at(fd.as_raw_fd(), &name, t, t % 1_000_000_000).expect("utimensat");
        }
    }
    for level in (1..=DEEP_LEVELS).rev() {
        t += 17;
        set_times_at(
            fds[level - 1].as_raw_fd(),
            &deep_name(level),
            t,
            999 - level as i64,
        )
        .expect("utimensat dir");
    }
    set_times_at(fds[0].as_raw_fd(), b".", t + 1, 1).expect("utimensat root");
}

both_kinds!(deeper_than_path_max_dumps_restores_lists_and_cats);
/// A volume whose deepest path is about 40 KB (200 nested 200-byte names) dumps, restores
/// exactly (names, kinds, modes, sizes, mtimes, bytes, symlink targets, xattrs, hard links:
/// compared by an fd-based walk), and `reel ls` and `reel cat` reach its deepest file: a user
/// who can write into a volume must not be able to stop its backups by nesting directories.
fn deeper_than_path_max_dumps_restores_lists_and_cats(kind: Kind) {
    let work = tempfile::tempdir().expect("tempdir");
    let vol = work.path().join("vol");
    let r = work.path().join("r");
    let _cleanup = RemoveOnDrop(vec![vol.clone(), r.clone()]);
    build_deep_tree(&vol);
    let source = walk_tree(&vol);
    let deepest_dir = deep_rel(DEEP_LEVELS);
    assert!(
        deepest_dir.len() > 9 * libc::PATH_MAX as usize,
        "not deep enough"
    );
    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    let dump = spool
        .cmd()
        .args(["dump", "v", "--level", "0"])
        .output()
        .expect("run reel dump");
    println!("deep dump: {} {}", dump.status, first_line(&dump.stderr));
    if !dump.status.success() {
        fail_with(
            &format!(
                "a volume {} bytes deep does not dump",
                deepest_dir.len() + "/large.bin".len()
            ),
            &[first_line(&dump.stderr)],
        );
    }
    let out = spool
        .cmd()
        .args(["restore", "v", "--to"])
        .arg(&r)
        .output()
        .expect("run reel restore");
    println!("deep restore: {} {}", out.status, first_line(&out.stderr));
    let mut bad = Vec::new();
    if out.status.success() {
        bad.extend(fidelity_diffs(&source, &walk_tree(&r)));
    } else {
        bad.push(format!("the restore failed: {}", first_line(&out.stderr)));
    }
    let large = join_rel(&deepest_dir, b"large.bin");
    let ls = spool
        .cmd()
        .args(["ls", "v", "--json"])
        .arg(OsStr::from_bytes(&deepest_dir))
        .output()
        .expect("run reel ls");
    let listed: Vec<String> = serde_json::from_slice::<serde_json::Value>(&ls.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect();
    let want = format!("/{}", String::from_utf8_lossy(&large));
    if !ls.status.success()
        || !listed
            .iter()
            .any(|p| *p == want || p.as_bytes() == &large[..])
    {
        bad.push(format!(
            "reel ls of the deepest directory ({}): {} entries, no large.bin; {}",
            ls.status,
            listed.len(),
            first_line(&ls.stderr)
        ));
    }
    let cat = spool
        .cmd()
        .args(["cat", "v"])
        .arg(OsStr::from_bytes(&large))
        .output()
        .expect("run reel cat");
    let root = open_dir_path(&vol).expect("open vol");
    let mut fd = open_dir_at(root.as_raw_fd(), b".").expect("dup");
    for level in 1..=DEEP_LEVELS {
        fd = open_dir_at(fd.as_raw_fd(), &deep_name(level)).expect("open deep");
    }
    let mut original = Vec::new();
    open_file_at(fd.as_raw_fd(), b"large.bin")
        .and_then(|mut f| f.read_to_end(&mut original))
        .expect("read the deepest file");
    if !cat.status.success() || cat.stdout != original {
        bad.push(format!(
            "reel cat of the deepest file ({}): {} bytes, expected {}; {}",
            cat.status,
            cat.stdout.len(),
            original.len(),
            first_line(&cat.stderr)
        ));
    }
    if !bad.is_empty() {
        fail_with("a volume deeper than PATH_MAX", &bad);
    }
}
