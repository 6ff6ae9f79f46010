//! [`InMemory`]: packs in a map, for tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::{PackInfo, PackStore, StagedPack, range_len, truncated, unix_ns};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::pack::{PackBytes, PackId, PackReader};

/// Packs in memory, for tests: a put copies the staged file's bytes into a map and removes
/// the file. Durable for the life of the store. Put times are the clock's, made strictly
/// increasing, so that packs put in turn list in that order.
#[derive(Debug, Default)]
pub struct InMemory {
    packs: RwLock<Packs>,
}

#[derive(Debug, Default)]
struct Packs {
    /// Each pack's bytes and put time.
    by_id: BTreeMap<PackId, (Arc<[u8]>, i64)>,
    /// The latest put time given.
    last_put_ns: i64,
}

impl InMemory {
    pub fn new() -> InMemory {
        InMemory::default()
    }

    fn get(&self, id: &PackId) -> Result<Arc<[u8]>> {
        let packs = self.packs.read().expect("in-memory packs");
        packs.by_id.get(id).map(|p| p.0.clone()).ok_or_else(|| {
            Error::io(
                self.location(id),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }
}

/// An open in-memory pack.
struct MemBytes(Arc<[u8]>);

impl PackBytes for MemBytes {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

impl PackStore for InMemory {
    fn put(&self, pack: StagedPack) -> Result<()> {
        let bytes = pack.read_all()?;
        let id = *pack.id();
        // The map changes only now, with the whole pack: a reader sees all of it or none.
        let mut packs = self.packs.write().expect("in-memory packs");
        let put_ns = unix_ns(std::time::SystemTime::now()).max(packs.last_put_ns + 1);
        packs.last_put_ns = put_ns;
        packs.by_id.insert(id, (bytes.into(), put_ns));
        Ok(())
    }

    fn open(&self, id: &PackId, keys: &Keys) -> Result<PackReader> {
        let bytes = self.get(id)?;
        let size = bytes.len() as u64;
        PackReader::with_bytes(Box::new(MemBytes(bytes)), size, self.location(id), keys)
    }

    fn read_ranges(&self, id: &PackId, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let bytes = self.get(id)?;
        ranges
            .iter()
            .map(|r| {
                let len = range_len(r)?;
                usize::try_from(r.start)
                    .ok()
                    .and_then(|s| bytes.get(s..s.checked_add(len)?))
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| truncated(&self.location(id), len, r.start))
            })
            .collect()
    }

    fn list_info(&self) -> Result<Vec<PackInfo>> {
        let packs = self.packs.read().expect("in-memory packs");
        Ok(packs
            .by_id
            .iter()
            .map(|(id, (b, put_ns))| PackInfo {
                id: *id,
                size: b.len() as u64,
                put_ns: *put_ns,
            })
            .collect())
    }

    fn delete(&self, ids: &[PackId]) -> Result<()> {
        let mut packs = self.packs.write().expect("in-memory packs");
        for id in ids {
            packs.by_id.remove(id);
        }
        Ok(())
    }

    fn exists(&self, id: &PackId) -> Result<bool> {
        Ok(self
            .packs
            .read()
            .expect("in-memory packs")
            .by_id
            .contains_key(id))
    }

    fn location(&self, id: &PackId) -> PathBuf {
        PathBuf::from(format!("memory:{}.pack", id.to_hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack_store::tests::{conformance, staged, tmp_is_empty};

    #[test]
    fn an_in_memory_store_keeps_every_promise() {
        let tmp = tempfile::tempdir().unwrap();
        conformance(&InMemory::new(), tmp.path());
    }

    /// A put takes the staged file's bytes and removes it; readers share the pack's bytes and
    /// are usable from other threads.
    #[test]
    fn puts_copy_the_bytes_and_readers_cross_threads() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(InMemory::new());
        let (s, entries, bytes) = staged(tmp.path(), &[b"one", &[3u8; 9000]]);
        let id = *s.id();
        store.put(s).unwrap();
        assert!(tmp_is_empty(tmp.path()));
        assert_eq!(store.read(&id, 0..bytes.len() as u64).unwrap(), bytes);
        let reader = Arc::new(store.open(&id, &crate::crypto::Keys::plain()).unwrap());
        std::thread::scope(|t| {
            for e in &entries {
                let reader = reader.clone();
                t.spawn(move || reader.read_blob(e).unwrap());
            }
        });
        assert_eq!(reader.path(), store.location(&id));
    }

    /// Packs put in turn list in that order, however fast the puts; a second put of the same
    /// bytes moves the pack later.
    #[test]
    fn put_times_increase() {
        let tmp = tempfile::tempdir().unwrap();
        let store = InMemory::new();
        let mut ids = Vec::new();
        for i in 0..20u8 {
            let (s, _, _) = staged(tmp.path(), &[&[i]]);
            ids.push(*s.id());
            store.put(s).unwrap();
        }
        let when = |id: &PackId| {
            let info = store.list_info().unwrap();
            info.iter().find(|p| p.id == *id).unwrap().put_ns
        };
        assert!(ids.windows(2).all(|w| when(&w[0]) < when(&w[1])));
        let (again, _, _) = staged(tmp.path(), &[&[0]]);
        store.put(again).unwrap();
        assert!(when(&ids[0]) > when(&ids[19]));
    }
}
