//! `reel check --repair`: bring the catalog back in line with the packs on disk.
//!
//! Two mismatches are repaired, in one catalog transaction:
//! - a pack file the catalog does not name (a dump killed after the rename, before its
//!   commit) is *adopted* once its bytes hash to its name and its index reads: it gets a pack
//!   number and its chunks the index lacks get rows. Dump records inside it are not turned
//!   into dumps: their commit never happened (`rebuild-catalog` is the tool that trusts them).
//! - a pack the catalog names whose file is gone is *dropped*: its rows and the chunk rows
//!   pointing into it go, `purges` is bumped (so later dumps re-read files whose chunks went
//!   missing, as after a purge), and the dumps that lost chunks are listed with the tapes that
//!   hold those chunks. Dump records are never deleted.
//!
//! Repair never deletes a file: a pack that fails verification, or that `--read-data` finds
//! damaged, is reported and left in place. Data that cannot be proven unused stays.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use redb::ReadableTable;
use serde::Serialize;

use crate::catalog::{self, CHUNKS, ChunkLoc, DOOMED, PACK_IDS, PACKS};
use crate::check::{CheckReport, check};
use crate::pack::{self, BlobKind, PackId};
use crate::progress::Progress;
use crate::rebuild::{IncompleteDump, Refused, record_scanned_pack, scan_packs, walk_refs};
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::tape::media;
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
    let packs_dir = spool.packs_dir();
    let named = spool.catalog.packs()?;
    let named_ids: HashSet<[u8; 32]> = named.iter().map(|(_, r)| r.id).collect();
    let doomed: HashSet<[u8; 32]> = {
        let txn = spool.catalog.read()?;
        match txn.open_table(DOOMED) {
            Ok(t) => {
                let mut s = HashSet::new();
                for item in t.iter()? {
                    s.insert(item?.0.value());
                }
                s
            }
            Err(e) if catalog::table_missing(&e) => HashSet::new(),
            Err(e) => return Err(e.into()),
        }
    };

    // Packs no row names (and not waiting for deletion): verify them in parallel.
    progress.message("verifying unnamed packs");
    let candidates: Vec<(PackId, PathBuf)> = pack::list_packs(&packs_dir)?
        .into_iter()
        .filter(|(id, _)| !named_ids.contains(&id.0) && !doomed.contains(&id.0))
        .collect();
    let (good, refused) = scan_packs(&candidates, &|_| {});
    report.refused = refused;

    // Packs named whose file is gone (not merely unreadable: that is damage, reported by check).
    let gone: HashMap<u64, PathBuf> = named
        .iter()
        .filter_map(|(no, r)| {
            let path = pack::pack_path(&packs_dir, &PackId(r.id));
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((*no, path)),
                _ => None,
            }
        })
        .collect();

    let mut lost: HashSet<ChunkId> = HashSet::new();
    if !gone.is_empty() || !good.is_empty() {
        let txn = spool.catalog.write()?;
        if !gone.is_empty() {
            let mut per_pack: HashMap<u64, u64> = HashMap::new();
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut doomed_rows = Vec::new();
            for item in chunks.iter()? {
                let (k, v) = item?;
                let loc = ChunkLoc::decode(&v.value())?;
                if gone.contains_key(&loc.pack_no) {
                    doomed_rows.push(k.value());
                    *per_pack.entry(loc.pack_no).or_default() += 1;
                }
            }
            for k in doomed_rows {
                chunks.remove(k)?;
                lost.insert(ChunkId(k));
            }
            let mut packs_t = txn.open_table(PACKS)?;
            let mut ids_t = txn.open_table(PACK_IDS)?;
            let mut nos: Vec<&u64> = gone.keys().collect();
            nos.sort();
            for no in nos {
                if let Some((_, r)) = named.iter().find(|(n, _)| n == no) {
                    ids_t.remove(r.id)?;
                }
                packs_t.remove(*no)?;
                report.dropped.push(DroppedPack {
                    pack_no: *no,
                    path: gone[no].clone(),
                    chunks: per_pack.get(no).copied().unwrap_or(0),
                });
            }
            // Later dumps check reused files against the spool, as after a purge (dump.rs).
            catalog::count_purge(&txn)?;
        }
        for p in &good {
            let no = catalog::take_pack_number(&txn)?;
            let mut indexed = 0u64;
            record_scanned_pack(&txn, no, p, |id, _| {
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
        txn.commit()?;
        crate::failpoint::hit("repair-committed");
    }

    // Which dumps lost chunks, and which tapes hold them.
    if !lost.is_empty() {
        progress.message("finding the dumps that lost chunks");
        let reader = ChunkReader::new(spool)?;
        let rtxn = spool.catalog.read()?;
        for d in spool.catalog.dumps(None)? {
            let mut missing: HashSet<ChunkId> = HashSet::new();
            let mut tapes: BTreeSet<String> = BTreeSet::new();
            let mut on_no_tape = 0u64;
            let note = walk_refs(&reader, &d, &mut |ids| {
                for id in ids {
                    if lost.contains(id) && missing.insert(*id) {
                        let t = media::tapes_of_chunk(&rtxn, id)?;
                        if t.is_empty() {
                            on_no_tape += 1;
                        }
                        tapes.extend(t);
                    }
                }
                Ok(())
            })?;
            if !missing.is_empty() {
                report.incomplete.push(IncompleteDump {
                    id: d.id,
                    volume: d.volume.clone(),
                    time_ns: d.time_ns,
                    manifest_lost: note.is_some(),
                    manifest_note: note,
                    missing_chunks: missing.len() as u64,
                    on_no_tape,
                    tapes: tapes.into_iter().collect(),
                });
            }
        }
    }

    report.check = check(spool, read_data, progress)?;
    Ok(report)
}
