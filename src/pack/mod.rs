//! Pack files: immutable files of many zstd-compressed blobs with an index at the end.
//!
//! Why it is built this way (the byte layout is specified in docs/FORMAT.md, "Pack format"):
//! - Packs are self-describing. Every blob carries a small header (magic, kind, flags, chunk
//!   id, lengths, and a check over the header), and the file ends with an index plus a
//!   fixed-size footer. A lost catalog can be rebuilt from the indexes; a pack whose index or
//!   footer is damaged can still be salvaged blob by blob by walking the headers
//!   ([`PackReader::scan`]), resynchronising on the next valid header after damage.
//! - A pack is named by the blake3 of its whole bytes, so `check --read-data` can verify a pack
//!   without the catalog, and two packs with the same name are the same bytes.
//! - Writing: bytes go to `SPOOL/tmp/`, hashed as they are written; `finish` appends index and
//!   footer, fsyncs the file, renames it into `packs/ab/`, and fsyncs that directory. Only after
//!   that may a catalog transaction name the pack. A crash leaves either a stray tmp file or a
//!   complete pack that nothing names; both are for `check` to find.
//! - Reading uses positioned reads (`pread` on a file, or a pack store's [`PackBytes`]), so one
//!   open [`PackReader`] can be shared by many restore threads.
//! - Every integer is little-endian, encoded explicitly; every field offset is a named constant.

mod blob;
mod dir;
mod format;
mod reader;
mod writer;

pub(crate) use blob::zstd_decompress_into;
pub use blob::{EncodedBlob, decode_blob, decode_opened, encode_blob};
pub use dir::{list_packs, pack_path, place};
pub use format::{
    BLOB_HEADER_LEN, BLOB_MAGIC, BlobEntry, BlobKind, FILE_HEADER_LEN, FILE_MAGIC, FOOTER_LEN,
    FOOTER_MAGIC, INDEX_ENTRY_LEN, OLDEST_VERSION, PackId, VERSION,
};
pub use reader::{BlobScan, PackBytes, PackReader};
pub use writer::{
    BackgroundPack, ClosedPack, FinishedPack, PACK_TARGET_SIZE, PackWriter, PutPack, SealedPack,
    StagedPack, StoredPack,
};

/// Helpers shared by the pack modules' tests.
#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::chunk::tests::random;
    use crate::types::ChunkId;

    pub(super) fn text(seed: u64, len: usize) -> Vec<u8> {
        let words = [
            "volume ", "dump ", "level ", "spool ", "chunk ", "pack\n", "tape ",
        ];
        let r = random(seed, len);
        let mut out = Vec::with_capacity(len + 8);
        let mut i = 0;
        while out.len() < len {
            out.extend_from_slice(words[r[i % len] as usize % words.len()].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    pub(super) struct Spool {
        _dir: tempfile::TempDir,
        pub(super) tmp: PathBuf,
        pub(super) packs: PathBuf,
    }

    pub(super) fn spool() -> Spool {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let packs = dir.path().join("packs");
        fs::create_dir_all(&tmp).unwrap();
        fs::create_dir_all(&packs).unwrap();
        Spool {
            _dir: dir,
            tmp,
            packs,
        }
    }

    /// Write a pack of the given raw blobs; returns it with the raw bytes.
    pub(super) fn write_pack(s: &Spool, blobs: &[(BlobKind, Vec<u8>)]) -> FinishedPack {
        let mut w = PackWriter::create(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
        for (kind, raw) in blobs {
            let e = w
                .add(ChunkId::of(raw), *kind, &encode_blob(raw, 3))
                .unwrap();
            assert_eq!(e.raw_len as usize, raw.len());
        }
        assert_eq!(w.blob_count(), blobs.len());
        w.finish(&s.packs).unwrap()
    }

    pub(super) fn tmp_is_empty(s: &Spool) -> bool {
        fs::read_dir(&s.tmp).unwrap().next().is_none()
    }
}
