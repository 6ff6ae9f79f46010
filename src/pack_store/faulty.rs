//! [`Faulty`]: a store that fails chosen operations, for tests.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{PackInfo, PackStore, StagedPack};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::pack::{PackId, PackReader};

/// Wraps another store and fails chosen operations with an I/O error naming the pack
/// ("injected fault: ..."), for tests: the Nth put, every read of a given pack, or every
/// deletion. Everything else goes to the wrapped store.
///
/// A failed put puts nothing: the staged file is dropped (removed), so the pack is not listed.
/// Reads fail when a pack is opened or ranges are read; a reader opened before the fault was
/// chosen reads on.
pub struct Faulty {
    inner: Arc<dyn PackStore>,
    /// Puts asked for so far.
    puts: AtomicU64,
    /// Which puts fail, counting from 1.
    failing_puts: Mutex<BTreeSet<u64>>,
    failing_reads: Mutex<HashSet<PackId>>,
    failing_deletes: AtomicBool,
}

impl Faulty {
    pub fn new(inner: Arc<dyn PackStore>) -> Faulty {
        Faulty {
            inner,
            puts: AtomicU64::new(0),
            failing_puts: Mutex::default(),
            failing_reads: Mutex::default(),
            failing_deletes: AtomicBool::new(false),
        }
    }

    /// Fail the `n`th put of this store (counting every put since it was made, from 1).
    pub fn fail_put(&self, n: u64) {
        self.failing_puts.lock().expect("faults").insert(n);
    }

    /// Fail every read (open, ranged reads) of pack `id`.
    pub fn fail_reads_of(&self, id: PackId) {
        self.failing_reads.lock().expect("faults").insert(id);
    }

    /// Fail every deletion from now on (`false`: none).
    pub fn fail_deletes(&self, fail: bool) {
        self.failing_deletes.store(fail, Ordering::Relaxed);
    }

    /// Puts asked for so far, failed ones included.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    fn fault(&self, id: &PackId, what: &str) -> Error {
        Error::io(
            self.inner.location(id),
            std::io::Error::other(format!("injected fault: {what}")),
        )
    }

    fn check_read(&self, id: &PackId) -> Result<()> {
        if self.failing_reads.lock().expect("faults").contains(id) {
            return Err(self.fault(id, "read"));
        }
        Ok(())
    }
}

impl PackStore for Faulty {
    fn put(&self, pack: StagedPack) -> Result<()> {
        let n = self.puts.fetch_add(1, Ordering::Relaxed) + 1;
        if self.failing_puts.lock().expect("faults").contains(&n) {
            // `pack` is dropped here: its staged file goes, nothing was put.
            return Err(self.fault(pack.id(), &format!("put number {n}")));
        }
        self.inner.put(pack)
    }

    fn open(&self, id: &PackId, keys: &Keys) -> Result<PackReader> {
        self.check_read(id)?;
        self.inner.open(id, keys)
    }

    fn read_ranges(&self, id: &PackId, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.check_read(id)?;
        self.inner.read_ranges(id, ranges)
    }

    fn list_info(&self) -> Result<Vec<PackInfo>> {
        self.inner.list_info()
    }

    fn delete(&self, ids: &[PackId]) -> Result<()> {
        match ids.first() {
            Some(id) if self.failing_deletes.load(Ordering::Relaxed) => {
                Err(self.fault(id, "delete"))
            }
            _ => self.inner.delete(ids),
        }
    }

    fn exists(&self, id: &PackId) -> Result<bool> {
        self.inner.exists(id)
    }

    fn location(&self, id: &PackId) -> PathBuf {
        self.inner.location(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack_store::InMemory;
    use crate::pack_store::tests::{conformance, staged, tmp_is_empty};

    #[test]
    fn without_faults_it_is_the_store_it_wraps() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Faulty::new(Arc::new(InMemory::new()));
        conformance(&store, tmp.path());
        assert_eq!(store.puts(), 3);
    }

    /// The second put fails: its staged file is gone and nothing is listed; the puts before
    /// and after it succeed.
    #[test]
    fn a_failed_put_puts_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = Arc::new(InMemory::new());
        let store = Faulty::new(inner.clone());
        store.fail_put(2);
        let (a, _, _) = staged(tmp.path(), &[b"a"]);
        let (b, _, _) = staged(tmp.path(), &[b"b"]);
        let (c, _, _) = staged(tmp.path(), &[b"c"]);
        let (ida, idb, idc) = (*a.id(), *b.id(), *c.id());
        store.put(a).unwrap();
        let err = store.put(b).unwrap_err();
        assert!(
            err.to_string().contains("injected fault: put number 2"),
            "{err}"
        );
        assert!(matches!(err, Error::Io { .. }), "an I/O error: {err:?}");
        store.put(c).unwrap();
        assert!(tmp_is_empty(tmp.path()), "the failed put's file was left");
        assert!(!store.exists(&idb).unwrap());
        let listed: Vec<PackId> = inner.list().unwrap().into_iter().map(|p| p.0).collect();
        let mut want = vec![ida, idc];
        want.sort();
        assert_eq!(listed, want);
    }

    #[test]
    fn reads_of_a_chosen_pack_and_deletions_fail() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Faulty::new(Arc::new(InMemory::new()));
        let (a, _, _) = staged(tmp.path(), &[b"a"]);
        let (b, _, _) = staged(tmp.path(), &[b"b"]);
        let (ida, idb) = (*a.id(), *b.id());
        store.put(a).unwrap();
        store.put(b).unwrap();
        store.fail_reads_of(ida);
        for err in [
            store.open(&ida, &crate::crypto::Keys::plain()).unwrap_err(),
            store.read(&ida, 0..8).unwrap_err(),
            store.read_ranges(&ida, &[0..1, 2..3]).unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("injected fault: read") && err.contains(&ida.to_hex()),
                "{err}"
            );
        }
        store.open(&idb, &crate::crypto::Keys::plain()).unwrap();
        assert_eq!(store.read(&idb, 0..8).unwrap(), b"REELPAK\0");
        store.fail_deletes(true);
        assert!(store.delete(&[idb]).is_err());
        assert!(store.exists(&idb).unwrap());
        store.fail_deletes(false);
        store.delete(&[idb]).unwrap();
        assert!(!store.exists(&idb).unwrap());
    }
}
