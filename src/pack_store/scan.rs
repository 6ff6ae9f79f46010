//! Reading a pack's chunks back from its bytes: its index, every frame's chunk table (each
//! chunk verified against its name) and the records it carries, as chunk index rows.
//!
//! One scan serves every reader of whole packs: the chunk reader's extra packs (from tapes,
//! for a restore), the tape code's verify and import, and recovery (`rebuild-catalog`,
//! `check --repair`), which rebuilds index rows from the packs of a pack store.

use std::path::Path;

use crate::ChunkId;
use crate::catalog::ChunkLoc;
use crate::crypto::Keys;
use crate::error::{Damaged, Error, Result};
use crate::frame;
use crate::pack::{BlobEntry, BlobKind, PackId, PackReader};

/// The chunks of a pack with their locations (pack number 0).
pub type PackChunks = Vec<(ChunkId, ChunkLoc)>;

/// How a scan proves a pack's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// Hash the whole pack against its name first; then only the blobs whose contents are
    /// needed (frames, for their chunk tables, and records) are read: the hash covers the rest.
    Name(PackId),
    /// Read every blob, each against its own hash (a pack from a tape, whose name its caller
    /// checks, or none).
    EachBlob,
}

/// What a scan found.
#[derive(Debug)]
pub struct PackScan {
    /// The pack's own index.
    pub entries: Vec<BlobEntry>,
    /// Every chunk in it with its location, pack number 0 (the caller numbers the pack).
    /// Frames are opened: each chunk inside gets its own row, as the store writes them.
    pub chunks: PackChunks,
    /// The raw bytes of its dump and forget records (`BlobKind::DumpRecord`, `Forget`), in
    /// pack order.
    pub records: Vec<(BlobKind, Vec<u8>)>,
}

/// Scan the pack `r` reads, proving its bytes by `proof`. No damaged chunk enters the rows.
pub fn scan(r: &PackReader, proof: Proof) -> Result<PackScan> {
    let path = r.path();
    let damaged = |msg: String| {
        Error::damaged(
            Damaged::Pack {
                path: path.to_path_buf(),
                offset: None,
            },
            msg,
        )
    };
    if let Proof::Name(id) = proof {
        let h = r.hash_file()?;
        if h != id {
            return Err(damaged(format!(
                "pack {}: its bytes hash to {}, not to its name: the file is damaged",
                path.display(),
                h.short()
            )));
        }
    }
    let every_blob = proof == Proof::EachBlob;
    let entries = r.read_index()?;
    let mut chunks = Vec::new();
    let mut records = Vec::new();
    for e in &entries {
        let base = ChunkLoc::of_blob(0, e);
        match e.kind {
            BlobKind::Frame => {
                let raw = r.read_blob(e)?;
                let table = frame::parse(&raw)
                    .map_err(|err| damaged(format!("pack {}: {err}", path.display())))?;
                for (id, range) in table {
                    frame::verified(r.keys(), &raw, &id, range.clone()).map_err(|err| {
                        // Without the pack's hash, say what a bad chunk means.
                        let then = if every_blob {
                            "; the pack is damaged"
                        } else {
                            ""
                        };
                        damaged(format!("pack {}: {err}{then}", path.display()))
                    })?;
                    chunks.push((id, base.in_frame(range.start as u32, range.len() as u32)));
                }
            }
            BlobKind::DumpRecord | BlobKind::Forget => {
                records.push((e.kind, r.read_blob(e)?));
                chunks.push((e.id, base));
            }
            BlobKind::Data | BlobKind::Manifest => {
                if every_blob {
                    r.read_blob(e)?;
                }
                chunks.push((e.id, base));
            }
        }
    }
    Ok(PackScan {
        entries,
        chunks,
        records,
    })
}

/// Every chunk in the pack at `path`, every blob verified against its hash (frames: every
/// chunk inside), with its location (pack number 0: the caller sets it).
pub fn pack_chunks(path: &Path, keys: &Keys) -> Result<(Vec<BlobEntry>, PackChunks)> {
    open_pack_chunks(&PackReader::open(path, keys)?)
}

