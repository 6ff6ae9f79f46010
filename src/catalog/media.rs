//! The media catalog's tables: tapes (`tapes`), which tapes hold each chunk (`tape_chunks`),
//! and plain-tree exports (`plain_exports`). All were added without a format change: a
//! missing table reads as empty, and the first write creates it.

use redb::{ReadOnlyMultimapTable, ReadableTable};

use super::tables::{PLAIN_EXPORTS, TAPE_CHUNKS, TAPES, all_records, open_optional, table_missing};
use super::{Reader, Writer};
use crate::record::{self, PlainRecord, TapeRecord};
use crate::{ChunkId, Error, Result};

/// Which tapes hold each chunk, opened once for many lookups ([`Reader::tape_index`]).
pub struct TapeIndex(Option<ReadOnlyMultimapTable<[u8; 32], &'static str>>);

impl TapeIndex {
    /// Labels of the tapes holding chunk `id` (empty when on none).
    pub fn tapes_of(&self, id: &ChunkId) -> Result<Vec<String>> {
        let Some(t) = &self.0 else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for v in t.get(id.0)? {
            out.push(v?.value().to_string());
        }
        Ok(out)
    }
}

impl Reader<'_> {
    pub fn tape_index(&self) -> Result<TapeIndex> {
        match self.txn.open_multimap_table(TAPE_CHUNKS) {
            Ok(t) => Ok(TapeIndex(Some(t))),
            Err(e) if table_missing(&e) => Ok(TapeIndex(None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Labels of the tapes holding chunk `id` (empty when on none, or no media catalog yet).
    pub fn tapes_of_chunk(&self, id: &ChunkId) -> Result<Vec<String>> {
        self.tape_index()?.tapes_of(id)
    }

    /// Every recorded tape, by label.
    pub fn tapes(&self) -> Result<Vec<TapeRecord>> {
        all_records(&self.txn, TAPES)
    }

    /// The plain exports of `volume`, oldest first (by sequence number).
    pub fn plain_exports(&self, volume: &str) -> Result<Vec<PlainRecord>> {
        let Some(t) = open_optional(&self.txn, PLAIN_EXPORTS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in t.range((volume, 0u64)..=(volume, u64::MAX))? {
            let (_, v) = item?;
            out.push(record::decode(v.value())?);
        }
        Ok(out)
    }
}

impl Writer {
    /// Record tape `label` and the chunks it holds. Refuses a label already recorded (labels
    /// name tapes on the shelf; two tapes with one label would make restore plans ambiguous).
    pub fn record_tape(
        &self,
        label: &str,
        rec: &TapeRecord,
        chunks: impl Iterator<Item = ChunkId>,
    ) -> Result<()> {
        let mut tapes = self.txn.open_table(TAPES)?;
        if tapes.get(label)?.is_some() {
            return Err(Error::usage(format!(
                "tape label {label} is already in the media catalog (`reel tapes` lists it); choose another label"
            )));
        }
        tapes.insert(label, record::encode(rec).as_slice())?;
        let mut tc = self.txn.open_multimap_table(TAPE_CHUNKS)?;
        for id in chunks {
            tc.insert(id.0, label)?;
        }
        Ok(())
    }

    /// The recorded tape `label`, if any, as this transaction sees it.
    pub fn tape(&self, label: &str) -> Result<Option<TapeRecord>> {
        let t = self.txn.open_table(TAPES)?;
        let v = t.get(label)?;
        v.map(|v| record::decode(v.value())).transpose()
    }

    /// Record plain export `seq` of `volume`.
    pub fn record_plain_export(&self, volume: &str, seq: u64, rec: &PlainRecord) -> Result<()> {
        self.txn
            .open_table(PLAIN_EXPORTS)?
            .insert((volume, seq), record::encode(rec).as_slice())?;
        Ok(())
    }
}
