//! Pack files out of the catalog that wait for readers to finish before they are deleted
//! (`doomed`): gc and purge record the packs they forget here in the same transaction, and
//! delete the files only while no reader holds the readers lock (`crate::gc::delete_doomed`).

use std::collections::HashSet;

use redb::ReadableTable;

use super::tables::{DOOMED, open_optional};
use super::{Reader, Writer};
use crate::Result;
use crate::pack::PackId;

impl Reader<'_> {
    /// Pack ids waiting for deletion (none when the table was never created).
    pub fn doomed_ids(&self) -> Result<HashSet<[u8; 32]>> {
        let Some(t) = open_optional(&self.txn, DOOMED)? else {
            return Ok(HashSet::new());
        };
        let mut out = HashSet::new();
        for item in t.iter()? {
            out.insert(item?.0.value());
        }
        Ok(out)
    }
}

impl Writer {
    /// Record the files of packs `ids` (taken out of the catalog in this transaction) as
    /// waiting for deletion.
    pub fn doom_packs(&self, ids: &[PackId]) -> Result<()> {
        let mut t = self.txn.open_table(DOOMED)?;
        for id in ids {
            t.insert(id.0, ())?;
        }
        Ok(())
    }

    /// Forget doomed packs whose files are deleted (or were gone already).
    pub fn forget_doomed<'i>(&self, ids: impl IntoIterator<Item = &'i [u8; 32]>) -> Result<()> {
        let mut t = self.txn.open_table(DOOMED)?;
        for id in ids {
            t.remove(*id)?;
        }
        Ok(())
    }
}
