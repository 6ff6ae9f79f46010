//! `reel rebuild-catalog`: a new catalog made from the packs (and, optionally, from tapes).
//!
//! The catalog is an index over the packs (docs/DESIGN.md): every pack carries its own blob index,
//! frames carry their chunk tables, and every dump record is stored as a `DumpRecord` blob.
//! So a lost or damaged `catalog.redb` is rebuilt without ever opening it: the packs are read
//! in parallel, each verified against its name (a pack that fails is reported and skipped,
//! never deleted), and the new catalog is built in `catalog.redb.rebuild`. Only when it is
//! complete and committed is the old file kept aside (hard link `catalog.redb.damaged-<unix
//! time>`) and the new one renamed over `catalog.redb`: a crash at any point leaves either the
//! old catalog or the new one in place.
//!
//! What packs cannot give back: pending clones (`CLONES`), plain-tree exports
//! (`PLAIN_EXPORTS`) and, without `--from-tapes`, the media catalog (docs/RECOVERY.md).
//!
//! Packs are reached through the spool's pack store (`crate::pack_store`) and numbered in the
//! order they were put (`PackInfo::put_ns`), as the store numbered them.
//!
//! The pieces shared with `check --repair` (`super::repair`) live here too: reading the packs
//! of a pack store into index rows (`scan_packs`, on `crate::pack_store::scan`), and walking
//! what a dump references (`walk_refs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::catalog::{self, Catalog, ChunkLoc, DumpRecord, TapeIndex};
use crate::crypto::Keys;
use crate::error::Damaged;
use crate::error::IoContext;
use crate::manifest::ManifestReader;
use crate::pack::{BlobEntry, BlobKind, PackId};
use crate::pack_store::scan::{self, Proof};
use crate::pack_store::{PackInfo, PackStore};
use crate::progress::Progress;
use crate::record::ForgetRecord;
use crate::spool::{CATALOG_FILE, Spool};
use crate::store::{ChunkReader, stored_share};
use crate::tape::{locate, media, payload};
use crate::{ChunkId, Error, Result};

/// Where the new catalog is built before it replaces `catalog.redb`.
pub const REBUILD_FILE: &str = "catalog.redb.rebuild";

/// A pack read and verified end to end (its bytes hash to its name).
pub(crate) struct ScannedPack {
    pub id: PackId,
    /// Where it is, for messages (`PackStore::location`).
    pub path: PathBuf,
    pub size: u64,
    /// When it was put (`PackInfo::put_ns`: a file's mtime): when it was written, as packs are
    /// never modified.
    pub mtime_ns: i64,
    pub entries: Vec<BlobEntry>,
    /// Every chunk in it with its location, pack number 0 (the caller numbers the pack).
    /// Frames are opened: each chunk inside gets its own row, as the store writes them.
    pub chunks: Vec<(ChunkId, ChunkLoc)>,
    pub dump_records: Vec<DumpRecord>,
    pub forgets: Vec<ForgetRecord>,
}

/// Record a scanned pack as pack `no` and index those of its chunks the catalog lacks (a chunk
/// already indexed keeps its place); `on_new` sees each chunk indexed. Shared by the rebuild
/// and by `check --repair`, which adopts packs the same way.
pub(crate) fn record_scanned_pack(
    w: &catalog::Writer,
    no: u64,
    p: &ScannedPack,
    mut on_new: impl FnMut(&ChunkId, &ChunkLoc),
) -> Result<()> {
    w.record_pack(no, &p.id, p.size, &p.entries, p.mtime_ns)?;
    let mut chunks = w.chunk_index()?;
    for (id, loc) in &p.chunks {
        let at = ChunkLoc {
            pack_no: no,
            ..*loc
        };
        if chunks.insert_new(id, &at)? {
            on_new(id, loc);
        }
    }
    Ok(())
}

