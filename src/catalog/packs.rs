//! Packs the catalog names: `packs` (number -> record) and `pack_ids` (name -> number).

use std::collections::HashSet;

use redb::{ReadableTable, WriteTransaction};

use super::tables::{PACK_IDS, PACKS};
use super::{Reader, Writer};
use crate::Result;
use crate::pack::{BlobEntry, PackId};
use crate::record::PackRecord;

impl Reader<'_> {
    pub fn pack(&self, no: u64) -> Result<Option<PackRecord>> {
        let t = self.txn.open_table(PACKS)?;
        match t.get(no)? {
            Some(v) => Ok(Some(crate::record::decode_or(v.value(), |e| {
                self.catalog
                    .damaged(format!("pack record {no} does not decode: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    /// All packs: (number, record), by number.
    pub fn packs(&self) -> Result<Vec<(u64, PackRecord)>> {
        let t = self.txn.open_table(PACKS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let rec: PackRecord = crate::record::decode_or(v.value(), |e| {
                self.catalog
                    .damaged(format!("pack record {} does not decode: {e}", k.value()))
            })?;
            out.push((k.value(), rec));
        }
        Ok(out)
    }

    /// Does the catalog name the pack `id`?
    pub fn pack_named(&self, id: &PackId) -> Result<bool> {
        Ok(self.txn.open_table(PACK_IDS)?.get(id.0)?.is_some())
    }

    /// Which of the packs `ids` the catalog names. A row that cannot be read counts as not
    /// named.
    pub fn packs_named<'i>(
        &self,
        ids: impl IntoIterator<Item = &'i [u8; 32]>,
    ) -> Result<HashSet<[u8; 32]>> {
        let t = self.txn.open_table(PACK_IDS)?;
        Ok(ids
            .into_iter()
            .filter(|id| t.get(**id).ok().flatten().is_some())
            .copied()
            .collect())
    }
}

impl Writer {
    /// Name a finished pack: pack `no` is `id`, `size` bytes, holding `entries`.
    pub fn record_pack(
        &self,
        no: u64,
        id: &PackId,
        size: u64,
        entries: &[BlobEntry],
        now: i64,
    ) -> Result<()> {
        insert_pack(&self.txn, no, id, size, entries, now)
    }

    /// Does the catalog name the pack `id`, as this transaction sees it?
    pub fn pack_named(&self, id: &PackId) -> Result<bool> {
        Ok(self.txn.open_table(PACK_IDS)?.get(id.0)?.is_some())
    }

    /// Take packs out of the catalog: the records of the pack `numbers`, and the names `ids`.
    /// Their chunk index rows are the caller's (it knows which chunks moved elsewhere).
    pub fn forget_packs(&self, numbers: &[u64], ids: &[PackId]) -> Result<()> {
        let mut packs = self.txn.open_table(PACKS)?;
        for no in numbers {
            packs.remove(*no)?;
        }
        let mut names = self.txn.open_table(PACK_IDS)?;
        for id in ids {
            names.remove(id.0)?;
        }
        Ok(())
    }
}

/// Record a finished pack in `txn`.
fn insert_pack(
    txn: &WriteTransaction,
    no: u64,
    id: &PackId,
    size: u64,
    entries: &[BlobEntry],
    now: i64,
) -> Result<()> {
    let rec = PackRecord {
        id: id.0,
        size,
        blobs: entries.len() as u64,
        created_ns: now,
    };
    txn.open_table(PACKS)?.insert(no, rec.encode().as_slice())?;
    txn.open_table(PACK_IDS)?.insert(id.0, no)?;
    Ok(())
}
