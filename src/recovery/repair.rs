//! `reel check --repair`: bring the catalog back in line with the packs in the pack store.
//!
//! Two mismatches are repaired, in one catalog transaction:
//! - a pack file the catalog does not name (a dump killed after the rename, before its
//!   commit) is *adopted* once its bytes hash to its name and its index reads: it gets a pack
//!   number and its chunks the index lacks get rows. Dump records inside it are not turned
//!   into dumps: their commit never happened (`rebuild-catalog` is the tool that trusts them).
//! - a pack the catalog names that is gone from the pack store is *dropped*: its rows and the
//!   chunk rows pointing into it go, `purges` is bumped (so later dumps re-read files whose
//!   chunks went missing, as after a purge), and the dumps that lost chunks are listed with the
//!   tapes that hold those chunks. Dump records are never deleted.
//!
//! Repair never deletes a file: a pack that fails verification, or that `--read-data` finds
//! damaged, is reported and left in place. Data that cannot be proven unused stays.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::catalog::PackRecord;
use crate::pack::{BlobKind, PackId};
use crate::pack_store::PackInfo;
use crate::progress::Progress;
use crate::recovery::check::{CheckReport, check};
use crate::recovery::rebuild::{
    IncompleteDump, Missing, Refused, ScannedPack, record_scanned_pack, scan_packs, walk_refs,
};
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::{ChunkId, Result};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AdoptedPack {
    pub path: PathBuf,
    pub pack_no: u64,
    /// Chunks the index lacked and now finds in this pack.
    pub chunks_indexed: u64,
    /// Dump records inside it: not turned into dumps (their commit never happened).
    pub dump_records: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DroppedPack {
    pub pack_no: u64,
    pub path: PathBuf,
    /// Chunk index rows removed with it.
    pub chunks: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    pub adopted: Vec<AdoptedPack>,
    /// Unnamed packs that failed verification: left in place.
    pub refused: Vec<Refused>,
    pub dropped: Vec<DroppedPack>,
    /// Dumps that reference chunks of dropped packs (none found again elsewhere).
    pub incomplete: Vec<IncompleteDump>,
    /// The check run after the repair.
    pub check: CheckReport,
}

impl RepairReport {
    /// Does the spool check clean after the repair?
    pub fn ok(&self) -> bool {
        self.check.ok()
    }
}

/// Repair `spool` (opened for writing), then check it (`read_data` as for `check`).
pub fn repair(spool: &Spool, read_data: bool, progress: &dyn Progress) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let store = spool.pack_store().as_ref();
    let named = spool.catalog.packs()?;
    let named_ids: HashSet<[u8; 32]> = named.iter().map(|(_, r)| r.id).collect();
    let doomed = spool.catalog.reader()?.doomed_ids()?;

    // Packs no row names (and not waiting for deletion): verify them in parallel.
    progress.message("verifying unnamed packs");
    let candidates: Vec<PackInfo> = store
        .list_info()?
        .into_iter()
        .filter(|p| !named_ids.contains(&p.id.0) && !doomed.contains(&p.id.0))
        .collect();
    let (good, refused) = scan_packs(store, spool.keys(), &candidates, &|_| {});
    report.refused = refused;

    // Packs named that are gone (not merely unreadable: that is damage, reported by check; nor
    // unknown: a store that cannot tell keeps them).
    let gone: HashMap<u64, PathBuf> = named
        .iter()
        .filter_map(|(no, r)| {
            let id = PackId(r.id);
            match store.exists(&id) {
                Ok(false) => Some((*no, store.location(&id))),
                _ => None,
            }
        })
        .collect();

    let lost = adopt_and_drop(spool, &named, &gone, &good, &mut report)?;

    // Which dumps lost chunks, and which tapes hold them.
    if !lost.is_empty() {
        progress.message("finding the dumps that lost chunks");
        let reader = ChunkReader::new(spool)?;
        let tapes = spool.catalog.reader()?.tape_index()?;
        for d in spool.catalog.dumps(None)? {
            let mut missing = Missing::default();
            let note = walk_refs(&reader, &d, &mut |ids| {
                for id in ids {
                    if lost.contains(id) {
                        missing.add(id, &tapes)?;
                    }
                }
                Ok(())
            })?;
            if !missing.chunks.is_empty() {
                report.incomplete.push(missing.incomplete(&d, note));
            }
        }
    }

    report.check = check(spool, read_data, progress)?;
    Ok(report)
}

