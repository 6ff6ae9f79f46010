//! Entry points for the cargo-fuzz targets in `fuzz/` and for `tests/fuzz_regressions.rs`.
//!
//! Why it is built this way: the fuzz targets and the regression test must drive the parsers
//! through exactly the same calls, so both call these functions; a crashing input saved by the
//! fuzzer then replays under plain `cargo test`. Each function takes arbitrary bytes, feeds them
//! to a parser (through a temporary file where the API takes a path), consumes everything the
//! parser yields and ignores the result: returning `Ok` or a clean `Err` is success, a panic or
//! an unbounded allocation is the bug being looked for.
//!
//! Pack and BSD dump images are protected by checksums (blake3 of the pack index and of each
//! blob header, the BSD header word sum) that random mutation almost never gets right, which
//! would stop the fuzzer at the first check. So each function runs twice: once on the bytes as
//! given, once on a copy whose checksums were recomputed ("fixed up"), which lets mutations
//! reach the field validation behind the checksums. The fix-up code repeats a few layout
//! constants of `pack` and `tape::bsd::format` on purpose: it is test scaffolding and must not
//! widen those modules' APIs.
//!
//! Not a stable API: hidden from the docs, for the fuzz crate and tests only.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::manifest::ManifestReader;
use crate::pack::{BLOB_MAGIC, FOOTER_MAGIC, PackReader, decode_blob};
use crate::tape::bsd::format::{CHECKSUM, NFS_MAGIC, TP_BSIZE, word_sum};
use crate::tape::bsd::{DumpReader, InodeKind, paths};

/// Upper bound on the items consumed from one input, so a parser bug that loops without
/// reading shows up as a timeout-free, bounded run rather than a hang (each item reads bytes,
/// so real inputs never come near it).
const MAX_ITEMS: usize = 100_000;

/// A temporary file holding `data`, removed on drop. The name is unique per process and call,
/// so parallel test threads do not collide.
struct TempInput(PathBuf);

impl TempInput {
    fn new(tag: &str, data: &[u8]) -> Option<TempInput> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // /dev/shm keeps the per-execution write off the disk when it exists.
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("reel-fuzz-{}-{n}.{tag}", std::process::id()));
        fs::write(&path, data).ok()?;
        Some(TempInput(path))
    }
}

