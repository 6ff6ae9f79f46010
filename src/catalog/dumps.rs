//! Dumps (`dumps`, `volume_dumps`) and the chunks each owns (`owned`).

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::chunks::ChunkLoc;
use super::tables::{DUMPS, OWNED, OWNED_RUNS, VOLUME_DUMPS};
use super::{Reader, Writer, meta};
use crate::record::DumpRecord;
use crate::{ChunkId, Error, Result};

/// The key range of the `owned` rows of one dump.
fn owned_range(dump: u64) -> std::ops::RangeInclusive<(u64, [u8; 32])> {
    (dump, [0u8; 32])..=(dump, [0xffu8; 32])
}

impl Reader<'_> {
    pub fn dump(&self, id: u64) -> Result<Option<DumpRecord>> {
        let t = self.txn.open_table(DUMPS)?;
        match t.get(id)? {
            Some(v) => Ok(Some(DumpRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every dump of `volume` (or of all volumes), in time order per volume.
    pub fn dumps(&self, volume: Option<&str>) -> Result<Vec<DumpRecord>> {
        let idx = self.txn.open_table(VOLUME_DUMPS)?;
        let dumps = self.txn.open_table(DUMPS)?;
        let mut out = Vec::new();
        let iter = match volume {
            Some(v) => idx.range((v, i64::MIN, 0u64)..=(v, i64::MAX, u64::MAX))?,
            None => idx.range::<(&str, i64, u64)>(..)?,
        };
        for item in iter {
            let (k, _) = item?;
            let (_, _, id) = k.value();
            let rec = dumps.get(id)?.ok_or_else(|| {
                self.catalog
                    .damaged(format!("dump {id} is indexed but has no record"))
            })?;
            out.push(DumpRecord::decode(rec.value())?);
        }
        Ok(out)
    }

    /// Every dump, in id order.
    pub fn dumps_by_id(&self) -> Result<Vec<DumpRecord>> {
        let mut out = Vec::new();
        for item in self.txn.open_table(DUMPS)?.iter()? {
            let (_, v) = item?;
            out.push(DumpRecord::decode(v.value())?);
        }
        Ok(out)
    }

    /// The `owned` table opened once, for many lookups.
    pub fn owned_index(&self) -> Result<OwnedIndex> {
        Ok(OwnedIndex(self.txn.open_table(OWNED)?))
    }

    /// How many chunks a dump owns, and their stored bytes.
    pub fn owned_summary(&self, dump: u64) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0u64, 0u64);
        for item in self.owned_index()?.of(dump)? {
            let (_, stored) = item?;
            n += 1;
            bytes += u64::from(stored);
        }
        Ok((n, bytes))
    }
}

impl Writer {
    /// Insert a committed dump's record and its entry in its volume's index.
    pub fn record_dump(&self, rec: &DumpRecord) -> Result<()> {
        insert_dump(&self.txn, rec)
    }

    /// Take dumps out of the catalog: their records, index entries and owned rows (what prune
    /// does; chunks and packs stay for gc). A dump no longer there is an error, and the caller
    /// drops the transaction: nothing is removed.
    pub fn forget_dumps<'d>(&self, dumps: impl IntoIterator<Item = &'d DumpRecord>) -> Result<()> {
        let mut records = self.txn.open_table(DUMPS)?;
        let mut index = self.txn.open_table(VOLUME_DUMPS)?;
        let mut owned = self.txn.open_table(OWNED)?;
        for d in dumps {
            if records.remove(d.id)?.is_none() {
                return Err(Error::Catalog(format!(
                    "dump {} of volume {} vanished while it was being forgotten; nothing was removed",
                    d.id, d.volume
                )));
            }
            index.remove((d.volume.as_str(), d.time_ns, d.id))?;
            owned.retain_in(owned_range(d.id), |_, _| false)?;
        }
        Ok(())
    }

    /// Drop owned-chunk rows left by dumps that never committed (ids >= next_dump_id), and every
    /// staged row (`owned_runs`: a committed dump has folded its own): a killed dump may have
    /// committed some of its packs, with their rows, but never its record. Returns how many
    /// went.
    pub fn clean_uncommitted(&self) -> Result<u64> {
        clean_uncommitted(&self.txn)
    }

    /// The `owned` table and the chunk index opened once, to settle what dumps own.
    pub fn ownership(&self) -> Result<Ownership<'_>> {
        Ok(Ownership {
            owned: self.txn.open_table(OWNED)?,
            chunks: self.chunk_index()?,
        })
    }
}

