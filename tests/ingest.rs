//! `reel ingest-dump` against the real `dump` images in tests/fixtures/bsd-dump: the ingested
//! dumps must restore to exactly the trees the stock `restore` extracted from the same images
//! (the fixtures' `*.extracted-manifest.txt`), and bad chains and damaged images must commit
//! nothing.
//!
//! The restored tree is described in the fixtures' manifest format (tools/manifest.py) from
//! the filesystem itself, so the comparison is independent of reel's own reader; extended
//! attributes, which that format leaves out, are compared with what the stock `restore -x`
//! put back. Owners and device nodes need root: without it those tests print "skipped: ..."
//! and return.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::sha256::Sha256;
use common::{Spool, is_root, xattrs};

fn fixtures() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bsd-dump");
    if p.join("level0.dump").exists() {
        Some(p)
    } else {
        eprintln!("skipped: fixtures not found at {}", p.display());
        None
    }
}

/// The fixtures' manifest line format for the tree at `root` (lost+found left out).
fn manifest_of_tree(root: &Path) -> String {
    fn walk(root: &Path, rel: &[u8], rows: &mut BTreeMap<Vec<u8>, String>) {
        let dir = root.join(std::ffi::OsStr::from_bytes(rel));
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(e.file_name().as_bytes());
            if r.starts_with(b"lost+found") {
                continue;
            }
            let path = e.path();
            let md = fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let t = if ft.is_file() {
                'f'
            } else if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_fifo() {
                'p'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                's'
            };
            let size = if "fl".contains(t) {
                md.len().to_string()
            } else {
                "-".into()
            };
            let nlink = if t == 'd' {
                "-".into()
            } else {
                md.nlink().to_string()
            };
            let sha = if t == 'f' {
                let mut h = Sha256::new();
                let mut f = fs::File::open(&path).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                h.hex()[..16].to_string()
            } else {
                "-".into()
            };
            let mut extra = String::new();
            if t == 'l' {
                let target = fs::read_link(&path).unwrap();
                extra = format!(
                    " -> {}",
                    String::from_utf8_lossy(target.as_os_str().as_bytes())
                );
            }
            if t == 'c' || t == 'b' {
                let d = md.rdev() as libc::dev_t;
                extra = format!(" rdev={},{}", libc::major(d), libc::minor(d));
            }
            let line = format!(
                "{t} {:04o} {}:{} size={size} nlink={nlink} mtime={} sha256/16={sha} ./{}{extra}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                md.mtime(),
                String::from_utf8_lossy(&r),
            );
            rows.insert(r.clone(), line);
            if t == 'd' {
                walk(root, &r, rows);
            }
        }
    }
    let mut rows = BTreeMap::new();
    walk(root, b"", &mut rows);
    rows.into_values().map(|l| l + "\n").collect()
}

/// Restore dump `id` of the spool into a new directory and describe it.
fn restored_manifest(s: &Spool, volume: &str, id: u64) -> String {
    let to = tempfile::tempdir().unwrap();
    let dst = to.path().join("r");
    s.run([
        "restore",
        volume,
        "--dump",
        &id.to_string(),
        "--to",
        dst.to_str().unwrap(),
    ]);
    manifest_of_tree(&dst)
}

