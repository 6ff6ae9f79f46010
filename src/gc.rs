//! `reel gc`: give back the space of chunks no dump, clone or record needs any more.
//!
//! Why it is built this way:
//! - **Mark** walks every manifest still needed: each dump in `dumps` and each `store` clone
//!   in `clones`. Live chunks are remembered as a sorted, deduplicated `Vec<u64>` of the first
//!   8 bytes of their ids: 8 bytes per referenced chunk, never the manifests themselves
//!   (they are streamed). Two ids sharing 8 bytes only make gc keep a dead chunk, the safe
//!   direction. `Forget` blobs are always live (a rebuilt catalog must not resurrect pruned
//!   dumps); a `DumpRecord` blob is live while its dump is in `dumps` (its bytes are decoded
//!   to learn which dump it is).
//! - **Sweep** is per pack. A blob (a frame counts once, by pack number and offset) is live if
//!   any chunk the chunk index locates in it is live. A pack with nothing live is deleted; a
//!   pack whose unused share exceeds `--max-unused` is rewritten: live blobs are copied as
//!   stored bytes (verified, never recompressed), a partly live frame is rebuilt from its live
//!   chunks and recompressed. The live blobs of all rewritten packs go into as few new packs as
//!   `PACK_TARGET_SIZE` allows.
//!   The sweep keeps one small record per blob (a frame counts once, so about one per MiB of
//!   data) and reads the chunk index, which stays on disk, front to back.
//! - **Crash safety** (docs/DESIGN.md, "Write order"): new packs are durable under packs/ before
//!   one catalog transaction indexes them, repoints moved chunks, drops dead chunks, forgets
//!   the old packs and records them in `doomed`. Only then are files deleted, and only while
//!   gc holds the readers lock exclusively (a `restore`, `cat` or `mount` that opened the spool
//!   earlier may still read the old packs). A crash anywhere leaves a spool that opens and
//!   passes `check`: at worst with packs nothing names (notes) or doomed files that the next
//!   gc deletes. `reel purge --exported` dooms the packs it forgets the same way and deletes
//!   them with `delete_doomed` too.
//! - **The plan is shared**: a dry run, and `reel prune` and `reel forget` announcing what gc
//!   will free once their dumps are gone (`plan_after_forgetting`), run the same mark and
//!   per-pack plan as the real run; the mark then leaves out the dumps about to be forgotten.
//! - **Exclusion**: gc opens the spool for writing, so it holds the spool lock: no dump, clone,
//!   import, export, purge or prune runs beside it. That is what protects a running dump's new
//!   chunks, which no committed manifest names yet.
//! - Tape copies are never touched (`tapes`, `tape_chunks`); chunks only on tape (no chunk
//!   index row) are not gc's business.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::catalog::{ChunkLoc, DumpRecord};
use crate::error::Damaged;
use crate::frame_packer::{Chunks, FramePacker, PackSink, Rollover};
use crate::manifest::ManifestReader;
use crate::pack::{
    self, BLOB_HEADER_LEN, BlobEntry, BlobKind, EncodedBlob, FILE_HEADER_LEN, FOOTER_LEN,
    INDEX_ENTRY_LEN, PACK_TARGET_SIZE, PackId, PackWriter, StoredPack,
};
use crate::progress::Progress;
use crate::record::CloneView;
use crate::spool::Spool;
use crate::store::{ChunkReader, stored_share};
use crate::{ChunkId, Error, Result};

/// What `gc` is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Rewrite a pack when more than this percentage of its bytes is unused (0-100). 0
    /// rewrites every pack with any unused byte; 100 only deletes wholly unused packs.
    pub max_unused_percent: u8,
    /// Compute the report without writing or deleting anything.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            max_unused_percent: 10,
            dry_run: false,
        }
    }
}

/// What a gc run did (or, with `dry_run`, would do). Field names are part of `reel gc --json`
/// (docs/RETENTION.md).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Packs the catalog named before the run, and their bytes.
    pub packs_before: u64,
    pub bytes_before: u64,
    /// Packs with nothing live, taken out of the catalog.
    pub packs_deleted: u64,
    /// Packs whose live blobs were copied into new packs, taken out of the catalog.
    pub packs_rewritten: u64,
    /// New packs written (estimated with `dry_run`).
    pub packs_written: u64,
    /// Disk bytes before minus after: pack files deleted by this run (including packs an
    /// earlier run left waiting) minus the packs it wrote. Negative while this run's old packs
    /// wait for readers. With `dry_run`, the estimate if nothing waits.
    pub bytes_freed: i64,
    /// Chunk index rows removed (dead chunks in deleted or rewritten packs).
    pub chunks_removed: u64,
    /// Live chunks copied into new packs.
    pub chunks_moved: u64,
    /// Of the removed chunks, how many are still on some tape.
    pub chunks_on_tape: u64,
    /// Distinct live chunk references found by the mark phase (8-byte prefixes).
    pub live_refs: u64,
    /// Pack files deleted by this run that an earlier run had left waiting.
    pub doomed_deleted: u64,
    /// Packs out of the catalog whose files wait for readers (restore, cat, mount) to
    /// finish; the next gc deletes them.
    pub doomed_waiting: u64,
    pub doomed_waiting_bytes: u64,
}