/// Insert a committed dump's record and index entry.
fn insert_dump(txn: &WriteTransaction, rec: &DumpRecord) -> Result<()> {
    txn.open_table(DUMPS)?
        .insert(rec.id, rec.encode().as_slice())?;
    txn.open_table(VOLUME_DUMPS)?
        .insert((rec.volume.as_str(), rec.time_ns, rec.id), ())?;
    Ok(())
}

fn clean_uncommitted(txn: &WriteTransaction) -> Result<u64> {
    let next = meta::next_dump_id(txn)?;
    let mut t = txn.open_table(OWNED)?;
    let mut n = 0u64;
    t.retain_in((next, [0u8; 32])..=(u64::MAX, [0xffu8; 32]), |_, _| {
        n += 1;
        false
    })?;
    let staged = txn.open_table(OWNED_RUNS)?.len()?;
    if staged > 0 {
        // Deleting the table frees its pages at once; the next stage creates it again.
        txn.delete_table(OWNED_RUNS)?;
    }
    Ok(n + staged)
}

/// The `owned` table opened once in a read transaction ([`Reader::owned_index`]).
pub struct OwnedIndex(ReadOnlyTable<(u64, [u8; 32]), u32>);

/// The chunks one dump owns, in chunk id order, with their stored bytes.
pub struct OwnedRows(redb::Range<'static, (u64, [u8; 32]), u32>);

impl Iterator for OwnedRows {
    type Item = Result<(ChunkId, u32)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|item| {
            let (k, v) = item?;
            Ok((ChunkId(k.value().1), v.value()))
        })
    }
}

impl OwnedIndex {
    /// Does `dump` own chunk `id`?
    pub fn owns(&self, dump: u64, id: &ChunkId) -> Result<bool> {
        Ok(self.0.get((dump, id.0))?.is_some())
    }

    /// The chunks `dump` owns.
    pub fn of(&self, dump: u64) -> Result<OwnedRows> {
        Ok(OwnedRows(self.0.range(owned_range(dump))?))
    }
}

/// What dumps own, and where the chunks are, in the write transaction
/// ([`Writer::ownership`]). While it is held, neither table can be opened otherwise.
pub struct Ownership<'w> {
    owned: Table<'w, (u64, [u8; 32]), u32>,
    chunks: super::ChunkIndexMut<'w>,
}

impl Ownership<'_> {
    /// Does `dump` own chunk `id`?
    pub fn owns(&self, dump: u64, id: &ChunkId) -> Result<bool> {
        Ok(self.owned.get((dump, id.0))?.is_some())
    }

    /// Does one of `dumps` (a chain) own chunk `id`? Asked in the order given.
    pub fn owned_by_any(&self, dumps: &[u64], id: &ChunkId) -> Result<bool> {
        for d in dumps {
            if self.owns(*d, id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Record that `dump` owns chunk `id`, `stored` bytes of the spool. Returns whether the row
    /// is new (an existing row takes `stored`): one B-tree walk instead of a lookup and an
    /// insert.
    pub fn own(&mut self, dump: u64, id: &ChunkId, stored: u32) -> Result<bool> {
        Ok(self.owned.insert((dump, id.0), stored)?.is_none())
    }

    /// Where chunk `id` is; None when no pack of the spool holds it.
    pub fn location(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        self.chunks.get(id)
    }
}
