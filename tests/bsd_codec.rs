//! The BSD dump codec against the real tools: our reader on images made by the stock `dump`
//! (compared with the fixtures' `restore -t` listings and extracted-tree manifests), our writer
//! through the stock `restore -t` / `restore -x` (single and multi-volume), the round trip
//! writer → reader, and bad input (truncation, damaged headers, foreign files, missing volumes,
//! names that try to escape).
//!
//! Tests that need the stock `restore` print "skipped: restore not installed" without it; tests
//! that need the fixtures (tests/fixtures/bsd-dump) print a skip line when they are absent.

mod common;

use common::sha256::Sha256;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reel::tape::bsd::format::{DT_DIR, Header, TP_BSIZE, dtype_of_mode};
use reel::tape::bsd::{
    BitMap, DirEntry, DumpInfo, DumpReader, DumpWriter, InodeKind, InodeMeta, Piece, Target, paths,
    volume_path,
};

// ---------------------------------------------------------------------------------------------
// SHA-256 (tests/common/sha256.rs): the fixtures' manifests name files by sha256/16
// ---------------------------------------------------------------------------------------------

#[test]
fn sha256_known_answers() {
    assert_eq!(
        Sha256::new().hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut s = Sha256::new();
    s.update(b"abc");
    assert_eq!(
        s.hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

// ---------------------------------------------------------------------------------------------
// Reading a dump into a model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Obj {
    meta: InodeMeta,
    /// sha256 hex of a regular file's content.
    sha: Option<String>,
    target: Vec<u8>,
    /// Bytes of the file that were holes.
    hole_bytes: u64,
}

struct Model {
    info: DumpInfo,
    in_use: BitMap,
    dumped: BitMap,
    dirs: BTreeMap<u32, Vec<DirEntry>>,
    objs: BTreeMap<u32, Obj>,
}

fn read_model(vols: &[PathBuf]) -> reel::Result<Model> {
    let mut r = DumpReader::open(vols)?;
    let mut dirs = BTreeMap::new();
    let mut objs = BTreeMap::new();
    let zeros = vec![0u8; 64 * 1024];
    while let Some(inode) = r.next()? {
        let mut obj = Obj {
            meta: inode.meta,
            sha: None,
            target: Vec::new(),
            hole_bytes: 0,
        };
        match inode.kind {
            InodeKind::Dir(entries) => {
                dirs.insert(inode.ino, entries);
            }
            InodeKind::File => {
                let mut h = Sha256::new();
                let mut total = 0u64;
                while let Some(p) = r.piece()? {
                    match p {
                        Piece::Data(d) => {
                            h.update(d);
                            total += d.len() as u64;
                        }
                        Piece::Hole(mut n) => {
                            total += n;
                            obj.hole_bytes += n;
                            while n > 0 {
                                let k = n.min(zeros.len() as u64) as usize;
                                h.update(&zeros[..k]);
                                n -= k as u64;
                            }
                        }
                    }
                }
                assert_eq!(
                    total, inode.meta.size,
                    "inode {}: pieces vs size",
                    inode.ino
                );
                obj.sha = Some(h.hex());
            }
            InodeKind::Symlink(t) => obj.target = t,
            InodeKind::Special => {}
        }
        objs.insert(inode.ino, obj);
    }
    Ok(Model {
        info: r.info().clone(),
        in_use: r.in_use().clone(),
        dumped: r.dumped().clone(),
        dirs,
        objs,
    })
}

fn type_letter(mode: u32) -> char {
    match mode & 0o170000 {
        0o100000 => 'f',
        0o040000 => 'd',
        0o120000 => 'l',
        0o010000 => 'p',
        0o020000 => 'c',
        0o060000 => 'b',
        0o140000 => 's',
        _ => '?',
    }
}

/// The fixtures' manifest format (tools/manifest.py), for the tree named by `dirs` and `objs`
/// with `present` the inodes to follow; lost+found left out.
fn manifest(
    dirs: &BTreeMap<u32, Vec<DirEntry>>,
    objs: &BTreeMap<u32, Obj>,
    present: &BitMap,
) -> String {
    let all = paths(dirs, present).expect("paths");
    let mut names: BTreeMap<u32, usize> = BTreeMap::new();
    for (ino, _) in &all {
        *names.entry(*ino).or_default() += 1;
    }
    let mut rows: Vec<(Vec<u8>, String)> = Vec::new();
    for (ino, path) in all {
        if path.is_empty() || path.starts_with(b"lost+found") {
            continue;
        }
        let o = &objs[&ino];
        let t = type_letter(o.meta.mode);
        let size = if "fl".contains(t) {
            o.meta.size.to_string()
        } else {
            "-".into()
        };
        let nlink = if t == 'd' {
            "-".into()
        } else {
            names[&ino].to_string()
        };
        let mut extra = String::new();
        if t == 'l' {
            extra = format!(" -> {}", String::from_utf8_lossy(&o.target));
        }
        if t == 'c' || t == 'b' {
            let d = o.meta.rdev as libc::dev_t;
            extra = format!(" rdev={},{}", libc::major(d), libc::minor(d));
        }
        let sha = o
            .sha
            .as_ref()
            .map_or("-".to_string(), |s| s[..16].to_string());
        let line = format!(
            "{t} {:04o} {}:{} size={size} nlink={nlink} mtime={} sha256/16={sha} ./{}{extra}",
            o.meta.mode & 0o7777,
            o.meta.uid,
            o.meta.gid,
            o.meta.mtime_ns.div_euclid(1_000_000_000),
            String::from_utf8_lossy(&path),
        );
        rows.push((path, line));
    }
    rows.sort();
    rows.into_iter().map(|(_, l)| l + "\n").collect()
}

/// `restore -t` lines (after the header lines) from our reader.
fn listing(m: &Model) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, path) in paths(&m.dirs, &m.dumped).expect("paths") {
        out.extend_from_slice(format!("{ino:>10}\t").as_bytes());
        if path.is_empty() {
            out.push(b'.');
        } else {
            out.extend_from_slice(b"./");
            out.extend_from_slice(&path);
        }
        out.push(b'\n');
    }
    out
}

