//! Each volume's latest clone (`clones`).

use super::tables::{CLONES, all_records, open_optional};
use super::{Reader, Writer};
use crate::Result;
use crate::record::CloneRecord;

impl Reader<'_> {
    /// The latest clone of `volume`, if any. Catalogs made before clones existed have no
    /// table yet: no clone.
    pub fn clone_of(&self, volume: &str) -> Result<Option<CloneRecord>> {
        let Some(t) = open_optional(&self.txn, CLONES)? else {
            return Ok(None);
        };
        match t.get(volume)? {
            Some(v) => Ok(Some(CloneRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every volume's latest clone, by volume.
    pub fn clones(&self) -> Result<Vec<CloneRecord>> {
        all_records(&self.txn, CLONES)
    }
}

impl Writer {
    /// Record `rec` as its volume's latest clone (replacing the previous one).
    pub fn put_clone(&self, rec: &CloneRecord) -> Result<()> {
        self.txn
            .open_table(CLONES)?
            .insert(rec.volume.as_str(), rec.encode().as_slice())?;
        Ok(())
    }

    /// Forget the clone of `volume`.
    pub fn remove_clone(&self, volume: &str) -> Result<()> {
        self.txn.open_table(CLONES)?.remove(volume)?;
        Ok(())
    }
}
