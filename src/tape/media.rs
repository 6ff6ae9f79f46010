//! The media catalog: which tapes exist, what each holds, and which tapes a restore needs.
//!
//! Why it is built this way: the tape itself is the truth (its CATALOG file, see
//! `crate::tape::payload`); the spool keeps an index of it so that `reel tapes`,
//! `purge --exported` and a restore from tapes can answer without reading tapes. Two redb
//! tables in the spool catalog (`crate::catalog::TAPES`, `crate::catalog::TAPE_CHUNKS`):
//! one record per tape, and a chunk → tapes multimap. The multimap is keyed by chunk so that
//! the questions asked ("is this chunk on tape?", "which tapes hold what this chain owns?")
//! are point lookups that scale with the chain, not with the number of tapes.
//!
//! Catalogs made before these tables existed keep working: reading a missing table is an
//! empty media catalog, and the first write creates it.

use std::collections::{BTreeSet, HashMap, HashSet};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, DumpRecord, OWNED, TAPE_CHUNKS, TAPES};
use crate::error::Damaged;
use crate::spool::Spool;
use crate::{ChunkId, Error, Result};

/// One tape (one export image, possibly split into several tape volumes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapeRecord {
    /// Record layout version (1).
    pub version: u32,
    pub label: String,
    /// When the image was written, epoch nanoseconds.
    pub created_ns: i64,
    pub media_set: Option<String>,
    /// Position in its media set (1 for the first tape); 1 without a set.
    pub sequence: u32,
    /// Bytes of the payload (label, catalog and packs).
    pub bytes: u64,
    /// Tape volumes the image was split into (`dump -M`); 1 when not split.
    pub volumes: u32,
    /// The dumps it holds, by this spool's dump id, with the pack bytes written for each.
    pub dumps: Vec<(u64, u64)>,
    /// The packs on it (blake3 of each pack file = its name).
    pub packs: Vec<[u8; 32]>,
    /// What whole-file dumps at the same levels would have written (DESIGN: tape usage).
    pub whole_file_bytes: u64,
}

impl crate::record::Versioned for TapeRecord {
    const KIND: &'static str = "tape record";
    fn version(&self) -> u32 {
        self.version
    }
    fn named(&self) -> String {
        self.label.clone()
    }
}

impl TapeRecord {
    pub fn encode(&self) -> Vec<u8> {
        crate::record::encode(self)
    }

    pub fn decode(b: &[u8]) -> Result<TapeRecord> {
        crate::record::decode(b)
    }
}

/// Record a tape and the chunks it holds. Refuses a label already recorded (labels name
/// tapes on the shelf; two tapes with one label would make restore plans ambiguous).
pub fn record_tape(
    txn: &WriteTransaction,
    rec: &TapeRecord,
    chunks: impl Iterator<Item = ChunkId>,
) -> Result<()> {
    let mut tapes = txn.open_table(TAPES)?;
    if tapes.get(rec.label.as_str())?.is_some() {
        return Err(Error::usage(format!(
            "tape label {} is already in the media catalog (`reel tapes` lists it); choose another label",
            rec.label
        )));
    }
    tapes.insert(rec.label.as_str(), rec.encode().as_slice())?;
    let mut tc = txn.open_multimap_table(TAPE_CHUNKS)?;
    for id in chunks {
        tc.insert(id.0, rec.label.as_str())?;
    }
    Ok(())
}

/// The recorded tape with this label, if any (inside a write transaction).
pub fn tape_in(txn: &WriteTransaction, label: &str) -> Result<Option<TapeRecord>> {
    let t = txn.open_table(TAPES)?;
    let v = t.get(label)?;
    v.map(|v| TapeRecord::decode(v.value())).transpose()
}

/// Every recorded tape, oldest first (by creation time, then sequence, then label).
pub fn tapes(spool: &Spool) -> Result<Vec<TapeRecord>> {
    tapes_txn(&spool.catalog.read()?)
}