/// The lines of a `restore -t` output that list names (they start with spaces).
fn listed_lines(out: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for line in out.split(|&b| b == b'\n') {
        if line.starts_with(b" ") {
            v.extend_from_slice(line);
            v.push(b'\n');
        }
    }
    v
}

/// The real `dump` images made by the stock `dump` (tests/fixtures/bsd-dump, with its README),
/// kept in the repository so that a clean clone tests against them.
fn fixtures() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bsd-dump");
    if p.join("level0.dump").exists() {
        Some(p)
    } else {
        eprintln!("skipped: fixtures not found at {}", p.display());
        None
    }
}

fn restore_installed() -> bool {
    let ok = Command::new("restore")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("skipped: restore not installed");
    }
    ok
}

fn mv_vols(fx: &Path) -> Vec<PathBuf> {
    (1..=3)
        .map(|i| fx.join(format!("multivol.dump00{i}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The reader on real dump images
// ---------------------------------------------------------------------------------------------

#[test]
fn reader_matches_fixture_level0() {
    let Some(fx) = fixtures() else { return };
    let m = read_model(&[fx.join("level0.dump")]).unwrap();
    assert_eq!(m.info.level, 0);
    assert_eq!(m.info.date, 1795658571);
    assert_eq!(m.info.ddate, 0);
    assert_eq!(m.info.label, "testvol");
    assert_eq!(m.info.host, "testhost");
    assert_eq!(m.info.dev, "img.ext2");
    assert_eq!(m.info.ntrec, 10);
    let want = fs::read_to_string(fx.join("level0.extracted-manifest.txt")).unwrap();
    assert_eq!(manifest(&m.dirs, &m.objs, &m.dumped), want);
    let want_t = listed_lines(&fs::read(fx.join("level0.restore-t.txt")).unwrap());
    assert_eq!(
        String::from_utf8_lossy(&listing(&m)),
        String::from_utf8_lossy(&want_t)
    );
    // The sparse file's holes come back as holes (data 0-8 KiB and 4 KiB at 1 MiB).
    assert_eq!(m.objs[&30].hole_bytes, 2_097_252 - 12 * 1024);
    assert!(m.in_use.get(7) && !m.dumped.get(7));
}

#[test]
fn reader_matches_fixture_level1_applied_on_level0() {
    let Some(fx) = fixtures() else { return };
    let l0 = read_model(&[fx.join("level0.dump")]).unwrap();
    let l1 = read_model(&[fx.join("level1.dump")]).unwrap();
    assert_eq!((l1.info.level, l1.info.ddate), (1, l0.info.date));
    let want_t = listed_lines(&fs::read(fx.join("level1.restore-t.txt")).unwrap());
    assert_eq!(
        String::from_utf8_lossy(&listing(&l1)),
        String::from_utf8_lossy(&want_t)
    );
    // What restore -r does: keep the inodes still in use, replace the dumped ones.
    let mut dirs = BTreeMap::new();
    let mut objs = BTreeMap::new();
    for (ino, d) in l0.dirs.iter().chain(l1.dirs.iter()) {
        if l1.in_use.get(*ino) {
            dirs.insert(*ino, d.clone());
        }
    }
    for (ino, o) in l0.objs.iter().chain(l1.objs.iter()) {
        if l1.in_use.get(*ino) {
            objs.insert(*ino, o.clone());
        }
    }
    let want = fs::read_to_string(fx.join("after-level1.extracted-manifest.txt")).unwrap();
    assert_eq!(manifest(&dirs, &objs, &l1.in_use), want);
}

#[test]
fn reader_matches_fixture_multivolume() {
    let Some(fx) = fixtures() else { return };
    let m = read_model(&mv_vols(&fx)).unwrap();
    let want = fs::read_to_string(fx.join("multivol.extracted-manifest.txt")).unwrap();
    assert_eq!(manifest(&m.dirs, &m.objs, &m.dumped), want);
    let want_t = listed_lines(&fs::read(fx.join("multivol.restore-t.txt")).unwrap());
    assert_eq!(listing(&m), want_t);
}

// ---------------------------------------------------------------------------------------------
// Writing a tree
// ---------------------------------------------------------------------------------------------

struct Node {
    path: Vec<u8>,
    abs: PathBuf,
    md: fs::Metadata,
}

/// A tree numbered for a dump: root 2, others from 3 in walk order by (dev, ino).
struct Numbered {
    nodes: BTreeMap<u32, Node>,
    /// dir ino -> (parent, entries)
    dirs: BTreeMap<u32, (u32, Vec<DirEntry>)>,
    /// Walk order (pre-order, sorted names), as restore -t lists it.
    order: Vec<(u32, Vec<u8>)>,
    maxino: u32,
}

fn number_tree(root: &Path) -> Numbered {
    let mut t = Numbered {
        nodes: BTreeMap::new(),
        dirs: BTreeMap::new(),
        order: vec![(2, Vec::new())],
        maxino: 3,
    };
    let mut ids: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    let md = fs::symlink_metadata(root).unwrap();
    ids.insert((md.dev(), md.ino()), 2);
    t.nodes.insert(
        2,
        Node {
            path: Vec::new(),
            abs: root.to_path_buf(),
            md,
        },
    );
    fn walk(
        t: &mut Numbered,
        ids: &mut BTreeMap<(u64, u64), u32>,
        dir_ino: u32,
        parent: u32,
        abs: &Path,
        rel: &[u8],
    ) {
        let mut names: Vec<Vec<u8>> = fs::read_dir(abs)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        let mut entries = Vec::new();
        let mut subdirs = Vec::new();
        for name in names {
            let p = abs.join(OsStr::from_bytes(&name));
            let md = fs::symlink_metadata(&p).unwrap();
            let key = (md.dev(), md.ino());
            let ino = *ids.entry(key).or_insert_with(|| {
                t.maxino += 1;
                t.maxino - 1
            });
            let mut path = rel.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            entries.push(DirEntry {
                name,
                ino,
                dtype: dtype_of_mode(md.mode()),
            });
            let is_dir = md.is_dir();
            t.nodes.entry(ino).or_insert(Node {
                path: path.clone(),
                abs: p.clone(),
                md,
            });
            subdirs.push((ino, p, path, is_dir));
        }
        t.dirs.insert(dir_ino, (parent, entries));
        for (ino, p, path, is_dir) in subdirs {
            t.order.push((ino, path.clone()));
            if is_dir {
                walk(t, ids, ino, dir_ino, &p, &path);
            }
        }
    }
    walk(&mut t, &mut ids, 2, 2, root, b"");
    t
}

fn meta_of(md: &fs::Metadata) -> InodeMeta {
    InodeMeta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        nlink: md.nlink() as u32,
        size: md.size(),
        atime_ns: md.atime() * 1_000_000_000 + md.atime_nsec(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        rdev: md.rdev(),
    }
}

/// Reads only the data ranges of a file, in order.
struct DataOnly {
    file: fs::File,
    ranges: Vec<(u64, u64)>,
    idx: usize,
    done: u64,
}

impl Read for DataOnly {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(&(off, len)) = self.ranges.get(self.idx) {
            if self.done == len {
                self.idx += 1;
                self.done = 0;
                continue;
            }
            self.file.seek(SeekFrom::Start(off + self.done))?;
            let want = ((len - self.done) as usize).min(buf.len());
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(0);
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

fn holes_of(ranges: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut pos = 0;
    for &(off, len) in ranges {
        if off > pos {
            holes.push((pos, off - pos));
        }
        pos = off + len;
    }
    if pos < size {
        holes.push((pos, size - pos));
    }
    holes
}

fn test_info() -> DumpInfo {
    DumpInfo {
        level: 0,
        date: 1_700_000_000,
        ddate: 0,
        label: "reeltest".into(),
        host: "testhost".into(),
        filesys: "/vol".into(),
        dev: "rich".into(),
        ntrec: 10,
    }
}

fn write_tree(t: &Numbered, target: Target) -> reel::Result<reel::tape::bsd::WriteSummary> {
    let mut all = BitMap::new(t.maxino);
    for ino in t.nodes.keys() {
        all.set(*ino);
    }
    let mut w = DumpWriter::create(target, test_info(), t.maxino, &all, &all)?;
    for (ino, (parent, entries)) in &t.dirs {
        w.dir(*ino, *parent, &meta_of(&t.nodes[ino].md), entries)?;
    }
    for (ino, n) in &t.nodes {
        let meta = meta_of(&n.md);
        let ft = n.md.file_type();
        if ft.is_dir() {
            continue;
        } else if ft.is_file() {
            let f = fs::File::open(&n.abs).unwrap();
            let ranges = reel::scan::data_ranges(&f, meta.size).unwrap();
            let holes = holes_of(&ranges, meta.size);
            let mut data = DataOnly {
                file: f,
                ranges,
                idx: 0,
                done: 0,
            };
            w.file(*ino, &meta, &mut data, &holes)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&n.abs).unwrap();
            w.symlink(*ino, &meta, target.as_os_str().as_bytes())?;
        } else {
            w.special(*ino, &meta)?;
        }
    }
    w.finish()
}

/// `cp -a` of `src`, then what a BSD dump cannot carry taken away: xattrs, and mtimes below
/// the microsecond.
fn expected_copy(src: &Path, dst: &Path) {
    common::snapshot(src, dst);
    let mut all = vec![dst.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        let p = all[i].clone();
        i += 1;
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                all.push(e.unwrap().path());
            }
        }
    }
    for p in &all {
        for (name, _) in common::xattrs(p) {
            common::remove_xattr(p, std::str::from_utf8(&name).unwrap());
        }
        let (s, ns) = common::mtime_of(p);
        common::set_mtime(p, s, ns / 1000 * 1000);
    }
}

fn expected_listing(t: &Numbered) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, path) in &t.order {
        out.extend_from_slice(format!("{ino:>10}\t").as_bytes());
        if path.is_empty() {
            out.push(b'.');
        } else {
            out.extend_from_slice(b"./");
            out.extend_from_slice(path);
        }
        out.push(b'\n');
    }
    out
}

fn run_restore(args: &[&str], dir: &Path, stdin: &[u8]) -> (Vec<u8>, String) {
    let mut child = Command::new("restore")
        .args(args)
        .current_dir(dir)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run restore");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Extract with the stock restore and compare with the source tree.
fn extract_and_compare(src: &Path, restore_args: &[&str], work: &Path) {
    let x = work.join("x");
    fs::create_dir(&x).unwrap();
    // "y": restore also sets the top directory's owner, mode and times (from the root inode).
    let (_, err) = run_restore(restore_args, &x, b"y\n");
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("set owner/mode for '.'") && !l.trim().is_empty())
        .collect();
    assert!(bad.is_empty(), "restore complained:\n{err}");
    let exp = work.join("expected");
    expected_copy(src, &exp);
    common::assert_trees_equal(&exp, &x);
}

fn rich_source(work: &Path) -> PathBuf {
    let src = work.join("src");
    common::rich_tree(&src);
    src
}

#[test]
fn writer_output_is_listed_and_extracted_by_stock_restore() {
    if !restore_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = rich_source(tmp.path());
    let t = number_tree(&src);
    let img = tmp.path().join("rich.dump");
    let sum = write_tree(&t, Target::File(img.clone())).unwrap();
    assert_eq!(sum.volumes, vec![img.clone()]);
    assert_eq!(fs::metadata(&img).unwrap().len(), sum.bytes);
    assert_eq!(sum.records % 10, 0, "padded to whole tape blocks");

    let (out, err) = run_restore(&["-t", "-f", img.to_str().unwrap()], tmp.path(), b"");
    assert!(err.trim().is_empty(), "restore -t stderr: {err}");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Level 0 dump of /vol on testhost:rich"),
        "{text}"
    );
    assert!(text.contains("Label: reeltest"), "{text}");
    assert_eq!(
        String::from_utf8_lossy(&listed_lines(&out)),
        String::from_utf8_lossy(&expected_listing(&t))
    );

    extract_and_compare(
        &src,
        &["-x", "-a", "-y", "-f", img.to_str().unwrap()],
        tmp.path(),
    );
}

