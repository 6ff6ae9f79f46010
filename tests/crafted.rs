//! Restore never writes outside `--to`, whatever names a damaged or crafted catalog holds.
//!
//! Why it is built this way: reel's own `ManifestWriter` refuses every bad entry, so the only
//! way to get a hostile manifest into a spool is to write its bytes by hand. This file has its
//! own tiny encoder that follows the manifest stream format (docs/FORMAT.md) byte for byte
//! (header, varints, zigzag deltas, presence flags, trailer with count and blake3) and shares
//! no code with `src/manifest.rs`, so a test of the reader is not a test of the writer against
//! itself. The
//! bytes are stored as `Manifest` chunks through the library's `StoreWriter` and a
//! `DumpRecord` is committed for them exactly as `src/dump.rs` does, in a spool that already
//! holds one real dump. Then the real `reel` binary restores, lists and cats them.
//!
//! What "nothing outside" means here: every test works in one scratch directory holding the
//! volume, a `sentinel` directory with one bait file (`passwd`) that the crafted names aim
//! at, and `restores/`, the parent of each restore target. Everything in it except the target
//! is snapshotted (type, size, mode, link count, inode, mtime, ctime, content, link target)
//! before the restore and compared after it, so a file created, written, chmodded, or hard
//! linked from outside is caught, not only a new name. A control case
//! (`a_valid_crafted_manifest_restores_exactly`) shows the encoder is right, so the refusals
//! are due to the rule each case breaks and not to a broken encoder.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Spool, run_fail};
use reel::ChunkId;
use reel::catalog::DumpRecord;
use reel::pack::BlobKind;
use reel::spool::Access;
use reel::store::StoreWriter;

// ---------------------------------------------------------------------------------------------
// A manifest encoder written from docs/FORMAT.md, without ManifestWriter's checks
// ---------------------------------------------------------------------------------------------

const T_DIR: u8 = 1;
const T_FILE: u8 = 2;
const T_SYMLINK: u8 = 3;
const T_HARDLINK: u8 = 4;

const F_MODE: u64 = 0x01;
const F_SIZE: u64 = 0x08;
const F_EXTENTS: u64 = 0x10;
const F_TARGET: u64 = 0x20;

/// One entry as the test wants it on disk: no rule is checked here.
#[derive(Clone, Debug)]
struct E {
    kind: u8,
    path: Vec<u8>,
    mode: u32,
    target: Vec<u8>,
    /// File content, stored as one chunk (empty: size 0, no extents).
    content: Vec<u8>,
    /// The size the entry declares, when it is not the content's length.
    size: Option<u64>,
}

fn dir(p: impl AsRef<[u8]>) -> E {
    E {
        kind: T_DIR,
        path: p.as_ref().to_vec(),
        mode: 0o755,
        target: Vec::new(),
        content: Vec::new(),
        size: None,
    }
}

fn file(p: impl AsRef<[u8]>, content: &[u8]) -> E {
    E {
        kind: T_FILE,
        path: p.as_ref().to_vec(),
        mode: 0o644,
        target: Vec::new(),
        content: content.to_vec(),
        size: None,
    }
}

fn symlink(p: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    E {
        kind: T_SYMLINK,
        path: p.as_ref().to_vec(),
        mode: 0o777,
        target: target.as_ref().to_vec(),
        content: Vec::new(),
        size: None,
    }
}

fn hardlink(p: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    E {
        kind: T_HARDLINK,
        path: p.as_ref().to_vec(),
        mode: 0o644,
        target: target.as_ref().to_vec(),
        content: Vec::new(),
        size: None,
    }
}