// ---------------------------------------------------------------------------------------------
// Mark

/// Live chunk ids by their first 8 bytes: sorted and deduplicated, with an unsorted tail that
/// is folded in when it grows (so memory stays near 8 bytes per distinct live chunk). Purge
/// marks the latest dumps and clones with it too.
#[derive(Default)]
pub(crate) struct MarkSet {
    ids: Vec<u64>,
    sorted: usize,
}

fn prefix(id: &ChunkId) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

impl MarkSet {
    pub(crate) fn add(&mut self, id: &ChunkId) {
        self.ids.push(prefix(id));
        if self.ids.len() - self.sorted > self.sorted.max(1 << 20) {
            self.compact();
        }
    }

    pub(crate) fn compact(&mut self) {
        self.ids.sort_unstable();
        self.ids.dedup();
        self.ids.shrink_to_fit();
        self.sorted = self.ids.len();
    }

    /// Only valid after `compact`.
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.ids.binary_search(&prefix(id)).is_ok()
    }
}

/// Add a manifest's own chunks and every chunk its entries reference.
fn mark_manifest(
    reader: &ChunkReader,
    set: &mut MarkSet,
    chunks: Vec<(ChunkId, u32)>,
    what: String,
) -> Result<()> {
    for (id, _) in &chunks {
        set.add(id);
    }
    let needed = |e: Error| {
        Error::damaged(
            Damaged::Manifest {
                dump: None,
                offset: None,
            },
            format!(
                "gc cannot read the {what} ({e}); gc must know every manifest to know what is live, \
             so it stopped without changing anything: run `reel check`"
            ),
        )
    };
    let entries = ManifestReader::new(reader.stream(chunks, what.clone())).map_err(needed)?;
    for e in entries {
        for (id, _) in e.map_err(needed)?.chunks() {
            set.add(&id);
        }
    }
    Ok(())
}

/// Everything the mark phase learns.
struct Marks {
    set: MarkSet,
    /// Dump ids in the catalog (their `DumpRecord` blobs are live).
    dumps: HashSet<u64>,
}

/// Mark what the catalog's dumps and clones reference, as if the dumps `forgotten` were out of
/// the catalog already (prune plans with the dumps it is about to remove).
fn mark(spool: &Spool, forgotten: &HashSet<u64>, progress: &dyn Progress) -> Result<Marks> {
    let reader = ChunkReader::new(spool)?;
    let mut set = MarkSet::default();
    let mut dumps = HashSet::new();
    let mut manifests: Vec<(Vec<(ChunkId, u32)>, String)> = Vec::new();
    {
        let r = spool.catalog.reader()?;
        for rec in r.dumps_by_id()? {
            if forgotten.contains(&rec.id) {
                continue;
            }
            dumps.insert(rec.id);
            manifests.push((
                rec.manifest_chunks(),
                format!("manifest of dump {}", rec.id),
            ));
        }
        for rec in r.clones()? {
            if let CloneView::Manifest { chunks, .. } = rec.view {
                manifests.push((
                    chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect(),
                    format!("manifest of the clone of volume {}", rec.volume),
                ));
            }
        }
    }
    // Merged dumps share their source's manifest: read each manifest once.
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    for (i, (chunks, what)) in manifests.into_iter().enumerate() {
        let mut h = blake3::Hasher::new();
        for (id, n) in &chunks {
            h.update(&id.0);
            h.update(&n.to_le_bytes());
        }
        if !seen.insert(*h.finalize().as_bytes()) {
            continue;
        }
        progress.message(&format!("marking live chunks ({} manifests read)", i));
        mark_manifest(&reader, &mut set, chunks, what)?;
    }
    set.compact();
    Ok(Marks { set, dumps })
}

// ---------------------------------------------------------------------------------------------
// Sweep

/// One blob of a pack as the chunk index sees it.
#[derive(Default)]
struct BlobAcc {
    stored_len: u32,
    framed: bool,
    live: u32,
    /// Stored share of the dead chunks of a frame.
    dead_share: u64,
}

/// Decides liveness of chunk index rows.
struct Liveness {
    marks: Marks,
    /// `DumpRecord` chunks whose record names a dump in the catalog, or that could not be read
    /// (kept: the safe direction).
    live_records: HashSet<ChunkId>,
}