#[test]
fn split_writer_output_is_extracted_by_restore_m() {
    if !restore_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = rich_source(tmp.path());
    let t = number_tree(&src);
    let base = tmp.path().join("tape");
    let sum = write_tree(
        &t,
        Target::Split {
            path: base.clone(),
            capacity: 5_000_000,
        },
    )
    .unwrap();
    assert!(sum.volumes.len() >= 3, "{:?}", sum.volumes);
    let mut total = 0;
    for (i, v) in sum.volumes.iter().enumerate() {
        assert_eq!(v, &volume_path(&base, i as u32 + 1));
        let len = fs::metadata(v).unwrap().len();
        assert!(
            len <= 5_000_000 && len % 10240 == 0,
            "{} is {len} bytes",
            v.display()
        );
        total += len;
    }
    assert_eq!(total, sum.bytes);

    let prefix = format!("{}.", base.display());
    let (out, err) = run_restore(&["-t", "-M", "-b", "10", "-f", &prefix], tmp.path(), b"");
    assert!(err.trim().is_empty(), "restore -t -M stderr: {err}");
    assert_eq!(listed_lines(&out), expected_listing(&t));
    extract_and_compare(
        &src,
        &["-x", "-a", "-y", "-M", "-b", "10", "-f", &prefix],
        tmp.path(),
    );

    // Our reader reads the set back too, and refuses it with a volume missing or out of order.
    let m = read_model(&sum.volumes).unwrap();
    assert_eq!(listing(&m), expected_listing(&t));
    let mut skip = sum.volumes.clone();
    skip.remove(1);
    let e = read_model(&skip)
        .err()
        .expect("a missing volume must fail")
        .to_string();
    assert!(
        e.contains("volume 3 of the dump, but volume 2 was expected"),
        "{e}"
    );
    let e = read_model(&sum.volumes[..1]).err().unwrap().to_string();
    assert!(e.contains("is missing") && e.contains("tape.001"), "{e}");
    let e = read_model(&sum.volumes[1..]).err().unwrap().to_string();
    assert!(e.contains("not volume 1"), "{e}");
}