/// Unsigned LEB128.
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn bytes(buf: &mut Vec<u8>, b: &[u8]) {
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A base mtime (2026-01-01T00:00:00Z) for the crafted entries.
const MTIME0: i64 = 1_767_225_600_000_000_000;

/// Encode `entries` as a version-1 manifest stream with a correct trailer.
fn encode(entries: &[E]) -> Vec<u8> {
    let mut out = b"REELMAN\0".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    let (mut prev_path, mut prev_mode, mut prev_mtime, mut prev_ino) =
        (Vec::<u8>::new(), 0u32, 0i64, 0u64);
    for (i, e) in entries.iter().enumerate() {
        let mtime = MTIME0 + i as i64 * 1_000_000_007;
        let ino = 1000 + i as u64;
        let len = e.content.len() as u64;
        let size = e.size.unwrap_or(len);
        let mut flags = 0;
        if e.mode != prev_mode {
            flags |= F_MODE;
        }
        if size != 0 {
            flags |= F_SIZE;
        }
        if len != 0 {
            flags |= F_EXTENTS;
        }
        if !e.target.is_empty() {
            flags |= F_TARGET;
        }
        let mut body = vec![e.kind];
        varint(&mut body, flags);
        let shared = prev_path
            .iter()
            .zip(&e.path)
            .take_while(|(a, b)| a == b)
            .count();
        varint(&mut body, shared as u64);
        bytes(&mut body, &e.path[shared..]);
        if flags & F_MODE != 0 {
            varint(&mut body, e.mode.into());
        }
        // uid and gid: flags clear, so 0 like the entry before.
        varint(&mut body, zigzag(mtime.wrapping_sub(prev_mtime)));
        varint(&mut body, zigzag(0)); // ctime == mtime
        varint(&mut body, zigzag(ino.wrapping_sub(prev_ino) as i64));
        if flags & F_SIZE != 0 {
            varint(&mut body, size);
        }
        if flags & F_TARGET != 0 {
            bytes(&mut body, &e.target);
        }
        if flags & F_EXTENTS != 0 {
            varint(&mut body, 1);
            body.push(1); // chunk extent
            varint(&mut body, len);
            body.extend_from_slice(blake3::hash(&e.content).as_bytes());
        }
        varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        prev_path = e.path.clone();
        prev_mode = e.mode;
        prev_mtime = mtime;
        prev_ino = ino;
    }
    let mut body = vec![0u8];
    varint(&mut body, entries.len() as u64);
    varint(&mut out, body.len() as u64 + 32);
    out.extend_from_slice(&body);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

#[test]
fn encoder_matches_the_documented_examples() {
    let enc = |v| {
        let mut b = Vec::new();
        varint(&mut b, v);
        b
    };
    assert_eq!(enc(0), [0x00]);
    assert_eq!(enc(127), [0x7f]);
    assert_eq!(enc(128), [0x80, 0x01]);
    assert_eq!(enc(300), [0xac, 0x02]);
    assert_eq!(
        [zigzag(0), zigzag(-1), zigzag(1), zigzag(-2), zigzag(2)],
        [0, 1, 2, 3, 4]
    );
    // The library's reader accepts what this encoder writes for a valid tree.
    let m = encode(&[dir(""), dir("d"), file("d/f", b"abc"), hardlink("g", "d/f")]);
    let r = reel::manifest::ManifestReader::new(&m[..]).unwrap();
    let back: Vec<reel::Entry> = r.collect::<reel::Result<_>>().unwrap();
    assert_eq!(back.len(), 4);
    assert_eq!(back[2].path, b"d/f");
    assert_eq!(back[2].size, 3);
    assert_eq!(back[3].target, b"d/f");
}

// ---------------------------------------------------------------------------------------------
// Putting a crafted dump into a real spool
// ---------------------------------------------------------------------------------------------

/// Manifest bytes are stored in pieces of this size, so multi-chunk streams are exercised.
const PIECE: usize = 4096;
const DAY_NS: i64 = 86_400_000_000_000;

/// A spool with one real dump of volume `v`, and the scratch directory around it.
struct Fixture {
    spool: Spool,
    work: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let work = tempfile::tempdir().unwrap();
        let vol = work.path().join("vol");
        fs::create_dir_all(vol.join("sub")).unwrap();
        fs::write(vol.join("sub/real.txt"), b"a real file").unwrap();
        let sentinel = work.path().join("sentinel");
        fs::create_dir_all(&sentinel).unwrap();
        fs::write(sentinel.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::set_permissions(sentinel.join("passwd"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir_all(work.path().join("restores")).unwrap();
        let spool = Spool::new();
        spool.add_volume("v", &vol);
        spool.run(["dump", "v", "--level", "0", "--date", "2026-01-01"]);
        Fixture { spool, work }
    }

    fn sentinel(&self) -> PathBuf {
        self.work.path().join("sentinel")
    }

    fn sentinel_str(&self) -> String {
        self.sentinel().to_str().unwrap().to_string()
    }

    /// Store `manifest` (and the content of `entries`' files) and commit a dump record for it,
    /// as `src/dump.rs` does. Returns the new dump's id.
    fn add_dump(&self, entries: &[E], manifest: &[u8]) -> u64 {
        let sp = reel::spool::Spool::open(self.spool.path(), Access::Write).unwrap();
        let first = sp.catalog.latest_dump("v").unwrap().expect("the real dump");
        let mut store = StoreWriter::new(&sp).unwrap();
        let id = store.catalog().next_dump_id().unwrap();

        let data: Vec<(ChunkId, &[u8])> = entries
            .iter()
            .filter(|e| !e.content.is_empty())
            .map(|e| (ChunkId::of(&e.content), e.content.as_slice()))
            .collect();
        store.put_batch(&data, BlobKind::Data).unwrap();
        let pieces: Vec<(ChunkId, &[u8])> = manifest
            .chunks(PIECE)
            .map(|p| (ChunkId::of(p), p))
            .collect();
        store.put_batch(&pieces, BlobKind::Manifest).unwrap();
        let refs: Vec<ChunkId> = data.iter().chain(&pieces).map(|(id, _)| *id).collect();
        store.record_owned(id, &[], &refs).unwrap();
        let (owned_chunks, owned_bytes) = store.fold_owned(id).unwrap();

        let count = |k: u8| entries.iter().filter(|e| e.kind == k).count() as u64;
        let time_ns = first.time_ns + id as i64 * DAY_NS;
        let rec = DumpRecord {
            version: reel::record::DUMP_RECORD_VERSION,
            id,
            volume: "v".into(),
            time_ns,
            level: 0,
            requested_level: 0,
            base: None,
            chain: Vec::new(),
            merged_from: None,
            source: first.source.clone(),
            scan_started_ns: time_ns,
            duration_ns: 0,
            totals: reel::record::ScanTotals {
                entries: entries.len() as u64,
                files: count(T_FILE),
                dirs: count(T_DIR),
                logical_bytes: entries.iter().map(|e| e.content.len() as u64).sum(),
                ..Default::default()
            },
            owned_chunks,
            owned_bytes,
            manifest: pieces
                .iter()
                .map(|(id, p)| (id.0, p.len() as u32))
                .collect(),
            manifest_bytes: manifest.len() as u64,
            warnings: Vec::new(),
            host: None,
        };
        let blob = rec.encode();
        store
            .put_one(ChunkId::of(&blob), &blob, BlobKind::DumpRecord)
            .unwrap();
        let mut rec = rec;
        store
            .finish(|w, stats| {
                rec.totals.new_chunks = stats.new_chunks;
                rec.totals.stored_bytes = stats.stored_bytes;
                w.record_dump(&rec)?;
                w.set_next_dump_id(id + 1)
            })
            .unwrap();
        id
    }

    fn add(&self, entries: &[E]) -> u64 {
        self.add_dump(entries, &encode(entries))
    }

    /// A fresh, empty restore target under `restores/`.
    fn target(&self, name: &str) -> PathBuf {
        let t = self.work.path().join("restores").join(name);
        fs::create_dir_all(&t).unwrap();
        t
    }

    /// `reel ARGS...` on the fixture's spool: (exit code, stdout, stderr). Never panics on a
    /// non-zero exit; does panic if reel died by a signal.
    fn reel(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.spool.cmd().args(args).output().unwrap();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("reel {args:?} died by a signal: {:?}", out.status));
        (
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Restore dump `id` into a fresh target, checking that nothing outside the target changed.
    /// Returns (exit code, stderr, target).
    fn restore_guarded(&self, id: u64, name: &str) -> (i32, String, PathBuf) {
        let target = self.target(name);
        let before = snapshot(self.work.path(), &target);
        let parent_before = names(&self.work.path().join("restores"));
        let (code, _, err) = self.reel(&[
            "restore",
            "v",
            "--dump",
            &id.to_string(),
            "--to",
            target.to_str().unwrap(),
        ]);
        assert!(
            !err.contains("panicked"),
            "restore of dump {id} panicked: {err}"
        );
        let after = snapshot(self.work.path(), &target);
        let changed = diff(&before, &after);
        assert!(
            changed.is_empty(),
            "restore of dump {id} ({name}) changed things outside --to:\n{}\nstderr: {err}",
            changed.join("\n")
        );
        assert_eq!(
            names(&self.work.path().join("restores")),
            parent_before,
            "restore of dump {id} ({name}) added entries next to its target"
        );
        assert_eq!(
            names(&self.sentinel()),
            vec!["passwd".to_string()],
            "restore of dump {id} ({name}) wrote into the sentinel directory"
        );
        assert_eq!(
            fs::metadata(self.sentinel().join("passwd"))
                .unwrap()
                .nlink(),
            1,
            "restore of dump {id} ({name}) hard-linked the sentinel file"
        );
        (code, err, target)
    }

    /// Dump `id` is refused by restore, ls and cat: exit status 1, a message containing
    /// `expect`, no panic, nothing outside the target.
    fn refused(&self, id: u64, name: &str, cat_path: &str, expect: &str) {
        let (code, err, target) = self.restore_guarded(id, name);
        assert_eq!(code, 1, "restore of crafted dump {id} ({name}): {err}");
        assert!(
            err.contains(expect),
            "restore of crafted dump {id} ({name}) does not say '{expect}': {err}"
        );
        // The manifest is read in full before the first window is written (small manifests).
        assert!(
            names(&target).is_empty(),
            "restore of crafted dump {id} ({name}) wrote into the target before refusing: {:?}",
            names(&target)
        );

        let ids = id.to_string();
        let (code, _, err) = self.reel(&["ls", "v", "--dump", &ids]);
        assert_eq!(code, 1, "ls of crafted dump {id} ({name}): {err}");
        assert!(!err.contains("panicked"), "ls panicked: {err}");
        assert!(err.contains(expect), "ls of dump {id} ({name}): {err}");

        let (code, out, err) = self.reel(&["cat", "v", "--dump", &ids, cat_path]);
        assert_eq!(
            code, 1,
            "cat {cat_path} of crafted dump {id} ({name}): {err}"
        );
        assert!(!err.contains("panicked"), "cat panicked: {err}");
        assert!(err.contains(expect), "cat of dump {id} ({name}): {err}");
        assert!(
            out.is_empty(),
            "cat printed data of a refused manifest: {out}"
        );
    }
}

/// Every entry under `root` except `skip` (and what is below it): a description that changes
/// when anything about the entry changes, atime aside.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p == skip {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let mut desc = format!(
            "{:?} size={} mode={:o} nlink={} ino={} uid={} gid={} mtime={}.{} ctime={}.{}",
            md.file_type(),
            md.len(),
            md.mode(),
            md.nlink(),
            md.ino(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec()
        );
        if md.is_symlink() {
            desc += &format!(" -> {:?}", fs::read_link(&p).unwrap());
        } else if md.is_file() {
            desc += &format!(" blake3={}", blake3::hash(&fs::read(&p).unwrap()).to_hex());
        } else if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.insert(p, desc);
    }
    out
}

fn diff(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, x) in a {
        match b.get(p) {
            None => d.push(format!("removed {}: {x}", p.display())),
            Some(y) if x != y => d.push(format!("changed {}: {x}\n   now {y}", p.display())),
            _ => {}
        }
    }
    for (p, y) in b {
        if !a.contains_key(p) {
            d.push(format!("created {}: {y}", p.display()));
        }
    }
    d
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const DAMAGED: &str = "manifest damaged at byte";

// ---------------------------------------------------------------------------------------------
// The control: the encoder writes what reel accepts
// ---------------------------------------------------------------------------------------------

#[test]
fn a_valid_crafted_manifest_restores_exactly() {
    let fx = Fixture::new();
    let outside = format!("{}/passwd", fx.sentinel_str());
    // A symlink that points outside is legal (it is restored as a symlink, never followed).
    let entries = vec![
        dir(""),
        dir("d"),
        file("d/f", b"crafted but valid"),
        symlink("d/out", &outside),
        hardlink("h", "d/f"),
    ];
    let id = fx.add(&entries);
    let (code, err, t) = fx.restore_guarded(id, "control");
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(t.join("d/f")).unwrap(), b"crafted but valid");
    assert_eq!(fs::read_link(t.join("d/out")).unwrap(), Path::new(&outside));
    let (f, h) = (
        fs::metadata(t.join("d/f")).unwrap(),
        fs::metadata(t.join("h")).unwrap(),
    );
    assert_eq!(
        (f.ino(), f.nlink()),
        (h.ino(), 2),
        "h is not a hard link of d/f"
    );
    assert_eq!(f.mode() & 0o7777, 0o644);
    assert_eq!(f.mtime(), MTIME0 / 1_000_000_000 + 2);

    let (code, out, err) = fx.reel(&["ls", "v", "--dump", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("d/out -> "), "{out}");
    let (code, out, err) = fx.reel(&["cat", "v", "--dump", &id.to_string(), "h"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "crafted but valid");
}

// ---------------------------------------------------------------------------------------------
// Crafted manifests: restore refuses, and nothing appears outside --to
// ---------------------------------------------------------------------------------------------

#[test]
fn dot_dot_paths_are_refused() {
    let fx = Fixture::new();
    let cases = [
        ("../escape", vec![dir(""), file("../escape", b"pwned")]),
        (
            "../../escape",
            vec![dir(""), file("../../escape", b"pwned")],
        ),
        (
            "a/../../../sentinel/passwd",
            vec![
                dir(""),
                dir("a"),
                file("a/../../../sentinel/passwd", b"pwned"),
            ],
        ),
        ("..", vec![dir(""), dir("..")]),
    ];
    for (i, (path, entries)) in cases.into_iter().enumerate() {
        let id = fx.add(&entries);
        fx.refused(id, &format!("dotdot{i}"), path, DAMAGED);
    }
}

#[test]
fn absolute_paths_are_refused() {
    let fx = Fixture::new();
    let abs_file = format!("{}/passwd", fx.sentinel_str());
    let abs_new = format!("{}/new", fx.sentinel_str());
    for (i, path) in [abs_file, abs_new].iter().enumerate() {
        let id = fx.add(&[dir(""), file(path, b"pwned")]);
        fx.refused(id, &format!("abs{i}"), path, "is absolute");
    }
    // An absolute directory, with a file under it.
    let sdir = fx.sentinel_str();
    let id = fx.add(&[dir(""), dir(&sdir), file(format!("{sdir}/x"), b"pwned")]);
    fx.refused(id, "absdir", &format!("{sdir}/x"), "is absolute");
}

#[test]
fn empty_dot_and_nul_components_are_refused() {
    let fx = Fixture::new();
    let cases: [(&str, Vec<E>, &str); 5] = [
        (
            "z",
            vec![dir(""), dir("a"), file("a//b", b"x")],
            "empty component",
        ),
        (
            "z",
            vec![dir(""), dir("a"), file("a/", b"x")],
            "ends with '/'",
        ),
        (
            "z",
            vec![dir(""), dir("a"), file("a/./b", b"x")],
            "'.' component",
        ),
        ("z", vec![dir(""), file(".", b"x")], "'.' component"),
        ("z", vec![dir(""), file("a\0b", b"x")], "NUL"),
    ];
    for (i, (cat, entries, why)) in cases.into_iter().enumerate() {
        let id = fx.add(&entries);
        fx.refused(id, &format!("comp{i}"), cat, why);
    }
}

#[test]
fn a_file_below_a_symlink_is_refused() {
    let fx = Fixture::new();
    let s = fx.sentinel_str();
    let cases = [
        // `a` -> the sentinel directory (absolute), then `a/passwd` and `a/x` through it.
        vec![dir(""), symlink("a", &s), file("a/passwd", b"pwned")],
        vec![dir(""), symlink("a", &s), file("a/x", b"pwned")],
        // Relative symlink climbing out of the target, then a directory below it.
        vec![
            dir(""),
            symlink("a", "../../sentinel"),
            dir("a/d"),
            file("a/d/x", b"pwned"),
        ],
        // Deeper: a real directory, a symlink inside it, a file below the symlink.
        vec![
            dir(""),
            dir("d"),
            symlink("d/l", &s),
            file("d/l/x", b"pwned"),
        ],
    ];
    for (i, entries) in cases.into_iter().enumerate() {
        let cat = String::from_utf8(entries.last().unwrap().path.clone()).unwrap();
        let id = fx.add(&entries);
        fx.refused(
            id,
            &format!("sym{i}"),
            &cat,
            "is not a directory listed before",
        );
    }
}

#[test]
fn hard_links_leaving_the_volume_are_refused() {
    let fx = Fixture::new();
    let abs = format!("{}/passwd", fx.sentinel_str());
    let cases: [(&str, &str); 4] = [
        ("../../sentinel/passwd", "'..' component"),
        ("../../../../../../../../etc/passwd", "'..' component"),
        (&abs, "is absolute"),
        ("f/../../sentinel/passwd", "'..' component"),
    ];
    for (i, (target, why)) in cases.into_iter().enumerate() {
        let id = fx.add(&[dir(""), file("f", b"inside"), hardlink("h", target)]);
        fx.refused(id, &format!("hl{i}"), "h", why);
    }
    // A link to a later path, and to itself.
    let id = fx.add(&[dir(""), file("f", b"inside"), hardlink("g", "h")]);
    fx.refused(id, "hl-forward", "g", "not an earlier path");
    let id = fx.add(&[dir(""), hardlink("h", "h")]);
    fx.refused(id, "hl-self", "h", "not an earlier path");
}

#[test]
fn an_entry_without_its_parent_directory_is_refused() {
    let fx = Fixture::new();
    let cases = [
        // No `a` at all: the restore would have to invent it.
        vec![dir(""), file("a/x", b"pwned")],
        // `a` is a file, not a directory.
        vec![dir(""), file("a", b"q"), file("a/x", b"pwned")],
        // Back into a directory whose subtree was already left.
        vec![
            dir(""),
            dir("a"),
            dir("a/b"),
            file("a/c", b"c"),
            file("a/b/x", b"pwned"),
        ],
        // The root is missing: the first entry is not the root directory.
        vec![dir("a"), file("a/x", b"pwned")],
    ];
    let whys = [
        "parent 'a' is not a directory listed before",
        "parent 'a' is not a directory listed before",
        "out of order",
        "the first entry must be the root directory",
    ];
    for (i, (entries, why)) in cases.into_iter().zip(whys).enumerate() {
        let id = fx.add(&entries);
        fx.refused(id, &format!("parent{i}"), "a/x", why);
    }
}

#[test]
fn a_manifest_whose_trailer_does_not_verify_is_refused() {
    let fx = Fixture::new();
    let entries = [dir(""), file("f", b"fine")];
    let mut m = encode(&entries);
    let n = m.len();
    m[n - 1] ^= 0x01; // the trailer hash
    let id = fx.add_dump(&entries, &m);
    let (code, err, target) = fx.restore_guarded(id, "trailer");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(names(&target).is_empty(), "{:?}", names(&target));
    let (code, _, err) = fx.reel(&["ls", "v", "--dump", &id.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");

    // Count off by one, hash recomputed: a record dropped at a record boundary.
    let mut m = encode(&entries);
    let hash_at = m.len() - 32;
    let count_at = hash_at - 1;
    m[count_at] = 1;
    let h = blake3::hash(&m[..hash_at]);
    m[hash_at..].copy_from_slice(h.as_bytes());
    let id = fx.add_dump(&entries, &m);
    let (code, err, target) = fx.restore_guarded(id, "count");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("trailer counts 1 entries"), "{err}");
    assert!(names(&target).is_empty(), "{:?}", names(&target));
    let (code, _, err) = fx.reel(&["ls", "v", "--dump", &id.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("trailer counts 1 entries"), "{err}");
    // `cat f` is not checked here: see cat_refuses_a_manifest_whose_trailer_does_not_verify.
}

/// The escape comes after more entries than one restore window holds, so the restore has
/// written its first windows before it reads the bad record. It still stops there, and what it
/// wrote is inside the target.
#[test]
fn an_escape_after_the_first_restore_window_is_refused() {
    let fx = Fixture::new();
    let mut entries = vec![dir("")];
    for i in 0..9000 {
        entries.push(file(format!("f{i:05}"), b""));
    }
    entries.push(file("g/../../../sentinel/passwd", b"pwned"));
    let id = fx.add(&entries);
    let (code, err, target) = fx.restore_guarded(id, "late");
    // What the earlier windows wrote (8191 files today) are the listed files, in the target.
    let written = names(&target);
    assert!(written.iter().all(|n| n.starts_with('f')), "{written:?}");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(DAMAGED), "{err}");
    assert!(err.contains("'..' component"), "{err}");
}

/// The manifest passes every format rule, but a hard link's target reaches through a symlink
/// restored earlier in the same dump. The restore must not link the outside file in.
#[test]
fn a_hard_link_through_a_restored_symlink_is_refused() {
    let fx = Fixture::new();
    let s = fx.sentinel_str();
    let id = fx.add(&[dir(""), symlink("a", &s), hardlink("b", "a/passwd")]);
    let (code, err, target) = fx.restore_guarded(id, "hl-through-symlink");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a/passwd"), "{err}");
    assert!(!target.join("b").exists(), "b was created");
}

/// Hard links to things that are not regular files: a restore fails cleanly (the manifest's
/// hard links are other names of earlier regular files), and nothing outside changes.
#[test]
fn a_hard_link_to_a_non_file_is_refused_cleanly() {
    let fx = Fixture::new();
    let outside = format!("{}/passwd", fx.sentinel_str());
    let cases = [
        vec![dir(""), symlink("s", &outside), hardlink("t", "s")],
        vec![dir(""), dir("d"), hardlink("h", "d")],
        vec![dir(""), hardlink("h", "a")], // never listed
    ];
    for (i, entries) in cases.into_iter().enumerate() {
        let id = fx.add(&entries);
        let (code, err, _) = fx.restore_guarded(id, &format!("hl-nonfile{i}"));
        assert_eq!(code, 1, "case {i}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Damage on disk
// ---------------------------------------------------------------------------------------------

/// Flip one byte inside the stored bytes of chunk `id`, wherever its pack is.
fn flip_chunk_byte(spool: &Path, id: &ChunkId) -> PathBuf {
    let (path, offset, len) = {
        let sp = reel::spool::Spool::open(spool, Access::Read).unwrap();
        let reader = reel::store::ChunkReader::new(&sp).unwrap();
        let loc = reader.locate(id).unwrap().expect("chunk in the index");
        assert_eq!(loc.kind, BlobKind::Manifest);
        (
            reader.pack_path(loc.pack_no).unwrap(),
            loc.offset,
            loc.stored_len,
        )
    };
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = offset + u64::from(len) / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x10;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
    path
}

#[test]
fn a_flipped_manifest_chunk_is_named_and_nothing_is_written() {
    let fx = Fixture::new();
    // The real dump's manifest, and a crafted but valid one whose second piece gets the flip.
    let real = reel::spool::Spool::open(fx.spool.path(), Access::Read)
        .unwrap()
        .catalog
        .dump(1)
        .unwrap()
        .unwrap();
    let mut entries = vec![dir(""), dir("d")];
    for i in 0..1000 {
        entries.push(file(format!("d/file-with-a-long-name-{i:04}"), b""));
    }
    let id = fx.add(&entries);
    let crafted = reel::spool::Spool::open(fx.spool.path(), Access::Read)
        .unwrap()
        .catalog
        .dump(id)
        .unwrap()
        .unwrap();
    assert!(crafted.manifest.len() >= 2, "want a multi-chunk manifest");

    for (rec, piece) in [(&real, 0usize), (&crafted, 1)] {
        let cid = ChunkId(rec.manifest[piece].0);
        let pack = flip_chunk_byte(fx.spool.path(), &cid);
        let (code, err, target) = fx.restore_guarded(rec.id, &format!("flip{}", rec.id));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("damaged"), "{err}");
        assert!(
            err.contains(&format!("manifest of dump {}", rec.id)),
            "the error does not name the manifest: {err}"
        );
        let pack_name = pack.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(pack_name),
            "the error does not name the pack: {err}"
        );
        assert!(names(&target).is_empty(), "{:?}", names(&target));
        for args in [
            vec!["ls", "v", "--dump", &rec.id.to_string()],
            vec!["cat", "v", "--dump", &rec.id.to_string(), "zzz"],
        ] {
            let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
            let (code, _, err) = fx.reel(&args);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(err.contains("damaged"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    // `check --read-data` agrees.
    let (code, _) = run_fail(fx.spool.cmd().args(["check", "--read-data"]));
    assert_eq!(code, 1);
}

/// `reel cat` stops reading the manifest at the entry it wants, before the trailer is checked,
/// so a manifest whose later bytes are damaged is not noticed (docs/FORMAT.md: a
/// consumer must not trust the stream until the reader returned `None`). The chunks it prints
/// are hash-verified, so no wrong bytes come out of a single bit flip; this records the gap.
#[test]
fn cat_refuses_a_manifest_whose_trailer_does_not_verify() {
    let fx = Fixture::new();
    let entries = [dir(""), file("f", b"fine")];
    let mut m = encode(&entries);
    let n = m.len();
    m[n - 1] ^= 0x01;
    let id = fx.add_dump(&entries, &m);
    let (code, _, err) = fx.reel(&["cat", "v", "--dump", &id.to_string(), "f"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn the_snapshot_sees_what_an_escape_would_do() {
    // The guard itself must be able to fail: a hard link to the bait and a new file are seen.
    let fx = Fixture::new();
    let skip = fx.work.path().join("restores/none");
    let before = snapshot(fx.work.path(), &skip);
    fs::hard_link(
        fx.sentinel().join("passwd"),
        fx.work.path().join("restores/x"),
    )
    .unwrap();
    let after = snapshot(fx.work.path(), &skip);
    let d = diff(&before, &after);
    assert!(d.iter().any(|l| l.contains("created")), "{d:?}");
    assert!(d.iter().any(|l| l.contains("nlink=1")), "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// Crafted tapes: verify-tape and import refuse what restore would refuse
// ---------------------------------------------------------------------------------------------

/// The fixture's real dump exported to a tape image, and that image extracted into a payload
/// directory: what a crafted tape is made from.
fn exported(fx: &Fixture) -> PathBuf {
    let img = fx.work.path().join("real.tape");
    fx.spool
        .run(["export", "--to", img.to_str().unwrap(), "--label", "REAL"]);
    let dir = fx.work.path().join("real-payload");
    fs::create_dir_all(&dir).unwrap();
    reel::tape::image::extract_image(&[img], &dir).unwrap();
    dir
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// A tape like the one extracted in `src` whose dump's manifest is `manifest` instead. The
/// bytes go into a new pack of their own (named by its blake3) and the CATALOG lists that pack
/// and names the new manifest chunk, so every hash, size and count on the tape agrees; only the
/// manifest's content is wrong. Returns the image.
fn crafted_tape(fx: &Fixture, src: &Path, name: &str, manifest: &[u8]) -> PathBuf {
    let dir = fx.work.path().join(format!("{name}-payload"));
    fs::create_dir_all(dir.join("reel/packs")).unwrap();
    for rel in ["reel/LABEL", "reel/CATALOG"] {
        fs::copy(src.join(rel), dir.join(rel)).unwrap();
    }
    for e in fs::read_dir(src.join("reel/packs")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.join("reel/packs").join(e.file_name())).unwrap();
    }
    let stage = fx.work.path().join(format!("{name}-stage"));
    fs::create_dir_all(&stage).unwrap();
    let id = ChunkId::of(manifest);
    let mut w = reel::pack::PackWriter::create(&stage, &reel::crypto::Keys::plain()).unwrap();
    w.add(
        id,
        BlobKind::Manifest,
        &reel::pack::encode_blob(manifest, 3),
    )
    .unwrap();
    let done = w.finish(&stage.join("packs")).unwrap();
    let pack_name = done.id.to_hex();
    fs::rename(
        &done.path,
        dir.join("reel/packs").join(format!("{pack_name}.pack")),
    )
    .unwrap();

    let cpath = dir.join("reel/CATALOG");
    let mut cat = read_json(&cpath);
    cat["packs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": pack_name, "size": done.size, "blobs": 1, "chunks": 1
        }));
    let d = &mut cat["dumps"][0];
    d["manifest"] = serde_json::json!([{"id": id.to_hex(), "len": manifest.len()}]);
    d["manifest_bytes"] = serde_json::json!(manifest.len());
    d["chunks"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(id.to_hex()));
    d["packs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(pack_name));
    fs::write(&cpath, serde_json::to_vec_pretty(&cat).unwrap()).unwrap();

    // The image: LABEL, CATALOG, then the packs in the CATALOG's order, as export writes it.
    let mut files = vec![PathBuf::from("reel/LABEL"), PathBuf::from("reel/CATALOG")];
    for p in cat["packs"].as_array().unwrap() {
        files.push(PathBuf::from(format!(
            "reel/packs/{}.pack",
            p["name"].as_str().unwrap()
        )));
    }
    let img = fx.work.path().join(format!("{name}.tape"));
    reel::tape::image::write_image(
        &dir,
        &files,
        cat["label"].as_str().unwrap(),
        reel::tape::bsd::Target::File(img.clone()),
        10,
    )
    .unwrap();
    img
}

/// What an import could change: the dumps, the media catalog and the pack files.
fn spool_state(s: &Spool) -> (serde_json::Value, String, Vec<PathBuf>) {
    let mut packs = Vec::new();
    let mut stack = vec![s.path().join("packs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                packs.push(p);
            }
        }
    }
    packs.sort();
    (s.list_json(), s.run(["tapes", "--json"]), packs)
}

/// A tape whose manifest holds a `../escape` name, or a file whose extents do not add up to
/// its size, with every hash on it consistent: `verify-tape` fails naming the dump and the
/// problem, `import` refuses it and changes nothing. A control tape crafted the same way with a
/// valid manifest passes both and restores, so each refusal is due to the rule its case breaks.
#[test]
fn crafted_tapes_whose_manifest_is_bad_fail_verify_and_import() {
    let fx = Fixture::new();
    let src = exported(&fx);
    let dump = format!(
        "v@{}",
        read_json(&src.join("reel/CATALOG"))["dumps"][0]["time"]
            .as_str()
            .unwrap()
    );
    let real: &[u8] = b"a real file";

    let control = encode(&[dir(""), dir("sub"), file("sub/real.txt", real)]);
    let img = crafted_tape(&fx, &src, "control", &control);
    let out = fx.spool.run(["verify-tape", img.to_str().unwrap()]);
    assert!(out.contains("is good"), "{out}");
    let other = Spool::new();
    other.run(["import", img.to_str().unwrap()]);
    let to = fx.target("control-restore");
    other.run(["restore", "v", "--dump", "1", "--to", to.to_str().unwrap()]);
    assert_eq!(fs::read(to.join("sub/real.txt")).unwrap(), real);

    let fresh = Spool::new();
    let wrong_size = E {
        size: Some(real.len() as u64 + 1),
        ..file("sub/real.txt", real)
    };
    let cases = [
        (
            "escape",
            encode(&[dir(""), file("../escape", real)]),
            "'..' component",
        ),
        (
            "extents",
            encode(&[dir(""), dir("sub"), wrong_size]),
            "extents cover 11 bytes but the file size is 12",
        ),
    ];
    for (name, manifest, why) in cases {
        let img = crafted_tape(&fx, &src, name, &manifest);
        let shown = img.to_str().unwrap();
        let (code, err) = fx.spool.fail(["verify-tape", shown]);
        println!("{name}: {}", err.trim());
        assert_eq!(code, 1, "{name}: {err}");
        for part in [dump.as_str(), why, shown] {
            assert!(
                err.contains(part),
                "{name}: verify-tape does not say {part:?}: {err}"
            );
        }
        let before = spool_state(&fresh);
        let (code, err) = fresh.fail(["import", shown]);
        assert_eq!(code, 1, "{name}: {err}");
        for part in [dump.as_str(), why, shown] {
            assert!(
                err.contains(part),
                "{name}: import does not say {part:?}: {err}"
            );
        }
        assert_eq!(
            spool_state(&fresh),
            before,
            "{name}: the import changed the spool"
        );
    }
    fresh.run(["check"]);
}