impl Liveness {
    fn is_live(&self, id: &ChunkId, loc: &ChunkLoc) -> bool {
        match loc.kind {
            BlobKind::Forget => true,
            BlobKind::DumpRecord => self.live_records.contains(id) || self.marks.set.contains(id),
            _ => self.marks.set.contains(id),
        }
    }
}

fn liveness(spool: &Spool, marks: Marks) -> Result<Liveness> {
    let r = spool.catalog.reader()?;
    let mut records = Vec::new();
    for row in r.chunk_rows()? {
        let (id, loc) = row?;
        if loc.kind == BlobKind::DumpRecord {
            records.push(id);
        }
    }
    let reader = ChunkReader::new(spool)?;
    let mut live_records = HashSet::new();
    for id in records {
        let rec = reader
            .read(&id, &|| "a dump record blob".to_string())
            .and_then(|raw| DumpRecord::decode(&raw));
        match rec {
            Ok(r) if !marks.dumps.contains(&r.id) => {}
            Ok(_) => {
                live_records.insert(id);
            }
            Err(e) => {
                tracing::warn!("dump record blob {} unreadable ({e}); kept", id.short());
                live_records.insert(id);
            }
        }
    }
    Ok(Liveness {
        marks,
        live_records,
    })
}

/// The plan for one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Delete,
    Rewrite,
}

struct PackPlan {
    no: u64,
    id: PackId,
    size: u64,
    /// Bytes a rewrite would keep (live blobs with their headers and index entries).
    live_bytes: u64,
    fate: Fate,
}

/// Per pack: the bytes its live blobs need, the way a rewrite would lay them out.
fn plan(spool: &Spool, live: &Liveness, max_unused: u8) -> Result<Vec<PackPlan>> {
    let mut blobs: HashMap<u64, HashMap<u64, BlobAcc>> = HashMap::new();
    {
        let r = spool.catalog.reader()?;
        for row in r.chunk_rows()? {
            let (id, loc) = row?;
            let b = blobs
                .entry(loc.pack_no)
                .or_default()
                .entry(loc.offset)
                .or_default();
            b.stored_len = loc.stored_len;
            b.framed = loc.frame.is_some();
            if live.is_live(&id, &loc) {
                b.live += 1;
            } else if loc.frame.is_some() {
                b.dead_share += u64::from(stored_share(&loc));
            }
        }
    }
    let mut out = Vec::new();
    for (no, rec) in spool.catalog.packs()? {
        let mut live_bytes = 0u64;
        let mut any = false;
        for b in blobs.get(&no).into_iter().flat_map(|m| m.values()) {
            if b.live == 0 {
                continue;
            }
            any = true;
            let stored =
                u64::from(b.stored_len).saturating_sub(if b.framed { b.dead_share } else { 0 });
            live_bytes += (BLOB_HEADER_LEN + INDEX_ENTRY_LEN) as u64 + stored;
        }
        let fate = if !any {
            Fate::Delete
        } else {
            // A sealed pack's index carries a nonce and a tag.
            let sealing = if spool.keys().is_encrypted() {
                crate::crypto::SEAL_OVERHEAD
            } else {
                0
            };
            live_bytes += (FILE_HEADER_LEN + FOOTER_LEN + sealing) as u64;
            let unused = rec.size.saturating_sub(live_bytes);
            if unused > 0 && unused * 100 > u64::from(max_unused) * rec.size {
                Fate::Rewrite
            } else {
                Fate::Keep
            }
        };
        out.push(PackPlan {
            no,
            id: PackId(rec.id),
            size: rec.size,
            live_bytes: if any { live_bytes } else { 0 },
            fate,
        });
    }
    out.sort_by_key(|p| p.no);
    Ok(out)
}

/// A chunk index row: id, location, live.
type Row = (ChunkId, ChunkLoc, bool);

/// The chunk index rows locating chunks in `packs`, by pack.
fn rows_in(spool: &Spool, live: &Liveness, packs: &HashSet<u64>) -> Result<HashMap<u64, Vec<Row>>> {
    let r = spool.catalog.reader()?;
    let mut out: HashMap<u64, Vec<Row>> = HashMap::new();
    for row in r.chunk_rows()? {
        let (id, loc) = row?;
        if packs.contains(&loc.pack_no) {
            let l = live.is_live(&id, &loc);
            out.entry(loc.pack_no).or_default().push((id, loc, l));
        }
    }
    Ok(out)
}

/// Writes the live blobs of rewritten packs into as few new packs as the target size allows.
struct Rewriter<'a> {
    spool: &'a Spool,
    packer: FramePacker<PackWriter>,
    out: NewPacks<'a>,
}

