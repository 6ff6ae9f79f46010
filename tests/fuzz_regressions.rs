//! Replays every input under `tests/fuzz_regressions/<target>/` through the fuzz entry points
//! (`reel::fuzzing`), the same calls the cargo-fuzz targets in `fuzz/` make. Each input must be
//! refused cleanly or accepted: a panic fails the test. The directories hold the inputs that
//! once crashed a parser (named `crash-*`, see docs/FUZZING.md) plus seeds: small valid images
//! and truncated or mutated copies of them, which also serve as the fuzzers' seed corpus.
//!
//! `write_seeds` (ignored) regenerates the generated seeds: `cargo test --release --test
//! fuzz_regressions -- --ignored write_seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use reel::fuzzing::{fuzz_bsd_reader, fuzz_manifest, fuzz_pack};
use reel::manifest::ManifestWriter;
use reel::pack::{BlobKind, EncodedBlob, PackWriter, encode_blob};
use reel::{ChunkId, Entry, EntryKind, Extent};

fn dir_of(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target)
}

/// Run every file of one target's directory; returns how many ran.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = dir_of(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|d| d.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in &files {
        let data = fs::read(f).unwrap();
        let name = f.display().to_string();
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{name}: the parser panicked");
    }
    files.len()
}

#[test]
fn bsd_reader_inputs() {
    assert!(replay("bsd_reader", fuzz_bsd_reader) >= 3);
}

#[test]
fn pack_inputs() {
    assert!(replay("pack", fuzz_pack) >= 3);
}

#[test]
fn manifest_inputs() {
    assert!(replay("manifest", fuzz_manifest) >= 3);
}

// ---------------------------------------------------------------------------------------------
// Seeds

fn entry(path: &str, kind: EntryKind, mode: u32) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        mtime_ns: 1_700_000_000_000_000_000,
        ..Entry::default()
    }
}

fn seed_manifest() -> Vec<u8> {
    let data = b"hello, fuzzer";
    let mut file = entry("d/f", EntryKind::File, 0o644);
    file.size = data.len() as u64 + 100;
    file.extents = vec![
        Extent::Chunk {
            id: ChunkId::of(data),
            len: data.len() as u32,
        },
        Extent::Hole(100),
    ];
    let mut link = entry("d/l", EntryKind::Symlink, 0o777);
    link.target = b"f".to_vec();
    link.size = 1;
    link.xattrs = vec![(b"user.a".to_vec(), b"v".to_vec())];
    let mut hard = entry("e", EntryKind::HardLink, 0o644);
    hard.target = b"d/f".to_vec();
    let entries = [
        entry("", EntryKind::Dir, 0o755),
        entry("d", EntryKind::Dir, 0o700),
        file,
        link,
        hard,
    ];
    let mut w = ManifestWriter::new(Vec::new()).unwrap();
    for e in &entries {
        w.push(e).unwrap();
    }
    w.finish().unwrap().0
}

fn seed_pack() -> Vec<u8> {
    let tmp = std::env::temp_dir().join(format!("reel-fuzz-seed-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let mut w = PackWriter::create(&tmp, &reel::crypto::Keys::plain()).unwrap();
    let blobs: [&[u8]; 3] = [
        b"abc",
        &[7u8; 3000],
        b"the quick brown fox, the quick brown fox",
    ];
    for (i, raw) in blobs.iter().enumerate() {
        let kind = if i == 2 {
            BlobKind::Manifest
        } else {
            BlobKind::Data
        };
        w.add(ChunkId::of(raw), kind, &encode_blob(raw, 3)).unwrap();
    }
    let p = w.finish(&tmp).unwrap();
    let bytes = fs::read(&p.path).unwrap();
    fs::remove_dir_all(&tmp).unwrap();
    bytes
}

/// A pack with one "compressed" blob: a zstd frame header that declares u32::MAX content
/// bytes (single segment, 4-byte content size) followed by one empty last raw block.
fn zstd_bomb_pack() -> Vec<u8> {
    let frame = [
        0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00,
    ];
    let tmp = std::env::temp_dir().join(format!("reel-fuzz-bomb-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let mut w = PackWriter::create(&tmp, &reel::crypto::Keys::plain()).unwrap();
    let blob = EncodedBlob {
        data: frame.to_vec(),
        compressed: true,
        raw_len: u32::MAX,
    };
    w.add(ChunkId::of(b"bomb"), BlobKind::Data, &blob).unwrap();
    let p = w.finish(&tmp).unwrap();
    let bytes = fs::read(&p.path).unwrap();
    fs::remove_dir_all(&tmp).unwrap();
    bytes
}

fn flip(mut b: Vec<u8>, at: usize) -> Vec<u8> {
    let at = at.min(b.len() - 1);
    b[at] ^= 0x5a;
    b
}

/// Regenerate the seed files (valid, truncated and mutated images) of all three targets.
#[test]
#[ignore]
fn write_seeds() {
    let put = |target: &str, name: &str, data: &[u8]| {
        let d = dir_of(target);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), data).unwrap();
    };
    let m = seed_manifest();
    put("manifest", "seed-valid", &m);
    put("manifest", "seed-truncated", &m[..m.len() / 2]);
    put("manifest", "seed-mutated", &flip(m.clone(), 20));

    let p = seed_pack();
    put("pack", "seed-valid", &p);
    put("pack", "seed-truncated", &p[..p.len() - 10]);
    put("pack", "seed-mutated", &flip(p.clone(), 100));
    // Found by review, kept as regressions: a footer index offset near u64::MAX (offset +
    // length overflowed: a panic with overflow checks; the harness fixes up the index hash),
    // and a compressed blob whose index entry claims 4 GiB raw and whose zstd frame header
    // declares 4 GiB of content in 12 bytes (the buffer was allocated up front).
    let footer = p.len() - 64;
    let mut q = p.clone();
    q[footer..footer + 8].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    put("pack", "regress-index-offset-overflow", &q);
    put("pack", "regress-raw-len-4gib", &zstd_bomb_pack());

    // The smallest real image, cut to its first records (header, maps, first inodes) so the
    // corpus stays small; and the 20 KiB first volume of the multi-volume set, mutated.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bsd-dump");
    let l1 = fs::read(fixtures.join("level1.dump")).unwrap();
    put("bsd_reader", "seed-level1-16k", &l1[..16 * 1024]);
    put("bsd_reader", "seed-level1-truncated", &l1[..5000]);
    let v1 = fs::read(fixtures.join("multivol.dump001")).unwrap();
    put(
        "bsd_reader",
        "seed-multivol1-mutated",
        &flip(v1, 1024 * 3 + 40),
    );
}
