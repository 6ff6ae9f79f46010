//! Where pack bytes live: the [`PackStore`] trait between the chunk store and the storage that
//! holds packs, and its implementations.
//!
//! A writer stages each pack in a local tmp file (`crate::pack::PackWriter`, closed into a
//! [`StagedPack`]); [`PackStore::put`] takes the staged file and returns once the pack is durable
//! where packs live. Readers open a pack once ([`PackStore::open`]) and share the reader; other
//! readers fetch byte ranges, several in one call ([`PackStore::read_ranges`]).
//!
//! The trait is cut for a backend where a put is one whole object, reads are ranged, and each
//! call costs 10-50 ms (an object store, a remote agent): a pack is put whole, from its own
//! thread (the dump seals packs on threads of their own, so puts overlap), reads of one pack are
//! batched, a reader stays open for many reads, and deletions come in batches.
//!
//! Implementations: [`LocalDir`], the spool's `packs/` directory (`packs/ab/<hex>.pack`);
//! [`InMemory`], a map, for tests; [`Faulty`], which wraps another store and fails chosen
//! operations, for tests.

use std::ops::Range;
use std::path::PathBuf;

use crate::crypto::Keys;
use crate::error::{Damaged, Error, Result};
pub use crate::pack::StagedPack;
use crate::pack::{PackId, PackReader};

mod faulty;
mod local;
mod memory;
pub mod scan;

pub use faulty::Faulty;
pub use local::LocalDir;
pub use memory::InMemory;

/// Where packs live: the one seam through which the chunk store puts, reads, lists and
/// deletes packs, so that packs can live elsewhere than in `packs/` (an object store) or be
/// encrypted on their way without the store or the pack format changing. Names are pack ids
/// (the blake3 of the pack's bytes), so a name always means the same bytes.
///
/// Implementations promise:
/// - A put is atomic (every call sees the whole pack or nothing of it) and durable once it
///   returns `Ok`. After an error the pack is normally absent; a put whose answer was lost may
///   have stored it whole, which then is a pack no catalog names, like a crash's leftover.
/// - Read after write: once `put` has returned, every call sees the pack until it is deleted.
/// - `Send + Sync`: one store serves the dump's sealing threads, the restore's reading threads
///   and the caller's thread at once; puts of different packs may run in parallel.
///
/// Callers promise (the catalog can tell, the store cannot):
/// - A pack named by a committed catalog transaction was put before that commit (the store
///   writer waits for every sealed pack's `put` before each commit).
/// - A pack is deleted only after the catalog commit that forgets it (gc marks it doomed and
///   deletes while no reader holds the spool's readers lock), or, never named, by the session
///   that put it and gave up.
/// - So `list` may include packs no catalog names (crash leftovers), which `check` reports and
///   `check --repair` and `gc` deal with.
pub trait PackStore: Send + Sync {
    /// Make the staged pack durable under its name, then drop the staged file (a local store
    /// renames it into place). Putting a pack that is already there succeeds.
    fn put(&self, pack: StagedPack) -> Result<()>;

    /// Open pack `id` for reading; the reader checks its file magic and version, and its reads
    /// are this store's ranged reads. Callers keep it (one per pack, shared by threads) rather
    /// than open a pack for every read.
    fn open(&self, id: &PackId, keys: &Keys) -> Result<PackReader>;

    /// Read byte ranges of pack `id`, in the order given, in one call (a remote store fetches
    /// them together). A range outside the pack is an error: the pack is shorter than its
    /// reader expects (damage).
    fn read_ranges(&self, id: &PackId, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>>;

    /// Read one byte range of pack `id`.
    fn read(&self, id: &PackId, range: Range<u64>) -> Result<Vec<u8>> {
        let mut got = self.read_ranges(id, std::slice::from_ref(&range))?;
        got.pop()
            .ok_or_else(|| Error::usage("a pack store returned no bytes for a range"))
    }

    /// Every pack in the store with its size and when it was put, sorted by id (what an
    /// object store's LIST gives).
    fn list_info(&self) -> Result<Vec<PackInfo>>;

    /// Every pack in the store with its size in bytes, sorted by id.
    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .list_info()?
            .into_iter()
            .map(|p| (p.id, p.size))
            .collect())
    }

    /// Delete packs. Every one is tried and the first error returned; a pack that is not there
    /// is no error (a crash may come between a deletion and the commit that records it). The
    /// deletions are durable when it returns.
    fn delete(&self, ids: &[PackId]) -> Result<()>;

    /// Is pack `id` in the store?
    fn exists(&self, id: &PackId) -> Result<bool>;

    /// How messages name pack `id` (for a local directory: the path of its file).
    fn location(&self, id: &PackId) -> PathBuf;
}

/// A pack as a store lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackInfo {
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// When it was put, in ns since the Unix epoch (0: the store cannot tell). Packs are never
    /// modified, so this orders packs by when they were written (`rebuild-catalog` numbers
    /// them so); a put of a pack already there may move it later.
    pub put_ns: i64,
}