/// Where the rewritten packs go: into the spool's pack store, each with the new locations of
/// its chunks (pack number filled in at commit).
struct NewPacks<'a> {
    spool: &'a Spool,
    /// New locations of the chunks in the open pack.
    current_locs: Vec<(ChunkId, ChunkLoc)>,
    done: Vec<NewPack>,
}

/// A pack gc wrote, with the new locations of its chunks.
type NewPack = (StoredPack, Vec<(ChunkId, ChunkLoc)>);

impl PackSink for NewPacks<'_> {
    type Pack = PackWriter;

    fn open(&mut self) -> Result<(u64, PackWriter)> {
        Ok((
            0,
            PackWriter::create(&self.spool.tmp_dir(), self.spool.keys())?,
        ))
    }

    fn placed(&mut self, _: &BlobEntry, chunks: Vec<(ChunkId, ChunkLoc)>) -> Result<()> {
        self.current_locs.extend(chunks);
        Ok(())
    }

    /// Durable in the pack store before the catalog names it.
    fn seal(&mut self, _: u64, w: PackWriter) -> Result<()> {
        let (staged, entries) = w.close()?.into_parts();
        let (id, size) = (*staged.id(), staged.size());
        self.spool.pack_store().put(staged)?;
        let locs = std::mem::take(&mut self.current_locs);
        self.done.push((StoredPack { id, size, entries }, locs));
        Ok(())
    }
}

impl<'a> Rewriter<'a> {
    fn new(spool: &'a Spool) -> Rewriter<'a> {
        Rewriter {
            spool,
            packer: FramePacker::new(
                spool.settings.compression_level,
                Rollover::AtTarget,
                spool.keys(),
            ),
            out: NewPacks {
                spool,
                current_locs: Vec::new(),
                done: Vec::new(),
            },
        }
    }

    /// Seal the last pack; the packs written, with their chunks' new locations.
    fn finish(mut self) -> Result<Vec<NewPack>> {
        self.packer.seal(&mut self.out)?;
        Ok(self.out.done)
    }

    /// Copy the live part of one pack.
    fn copy_pack(&mut self, p: &PackPlan, rows: &[Row]) -> Result<u64> {
        let store = self.spool.pack_store();
        let path = store.location(&p.id);
        let keys = self.spool.keys();
        let reader = store.open(&p.id, keys)?;
        let damaged = |e: Error| {
            Error::damaged(
                Damaged::Pack {
                    path: path.clone(),
                    offset: None,
                },
                format!(
                    "gc stopped: a live blob in pack {} is damaged ({e}); nothing was changed in \
                 the catalog. Run `reel check --read-data` to see what it costs",
                    path.display()
                ),
            )
        };
        let index: HashMap<u64, BlobEntry> = reader
            .read_index()
            .map_err(damaged)?
            .into_iter()
            .map(|e| (e.offset, e))
            .collect();
        // Live chunks by blob offset, in file order.
        let mut by_blob: BTreeMap<u64, Vec<(ChunkId, ChunkLoc)>> = BTreeMap::new();
        for (id, loc, live) in rows {
            if *live {
                by_blob.entry(loc.offset).or_default().push((*id, *loc));
            }
        }
        let mut moved = 0u64;
        for (offset, chunks) in by_blob {
            let entry = index.get(&offset).ok_or_else(|| {
                damaged(Error::corrupt(format!(
                    "the chunk index points at offset {offset}, where the pack's index has no blob"
                )))
            })?;
            // Opened (in a sealed pack; the new pack seals them again under a fresh nonce) and
            // verified before copying: gc must not give damaged bytes a fresh pack name.
            let stored = reader.read_opened(entry).map_err(damaged)?;
            let raw = pack::decode_opened(keys, entry, &stored).map_err(damaged)?;
            moved += chunks.len() as u64;
            let table = match entry.kind {
                BlobKind::Frame => Some(crate::frame::parse(&raw).map_err(damaged)?),
                _ => None,
            };
            let keep: HashMap<ChunkId, ChunkLoc> = chunks.into_iter().collect();
            let wholly_live = table.as_ref().is_none_or(|t| {
                t.len() == keep.len() && t.iter().all(|(id, _)| keep.contains_key(id))
            });
            if wholly_live {
                // A chunk of its own, or a frame all of whose chunks live: the stored bytes as
                // they are.
                let blob = EncodedBlob {
                    data: stored,
                    compressed: entry.compressed,
                    raw_len: entry.raw_len,
                };
                let c = keep
                    .iter()
                    .map(|(id, loc)| (*id, loc.raw_len, loc.kind, table.as_ref().and(loc.frame)))
                    .collect();
                self.packer
                    .append(&mut self.out, entry.id, entry.kind, blob, Chunks::Listed(c))?;
                continue;
            }
            // Partly live: a new frame of the live chunks, recompressed.
            let mut frame = crate::frame::Builder::default();
            let mut framed = HashSet::new();
            for (id, r) in table.iter().flatten() {
                if keep.contains_key(id) && framed.insert(*id) {
                    let data =
                        crate::frame::verified(keys, &raw, id, r.clone()).map_err(damaged)?;
                    frame.push(*id, data);
                }
            }
            if framed.len() != keep.len() {
                return Err(damaged(Error::corrupt(
                    "the chunk index places a chunk in a frame whose table lacks it",
                )));
            }
            self.packer.append_frame(&mut self.out, frame)?;
        }
        Ok(moved)
    }
}

// ---------------------------------------------------------------------------------------------
// Doomed packs

/// The bytes the pack store holds of `packs` (one missing counts 0, as does every one when
/// the store cannot be listed: this is for reports only).
fn stored_bytes(spool: &Spool, packs: &HashSet<[u8; 32]>) -> u64 {
    let listed = spool.pack_store().list().unwrap_or_default();
    listed
        .iter()
        .filter(|(id, _)| packs.contains(&id.0))
        .map(|(_, size)| size)
        .sum()
}

/// What became of the doomed packs: their files deleted, or left waiting for readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Doomed {
    /// Pack files deleted, and their bytes.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Packs left in `doomed` because a reader holds the readers lock, and their bytes.
    pub waiting: u64,
    pub waiting_bytes: u64,
}