fn tapes_txn(txn: &ReadTransaction) -> Result<Vec<TapeRecord>> {
    let t = match txn.open_table(TAPES) {
        Ok(t) => t,
        Err(e) if catalog::table_missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for item in t.iter()? {
        let (_, v) = item?;
        out.push(TapeRecord::decode(v.value())?);
    }
    out.sort_by(|a, b| {
        (a.created_ns, a.sequence, &a.label).cmp(&(b.created_ns, b.sequence, &b.label))
    });
    Ok(out)
}

pub use crate::catalog::tapes_of_chunk;

/// Is dump `id` on some recorded tape?
pub fn dump_on_tape(spool: &Spool, id: u64) -> Result<bool> {
    Ok(tapes(spool)?
        .iter()
        .any(|t| t.dumps.iter().any(|(d, _)| *d == id)))
}

/// The next sequence number in media set `set` (1 for a new set).
pub fn next_sequence(spool: &Spool, set: &str) -> Result<u32> {
    Ok(tapes(spool)?
        .iter()
        .filter(|t| t.media_set.as_deref() == Some(set))
        .map(|t| t.sequence)
        .max()
        .map_or(1, |s| s + 1))
}

/// The tapes a restore of `dump` needs, in the order to read them (oldest first): those
/// holding the chunks owned by the dumps of its chain. Chunks on no tape are left out (they
/// are on the spool). When a chunk is on several tapes, a tape already needed is preferred,
/// then the oldest.
pub fn tapes_needed(spool: &Spool, dump: &DumpRecord) -> Result<Vec<String>> {
    let txn = spool.catalog.read()?;
    let all = tapes_txn(&txn)?;
    needed_labels(&txn, &all, &dump.full_chain(), &|_| None)
}

/// Chooses tapes for a set of chunks, in media-catalog order: a chunk on a tape already
/// chosen adds nothing, otherwise its oldest tape is chosen. A label not recorded yet (the
/// tape an export is writing) sorts last.
pub(crate) struct TapePicker {
    rank: HashMap<String, usize>,
    chosen: BTreeSet<(usize, String)>,
}

impl TapePicker {
    pub(crate) fn new(all: &[TapeRecord]) -> TapePicker {
        TapePicker {
            rank: all
                .iter()
                .enumerate()
                .map(|(i, t)| (t.label.clone(), i))
                .collect(),
            chosen: BTreeSet::new(),
        }
    }

    fn rank(&self, label: &str) -> usize {
        self.rank.get(label).copied().unwrap_or(usize::MAX)
    }

    /// Choose `label` outright.
    pub(crate) fn insert(&mut self, label: String) {
        self.chosen.insert((self.rank(&label), label));
    }

    /// A chunk held by the tapes `labels`; false when it is on no tape.
    pub(crate) fn pick(&mut self, labels: Vec<String>) -> bool {
        if labels
            .iter()
            .any(|l| self.chosen.contains(&(self.rank(l), l.clone())))
        {
            return true;
        }
        match labels.into_iter().min_by_key(|l| self.rank(l)) {
            Some(l) => {
                self.insert(l);
                true
            }
            None => false,
        }
    }

    pub(crate) fn labels(self) -> Vec<String> {
        self.chosen.into_iter().map(|(_, l)| l).collect()
    }
}

/// Shared by `tapes_needed` and the export (which also counts the tape being written:
/// `pending` names the label of chunks it holds).
pub(crate) fn needed_labels(
    txn: &ReadTransaction,
    all: &[TapeRecord],
    chain: &[u64],
    pending: &dyn Fn(&ChunkId) -> Option<String>,
) -> Result<Vec<String>> {
    let owned = txn.open_table(OWNED)?;
    let mut picker = TapePicker::new(all);
    for d in chain {
        for item in owned.range((*d, [0u8; 32])..=(*d, [0xffu8; 32]))? {
            let (k, _) = item?;
            let id = ChunkId(k.value().1);
            match pending(&id) {
                Some(l) => picker.insert(l),
                None => {
                    picker.pick(tapes_of_chunk(txn, &id)?);
                }
            }
        }
    }
    Ok(picker.labels())
}

/// What a restore (or cat) of the entries of `dump` selected by `paths` needs from tapes: the
/// bytes of file data no longer on the spool, and the tapes holding them in the order to read
/// them. Errors, naming the file, if some chunk is neither on the spool nor on any tape.
pub fn tapes_for_restore(
    spool: &Spool,
    dump: &DumpRecord,
    paths: &[Vec<u8>],
) -> Result<(u64, Vec<String>)> {
    let reader = crate::store::ChunkReader::new(spool)?;
    let manifest = reader.manifest(dump)?;
    let txn = spool.catalog.read()?;
    let mut picker = TapePicker::new(&tapes_txn(&txn)?);
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut missing = 0u64;
    for e in manifest {
        let e = e?;
        if !crate::types::selected(&e.path, paths).0 {
            continue;
        }
        for (id, len) in e.chunks() {
            if reader.locate(&id)?.is_some() || !seen.insert(id) {
                continue;
            }
            missing += u64::from(len);
            if !picker.pick(tapes_of_chunk(&txn, &id)?) {
                return Err(Error::damaged(
                    Damaged::Chunk(id),
                    format!(
                        "chunk {} of {} is neither on the spool nor on any tape; `reel check` lists the damage",
                        id.short(),
                        e.display_path()
                    ),
                ));
            }
        }
    }
    Ok((missing, picker.labels()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(label: &str, created: i64, dumps: Vec<(u64, u64)>) -> TapeRecord {
        TapeRecord {
            version: 1,
            label: label.into(),
            created_ns: created,
            media_set: Some("set".into()),
            sequence: created as u32,
            bytes: 10,
            volumes: 1,
            dumps,
            packs: vec![[7u8; 32]],
            whole_file_bytes: 100,
        }
    }

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::init(&dir.path().join("spool")).unwrap();
        (dir, spool)
    }

    #[test]
    fn record_round_trip_and_missing_tables_read_empty() {
        let (_d, spool) = spool();
        // A fresh catalog has no media tables yet: every read is empty, not an error.
        assert!(tapes(&spool).unwrap().is_empty());
        let id = ChunkId::of(b"x");
        assert!(
            tapes_of_chunk(&spool.catalog.read().unwrap(), &id)
                .unwrap()
                .is_empty()
        );
        assert!(!dump_on_tape(&spool, 1).unwrap());
        assert_eq!(next_sequence(&spool, "set").unwrap(), 1);

        let r = rec("T2", 2, vec![(1, 5)]);
        assert_eq!(TapeRecord::decode(&r.encode()).unwrap(), r);
        let txn = spool.catalog.write().unwrap();
        record_tape(&txn, &r, [id].into_iter()).unwrap();
        record_tape(&txn, &rec("T1", 1, vec![]), [id].into_iter()).unwrap();
        assert!(
            record_tape(&txn, &r, std::iter::empty()).is_err(),
            "a label is recorded once"
        );
        txn.commit().unwrap();
        let all = tapes(&spool).unwrap();
        assert_eq!(
            all.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
            ["T1", "T2"]
        );
        let mut on = tapes_of_chunk(&spool.catalog.read().unwrap(), &id).unwrap();
        on.sort();
        assert_eq!(on, ["T1", "T2"]);
        assert!(dump_on_tape(&spool, 1).unwrap());
        assert!(!dump_on_tape(&spool, 2).unwrap());
        assert_eq!(next_sequence(&spool, "set").unwrap(), 3);
        assert!(TapeRecord::decode(b"\x02junk").is_err());
    }
}