/// Read and verify `packs` of `store` in parallel (`scan_pack`); `scanned` hears of each good
/// one. Returns the good ones numbered in the order they were written, as the store numbers
/// them, and the refused ones.
pub(crate) fn scan_packs(
    store: &dyn PackStore,
    keys: &Keys,
    packs: &[PackInfo],
    scanned: &(dyn Fn(&ScannedPack) + Sync),
) -> (Vec<ScannedPack>, Vec<Refused>) {
    let results: Vec<std::result::Result<ScannedPack, Refused>> = packs
        .par_iter()
        .map(|listed| {
            let r = scan_pack(store, keys, listed).map_err(|e| Refused {
                path: store.location(&listed.id),
                reason: e.to_string(),
            });
            if let Ok(s) = &r {
                scanned(s);
            }
            r
        })
        .collect();
    let (mut good, mut refused) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(p) => good.push(p),
            Err(r) => refused.push(r),
        }
    }
    good.sort_by_key(|p| (p.mtime_ns, p.id));
    (good, refused)
}

/// Read one pack of `store`: its hash against its name, its index, its frames' chunk tables
/// (`crate::pack_store::scan`), and its dump and forget records.
pub(crate) fn scan_pack(
    store: &dyn PackStore,
    keys: &Keys,
    listed: &PackInfo,
) -> Result<ScannedPack> {
    let id = listed.id;
    let path = &store.location(&id);
    let r = store.open(&id, keys)?;
    let found = scan::scan(&r, Proof::Name(id))?;
    let in_pack = |err: Error| {
        Error::damaged(
            Damaged::Pack {
                path: path.to_path_buf(),
                offset: None,
            },
            format!("pack {}: {err}", path.display()),
        )
    };
    let mut out = ScannedPack {
        id,
        path: path.to_path_buf(),
        size: r.size(),
        mtime_ns: listed.put_ns,
        entries: found.entries,
        chunks: found.chunks,
        dump_records: Vec::new(),
        forgets: Vec::new(),
    };
    for (kind, raw) in &found.records {
        match kind {
            BlobKind::DumpRecord => out
                .dump_records
                .push(DumpRecord::decode(raw).map_err(in_pack)?),
            _ => out
                .forgets
                .push(ForgetRecord::decode(raw).map_err(in_pack)?),
        }
    }
    Ok(out)
}

/// Call `f` with the chunks dump `d` references: its manifest chunks first, then its files'
/// chunks in batches. Returns why the manifest could not be read, when it could not (its
/// manifest chunks were still passed to `f`).
pub(crate) fn walk_refs(
    reader: &ChunkReader,
    d: &DumpRecord,
    f: &mut dyn FnMut(&[ChunkId]) -> Result<()>,
) -> Result<Option<String>> {
    let man: Vec<ChunkId> = d.manifest_chunks().iter().map(|c| c.0).collect();
    f(&man)?;
    for id in &man {
        if reader.locate(id)?.is_none() {
            return Ok(Some(format!(
                "manifest chunk {} is not on the spool",
                id.short()
            )));
        }
    }
    let entries = match ManifestReader::new(
        reader.stream(d.manifest_chunks(), format!("manifest of dump {}", d.id)),
    ) {
        Ok(m) => m,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let mut batch: Vec<ChunkId> = Vec::new();
    for e in entries {
        match e {
            Ok(e) => batch.extend(e.chunks().map(|(c, _)| c)),
            Err(e) => {
                f(&batch)?;
                return Ok(Some(e.to_string()));
            }
        }
        if batch.len() >= 65_536 {
            f(&batch)?;
            batch.clear();
        }
    }
    f(&batch)?;
    Ok(None)
}

/// The chunks a dump references that the spool lacks, and the recorded tapes holding them.
#[derive(Default)]
pub(crate) struct Missing {
    pub chunks: HashSet<ChunkId>,
    pub tapes: BTreeSet<String>,
    /// Of `chunks`, those on no recorded tape.
    pub on_no_tape: u64,
}

impl Missing {
    /// Count chunk `id` as missing (once), with the tapes holding it.
    pub fn add(&mut self, id: &ChunkId, tapes: &TapeIndex) -> Result<()> {
        if self.chunks.insert(*id) {
            let t = tapes.tapes_of(id)?;
            if t.is_empty() {
                self.on_no_tape += 1;
            }
            self.tapes.extend(t);
        }
        Ok(())
    }

    /// The report line of dump `d`; `note` says why its manifest could not be read.
    pub fn incomplete(self, d: &DumpRecord, note: Option<String>) -> IncompleteDump {
        IncompleteDump {
            id: d.id,
            volume: d.volume.clone(),
            time_ns: d.time_ns,
            manifest_lost: note.is_some(),
            manifest_note: note,
            missing_chunks: self.chunks.len() as u64,
            on_no_tape: self.on_no_tape,
            tapes: self.tapes.into_iter().collect(),
        }
    }
}

/// A pack or tape image that was not used, and why. Nothing refused is deleted.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Refused {
    pub path: PathBuf,
    pub reason: String,
}