/// The packs in `doomed` and their bytes, deleting nothing (for dry runs).
pub(crate) fn doomed_waiting(spool: &Spool) -> Result<Doomed> {
    let doomed = spool.catalog.reader()?.doomed_ids()?;
    Ok(Doomed {
        waiting: doomed.len() as u64,
        waiting_bytes: stored_bytes(spool, &doomed),
        ..Doomed::default()
    })
}

/// Delete the files of the doomed packs (those gc and purge took out of the catalog) if no
/// reader holds the readers lock, then forget them. With a reader in (a `restore`, `cat`,
/// `mount` or `export-plain` that may read them through the catalog it opened), they stay in
/// `doomed` for the next gc or purge. The caller holds the spool lock.
pub(crate) fn delete_doomed(spool: &Spool) -> Result<Doomed> {
    let doomed = spool.catalog.reader()?.doomed_ids()?;
    if doomed.is_empty() {
        return Ok(Doomed::default());
    }
    let Some(lock) = spool.try_lock_readers_out()? else {
        return Ok(Doomed {
            waiting: doomed.len() as u64,
            waiting_bytes: stored_bytes(spool, &doomed),
            ..Doomed::default()
        });
    };
    // A pack the catalog names again (the same bytes written anew) must stay.
    let named = spool.catalog.reader()?.packs_named(&doomed)?;
    let store = spool.pack_store();
    let sizes: HashMap<PackId, u64> = store.list()?.into_iter().collect();
    let mut ids: Vec<PackId> = doomed
        .iter()
        .filter(|id| !named.contains(*id))
        .map(|id| PackId(*id))
        .collect();
    ids.sort();
    // One already gone (a crash between the deletion and the forgetting) is just forgotten.
    let present: Vec<PackId> = ids
        .iter()
        .filter(|id| sizes.contains_key(id))
        .copied()
        .collect();
    let bytes = present.iter().map(|id| sizes[id]).sum();
    if let Some(first) = present.first() {
        // The first alone, so that a crash can come between deletions.
        store.delete(std::slice::from_ref(first))?;
        crate::failpoint::hit("gc-deleting");
        store.delete(&present[1..])?;
    }
    drop(lock);
    let w = spool.catalog.writer()?;
    w.forget_doomed(&doomed)?;
    w.commit()?;
    Ok(Doomed {
        deleted: present.len() as u64,
        deleted_bytes: bytes,
        ..Doomed::default()
    })
}

// ---------------------------------------------------------------------------------------------
// The plan

/// What a run decides before it writes anything: the report's counts, each pack's fate, and
/// the chunk index rows of the packs that go.
struct Planned {
    report: GcReport,
    plans: Vec<PackPlan>,
    rows: HashMap<u64, Vec<Row>>,
    dead: Vec<ChunkId>,
}