impl Drop for TempInput {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// BSD dump reader

/// Read `data` as a single-volume BSD dump image: open, every inode, every piece of every file,
/// every inode's extended attributes, then the `restore -t` path walk over the directories
/// read. Then the same on a copy whose header checksums were fixed up.
pub fn fuzz_bsd_reader(data: &[u8]) {
    bsd_once(data);
    let fixed = fix_bsd_checksums(data);
    if fixed != data {
        bsd_once(&fixed);
    }
}

fn bsd_once(data: &[u8]) {
    let Some(tmp) = TempInput::new("dump", data) else {
        return;
    };
    let Ok(mut r) = DumpReader::open(std::slice::from_ref(&tmp.0)) else {
        return;
    };
    let _ = (r.info(), r.in_use().count(), r.dumped().count());
    let mut dirs = std::collections::BTreeMap::new();
    for _ in 0..MAX_ITEMS {
        let inode = match r.next() {
            Ok(Some(i)) => i,
            Ok(None) | Err(_) => break,
        };
        if let InodeKind::Dir(entries) = inode.kind {
            dirs.insert(inode.ino, entries);
        } else {
            for _ in 0..MAX_ITEMS {
                match r.piece() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let _ = r.xattrs();
    }
    let _ = paths(&dirs, r.dumped());
}

/// Recompute the checksum of every 1024-byte record that carries the dump magic (either byte
/// order), so the reader's checks behind the checksum are reachable.
fn fix_bsd_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for rec in out.chunks_exact_mut(TP_BSIZE) {
        let m = [rec[24], rec[25], rec[26], rec[27]];
        let swapped = if i32::from_le_bytes(m) == NFS_MAGIC {
            false
        } else if i32::from_be_bytes(m) == NFS_MAGIC {
            true
        } else {
            continue;
        };
        rec[28..32].fill(0);
        let mut whole = [0u8; TP_BSIZE];
        whole.copy_from_slice(rec);
        let sum = CHECKSUM.wrapping_sub(word_sum(&whole, swapped));
        let b = if swapped {
            sum.to_be_bytes()
        } else {
            sum.to_le_bytes()
        };
        rec[28..32].copy_from_slice(&b);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Packs

// Layout repeated from `pack` (docs/FORMAT.md): see the module documentation for why.
const PACK_FOOTER_LEN: usize = 64;
const PACK_BLOB_HEADER_LEN: usize = 56;
const PACK_BLOB_CHECK: usize = 48;

/// Read `data` as a pack file: open, read and validate the index, read (decompress and verify)
/// every blob it lists, and walk the blob headers as salvage does, decoding each blob found.
/// Then the same on a copy whose index hash and blob header checks were fixed up.
pub fn fuzz_pack(data: &[u8]) {
    pack_once(data);
    let fixed = fix_pack_checksums(data);
    if fixed != data {
        pack_once(&fixed);
    }
}

fn pack_once(data: &[u8]) {
    let Some(tmp) = TempInput::new("pack", data) else {
        return;
    };
    let keys = crate::crypto::Keys::plain();
    let Ok(r) = PackReader::open(&tmp.0, &keys) else {
        return;
    };
    if let Ok(entries) = r.read_index() {
        for e in entries.iter().take(MAX_ITEMS) {
            let _ = r.read_blob(e);
        }
    }
    if let Ok(scan) = r.scan() {
        for e in scan.entries.iter().take(MAX_ITEMS) {
            if let Ok(stored) = r.read_stored(e) {
                let _ = decode_blob(&keys, e, &stored);
            }
        }
    }
}

/// Recompute the 8-byte check of every blob header (found by its magic) and, when the footer
/// carries its magic and an index range inside the file, the footer's index hash.
fn fix_pack_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut pos = 0;
    while pos + PACK_BLOB_HEADER_LEN <= out.len() {
        if out[pos..pos + 4] == BLOB_MAGIC {
            let check = blake3::hash(&out[pos..pos + PACK_BLOB_CHECK]);
            out[pos + PACK_BLOB_CHECK..pos + PACK_BLOB_HEADER_LEN]
                .copy_from_slice(&check.as_bytes()[..8]);
            pos += PACK_BLOB_HEADER_LEN;
        } else {
            pos += 1;
        }
    }
    let len = out.len();
    if len >= PACK_FOOTER_LEN && out[len - 8..] == FOOTER_MAGIC {
        let f = len - PACK_FOOTER_LEN;
        let mut off = [0u8; 8];
        off.copy_from_slice(&out[f..f + 8]);
        let index = usize::try_from(u64::from_le_bytes(off))
            .ok()
            .filter(|&o| o <= f)
            .unwrap_or(f);
        let hash = blake3::hash(&out[index..f]);
        out[f + 16..f + 48].copy_from_slice(hash.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// Read `data` as a manifest stream: every entry until the end, the trailer check, or the
/// first error. (The manifest has no checksum before its trailer, so no fix-up is needed to
/// reach the record decoder.)
pub fn fuzz_manifest(data: &[u8]) {
    let Ok(mut r) = ManifestReader::new(data) else {
        return;
    };
    for _ in 0..MAX_ITEMS {
        match r.next() {
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    let _ = r.stats();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_inputs_are_refused_cleanly() {
        for data in [&b""[..], b"REELMAN\0", b"REELPAK\0", &[0xffu8; 3000]] {
            fuzz_bsd_reader(data);
            fuzz_pack(data);
            fuzz_manifest(data);
        }
    }

    #[test]
    fn bsd_fixup_makes_a_header_checksum_valid() {
        use crate::tape::bsd::format::{Header, TS_TAPE};
        let h = Header {
            c_type: TS_TAPE,
            c_magic: NFS_MAGIC,
            ..Header::default()
        };
        let mut rec = h.encode().to_vec();
        rec[4] ^= 1; // c_date changed: checksum now wrong
        let mut a = [0u8; TP_BSIZE];
        a.copy_from_slice(&rec);
        assert!(Header::decode(&a).is_err());
        a.copy_from_slice(&fix_bsd_checksums(&rec));
        assert!(Header::decode(&a).is_ok());
    }
}