/// In one transaction, drop the `gone` packs (their rows and the chunk rows pointing into
/// them) and adopt the `good` unnamed ones. Returns the chunks dropped and not found again in
/// an adopted pack.
fn adopt_and_drop(
    spool: &Spool,
    named: &[(u64, PackRecord)],
    gone: &HashMap<u64, PathBuf>,
    good: &[ScannedPack],
    report: &mut RepairReport,
) -> Result<HashSet<ChunkId>> {
    let mut lost: HashSet<ChunkId> = HashSet::new();
    if gone.is_empty() && good.is_empty() {
        return Ok(lost);
    }
    let w = spool.catalog.writer()?;
    if !gone.is_empty() {
        let mut per_pack: HashMap<u64, u64> = HashMap::new();
        {
            let mut chunks = w.chunk_index()?;
            let mut doomed_rows = Vec::new();
            for row in chunks.rows()? {
                let (id, loc) = row?;
                if gone.contains_key(&loc.pack_no) {
                    doomed_rows.push(id);
                    *per_pack.entry(loc.pack_no).or_default() += 1;
                }
            }
            for id in doomed_rows {
                chunks.remove(&id)?;
                lost.insert(id);
            }
        }
        let mut nos: Vec<u64> = gone.keys().copied().collect();
        nos.sort();
        let ids: Vec<PackId> = nos
            .iter()
            .filter_map(|no| named.iter().find(|(n, _)| n == no))
            .map(|(_, r)| PackId(r.id))
            .collect();
        w.forget_packs(&nos, &ids)?;
        for no in &nos {
            report.dropped.push(DroppedPack {
                pack_no: *no,
                path: gone[no].clone(),
                chunks: per_pack.get(no).copied().unwrap_or(0),
            });
        }
        // Later dumps check reused files against the spool, as after a purge (dump.rs).
        w.count_purge()?;
    }
    for p in good {
        let no = w.take_pack_number()?;
        let mut indexed = 0u64;
        record_scanned_pack(&w, no, p, |id, _| {
            lost.remove(id);
            indexed += 1;
        })?;
        report.adopted.push(AdoptedPack {
            path: p.path.clone(),
            pack_no: no,
            chunks_indexed: indexed,
            dump_records: p
                .entries
                .iter()
                .filter(|e| e.kind == BlobKind::DumpRecord)
                .count() as u64,
        });
    }
    w.commit()?;
    crate::failpoint::hit("repair-committed");
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pack::{PackWriter, encode_blob};
    use crate::pack_store::{InMemory, PackStore};
    use crate::progress::NoProgress;
    use crate::store::StoreWriter;

    /// Check and repair see the packs of whatever store the spool has (here: in memory), and
    /// name them by its locations.
    #[test]
    fn check_and_repair_work_through_the_pack_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(InMemory::new());
        let spool = Spool::init_with_store(&tmp.path().join("spool"), store.clone()).unwrap();
        let data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
        for d in &data[..2] {
            let mut w = StoreWriter::new(&spool).unwrap();
            w.put_batch(&[(ChunkId::of(d), d.as_slice())], BlobKind::Data)
                .unwrap();
            w.finish(|_, _| Ok(())).unwrap();
        }
        let c = check(&spool, true, &NoProgress).unwrap();
        assert!(
            c.ok() && c.packs == 2 && c.unreferenced_packs.is_empty(),
            "{c:?}"
        );

        // A pack no catalog names (a dump killed before its commit), and a named one gone.
        let mut pw = PackWriter::create(&spool.tmp_dir(), &crate::crypto::Keys::plain()).unwrap();
        pw.add(
            ChunkId::of(&data[2]),
            BlobKind::Data,
            &encode_blob(&data[2], 3),
        )
        .unwrap();
        let (staged, _) = pw.close().unwrap().into_parts();
        let unnamed = *staged.id();
        store.put(staged).unwrap();
        let gone = PackId(spool.catalog.packs().unwrap()[0].1.id);
        store.delete(&[gone]).unwrap();
        let c = check(&spool, false, &NoProgress).unwrap();
        assert_eq!(c.unreferenced_packs, vec![store.location(&unnamed)]);
        let gone_name = store.location(&gone).display().to_string();
        assert!(
            c.problems
                .iter()
                .any(|p| p.pack.as_ref() == Some(&gone_name)),
            "{c:?}"
        );

        let r = repair(&spool, true, &NoProgress).unwrap();
        assert_eq!(r.adopted.len(), 1);
        assert_eq!(r.adopted[0].path, store.location(&unnamed));
        assert_eq!(r.dropped.len(), 1);
        assert_eq!(r.dropped[0].path, store.location(&gone));
        assert!(r.ok(), "{:?}", r.check);
        assert_eq!(r.check.packs, 2);
    }
}