#[test]
fn writer_round_trips_through_our_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let src = rich_source(tmp.path());
    let t = number_tree(&src);
    let img = tmp.path().join("rt.dump");
    write_tree(&t, Target::File(img.clone())).unwrap();
    let m = read_model(&[img]).unwrap();
    assert_eq!(m.info, test_info());
    assert_eq!(listing(&m), expected_listing(&t));
    let mut seen = BTreeSet::new();
    for (ino, n) in &t.nodes {
        let o = &m.objs[ino];
        let want = meta_of(&n.md);
        let p = String::from_utf8_lossy(&n.path);
        assert_eq!(o.meta.mode, want.mode, "{p}");
        assert_eq!((o.meta.uid, o.meta.gid), (want.uid, want.gid), "{p}");
        assert_eq!(o.meta.mtime_ns, want.mtime_ns / 1000 * 1000, "{p}");
        assert_eq!(
            o.meta.rdev,
            if n.md.file_type().is_char_device_like() {
                want.rdev
            } else {
                0
            },
            "{p}"
        );
        if n.md.is_file() {
            assert_eq!(o.meta.size, want.size, "{p}");
            let mut h = Sha256::new();
            h.update(&fs::read(&n.abs).unwrap());
            assert_eq!(o.sha.as_deref(), Some(h.hex().as_str()), "{p}");
        }
        if n.md.file_type().is_symlink() {
            assert_eq!(
                o.target,
                fs::read_link(&n.abs).unwrap().as_os_str().as_bytes()
            );
        }
        if n.md.is_dir() {
            let mut names: Vec<_> = m.dirs[ino].iter().map(|e| e.name.clone()).collect();
            assert_eq!(
                names.drain(..2).collect::<Vec<_>>(),
                vec![b".".to_vec(), b"..".to_vec()]
            );
            assert_eq!(
                names,
                t.dirs[ino]
                    .1
                    .iter()
                    .map(|e| e.name.clone())
                    .collect::<Vec<_>>()
            );
            assert_eq!(m.dirs[ino][0].dtype, DT_DIR);
        }
        seen.insert(*ino);
    }
    assert_eq!(seen.len(), m.objs.len());
    // sparse.img: the 1 MiB leading hole and the trailing hole stay holes.
    let sparse = t
        .nodes
        .iter()
        .find(|(_, n)| n.path == b"sparse.img")
        .unwrap()
        .0;
    assert!(
        m.objs[sparse].hole_bytes >= (9 << 20) - 64 * 1024 - 8192,
        "{}",
        m.objs[sparse].hole_bytes
    );
}