/// Mark, size and decide, as if the dumps `forgotten` were out of the catalog; `report`
/// gets the counts of packs and chunks.
fn plan_run(
    spool: &Spool,
    forgotten: &HashSet<u64>,
    max_unused: u8,
    progress: &dyn Progress,
    mut report: GcReport,
) -> Result<Planned> {
    progress.message("marking live chunks");
    let marks = mark(spool, forgotten, progress)?;
    report.live_refs = marks.set.ids.len() as u64;
    let live = liveness(spool, marks)?;
    progress.message("sizing packs");
    let plans = plan(spool, &live, max_unused)?;
    report.packs_before = plans.len() as u64;
    report.bytes_before = plans.iter().map(|p| p.size).sum();
    report.packs_deleted = plans.iter().filter(|p| p.fate == Fate::Delete).count() as u64;
    report.packs_rewritten = plans.iter().filter(|p| p.fate == Fate::Rewrite).count() as u64;
    let numbers: HashSet<u64> = plans
        .iter()
        .filter(|p| p.fate != Fate::Keep)
        .map(|p| p.no)
        .collect();
    let rows = if numbers.is_empty() {
        HashMap::new()
    } else {
        rows_in(spool, &live, &numbers)?
    };
    let dead: Vec<ChunkId> = rows
        .values()
        .flatten()
        .filter(|(_, _, l)| !*l)
        .map(|(id, _, _)| *id)
        .collect();
    report.chunks_removed = dead.len() as u64;
    {
        let r = spool.catalog.reader()?;
        let tapes = r.tape_index()?;
        for id in &dead {
            if !tapes.tapes_of(id)?.is_empty() {
                report.chunks_on_tape += 1;
            }
        }
    }
    Ok(Planned {
        report,
        plans,
        rows,
        dead,
    })
}

/// A dry run's report, as if the dumps `forgotten` were out of the catalog: the new packs and
/// the bytes freed are estimated from the live bytes of the rewritten packs (laid out in
/// target-size packs), and the doomed packs count as deleted (a run no reader waits on
/// deletes them first).
fn dry_run(
    spool: &Spool,
    forgotten: &HashSet<u64>,
    max_unused: u8,
    progress: &dyn Progress,
) -> Result<GcReport> {
    let doomed = doomed_waiting(spool)?;
    let report = GcReport {
        dry_run: true,
        doomed_waiting: doomed.waiting,
        doomed_waiting_bytes: doomed.waiting_bytes,
        ..GcReport::default()
    };
    let Planned {
        mut report,
        plans,
        rows,
        ..
    } = plan_run(spool, forgotten, max_unused, progress, report)?;
    let gone_bytes: u64 = plans
        .iter()
        .filter(|p| p.fate != Fate::Keep)
        .map(|p| p.size)
        .sum();
    let live_bytes: u64 = plans
        .iter()
        .filter(|p| p.fate == Fate::Rewrite)
        .map(|p| p.live_bytes)
        .sum();
    report.packs_written = live_bytes.div_ceil(PACK_TARGET_SIZE);
    report.chunks_moved = rows.values().flatten().filter(|(_, _, l)| *l).count() as u64;
    report.bytes_freed = (doomed.waiting_bytes + gone_bytes) as i64 - live_bytes as i64;
    Ok(report)
}

/// What `reel gc --max-unused max_unused --dry-run` would report once the dumps `forgotten`
/// are out of the catalog: `reel prune` and `reel forget` announce its `bytes_freed` before
/// they remove the dumps. It reads what a gc dry run reads; [`plan_cost`] says how much.
pub fn plan_after_forgetting(
    spool: &Spool,
    forgotten: &HashSet<u64>,
    max_unused: u8,
    progress: &dyn Progress,
) -> Result<GcReport> {
    dry_run(spool, forgotten, max_unused.min(100), progress)
}

/// What planning a gc reads, for callers that bound it (`reel prune`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanCost {
    /// Manifest bytes the mark reads: those of the dumps not forgotten (a manifest shared by
    /// merged dumps once) and of the `store` clones.
    pub manifest_bytes: u64,
    /// Bytes of the packs whose chunk index rows the plan scans (every pack the catalog names).
    pub pack_bytes: u64,
}

/// The cost of [`plan_after_forgetting`] with `forgotten`, from the catalog's records alone.
pub fn plan_cost(spool: &Spool, forgotten: &HashSet<u64>) -> Result<PlanCost> {
    let r = spool.catalog.reader()?;
    let mut cost = PlanCost::default();
    let mut seen: HashSet<Vec<[u8; 32]>> = HashSet::new();
    for rec in r.dumps_by_id()? {
        if forgotten.contains(&rec.id) {
            continue;
        }
        if seen.insert(rec.manifest.iter().map(|(id, _)| *id).collect()) {
            cost.manifest_bytes += rec.manifest.iter().map(|(_, n)| u64::from(*n)).sum::<u64>();
        }
    }
    for rec in r.clones()? {
        if let CloneView::Manifest { chunks, .. } = rec.view {
            cost.manifest_bytes += chunks.iter().map(|(_, n)| u64::from(*n)).sum::<u64>();
        }
    }
    cost.pack_bytes = r.packs()?.iter().map(|(_, p)| p.size).sum();
    Ok(cost)
}

// ---------------------------------------------------------------------------------------------
// The run