/// [`pack_chunks`] of an open pack (a pack store's: `PackStore::open`).
pub fn open_pack_chunks(r: &PackReader) -> Result<(Vec<BlobEntry>, PackChunks)> {
    let s = scan(r, Proof::EachBlob)?;
    Ok((s.entries, s.chunks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{PackWriter, encode_blob};
    use crate::pack_store::{LocalDir, PackStore};
    use crate::record::ForgetRecord;

    /// A pack of `blobs` put into a local store in `dir`.
    fn put_pack(dir: &Path, blobs: &[(ChunkId, BlobKind, Vec<u8>)]) -> (LocalDir, PackId) {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let store = LocalDir::new(dir.join("packs"));
        let mut w = PackWriter::create(&tmp, &crate::crypto::Keys::plain()).unwrap();
        for (id, kind, raw) in blobs {
            w.add(*id, *kind, &encode_blob(raw, 3)).unwrap();
        }
        let (staged, _) = w.close().unwrap().into_parts();
        let id = *staged.id();
        store.put(staged).unwrap();
        (store, id)
    }

    #[test]
    fn a_scan_opens_frames_and_keeps_records() {
        let dir = tempfile::tempdir().unwrap();
        let a = b"first chunk".to_vec();
        let b = vec![7u8; 5000];
        let ids = [ChunkId::of(&a), ChunkId::of(&b)];
        let (frame, offsets) = frame::build(&[(ids[0], &a), (ids[1], &b)]);
        let forget = ForgetRecord {
            version: 1,
            time_ns: 5,
            dumps: vec![(3, "v".into(), 9)],
        }
        .encode();
        let (store, id) = put_pack(
            dir.path(),
            &[
                (
                    frame::id(&crate::crypto::Keys::plain(), &frame).unwrap(),
                    BlobKind::Frame,
                    frame.clone(),
                ),
                (ChunkId::of(&forget), BlobKind::Forget, forget.clone()),
            ],
        );
        let r = store.open(&id, &crate::crypto::Keys::plain()).unwrap();
        for proof in [Proof::Name(id), Proof::EachBlob] {
            let s = scan(&r, proof).unwrap();
            assert_eq!(s.entries.len(), 2);
            assert_eq!(s.chunks.len(), 3);
            assert_eq!(s.records, vec![(BlobKind::Forget, forget.clone())]);
            for (i, cid) in ids.iter().enumerate() {
                let (_, loc) = s.chunks.iter().find(|(c, _)| c == cid).unwrap();
                assert_eq!(loc.frame.unwrap().inner, offsets[i]);
                // The row reads the chunk back, as the store's rows do.
                let stored = r.read_stored(&loc.blob_entry(*cid)).unwrap();
                let want: &[u8] = if i == 0 { &a } else { &b };
                assert_eq!(
                    loc.decode_chunk(&crate::crypto::Keys::plain(), *cid, &stored)
                        .unwrap(),
                    want
                );
            }
        }
        let path = store.location(&id);
        assert_eq!(
            pack_chunks(&path, &crate::crypto::Keys::plain()).unwrap().1,
            scan(&r, Proof::EachBlob).unwrap().chunks
        );
    }

    /// A changed byte: refused by its hash (`Name`), or by the blob it is in (`EachBlob`); a
    /// pack under another name is refused by its hash.
    #[test]
    fn a_pack_whose_bytes_changed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Incompressible, so that byte 100 is inside the blob.
        let mut raw = vec![0u8; 3000];
        blake3::Hasher::new().finalize_xof().fill(&mut raw);
        let (store, id) = put_pack(
            dir.path(),
            &[(ChunkId::of(&raw), BlobKind::Data, raw.clone())],
        );
        let other = scan(
            &store.open(&id, &crate::crypto::Keys::plain()).unwrap(),
            Proof::Name(PackId([9u8; 32])),
        );
        assert!(other.is_err());
        let path = store.location(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let r = store.open(&id, &crate::crypto::Keys::plain()).unwrap();
        let err = scan(&r, Proof::Name(id)).unwrap_err().to_string();
        assert!(
            err.contains("not to its name: the file is damaged"),
            "{err}"
        );
        assert!(scan(&r, Proof::EachBlob).is_err());
        assert!(pack_chunks(&path, &crate::crypto::Keys::plain()).is_err());
    }
}