/// (id, level, time) of each dump in `reel list --json`.
fn dumps(s: &Spool) -> Vec<(u64, u64, String)> {
    let v = s.list_json();
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["dumps"].as_array().cloned())
        .expect("reel list --json: an array of dumps");
    list.iter()
        .map(|d| {
            (
                d["id"].as_u64().unwrap(),
                d["level"].as_u64().unwrap(),
                d["time"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn time_of(secs: i64) -> String {
    reel::timefmt::format_rfc3339(secs * 1_000_000_000)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Compare line by line, so a failure shows only the differing lines.
fn assert_manifest(got: &str, want: &str, what: &str) {
    if got != want {
        let g: Vec<&str> = got.lines().collect();
        let w: Vec<&str> = want.lines().collect();
        let missing: Vec<_> = w.iter().filter(|l| !g.contains(l)).collect();
        let extra: Vec<_> = g.iter().filter(|l| !w.contains(l)).collect();
        panic!(
            "{what}: restored tree differs\nexpected but missing:\n{missing:#?}\nunexpected:\n{extra:#?}"
        );
    }
}

#[test]
fn level0_then_level1_restore_to_the_trees_restore_r_gives() {
    let Some(fx) = fixtures() else { return };
    if !is_root() {
        eprintln!("skipped: the fixtures' trees have owners and a device node, which need root");
        return;
    }
    let s = Spool::new();
    let out = s.run([
        "ingest-dump",
        "old",
        p(&fx.join("level0.dump")),
        p(&fx.join("level1.dump")),
    ]);
    assert!(out.contains("level 0 dump of"), "{out}");
    assert!(out.contains("level 1 dump of"), "{out}");
    let d = dumps(&s);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0].1, d[0].2.as_str()), (0, time_of(1795658571).as_str()));
    assert_eq!((d[1].1, d[1].2.as_str()), (1, time_of(1795658573).as_str()));
    let want0 = fs::read_to_string(fx.join("level0.extracted-manifest.txt")).unwrap();
    assert_manifest(&restored_manifest(&s, "old", d[0].0), &want0, "level 0");
    let want1 = fs::read_to_string(fx.join("after-level1.extracted-manifest.txt")).unwrap();
    assert_manifest(&restored_manifest(&s, "old", d[1].0), &want1, "level 1");
    // --at the level 1's time picks it too.
    let to = tempfile::tempdir().unwrap();
    let dst = to.path().join("r");
    s.run([
        "restore",
        "old",
        "--at",
        &time_of(1795658573),
        "--to",
        p(&dst),
    ]);
    assert_manifest(&manifest_of_tree(&dst), &want1, "level 1 by --at");
    // The staging area is gone.
    assert!(!s.path().join("tmp/ingest-old").exists());
}

#[test]
fn level0_alone_and_the_multivolume_set() {
    let Some(fx) = fixtures() else { return };
    if !is_root() {
        eprintln!("skipped: the fixtures' trees have owners and a device node, which need root");
        return;
    }
    let s = Spool::new();
    s.run(["ingest-dump", "zero", p(&fx.join("level0.dump"))]);
    let d = dumps(&s);
    let want0 = fs::read_to_string(fx.join("level0.extracted-manifest.txt")).unwrap();
    assert_manifest(&restored_manifest(&s, "zero", d[0].0), &want0, "level 0");

    // The set given as its prefix, as `restore -M -f multivol.dump` takes it.
    let out = s.run(["ingest-dump", "mv", p(&fx.join("multivol.dump"))]);
    assert!(out.contains("+2 volumes"), "{out}");
    let d = dumps(&s);
    let mv = d
        .iter()
        .find(|x| x.2 == time_of(1795658573))
        .expect("multivol dump listed");
    let want = fs::read_to_string(fx.join("multivol.extracted-manifest.txt")).unwrap();
    assert_manifest(&restored_manifest(&s, "mv", mv.0), &want, "multivol");

    // And as its volumes joined with commas.
    let vols: Vec<String> = (1..=3)
        .map(|n| p(&fx.join(format!("multivol.dump{n:03}"))).to_string())
        .collect();
    s.run(["ingest-dump", "mv2", &vols.join(",")]);
    assert_eq!(dumps(&s).len(), 3);
}

#[test]
fn level0_keeps_the_extended_attributes_restore_x_gives() {
    let Some(fx) = fixtures() else { return };
    let s = Spool::new();
    s.run(["ingest-dump", "old", p(&fx.join("level0.dump"))]);
    let to = tempfile::tempdir().unwrap();
    let dst = to.path().join("r");
    s.run(["restore", "old", "--to", p(&dst)]);
    // Inode 16 carries user.comment (an in-inode attribute record); both its names have it.
    let want = vec![(b"user.comment".to_vec(), b"xattr-value".to_vec())];
    for name in ["dir1/small.txt", "dir2/hardlink.txt"] {
        assert_eq!(xattrs(&dst.join(name)), want, "{name}");
    }
    for name in ["dir1/exact1k.bin", "dir1", "big.bin"] {
        assert!(xattrs(&dst.join(name)).is_empty(), "{name}");
    }
}

#[test]
fn attribute_blocks_and_directory_attributes_of_a_real_dump_are_kept() {
    let Some(fx) = fixtures() else { return };
    let s = Spool::new();
    s.run(["ingest-dump", "xa", p(&fx.join("xattr.dump"))]);
    let to = tempfile::tempdir().unwrap();
    let dst = to.path().join("r");
    s.run(["restore", "xa", "--to", p(&dst)]);
    let attr = |n: &str, v: &[u8]| (n.as_bytes().to_vec(), v.to_vec());
    // What restore -x gives (xattr.restore-x-getfattr.txt): block.txt's attributes come from
    // an in-inode record and an attribute-block record, d's from a record after a directory.
    let long: Vec<u8> = (0..2600).map(|i| b'a' + (i % 26) as u8).collect();
    let mut block = vec![attr("user.long", &long)];
    for i in 0..5 {
        block.push(attr(&format!("user.k{i}"), format!("v{i}").as_bytes()));
    }
    block.sort();
    assert_eq!(xattrs(&dst.join("block.txt")), block);
    assert_eq!(xattrs(&dst.join("inode.txt")), vec![attr("user.one", b"1")]);
    assert_eq!(
        xattrs(&dst.join("d")),
        vec![attr("user.dir", b"on a directory")]
    );
    assert!(xattrs(&dst.join("d/plain.txt")).is_empty());
}

#[test]
fn a_gap_in_the_chain_is_refused_and_nothing_is_committed() {
    let Some(fx) = fixtures() else { return };
    let s = Spool::new();
    let (code, err) = s.fail(["ingest-dump", "old", p(&fx.join("level1.dump"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gap in the chain"), "{err}");
    // Wrong order: level 1 first, level 0 after: refused before anything is applied.
    let (_, err) = s.fail([
        "ingest-dump",
        "old",
        p(&fx.join("level1.dump")),
        p(&fx.join("level0.dump")),
    ]);
    assert!(err.contains("gap in the chain"), "{err}");
    assert!(dumps(&s).is_empty());
    // A level 1 whose base is not the image before it.
    let (_, err) = s.fail([
        "ingest-dump",
        "old",
        p(&fx.join("multivol.dump")),
        p(&fx.join("level1.dump")),
    ]);
    assert!(
        err.contains("gap in the chain") || err.contains("not later"),
        "{err}"
    );
    assert!(dumps(&s).is_empty());
}

#[test]
fn a_truncated_image_ingests_nothing() {
    let Some(fx) = fixtures() else { return };
    let s = Spool::new();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.dump");
    let full = fs::read(fx.join("level0.dump")).unwrap();
    fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let (code, err) = s.fail(["ingest-dump", "old", p(&cut)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(dumps(&s).is_empty());
    assert!(!s.path().join("tmp/ingest-old").exists());
    // A missing volume of a multi-volume set is refused the same way.
    let (_, err) = s.fail([
        "ingest-dump",
        "mv",
        &format!(
            "{},{}",
            p(&fx.join("multivol.dump001")),
            p(&fx.join("multivol.dump002"))
        ),
    ]);
    assert!(
        err.contains("truncated") || err.contains("missing"),
        "{err}"
    );
    assert!(dumps(&s).is_empty());
}

#[test]
fn ingesting_before_the_latest_dump_is_refused() {
    let Some(fx) = fixtures() else { return };
    let s = Spool::new();
    let vol = tempfile::tempdir().unwrap();
    fs::write(vol.path().join("f"), b"live").unwrap();
    s.add_volume("live", vol.path());
    s.run(["dump", "live", "--level", "0"]);
    let (code, err) = s.fail(["ingest-dump", "live", p(&fx.join("level0.dump"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not later than the latest dump"), "{err}");
    assert_eq!(dumps(&s).len(), 1);
}
