//! An encrypted spool (`reel init --encrypt`) keeps nothing of a volume in the clear, refuses
//! changed bytes by name, names chunks under its own key; a plain spool stores as before.
//! The fidelity of what an encrypted spool restores is tested with the plain spool's tests
//! (`both_kinds!` in tests/history.rs and tests/hostile_fs.rs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use reel::ChunkId;

/// A marker no other test and no run writes: 16 random bytes, in hex, after a prefix.
fn marker(prefix: &str) -> String {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("read /dev/urandom");
    format!("{prefix}{}", hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The spool's pack files.
fn packs(spool: &Spool) -> Vec<PathBuf> {
    files_under(&spool.path().join("packs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A blob of a pack as its plain header says (docs/FORMAT.md, "Pack format").
#[derive(Debug, Clone, Copy)]
struct Blob {
    header: usize,
    kind: u8,
    flags: u8,
    raw_len: u32,
    stored_len: u32,
    id: [u8; 32],
}

impl Blob {
    fn stored(&self) -> std::ops::Range<usize> {
        self.header + 56..self.header + 56 + self.stored_len as usize
    }
}

const FRAME: u8 = 3;
const MANIFEST: u8 = 1;
const DUMP_RECORD: u8 = 2;

/// The blobs of a pack, walked by their headers up to the index; and the index's offset.
fn blobs(pack: &[u8]) -> (Vec<Blob>, usize) {
    let index = u64_at(pack, pack.len() - 64) as usize;
    let mut out = Vec::new();
    let mut at = 16;
    while at < index {
        assert_eq!(&pack[at..at + 4], b"RBLB", "blob header at {at}");
        let b = Blob {
            header: at,
            kind: pack[at + 4],
            flags: pack[at + 5],
            raw_len: u32_at(pack, at + 8),
            stored_len: u32_at(pack, at + 12),
            id: pack[at + 16..at + 48].try_into().unwrap(),
        };
        at = b.stored().end;
        out.push(b);
    }
    assert_eq!(at, index, "blobs end where the index starts");
    (out, index)
}

/// The name a frame of one chunk of `data` has on a plain spool: the blake3 of its header and
/// table (magic, count 1, the chunk's blake3, its length).
fn plain_frame_id(data: &[u8]) -> [u8; 32] {
    let mut head = b"RFRM".to_vec();
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&ChunkId::of(data).0);
    head.extend_from_slice(&(data.len() as u32).to_le_bytes());
    ChunkId::of(&head).0
}

/// Nothing of the volume, neither content nor names, is in any byte of any file of an encrypted
/// spool after a level 0 and a level 1: not in packs, catalog, reel.toml, logs or key files.
#[test]
fn an_encrypted_spool_holds_no_plaintext_of_the_volume() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(vol.join("dir")).unwrap();
    let content = marker("content-");
    let name = marker("name-");
    // A compressible text with the marker on every line, and incompressible bytes with the
    // marker among them (stored raw on a plain spool).
    let mut rng = Rng::new(7);
    let line = |i: usize| format!("line {i} of the report holds {content} and more words\n");
    let text: String = (0..4000).map(line).collect();
    fs::write(vol.join("text.txt"), &text).unwrap();
    let mut noise = rng.bytes(1 << 20);
    for at in [1000usize, 300_000, 700_000] {
        noise[at..at + content.len()].copy_from_slice(content.as_bytes());
    }
    fs::write(vol.join("noise.bin"), &noise).unwrap();
    fs::write(vol.join("dir").join(format!("{name}.txt")), b"small").unwrap();
    fs::create_dir(vol.join(format!("{name}-dir"))).unwrap();

    let spool = Spool::of(Kind::Encrypted);
    spool.add_volume("v", &vol);
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    fs::write(vol.join("text.txt"), format!("{text}{}", line(5000))).unwrap();
    fs::write(vol.join(format!("{name}-2.txt")), &text).unwrap();
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    // The names are there to be found, with the key.
    let ls = spool.run(["ls", "v", "dir/"]);
    assert!(ls.contains(&name), "{ls}");

    let needles = [
        content.clone(),
        hex(content.as_bytes()),
        name.clone(),
        hex(name.as_bytes()),
    ];
    let all = files_under(spool.path());
    assert!(all.iter().any(|p| p.ends_with("catalog.redb")));
    assert!(!packs(&spool).is_empty());
    let mut leaks = Vec::new();
    for p in &all {
        let bytes = fs::read(p).unwrap();
        for n in &needles {
            if contains(&bytes, n.as_bytes()) {
                leaks.push(format!("{} holds {n}", p.display()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "plaintext in the spool:\n{}",
        leaks.join("\n")
    );
    // And it restores.
    spool.restore_equals(&["v", "--at", "2026-11-02"], &vol, &work.path().join("r"));
}

/// Where a byte of an encrypted spool's pack is changed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flip {
    /// The stored bytes of the data frame.
    FrameBytes,
    /// The (plain) header of the data frame: its id.
    FrameHeader,
    /// The sealed index (its hash in the footer made to match again).
    Index,
    /// The stored bytes of the manifest.
    Manifest,
    /// The stored bytes of the dump record.
    DumpRecord,
}

/// A changed byte anywhere in a sealed pack fails authentication: `check --read-data` says so
/// naming the pack, and a restore that needs the blob fails and writes nothing wrong.
fn tampered(flip: Flip) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    let mut rng = Rng::new(11);
    let original = rng.text(200 << 10);
    fs::write(vol.join("f.txt"), &original).unwrap();
    let spool = Spool::of(Kind::Encrypted);
    spool.add_volume("v", &vol);
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    spool.run(["check", "--read-data"]);

    let found = packs(&spool);
    assert_eq!(found.len(), 1, "{found:?}");
    let path = &found[0];
    let mut pack = fs::read(path).unwrap();
    assert_eq!(u32_at(&pack, 12), 1, "the pack is sealed (header flag)");
    let (all, index) = blobs(&pack);
    let of_kind = |k: u8| {
        *all.iter()
            .find(|b| b.kind == k)
            .expect("a blob of the kind")
    };
    match flip {
        Flip::FrameBytes => pack[of_kind(FRAME).stored().start + 100] ^= 1,
        Flip::FrameHeader => pack[of_kind(FRAME).header + 20] ^= 1,
        Flip::Manifest => pack[of_kind(MANIFEST).stored().start + 30] ^= 1,
        Flip::DumpRecord => pack[of_kind(DUMP_RECORD).stored().start + 10] ^= 1,
        Flip::Index => {
            pack[index + 30] ^= 1;
            let end = pack.len() - 64;
            let hash = ChunkId::of(&pack[index..end]).0;
            pack[end + 16..end + 48].copy_from_slice(&hash);
        }
    }
    fs::write(path, &pack).unwrap();

    let out = spool.cmd().args(["check", "--read-data"]).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{flip:?}: check passed:\n{said}");
    let stem = path.file_stem().unwrap().to_str().unwrap();
    assert!(
        said.lines()
            .any(|l| l.contains("authentication failed") && l.contains(stem)),
        "{flip:?}: no authentication failure naming pack {stem}:\n{said}"
    );

    let target = work.path().join("r");
    let restored = spool
        .cmd()
        .args(["restore", "v", "--to"])
        .arg(&target)
        .output()
        .unwrap();
    let needed = matches!(flip, Flip::FrameBytes | Flip::FrameHeader | Flip::Manifest);
    if needed {
        assert!(
            !restored.status.success(),
            "{flip:?}: restore passed:\n{}",
            String::from_utf8_lossy(&restored.stdout)
        );
        let err = String::from_utf8_lossy(&restored.stderr);
        assert!(err.contains("authentication failed"), "{flip:?}: {err}");
    }
    // Nothing wrong was written: f.txt is absent or whole.
    match fs::read(target.join("f.txt")) {
        Ok(got) => assert!(got == original, "{flip:?}: f.txt restored wrong"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{flip:?}"),
    }
    if !needed && restored.status.success() {
        assert_trees_equal(&vol, &target);
    }
}

#[test]
fn a_changed_byte_in_a_data_frame_fails_authentication() {
    tampered(Flip::FrameBytes);
}

#[test]
fn a_changed_byte_in_a_blob_header_fails_authentication() {
    tampered(Flip::FrameHeader);
}

#[test]
fn a_changed_byte_in_the_sealed_index_fails_authentication() {
    tampered(Flip::Index);
}

#[test]
fn a_changed_byte_in_a_manifest_blob_fails_authentication() {
    tampered(Flip::Manifest);
}

#[test]
fn a_changed_byte_in_a_dump_record_blob_fails_authentication() {
    tampered(Flip::DumpRecord);
}

/// The frame blob of a spool holding only `file` (one chunk): its header's id and flags.
fn frame_of_one_file(kind: Kind, file: &[u8]) -> (Blob, Vec<u8>) {
    let vol = tempfile::tempdir().unwrap();
    fs::write(vol.path().join("f"), file).unwrap();
    let spool = Spool::of(kind);
    spool.add_volume("v", vol.path());
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    let found = packs(&spool);
    assert_eq!(found.len(), 1);
    let pack = fs::read(&found[0]).unwrap();
    let frames: Vec<Blob> = blobs(&pack)
        .0
        .into_iter()
        .filter(|b| b.kind == FRAME)
        .collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    (frames[0], pack)
}

/// The same file in two encrypted spools gets ids under each spool's key, unlike each other
/// and unlike the plain blake3 name it gets in a plain spool.
#[test]
fn chunk_ids_are_keyed_per_spool_and_plain_spools_keep_blake3() {
    let file = Rng::new(3).bytes(5000);
    let plain = plain_frame_id(&file);
    let (a, _) = frame_of_one_file(Kind::Encrypted, &file);
    let (b, _) = frame_of_one_file(Kind::Encrypted, &file);
    let (p, _) = frame_of_one_file(Kind::Plain, &file);
    assert_eq!(p.id, plain, "a plain spool names the frame by blake3");
    assert_ne!(a.id, plain, "an encrypted spool's id is the plain blake3");
    assert_ne!(a.id, b.id, "two encrypted spools give the same id");
}

/// A plain spool's pack is what it always was: no header flag, the frame named by blake3 and
/// stored as its raw bytes (random content does not compress), the index plain and hashed.
#[test]
fn a_plain_spools_pack_is_unchanged() {
    let file = Rng::new(5).bytes(5000);
    let (frame, pack) = frame_of_one_file(Kind::Plain, &file);
    assert_eq!(u32_at(&pack, 12), 0, "plain pack has no header flags");
    assert_eq!(frame.flags, 0, "random bytes are stored raw");
    assert_eq!(frame.stored_len, frame.raw_len);
    let stored = &pack[frame.stored()];
    assert_eq!(&stored[..4], b"RFRM");
    assert_eq!(&stored[8..40], &ChunkId::of(&file).0);
    assert_eq!(&stored[stored.len() - file.len()..], &file[..]);
    let (all, index) = blobs(&pack);
    let end = pack.len() - 64;
    assert_eq!(end - index, all.len() * 52, "plain index entries");
    assert_eq!(&pack[end + 16..end + 48], &ChunkId::of(&pack[index..end]).0);
    assert_eq!(
        &pack[index..index + 32],
        &all[0].id,
        "index entry 0 names blob 0"
    );
}