/// Collect garbage. The caller opened `spool` for writing (the spool lock is held).
pub fn gc(spool: &Spool, opts: GcOptions, progress: &dyn Progress) -> Result<GcReport> {
    if opts.max_unused_percent > 100 {
        return Err(Error::usage(format!(
            "--max-unused {} is out of range: give a percentage from 0 to 100",
            opts.max_unused_percent
        )));
    }
    if opts.dry_run {
        return dry_run(spool, &HashSet::new(), opts.max_unused_percent, progress);
    }
    // Packs an earlier run (gc or purge) left waiting go first.
    let first = delete_doomed(spool)?;
    let report = GcReport {
        doomed_deleted: first.deleted,
        doomed_waiting: first.waiting,
        doomed_waiting_bytes: first.waiting_bytes,
        ..GcReport::default()
    };
    let mut freed = first.deleted_bytes as i64;
    let Planned {
        mut report,
        plans,
        rows,
        dead,
    } = plan_run(
        spool,
        &HashSet::new(),
        opts.max_unused_percent,
        progress,
        report,
    )?;
    let gone: Vec<&PackPlan> = plans.iter().filter(|p| p.fate != Fate::Keep).collect();
    if gone.is_empty() {
        report.bytes_freed = freed;
        return Ok(report);
    }

    // Write the new packs (durable under packs/ before the catalog names them).
    progress.message("rewriting packs");
    progress.set_total(
        gone.iter()
            .filter(|p| p.fate == Fate::Rewrite)
            .map(|p| p.size)
            .sum(),
    );
    let mut rw = Rewriter::new(spool);
    for p in gone.iter().filter(|p| p.fate == Fate::Rewrite) {
        let empty = Vec::new();
        report.chunks_moved += rw.copy_pack(p, rows.get(&p.no).unwrap_or(&empty))?;
        progress.advance(p.size);
    }
    let written = rw.finish()?;
    report.packs_written = written.len() as u64;
    let written_bytes: u64 = written.iter().map(|(f, _)| f.size).sum();
    crate::failpoint::hit("gc-packs-written");

    // One transaction: index the new packs, repoint moved chunks, drop dead ones, forget the
    // old packs and doom their files.
    let w = spool.catalog.writer()?;
    {
        let now = crate::timefmt::now_ns();
        let mut chunks = w.chunk_index()?;
        for (done, locs) in &written {
            let next = w.take_pack_number()?;
            w.record_pack(next, &done.id, done.size, &done.entries, now)?;
            for (id, loc) in locs {
                let loc = ChunkLoc {
                    pack_no: next,
                    ..*loc
                };
                chunks.insert(id, &loc)?;
            }
        }
        for id in &dead {
            chunks.remove(id)?;
        }
    }
    let numbers: Vec<u64> = gone.iter().map(|p| p.no).collect();
    // The same bytes may have been written anew (a rewrite of a rewrite cannot, but be sure):
    // then the id stays named and its file must not be deleted.
    let doomed: Vec<PackId> = gone
        .iter()
        .map(|p| p.id)
        .filter(|id| !written.iter().any(|(f, _)| f.id == *id))
        .collect();
    w.forget_packs(&numbers, &doomed)?;
    w.doom_packs(&doomed)?;
    w.commit()?;
    crate::failpoint::hit("gc-committed");

    let after = delete_doomed(spool)?;
    report.doomed_waiting = after.waiting;
    report.doomed_waiting_bytes = after.waiting_bytes;
    freed += after.deleted_bytes as i64 - written_bytes as i64;
    report.bytes_freed = freed;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::{DumpOptions, dump_volume};
    use crate::progress::NoProgress;
    use crate::restore::{RestoreOptions, restore_dump};
    use std::path::Path;

    #[test]
    fn mark_set_finds_what_was_added_across_compactions() {
        let mut m = MarkSet::default();
        let ids: Vec<ChunkId> = (0..50_000u32)
            .map(|i| ChunkId::of(&i.to_le_bytes()))
            .collect();
        for id in ids.iter().chain(ids.iter()) {
            m.add(id);
        }
        m.compact();
        assert_eq!(m.ids.len(), ids.len(), "duplicates folded");
        assert!(ids.iter().all(|id| m.contains(id)));
        let absent = (50_000..51_000u32)
            .filter(|i| m.contains(&ChunkId::of(&i.to_le_bytes())))
            .count();
        assert_eq!(absent, 0);
    }

    fn text(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = ["pack ", "chunk ", "dump ", "tape ", "level ", "gc\n"][(x >> 60) as usize % 6];
            out.extend_from_slice(w.as_bytes());
            out.extend_from_slice(format!("{} ", x >> 40).as_bytes());
        }
        out.truncate(n);
        out
    }

    /// Take a dump out of the catalog as `prune` would.
    fn forget(spool: &Spool, id: u64) {
        let rec = spool.catalog.dump(id).unwrap().unwrap();
        let w = spool.catalog.writer().unwrap();
        w.forget_dumps([&rec]).unwrap();
        w.commit().unwrap();
    }

    fn dump(spool: &Spool, time_ns: i64) -> DumpRecord {
        let opts = DumpOptions {
            level: 0,
            time_ns: Some(time_ns),
            reread: false,
        };
        dump_volume(spool, "v", &opts, &NoProgress).unwrap().record
    }

    fn same_file(a: &Path, b: &Path) {
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "{}",
            b.display()
        );
    }

    #[test]
    fn gc_rebuilds_partly_live_frames_and_forgets_dead_records() {
        let work = tempfile::tempdir().unwrap();
        let vol = work.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("keep"), text(1, 200_000)).unwrap();
        std::fs::write(vol.join("drop"), text(2, 200_000)).unwrap();
        let mut spool = Spool::init(&work.path().join("spool")).unwrap();
        spool.add_volume("v", &vol).unwrap();
        let first = dump(&spool, 1_000_000_000);
        std::fs::remove_file(vol.join("drop")).unwrap();
        let second = dump(&spool, 2_000_000_000);
        forget(&spool, first.id);

        let opts = GcOptions {
            max_unused_percent: 0,
            dry_run: false,
        };
        let dry = gc(
            &spool,
            GcOptions {
                dry_run: true,
                ..opts
            },
            &NoProgress,
        )
        .unwrap();
        let r = gc(&spool, opts, &NoProgress).unwrap();
        assert_eq!(r.packs_rewritten, dry.packs_rewritten);
        assert_eq!(r.chunks_removed, dry.chunks_removed);
        assert!(r.packs_rewritten >= 1, "{r:?}");
        assert!(r.chunks_removed > 0 && r.chunks_moved > 0, "{r:?}");
        assert!(r.bytes_freed > 0, "{r:?}");
        assert_eq!(r.doomed_waiting, 0);

        // The dead dump's record blob went with it; the live one stayed.
        let first_blob = ChunkId::of(&first.encode());
        let r = spool.catalog.reader().unwrap();
        assert!(r.chunk_location(&first_blob).unwrap().is_none());
        drop(r);

        let target = work.path().join("r");
        restore_dump(
            &spool,
            &second,
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        same_file(&vol.join("keep"), &target.join("keep"));
        assert!(!target.join("drop").exists());
        let c = crate::recovery::check::check(&spool, true, &NoProgress).unwrap();
        assert!(c.ok(), "{:?}", c.problems);
        assert!(
            c.unreferenced_packs.is_empty(),
            "{:?}",
            c.unreferenced_packs
        );

        let again = gc(&spool, opts, &NoProgress).unwrap();
        assert_eq!(
            (again.packs_deleted, again.packs_rewritten),
            (0, 0),
            "{again:?}"
        );
    }

    #[test]
    fn doomed_packs_wait_for_readers_and_missing_files_are_just_forgotten() {
        let work = tempfile::tempdir().unwrap();
        let vol = work.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("a"), text(3, 50_000)).unwrap();
        let root = work.path().join("spool");
        let mut spool = Spool::init(&root).unwrap();
        spool.add_volume("v", &vol).unwrap();
        let first = dump(&spool, 1_000_000_000);
        std::fs::write(vol.join("a"), text(4, 50_000)).unwrap();
        dump(&spool, 2_000_000_000);
        forget(&spool, first.id);
        // A doomed row whose file never existed.
        let w = spool.catalog.writer().unwrap();
        w.doom_packs(&[PackId([7u8; 32])]).unwrap();
        w.commit().unwrap();

        std::fs::create_dir_all(root.join("locks")).unwrap();
        let reader = std::fs::File::create(root.join("locks/readers")).unwrap();
        reader.lock_shared().unwrap();
        let r = gc(&spool, GcOptions::default(), &NoProgress).unwrap();
        assert!(r.packs_deleted >= 1, "{r:?}");
        assert_eq!(
            r.doomed_waiting,
            r.packs_deleted + r.packs_rewritten + 1,
            "{r:?}"
        );
        assert!(r.bytes_freed <= 0, "nothing can be freed yet: {r:?}");
        assert_eq!(
            spool.catalog.reader().unwrap().doomed_ids().unwrap().len() as u64,
            r.doomed_waiting
        );
        drop(reader);
        let r2 = gc(&spool, GcOptions::default(), &NoProgress).unwrap();
        assert_eq!(r2.doomed_deleted, r.doomed_waiting - 1, "{r2:?}");
        assert!(r2.bytes_freed > 0, "{r2:?}");
        assert!(
            spool
                .catalog
                .reader()
                .unwrap()
                .doomed_ids()
                .unwrap()
                .is_empty()
        );
    }
}
