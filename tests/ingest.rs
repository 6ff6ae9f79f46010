//! `reel ingest-dump` against the real `dump` images in tests/fixtures/bsd-dump: the ingested
//! dumps must restore to exactly the trees the stock `restore` extracted from the same images
//! (the fixtures' `*.extracted-manifest.txt`), and bad chains and damaged images must commit
//! nothing.
//!
//! The restored tree is described in the fixtures' manifest format (tools/manifest.py) from
//! the filesystem itself, so the comparison is independent of reel's own reader. Owners and
//! device nodes need root: without it those tests print "skipped: ..." and return.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{Spool, is_root};

// SHA-256 (the fixtures' manifests use sha256/16; copied from tests/bsd_codec.rs, no crate
// for it in the tree).

struct Sha256 {
    h: [u32; 8],
    buf: Vec<u8>,
    len: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Sha256 {
        Sha256 {
            h: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            buf: Vec::with_capacity(64),
            len: 0,
        }
    }

    fn block(&mut self, b: &[u8]) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b_, mut c, mut d, mut e, mut f, mut g, mut h] = self.h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b_) ^ (a & c) ^ (b_ & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b_;
            b_ = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in self.h.iter_mut().zip([a, b_, c, d, e, f, g, h]) {
            *x = x.wrapping_add(y);
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.buf.is_empty() {
            let n = (64 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == 64 {
                let b = std::mem::take(&mut self.buf);
                self.block(&b);
            }
        }
        while data.len() >= 64 {
            self.block(&data[..64]);
            data = &data[64..];
        }
        self.buf.extend_from_slice(data);
    }

    fn hex(mut self) -> String {
        let bits = self.len * 8;
        let mut pad = vec![0x80u8];
        while (self.buf.len() + pad.len()) % 64 != 56 {
            pad.push(0);
        }
        pad.extend_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&pad);
        self.len = len;
        self.h.iter().map(|w| format!("{w:08x}")).collect()
    }
}

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
