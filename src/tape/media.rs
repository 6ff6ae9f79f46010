//! The media catalog: which tapes exist, what each holds, and which tapes a restore needs.
//!
//! Why it is built this way: the tape itself is the truth (its CATALOG file, see
//! `crate::tape::payload`); the spool keeps an index of it so that `reel tapes`,
//! `purge --exported` and a restore from tapes can answer without reading tapes. Two tables
//! in the spool catalog (`tapes`, `tape_chunks`; `crate::catalog`'s media operations): one
//! record per tape, and a chunk → tapes multimap. The multimap is keyed by chunk so that
//! the questions asked ("is this chunk on tape?", "which tapes hold what this chain owns?")
//! are point lookups that scale with the chain, not with the number of tapes.
//!
//! Catalogs made before these tables existed keep working: reading a missing table is an
//! empty media catalog, and the first write creates it.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::catalog::{self, DumpRecord};
use crate::error::Damaged;
pub use crate::record::{TapeDumpSummary, TapeRecord};
use crate::spool::Spool;
use crate::{ChunkId, Error, Result};

/// Every recorded tape, oldest first (by creation time, then sequence, then label).
pub fn tapes(spool: &Spool) -> Result<Vec<TapeRecord>> {
    tapes_of(&spool.catalog.reader()?)
}

/// [`tapes`], as `reader` sees the catalog.
pub(crate) fn tapes_of(reader: &catalog::Reader) -> Result<Vec<TapeRecord>> {
    let mut out: Vec<TapeRecord> = reader.tapes()?;
    out.sort_by(|a, b| {
        (a.created_ns, a.sequence, &a.label).cmp(&(b.created_ns, b.sequence, &b.label))
    });
    Ok(out)
}

/// Is dump `id` on some recorded tape?
pub fn dump_on_tape(spool: &Spool, id: u64) -> Result<bool> {
    Ok(tapes(spool)?
        .iter()
        .any(|t| t.dumps.iter().any(|(d, _)| *d == id)))
}

/// The latest dump of `volume` at or before `at_ns` that a recorded tape holds and the
/// catalog does not (prune or forget removed it), with the label of a tape holding it. Only
/// tape records with summaries (version 2) know such dumps.
pub fn tape_only_dump_at(
    spool: &Spool,
    volume: &str,
    at_ns: i64,
) -> Result<Option<(String, TapeDumpSummary)>> {
    let mut best: Option<(String, TapeDumpSummary)> = None;
    for t in tapes(spool)? {
        for s in &t.summaries {
            let later = best.as_ref().is_none_or(|(_, b)| s.time_ns > b.time_ns);
            if s.volume == volume && s.time_ns <= at_ns && later {
                best = Some((t.label.clone(), s.clone()));
            }
        }
    }
    // The catalog's own dump of that time is the one to read.
    if let Some((_, s)) = &best
        && in_catalog(spool, s)?.is_some()
    {
        return Ok(None);
    }
    Ok(best)
}

/// The catalog's dump that `s` describes (same volume and time), if the catalog has it.
pub fn in_catalog(spool: &Spool, s: &TapeDumpSummary) -> Result<Option<DumpRecord>> {
    Ok(spool
        .catalog
        .dump_at(&s.volume, s.time_ns)?
        .filter(|d| d.time_ns == s.time_ns))
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
    let reader = spool.catalog.reader()?;
    let all = tapes_of(&reader)?;
    needed_labels(&reader, &all, &dump.full_chain(), &|_| None)
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
    reader: &catalog::Reader,
    all: &[TapeRecord],
    chain: &[u64],
    pending: &dyn Fn(&ChunkId) -> Option<String>,
) -> Result<Vec<String>> {
    let owned = reader.owned_index()?;
    let on_tapes = reader.tape_index()?;
    let mut picker = TapePicker::new(all);
    for d in chain {
        for item in owned.of(*d)? {
            let (id, _) = item?;
            match pending(&id) {
                Some(l) => picker.insert(l),
                None => {
                    picker.pick(on_tapes.tapes_of(&id)?);
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
    let catalog = spool.catalog.reader()?;
    let on_tapes = catalog.tape_index()?;
    let mut picker = TapePicker::new(&tapes_of(&catalog)?);
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut missing = 0u64;
    let sel = crate::types::Selection::new(paths);
    for e in manifest {
        let e = e?;
        if !sel.test(&e.path).0 {
            continue;
        }
        for (id, len) in e.chunks() {
            if reader.locate(&id)?.is_some() || !seen.insert(id) {
                continue;
            }
            missing += u64::from(len);
            if !picker.pick(on_tapes.tapes_of(&id)?) {
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
            version: crate::record::TAPE_RECORD_VERSION,
            label: label.into(),
            created_ns: created,
            media_set: Some("set".into()),
            sequence: created as u32,
            bytes: 10,
            volumes: 1,
            dumps,
            packs: vec![[7u8; 32]],
            whole_file_bytes: 100,
            summaries: vec![],
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
        let on = |id: &ChunkId| spool.catalog.reader().unwrap().tapes_of_chunk(id).unwrap();
        assert!(on(&id).is_empty());
        assert!(!dump_on_tape(&spool, 1).unwrap());
        assert_eq!(next_sequence(&spool, "set").unwrap(), 1);

        let r = rec("T2", 2, vec![(1, 5)]);
        assert_eq!(TapeRecord::decode(&r.encode()).unwrap(), r);
        let w = spool.catalog.writer().unwrap();
        w.record_tape("T2", &r, [id].into_iter()).unwrap();
        let t1 = rec("T1", 1, vec![]);
        w.record_tape("T1", &t1, [id].into_iter()).unwrap();
        assert!(
            w.record_tape("T2", &r, std::iter::empty()).is_err(),
            "a label is recorded once"
        );
        assert_eq!(w.tape("T1").unwrap(), Some(t1));
        w.commit().unwrap();
        let all = tapes(&spool).unwrap();
        assert_eq!(
            all.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
            ["T1", "T2"]
        );
        let mut labels = on(&id);
        labels.sort();
        assert_eq!(labels, ["T1", "T2"]);
        assert!(dump_on_tape(&spool, 1).unwrap());
        assert!(!dump_on_tape(&spool, 2).unwrap());
        assert_eq!(next_sequence(&spool, "set").unwrap(), 3);
        assert!(TapeRecord::decode(b"\x02junk").is_err());
    }
}