trait CharDevLike {
    fn is_char_device_like(&self) -> bool;
}

impl CharDevLike for fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device() || self.is_block_device()
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

fn read_err(path: &Path) -> String {
    match read_model(&[path.to_path_buf()]) {
        Ok(_) => panic!("{} was read without error", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_images_are_refused() {
    let Some(fx) = fixtures() else { return };
    let data = fs::read(fx.join("level0.dump")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("cut.dump");
    for cut in [
        500usize,
        2048,
        5000,
        26 * 1024,
        600_000,
        1_130_000,
        1_140_736,
    ] {
        fs::write(&p, &data[..cut]).unwrap();
        let e = read_err(&p);
        if cut < TP_BSIZE {
            assert!(e.contains("is not a BSD dump image"), "cut {cut}: {e}");
        } else {
            assert!(
                e.contains("cut.dump ends at record") && e.contains("truncated"),
                "cut {cut}: {e}"
            );
        }
    }
}

#[test]
fn damaged_header_is_refused_with_its_record() {
    let Some(fx) = fixtures() else { return };
    let mut data = fs::read(fx.join("level0.dump")).unwrap();
    // Record 1105 is the TS_INODE header of inode 15 (dir1/exact1k.bin).
    data[1105 * TP_BSIZE + 700] ^= 0x01;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("flip.dump");
    fs::write(&p, &data).unwrap();
    let e = read_err(&p);
    assert!(e.contains("flip.dump: record 1105"), "{e}");
    assert!(e.contains("checksum mismatch"), "{e}");

    // The same flip in record 0: not a dump at all.
    let mut data = fs::read(fx.join("level0.dump")).unwrap();
    data[700] ^= 0x01;
    fs::write(&p, &data).unwrap();
    assert!(read_err(&p).contains("is not a BSD dump image (no dump header in its first record"));
}

#[test]
fn reader_gives_the_fixture_xattrs() {
    let Some(fx) = fixtures() else { return };
    let mut r = DumpReader::open(&[fx.join("level0.dump")]).unwrap();
    let mut got = Vec::new();
    while let Some(i) = r.next().unwrap() {
        let x = r.xattrs().unwrap();
        if !x.is_empty() {
            got.push((i.ino, x));
        }
    }
    let want = vec![(b"user.comment".to_vec(), b"xattr-value".to_vec())];
    assert_eq!(got, vec![(16, want)]);
}

#[test]
fn malformed_or_oversized_xattr_records_are_refused_with_their_inode() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("xattr.dump");
    // Record 1115 is the attribute header of inode 16 (dir1/small.txt), record 1116 its
    // in-inode attribute blob (§10): magic, then the entry of user.comment.
    let blob = 1116 * TP_BSIZE;
    for (off, bytes, want) in [
        (4 + 8, u32::MAX.to_le_bytes(), "lies outside"), // e_value_size
        (0, 0x1234_5678u32.to_le_bytes(), "unknown magic"),
        (4, [7, 42, 0x50, 0], "name index 42"),
        (4, [255, 1, 0x50, 0], "runs past the end"),
    ] {
        let mut data = fs::read(fx.join("level0.dump")).unwrap();
        data[blob + off..blob + off + 4].copy_from_slice(&bytes);
        fs::write(&p, &data).unwrap();
        let e = read_err(&p);
        assert!(
            e.contains("xattr.dump: record 1115") && e.contains("inode 16") && e.contains(want),
            "{want}: {e}"
        );
    }
    // A header claiming a 1 GiB record: refused before anything is read or allocated.
    let mut data = fs::read(fx.join("level0.dump")).unwrap();
    let rec: &mut [u8; TP_BSIZE] = (&mut data[1115 * TP_BSIZE..1116 * TP_BSIZE])
        .try_into()
        .unwrap();
    let (mut h, _) = Header::decode(rec).unwrap();
    h.di_size = 1 << 30;
    *rec = h.encode();
    fs::write(&p, &data).unwrap();
    let e = read_err(&p);
    assert!(
        e.contains("record 1115") && e.contains("inode 16") && e.contains("claims 1073741824"),
        "{e}"
    );
}

#[test]
fn foreign_and_compressed_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("random.bin");
    fs::write(&p, common::Rng::new(9).bytes(20_000)).unwrap();
    let e = read_err(&p);
    assert!(
        e.contains("random.bin is not a BSD dump image (no dump header in its first record)"),
        "{e}"
    );

    let Some(fx) = fixtures() else { return };
    let mut data = fs::read(fx.join("level0.dump")).unwrap();
    let rec: [u8; TP_BSIZE] = data[..TP_BSIZE].try_into().unwrap();
    let (mut h, _) = Header::decode(&rec).unwrap();
    h.c_flags |= 0x80;
    data[..TP_BSIZE].copy_from_slice(&h.encode());
    let p = tmp.path().join("z.dump");
    fs::write(&p, &data).unwrap();
    let e = read_err(&p);
    assert!(
        e.contains("compressed dump") && e.contains("not supported"),
        "{e}"
    );
}

#[test]
fn fixture_volumes_out_of_order_are_refused() {
    let Some(fx) = fixtures() else { return };
    let v = mv_vols(&fx);
    let e = read_model(&[v[0].clone(), v[2].clone()])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("multivol.dump003 is volume 3 of the dump, but volume 2"),
        "{e}"
    );
    let e = read_model(&v[..2]).err().unwrap().to_string();
    assert!(e.contains("multivol.dump002 ends at record 20"), "{e}");
    // A volume of another dump.
    let e = read_model(&[v[0].clone(), fx.join("level0.dump")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("level0.dump belongs to another dump"), "{e}");
}

/// A tiny image with one file named `name_on_tape` after patching: the writer refuses bad
/// names, so the name is written as "abc" and changed in the data record (which has no
/// checksum), as a hostile image would carry it.
fn image_with_patched_name(dir: &Path, patched: &[u8; 3]) -> PathBuf {
    let img = dir.join(format!("hostile-{}.dump", patched[1]));
    let mut all = BitMap::new(4);
    all.set(2);
    all.set(3);
    let mut w = DumpWriter::create(Target::File(img.clone()), test_info(), 4, &all, &all).unwrap();
    let dmeta = InodeMeta {
        mode: 0o040755,
        mtime_ns: 1_000_000_000_000_000_000,
        ..Default::default()
    };
    let entries = [DirEntry {
        name: b"abc".to_vec(),
        ino: 3,
        dtype: 8,
    }];
    w.dir(2, 2, &dmeta, &entries).unwrap();
    let fmeta = InodeMeta {
        mode: 0o100644,
        size: 5,
        ..dmeta
    };
    w.file(3, &fmeta, &mut &b"hello"[..], &[]).unwrap();
    w.finish().unwrap();
    let mut data = fs::read(&img).unwrap();
    let at = data
        .windows(4)
        .position(|w| w == b"abc\0")
        .expect("name in the image");
    data[at..at + 3].copy_from_slice(patched);
    fs::write(&img, &data).unwrap();
    img
}

#[test]
fn names_that_escape_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = image_with_patched_name(tmp.path(), b"abd");
    let m = read_model(&[ok]).unwrap();
    assert_eq!(m.dirs[&2][2].name, b"abd");

    let e = read_err(&image_with_patched_name(tmp.path(), b"a/c"));
    assert!(e.contains("directory inode 2") && e.contains("'/'"), "{e}");
    let e = read_err(&image_with_patched_name(tmp.path(), b"a\0c"));
    assert!(e.contains("NUL"), "{e}");
}