/// A dump some of whose chunks are not on the spool.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IncompleteDump {
    pub id: u64,
    pub volume: String,
    pub time_ns: i64,
    /// Its manifest cannot be read from the spool (so its file chunks are not known here).
    pub manifest_lost: bool,
    /// Why the manifest could not be read, when it could not.
    pub manifest_note: Option<String>,
    /// Distinct chunks it references that the spool lacks (manifest chunks included).
    pub missing_chunks: u64,
    /// Of those, chunks on no recorded tape: lost unless some tape not yet recorded has them.
    pub on_no_tape: u64,
    /// Recorded tapes holding missing chunks: `reel restore --tapes DIR` reads them, or
    /// `reel import` brings them back onto the spool.
    pub tapes: Vec<String>,
}

/// One dump, briefly.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpBrief {
    pub id: u64,
    pub volume: String,
    pub time_ns: i64,
    pub level: u8,
}

impl From<&DumpRecord> for DumpBrief {
    fn from(d: &DumpRecord) -> DumpBrief {
        DumpBrief {
            id: d.id,
            volume: d.volume.clone(),
            time_ns: d.time_ns,
            level: d.level,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RebuildReport {
    pub packs_read: u64,
    pub pack_bytes: u64,
    pub packs_refused: Vec<Refused>,
    /// Chunk index rows (frames opened; manifests, dump and forget records included).
    pub chunks: u64,
    pub dumps_restored: Vec<DumpBrief>,
    /// Dump ids a forget record (prune) names: not brought back.
    pub dumps_forgotten: Vec<u64>,
    /// Records of dumps whose commit was interrupted and whose id a later dump took.
    pub records_ignored: Vec<DumpBrief>,
    /// Volumes of restored dumps that reel.toml does not name: `reel volume add` them.
    pub unknown_volumes: Vec<String>,
    /// Tapes recorded in the media catalog.
    pub tapes_recorded: Vec<String>,
    /// Tapes imported because they hold dumps the packs did not: (label, dumps added).
    pub tapes_imported: Vec<(String, u64)>,
    pub tapes_refused: Vec<Refused>,
    pub incomplete: Vec<IncompleteDump>,
    /// Other things the admin should know (broken chains, duplicate tapes).
    pub warnings: Vec<String>,
    /// Where the old catalog.redb was kept, if there was one.
    pub old_catalog: Option<PathBuf>,
}

impl RebuildReport {
    /// Nothing refused and every dump complete.
    pub fn clean(&self) -> bool {
        self.packs_refused.is_empty() && self.tapes_refused.is_empty() && self.incomplete.is_empty()
    }
}

/// Rebuild `root`'s catalog from its packs, and from the tape images in `from_tapes`.
pub fn rebuild_catalog(
    root: &Path,
    from_tapes: Option<&Path>,
    progress: &dyn Progress,
    unlock: crate::spool::Unlock,
) -> Result<RebuildReport> {
    let new_path = root.join(REBUILD_FILE);
    let spool = Spool::open_with_catalog(
        root,
        |root| {
            // A rebuild killed earlier left its half-built file: start again.
            let p = root.join(REBUILD_FILE);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
            Catalog::create(&p)
        },
        unlock,
    )?;
    let mut report = RebuildReport::default();

    // 1. Every pack, read and verified in parallel.
    progress.message("reading packs");
    let store = spool.pack_store().as_ref();
    let listed = store.list_info()?;
    progress.set_total(listed.iter().map(|p| p.size).sum());
    let (packs, refused) = scan_packs(store, spool.keys(), &listed, &|s| progress.advance(s.size));
    report.packs_refused = refused;

    // 2. Dumps: one record per id, minus the forgotten ones.
    let chosen = choose_dumps(&spool, &packs, &mut report);

    // 3. One transaction: packs, chunk index, dumps, counters.
    progress.message("writing the chunk index");
    let dumps = write_index(&spool, &packs, chosen, &mut report)?;
    report.dumps_restored = dumps.iter().map(DumpBrief::from).collect();
    drop(packs);

    // 4. Tapes: recorded, and their dumps imported when the packs did not have them.
    if let Some(dir) = from_tapes {
        progress.message("reading tapes");
        read_tapes(&spool, dir, &mut report)?;
    }

    // 5. Owned chunks per dump, and what is missing.
    progress.message("settling owned chunks");
    settle_owned(&spool, &dumps, &mut report)?;
    crate::failpoint::hit("rebuild-built");

    // 6. Swap: keep the old file under a second name, then rename the new one over it.
    report.old_catalog = swap_in(root, &new_path)?;
    drop(spool);
    Ok(report)
}

/// The dumps the packs' records give.
struct ChosenDumps {
    /// The record chosen for each id, forgotten dumps included.
    by_id: HashMap<u64, DumpRecord>,
    /// The dumps to restore (not forgotten), by id.
    dumps: Vec<DumpRecord>,
    /// The highest dump id a record or a forget record names.
    max_id: u64,
}

/// One record per dump id (a later record of the same id wins: the earlier one is of a dump
/// whose commit was interrupted), minus the dumps a forget record names. What was ignored or
/// forgotten, broken chains and unknown volumes go to `report`.
fn choose_dumps(spool: &Spool, packs: &[ScannedPack], report: &mut RebuildReport) -> ChosenDumps {
    let forgotten: BTreeSet<u64> = packs
        .iter()
        .flat_map(|p| p.forgets.iter())
        .flat_map(|f| f.dumps.iter().map(|d| d.0))
        .collect();
    let mut by_id: BTreeMap<u64, (i64, DumpRecord)> = BTreeMap::new();
    let mut max_id = forgotten.iter().copied().max().unwrap_or(0);
    for p in packs {
        for d in &p.dump_records {
            max_id = max_id.max(d.id);
            match by_id.get(&d.id) {
                Some((_, old)) if same_dump(old, d) => {}
                Some((t, _)) if *t > p.mtime_ns => {
                    report.records_ignored.push(DumpBrief::from(d));
                }
                Some((_, old)) => {
                    report.records_ignored.push(DumpBrief::from(old));
                    by_id.insert(d.id, (p.mtime_ns, d.clone()));
                }
                None => {
                    by_id.insert(d.id, (p.mtime_ns, d.clone()));
                }
            }
        }
    }
    let chosen: HashMap<u64, DumpRecord> =
        by_id.iter().map(|(id, (_, d))| (*id, d.clone())).collect();
    let dumps: Vec<DumpRecord> = by_id
        .into_values()
        .map(|(_, d)| d)
        .filter(|d| {
            let gone = forgotten.contains(&d.id);
            if gone {
                report.dumps_forgotten.push(d.id);
            }
            !gone
        })
        .collect();
    let present: HashSet<u64> = dumps.iter().map(|d| d.id).collect();
    for d in &dumps {
        if let Some(a) = d.chain.iter().find(|a| !present.contains(a)) {
            report.warnings.push(format!(
                "dump {} ({}) is based on dump {a}, whose record is in no readable pack{}: its restore may miss files",
                d.id,
                d.volume,
                if forgotten.contains(a) { " (it was pruned)" } else { "" }
            ));
        }
    }
    let unknown: BTreeSet<String> = dumps
        .iter()
        .filter(|d| !spool.settings.volumes.contains_key(&d.volume))
        .map(|d| d.volume.clone())
        .collect();
    report.unknown_volumes = unknown.into_iter().collect();
    ChosenDumps {
        by_id: chosen,
        dumps,
        max_id,
    }
}

/// Write the packs, the chunk index, the chosen dumps and the counters in one transaction.
/// Returns the dumps as recorded (with the totals their records lacked).
fn write_index(
    spool: &Spool,
    packs: &[ScannedPack],
    chosen: ChosenDumps,
    report: &mut RebuildReport,
) -> Result<Vec<DumpRecord>> {
    let ChosenDumps {
        by_id,
        mut dumps,
        max_id,
    } = chosen;
    let w = spool.catalog.writer()?;
    let mut no = 1u64;
    // A dump record blob is written before the store's totals are known (its new_chunks,
    // new_raw_bytes and stored_bytes are 0): they are the packs written since the previous
    // dump's record up to the pack holding this one, as the store writes them in order.
    let mut added: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let (mut pending_bytes, mut pending_new, mut pending_raw) = (0u64, 0u64, 0u64);
    for p in packs {
        // A chunk in several packs: the first (oldest) pack keeps it.
        record_scanned_pack(&w, no, p, |_, loc| {
            report.chunks += 1;
            if matches!(loc.kind, BlobKind::Data | BlobKind::Manifest) {
                pending_new += 1;
                pending_raw += u64::from(loc.raw_len);
            }
        })?;
        pending_bytes += p.size;
        for d in &p.dump_records {
            let is_chosen = by_id.get(&d.id).is_some_and(|c| same_dump(c, d));
            if is_chosen && !added.contains_key(&d.id) {
                added.insert(d.id, (pending_new, pending_raw, pending_bytes));
                (pending_bytes, pending_new, pending_raw) = (0, 0, 0);
            }
        }
        report.packs_read += 1;
        report.pack_bytes += p.size;
        no += 1;
    }
    for d in &mut dumps {
        if let Some((new, raw, bytes)) = added.get(&d.id)
            && d.totals.stored_bytes == 0
        {
            d.totals.new_chunks = *new;
            d.totals.new_raw_bytes = *raw;
            d.totals.stored_bytes = *bytes;
        }
        w.record_dump(d)?;
    }
    w.set_next_pack_number(no)?;
    w.set_next_dump_id(max_id + 1)?;
    w.commit()?;
    Ok(dumps)
}

/// Record the chunks each dump owns, in chain order (ids grow along a chain), and report the
/// dumps whose chunks are missing. `from_packs` are the dumps the packs gave: the dumps a tape
/// import added own their chunks already.
fn settle_owned(
    spool: &Spool,
    from_packs: &[DumpRecord],
    report: &mut RebuildReport,
) -> Result<()> {
    let from_packs: HashSet<u64> = from_packs.iter().map(|d| d.id).collect();
    let all = spool.catalog.dumps(None)?;
    let mut order: Vec<&DumpRecord> = all.iter().collect();
    order.sort_by_key(|d| d.id);
    let mut any_missing = false;
    let reader = ChunkReader::new(spool)?;
    let tapes = spool.catalog.reader()?.tape_index()?;
    let w = spool.catalog.writer()?;
    let tuning = spool.catalog.tuning();
    for d in order {
        let own = from_packs.contains(&d.id);
        let mut missing = Missing::default();
        // The rows `d` owns are staged as sorted runs and folded into `owned` in key order (as a
        // dump's are, FORMAT.md "Owning"), not inserted at random keys as the manifest meets them.
        let mut staged = catalog::OwnedStaging::default();
        let note = walk_refs(&reader, d, &mut |ids| {
            let owned = w.ownership()?;
            for id in ids {
                let loc = owned.location(id)?;
                if loc.is_none() {
                    missing.add(id, &tapes)?;
                }
                if !own || owned.owned_by_any(&d.chain, id)? {
                    continue;
                }
                // On tape only (or lost): owned, with no bytes on the spool.
                staged.extend([(*id, loc.as_ref().map_or(0, stored_share))]);
            }
            drop(owned);
            staged.spill_at(&w, d.id, tuning.owned_mem_rows)
        })?;
        if own {
            for slice in staged.slices(tuning.slice_rows) {
                staged.fold_slice(&w, d.id, slice)?;
            }
        }
        any_missing |= !missing.chunks.is_empty();
        if note.is_some() || missing.on_no_tape > 0 {
            report.incomplete.push(missing.incomplete(d, note));
        }
    }
    // Missing chunks: later dumps must check reused files against the spool, as after a
    // purge (dump.rs reads `purges`).
    if any_missing && w.purges() == 0 {
        w.count_purge()?;
    }
    w.commit()
}

/// Keep the old catalog (if any) under a second name, then rename the new one over it.
/// Returns where the old one was kept.
fn swap_in(root: &Path, new_path: &Path) -> Result<Option<PathBuf>> {
    let cat_path = root.join(CATALOG_FILE);
    let mut old = None;
    if fs::symlink_metadata(&cat_path).is_ok() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = root.join(format!("{CATALOG_FILE}.damaged-{secs}"));
        let mut n = 1;
        while fs::symlink_metadata(&aside).is_ok() {
            aside = root.join(format!("{CATALOG_FILE}.damaged-{secs}.{n}"));
            n += 1;
        }
        fs::hard_link(&cat_path, &aside).at(&aside)?;
        old = Some(aside);
    }
    crate::fsutil::fsync_dir(root)?;
    crate::failpoint::hit("rebuild-old-kept");
    fs::rename(new_path, &cat_path).at(&cat_path)?;
    crate::fsutil::fsync_dir(root)?;
    Ok(old)
}

/// Two records of one dump (a carried copy, or the same record written twice)?
fn same_dump(a: &DumpRecord, b: &DumpRecord) -> bool {
    a.id == b.id && a.volume == b.volume && a.time_ns == b.time_ns && a.manifest == b.manifest
}

/// Record every good tape image in `dir`; import those holding dumps the catalog lacks.
fn read_tapes(spool: &Spool, dir: &Path, report: &mut RebuildReport) -> Result<()> {
    let mut tapes = Vec::new();
    for (n, vols) in locate::images_in(dir)?.into_iter().enumerate() {
        let staged = match locate::stage(spool, &vols, "rebuild-tape", n) {
            Ok(staged) => staged,
            Err(e) => {
                report.tapes_refused.push(Refused {
                    path: vols[0].clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        match payload::verify_payload(staged.dir(), &payload::TapeKey::of_spool(spool)) {
            Ok(cat) => tapes.push((cat, staged, vols)),
            Err(e) => report.tapes_refused.push(Refused {
                path: vols[0].clone(),
                reason: e.to_string(),
            }),
        }
    }
    // Oldest first, so that a tape's dumps find their bases imported before them.
    tapes.sort_by(|a, b| {
        (a.0.created_ns, a.0.sequence, &a.0.label).cmp(&(b.0.created_ns, b.0.sequence, &b.0.label))
    });
    let mut seen: HashSet<String> = HashSet::new();
    for (cat, staged, vols) in tapes {
        if !seen.insert(cat.label.clone()) {
            report.warnings.push(format!(
                "{}: tape {} was read already from another image; skipped",
                vols[0].display(),
                cat.label
            ));
            continue;
        }
        let known: HashMap<(String, i64), u64> = spool
            .catalog
            .dumps(None)?
            .into_iter()
            .map(|d| ((d.volume, d.time_ns), d.id))
            .collect();
        let all_known = cat
            .dumps
            .iter()
            .all(|d| known.contains_key(&(d.volume.clone(), d.time_ns)));
        if !all_known {
            // Dumps only on tape: the import path adds them (and their data) and records
            // the tape; it verified everything already.
            match payload::import_payload(spool, staged.dir()) {
                Ok(s) => {
                    report
                        .tapes_imported
                        .push((cat.label.clone(), s.dumps_added.len() as u64));
                    report.tapes_recorded.push(cat.label.clone());
                }
                Err(e) => report.tapes_refused.push(Refused {
                    path: vols[0].clone(),
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        // Every dump is here: record the tape only (no data copied back onto the spool).
        let bytes = vols
            .iter()
            .map(|p| {
                if p.is_dir() {
                    0
                } else {
                    fs::metadata(p).map_or(0, |m| m.len())
                }
            })
            .sum();
        let mut chunks: Vec<ChunkId> = cat
            .dumps
            .iter()
            .flat_map(|d| d.chunks.iter().map(|h| ChunkId(h.0)))
            .collect();
        chunks.sort_unstable();
        chunks.dedup();
        let id_of = |volume: &str, time_ns: i64| known.get(&(volume.to_string(), time_ns)).copied();
        let rec = media::TapeRecord {
            version: crate::record::TAPE_RECORD_VERSION,
            label: cat.label.clone(),
            created_ns: cat.created_ns,
            media_set: cat.media_set.clone(),
            sequence: cat.sequence,
            bytes,
            volumes: vols.len() as u32,
            dumps: cat
                .dumps
                .iter()
                .map(|d| (known[&(d.volume.clone(), d.time_ns)], d.tape_bytes))
                .collect(),
            packs: cat.packs.iter().map(|p| p.name.0).collect(),
            whole_file_bytes: cat.dumps.iter().map(|d| d.whole_file_bytes).sum(),
            summaries: cat
                .dumps
                .iter()
                .map(|d| {
                    let chain = d.chain_refs.iter();
                    let chain = chain.filter_map(|r| id_of(&r.volume, r.time_ns));
                    d.summary(known[&(d.volume.clone(), d.time_ns)], chain.collect())
                })
                .collect(),
        };
        let w = spool.catalog.writer()?;
        w.record_tape(&rec.label, &rec, chunks.into_iter())?;
        w.commit()?;
        report.tapes_recorded.push(cat.label.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pack::{PackWriter, encode_blob};
    use crate::pack_store::{Faulty, InMemory};

    /// Put a pack of `blobs` (staged in `tmp`) into `store`.
    fn put(store: &dyn PackStore, tmp: &Path, blobs: &[(ChunkId, BlobKind, Vec<u8>)]) -> PackId {
        let mut w = PackWriter::create(tmp, &crate::crypto::Keys::plain()).unwrap();
        for (id, kind, raw) in blobs {
            w.add(*id, *kind, &encode_blob(raw, 3)).unwrap();
        }
        let (staged, _) = w.close().unwrap().into_parts();
        let id = *staged.id();
        store.put(staged).unwrap();
        id
    }

    /// Two packs: a data pack, then one with a frame and a forget record. Returns their ids.
    fn two_packs(store: &dyn PackStore, tmp: &Path) -> (PackId, PackId) {
        let raw = b"data".to_vec();
        let first = put(store, tmp, &[(ChunkId::of(&raw), BlobKind::Data, raw)]);
        let (a, b) = (b"first chunk".to_vec(), vec![7u8; 5000]);
        let (frame, _) = crate::frame::build(&[(ChunkId::of(&a), &a), (ChunkId::of(&b), &b)]);
        let forget = ForgetRecord {
            version: 1,
            time_ns: 5,
            dumps: vec![(3, "v".into(), 9)],
        }
        .encode();
        let second = put(
            store,
            tmp,
            &[
                (
                    crate::frame::id(&crate::crypto::Keys::plain(), &frame).unwrap(),
                    BlobKind::Frame,
                    frame,
                ),
                (ChunkId::of(&forget), BlobKind::Forget, forget),
            ],
        );
        (first, second)
    }

    /// Packs come back in the order they were put, with their put times, frames opened and
    /// records decoded.
    #[test]
    fn scanned_packs_come_in_put_order_with_their_records() {
        let tmp = tempfile::tempdir().unwrap();
        let store = InMemory::new();
        let (first, second) = two_packs(&store, tmp.path());
        let listed = store.list_info().unwrap();
        let (good, refused) = scan_packs(&store, &crate::crypto::Keys::plain(), &listed, &|_| {});
        assert!(refused.is_empty());
        let ids: Vec<PackId> = good.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![first, second]);
        for p in &good {
            let info = listed.iter().find(|l| l.id == p.id).unwrap();
            assert_eq!((p.size, p.mtime_ns), (info.size, info.put_ns));
            assert_eq!(p.path, store.location(&p.id));
        }
        assert_eq!(good[1].chunks.len(), 3);
        assert_eq!(good[1].forgets[0].dumps, vec![(3, "v".to_string(), 9)]);
        assert!(good[1].dump_records.is_empty());
    }

    /// A pack that cannot be read is refused, named by its location; the others are read.
    #[test]
    fn an_unreadable_pack_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Faulty::new(Arc::new(InMemory::new()));
        let (first, second) = two_packs(&store, tmp.path());
        store.fail_reads_of(first);
        let listed = store.list_info().unwrap();
        // Listed, then gone when read.
        let gone = PackId([9u8; 32]);
        assert!(
            scan_pack(
                &store,
                &crate::crypto::Keys::plain(),
                &PackInfo {
                    id: gone,
                    ..listed[0]
                }
            )
            .is_err()
        );
        let (good, refused) = scan_packs(&store, &crate::crypto::Keys::plain(), &listed, &|_| {});
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].id, second);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].path, store.location(&first));
        assert!(
            refused[0].reason.contains("injected fault: read"),
            "{refused:?}"
        );
    }
}