/// `t` in ns since the Unix epoch, 0 before it.
fn unix_ns(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The length of `range` as a buffer size, refusing a reversed one.
fn range_len(range: &Range<u64>) -> Result<usize> {
    range
        .end
        .checked_sub(range.start)
        .map(|l| l as usize)
        .ok_or_else(|| {
            Error::usage(format!(
                "byte range {}..{} of a pack ends before it starts",
                range.start, range.end
            ))
        })
}

/// What a read past the end of a pack says (as `PackReader` does).
fn truncated(location: &std::path::Path, len: usize, offset: u64) -> Error {
    let object = Damaged::Pack {
        path: location.to_path_buf(),
        offset: Some(offset),
    };
    Error::damaged(
        object,
        format!(
            "pack {}: truncated: cannot read {len} bytes at offset {offset}",
            location.display()
        ),
    )
}

/// Checks every implementation must pass, and helpers for them.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pack::{BlobEntry, BlobKind, PackWriter, encode_blob};
    use crate::types::ChunkId;

    /// A staged pack of `blobs` (raw), written in `tmp`, with its entries and bytes.
    pub(super) fn staged(tmp: &Path, blobs: &[&[u8]]) -> (StagedPack, Vec<BlobEntry>, Vec<u8>) {
        let mut w = PackWriter::create(tmp, &crate::crypto::Keys::plain()).unwrap();
        for raw in blobs {
            w.add(ChunkId::of(raw), BlobKind::Data, &encode_blob(raw, 3))
                .unwrap();
        }
        let (staged, entries) = w.close().unwrap().into_parts();
        let bytes = staged.read_all().unwrap();
        (staged, entries, bytes)
    }

    pub(super) fn tmp_is_empty(tmp: &Path) -> bool {
        std::fs::read_dir(tmp).unwrap().next().is_none()
    }

    /// Put, open, read (one range, several, past the end), list, exists and delete, as every
    /// store must do them; `tmp` is where packs are staged.
    pub(super) fn conformance(store: &dyn PackStore, tmp: &Path) {
        assert!(store.list().unwrap().is_empty());
        let (a, a_entries, a_bytes) = staged(tmp, &[b"alpha", b"beta", &[7u8; 5000]]);
        let (b, _, b_bytes) = staged(tmp, &[b"gamma"]);
        let (ida, idb) = (*a.id(), *b.id());
        assert!(!store.exists(&ida).unwrap());
        store.put(a).unwrap();
        store.put(b).unwrap();
        assert!(tmp_is_empty(tmp), "put leaves no staged file");
        assert!(store.exists(&ida).unwrap() && store.exists(&idb).unwrap());
        let mut want = vec![(ida, a_bytes.len() as u64), (idb, b_bytes.len() as u64)];
        want.sort();
        assert_eq!(store.list().unwrap(), want);
        // With put times: known, and in the order of the puts.
        let info = store.list_info().unwrap();
        let sizes: Vec<(PackId, u64)> = info.iter().map(|p| (p.id, p.size)).collect();
        assert_eq!(sizes, want);
        let put_ns = |id: PackId| info.iter().find(|p| p.id == id).unwrap().put_ns;
        assert!(put_ns(ida) > 0, "{info:?}");
        assert!(put_ns(ida) <= put_ns(idb), "{info:?}");

        // The same bytes again: harmless.
        let (again, _, _) = staged(tmp, &[b"gamma"]);
        store.put(again).unwrap();
        assert_eq!(store.list().unwrap(), want);
        assert!(tmp_is_empty(tmp));

        // Ranged reads, one and several in a call, empty ones included.
        let n = a_bytes.len() as u64;
        assert_eq!(store.read(&ida, 0..8).unwrap(), a_bytes[..8]);
        let ranges = [n - 64..n, 3..3, 16..100, 0..n];
        let got = store.read_ranges(&ida, &ranges).unwrap();
        assert_eq!(got.len(), ranges.len());
        for (r, g) in ranges.iter().zip(&got) {
            assert_eq!(g[..], a_bytes[r.start as usize..r.end as usize]);
        }
        let err = store.read(&ida, n - 4..n + 4).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 9..3;
        assert!(store.read(&ida, reversed).is_err());

        // An open reader reads and verifies blobs.
        let r = store.open(&ida, &crate::crypto::Keys::plain()).unwrap();
        assert_eq!(r.size(), n);
        assert_eq!(r.read_index().unwrap(), a_entries);
        assert_eq!(r.read_blob(&a_entries[1]).unwrap(), b"beta");
        assert_eq!(r.hash_file().unwrap(), ida);

        // Delete: a missing pack is no error; a deleted one is gone.
        let missing = PackId([9; 32]);
        assert!(store.open(&missing, &crate::crypto::Keys::plain()).is_err());
        assert!(store.read(&missing, 0..1).is_err());
        store.delete(&[ida, missing]).unwrap();
        assert!(!store.exists(&ida).unwrap());
        assert!(store.open(&ida, &crate::crypto::Keys::plain()).is_err());
        assert_eq!(store.list().unwrap(), vec![(idb, b_bytes.len() as u64)]);
        store.delete(&[idb]).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
