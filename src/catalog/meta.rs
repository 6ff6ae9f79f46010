//! The counters in `meta`: the next dump id, the next pack number, how many purges ran.

use redb::{ReadableTable, WriteTransaction};

use super::tables::{META, META_NEXT_DUMP_ID, META_NEXT_PACK_NO, META_PURGES};
use super::{Reader, Writer};
use crate::error::Damaged;
use crate::{Error, Result};

impl Reader<'_> {
    /// The id the next dump will get.
    pub fn next_dump_id(&self) -> Result<u64> {
        let meta = self.txn.open_table(META)?;
        parse_meta_u64(
            META_NEXT_DUMP_ID,
            meta.get(META_NEXT_DUMP_ID)?.as_ref().map(|v| v.value()),
        )
    }
}

impl Writer {
    /// Take the next pack number (and advance it): every pack the catalog names has its own.
    pub fn take_pack_number(&self) -> Result<u64> {
        take_pack_number(&self.txn)
    }

    /// Set the number the next pack takes (a rebuilt catalog numbers its packs itself).
    pub fn set_next_pack_number(&self, no: u64) -> Result<()> {
        set_meta_u64(&self.txn, META_NEXT_PACK_NO, no)
    }

    /// The id the next dump will get.
    pub fn next_dump_id(&self) -> Result<u64> {
        next_dump_id(&self.txn)
    }

    /// Set the id the next dump gets (past every dump recorded with this transaction).
    pub fn set_next_dump_id(&self, id: u64) -> Result<()> {
        set_meta_u64(&self.txn, META_NEXT_DUMP_ID, id)
    }

    /// How many times packs were purged from the spool after export (0 if never): while it is
    /// 0, every indexed chunk is on the spool.
    pub fn purges(&self) -> u64 {
        get_meta_u64(&self.txn, META_PURGES).unwrap_or(0)
    }

    /// Count one more purge: later dumps check reused files against the spool (dump.rs).
    pub fn count_purge(&self) -> Result<()> {
        count_purge(&self.txn)
    }
}

fn take_pack_number(txn: &WriteTransaction) -> Result<u64> {
    let no = get_meta_u64(txn, META_NEXT_PACK_NO)?;
    set_meta_u64(txn, META_NEXT_PACK_NO, no + 1)?;
    Ok(no)
}

pub(super) fn next_dump_id(txn: &WriteTransaction) -> Result<u64> {
    get_meta_u64(txn, META_NEXT_DUMP_ID)
}

fn count_purge(txn: &WriteTransaction) -> Result<()> {
    let purges = get_meta_u64(txn, META_PURGES).unwrap_or(0);
    set_meta_u64(txn, META_PURGES, purges + 1)
}

fn set_meta_u64(txn: &WriteTransaction, key: &str, v: u64) -> Result<()> {
    txn.open_table(META)?
        .insert(key, v.to_le_bytes().as_slice())?;
    Ok(())
}

fn get_meta_u64(txn: &WriteTransaction, key: &str) -> Result<u64> {
    let meta = txn.open_table(META)?;
    parse_meta_u64(key, meta.get(key)?.as_ref().map(|v| v.value()))
}

fn parse_meta_u64(key: &str, v: Option<&[u8]>) -> Result<u64> {
    let v = v.ok_or_else(|| {
        Error::damaged(
            Damaged::Catalog,
            format!("catalog: meta entry {key} missing"),
        )
    })?;
    let b: [u8; 8] = v.try_into().map_err(|_| {
        Error::damaged(
            Damaged::Catalog,
            format!("catalog: meta entry {key} is not a u64"),
        )
    })?;
    Ok(u64::from_le_bytes(b))
}
