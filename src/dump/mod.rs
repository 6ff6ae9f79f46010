//! The dump phase: walk a volume, reuse the chunk lists of unchanged files, read, cut, hash
//! and store the rest, and write the complete manifest and the dump record.
//!
//! `pass` is one pass over a tree (the walk, windows, storing, the manifest), shared with the
//! clone's `store` method; `read_engine` reads, cuts and hashes the files of a window; `reuse`
//! is what a pass takes from before (the previous manifest's stat data, a directory clone's
//! stat map). `guard` is the shrink guard: a volume whose tree vanished is refused, not dumped.
//! This module makes a dump of a pass: its level and base, its record and commit, and the dump
//! of a clone.

mod guard;
mod pass;
mod read_engine;
mod reuse;

use std::path::{Path, PathBuf};

use crate::catalog::DumpRecord;
use crate::fsutil;
use crate::level;
use crate::manifest::ManifestReader;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::record::{CloneRecord, CloneView, DUMP_RECORD_VERSION};
use crate::settings::FsIdentity;
use crate::spool::{CloneMethod, Spool};
use crate::store::{ChunkReader, StoreStats, StoreWriter};
use crate::timefmt::{self, format_rfc3339};
use crate::{ChunkId, Entry, EntryKind, Error, Result};
pub(crate) use guard::check_share;
pub use guard::{Shrink, check_live_root, record_filesystem};
use pass::Owner;
pub(crate) use pass::{exclusions, scan};
pub(crate) use reuse::PrevManifest;

#[derive(Clone, Debug, Default)]
pub struct DumpOptions {
    pub level: u8,
    /// The dump's recorded time; now when None.
    pub time_ns: Option<i64>,
    /// Read every file, ignoring the stat-data cache.
    pub reread: bool,
}

/// A finished dump, with what the admin wants to hear about it.
#[derive(Clone, Debug)]
pub struct DumpOutcome {
    pub record: DumpRecord,
    /// Set when the requested level had no lower dump and the dump became a level 0.
    pub promoted: bool,
    /// Set when the dump was made from the volume's latest clone rather than its live tree.
    pub from_clone: Option<CloneMethod>,
    /// Time from the dump's start to its commit. The record's `duration_ns` stops just before
    /// the commit (it is written in it); this one includes the last pack's fsync and the
    /// commit, which a volume of a million files makes take seconds.
    pub elapsed_ns: u64,
    /// Chunk ids the dump looked up in the catalog (`StoreStats::index_lookups`).
    pub index_lookups: u64,
    /// The filesystem of the volume's root, for the caller to record in reel.toml
    /// (`record_filesystem`): set when the volume had none recorded (it was added before reel
    /// recorded them) and its root is not empty.
    pub filesystem_to_record: Option<FsIdentity>,
}

/// Dump volume `name` at `opts.level` under the shrink guard (`Shrink::Refuse`): its latest
/// clone when that has not been dumped yet, otherwise its live tree.
pub fn dump_volume(
    spool: &Spool,
    name: &str,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    dump_volume_with(spool, name, opts, Shrink::Refuse, progress)
}

/// `dump_volume`, with what the shrink guard does (`--allow-shrink` is `Shrink::Allow`).
pub fn dump_volume_with(
    spool: &Spool,
    name: &str,
    opts: &DumpOptions,
    shrink: Shrink,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    let vol = spool.volume(name)?;
    if let Some(clone) = spool.catalog.clone_of(name)?.filter(|c| c.dumped.is_none()) {
        if opts.time_ns.is_some() || opts.reread {
            return Err(Error::usage(format!(
                "volume {name} has a clone from {} that is not dumped yet; its dump takes the clone's time and stat data, so drop --date/--reread (or take a new clone with `reel clone {name}`)",
                format_rfc3339(clone.time_ns)
            )));
        }
        return dump_clone(spool, name, clone, opts.level, shrink, progress);
    }
    let root = vol.path.clone();
    // The root's filesystem and emptiness before anything begins; the share after the walk.
    check_live_root(spool, name, shrink)?;
    let mut out = dump_tree_as(spool, name, &root, opts, None, Some(shrink), progress)?;
    out.filesystem_to_record = guard::filesystem_to_record(spool, name);
    Ok(out)
}

fn check_level(level: u8) -> Result<()> {
    if level > level::MAX_LEVEL {
        return Err(Error::usage(format!(
            "level {level} is out of range: use 0-9"
        )));
    }
    Ok(())
}

pub use crate::timefmt::MAX_AHEAD_NS;

/// Refuse a `--date` more than [`MAX_AHEAD_NS`] ahead of `now_ns`: a volume's next dump must be
/// later than its latest, so a dump dated years ahead would block every dump and nightly of
/// the volume until then.
pub fn check_not_ahead(time_ns: i64, now_ns: i64) -> Result<()> {
    if time_ns > now_ns.saturating_add(MAX_AHEAD_NS) {
        return Err(Error::usage(format!(
            "--date {} is more than a day ahead of the clock (now {}): every later dump of the volume would have to be later still, so no dump or nightly could run until then; give an earlier --date, or add --force-date if you mean it (`reel forget ID` removes such a dump again)",
            format_rfc3339(time_ns),
            format_rfc3339(now_ns)
        )));
    }
    Ok(())
}

/// Dump the tree at `root` as a dump of volume `name`, with no shrink guard: for a tree that
/// is not the volume's own (a BSD dump image's, read in by `ingest-dump`).
pub fn dump_tree(
    spool: &Spool,
    name: &str,
    root: &Path,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    dump_tree_as(spool, name, root, opts, None, None, progress)
}

/// `dump_tree`, optionally for a directory clone (`clone`): then the stat map gives the
/// volume's inodes and ctimes, and the clone is marked dumped with the dump. With `guard`,
/// the shrink guard's share check runs after the walk, before anything is committed.
fn dump_tree_as(
    spool: &Spool,
    name: &str,
    root: &Path,
    opts: &DumpOptions,
    clone: Option<CloneRecord>,
    guard: Option<Shrink>,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    check_level(opts.level)?;
    fsutil::check_root(name, root)?;
    let started = std::time::Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(timefmt::now_ns);
    let dumps = spool.catalog.dumps(Some(name))?;
    timefmt::check_time(name, &dumps, time_ns)?;
    let base = level::choose_base(&dumps, opts.level).cloned();
    let level = if base.is_none() { 0 } else { opts.level };
    let chain = base.as_ref().map(|b| b.full_chain()).unwrap_or_default();
    let prev = match (dumps.last(), opts.reread) {
        (Some(p), false) => Some(PrevManifest {
            chunks: p.manifest_chunks(),
            scan_started_ns: p.scan_started_ns,
            in_chain: chain.contains(&p.id),
            label: format!("manifest of dump {}", p.id),
        }),
        _ => None,
    };
    let store = StoreWriter::new(spool)?;
    let stale = store.catalog().clean_uncommitted()?;
    if stale > 0 {
        tracing::info!("dropped {stale} owned-chunk rows of an interrupted dump");
    }
    let id = store.catalog().next_dump_id()?;
    let statmap = match clone.as_ref().map(|c| &c.view) {
        Some(CloneView::Dir {
            statmap: Some(p), ..
        }) => Some(PathBuf::from(p)),
        _ => None,
    };
    progress.message(&format!("dumping {name} at level {level}"));
    let owner = Owner {
        id,
        chain: chain.clone(),
    };
    let mut s = scan(
        spool,
        store,
        root,
        pass::exclusions(spool, name)?,
        prev,
        Some(owner),
        statmap.as_deref(),
        progress,
    )?;
    if let Some(shrink) = guard {
        // Dropping the store on a refusal rolls its transaction back and removes the packs it
        // sealed: the spool is as it was (docs/NIGHTLY.md says what a checkpoint keeps).
        check_share(spool, name, dumps.last(), &s.totals(), shrink)?;
    }

    let (owned_chunks, owned_bytes) = s.store.fold_owned(id)?;
    let mut rec = DumpRecord {
        version: DUMP_RECORD_VERSION,
        id,
        volume: name.to_string(),
        time_ns,
        level,
        requested_level: opts.level,
        base: base.as_ref().map(|b| b.id),
        chain,
        merged_from: None,
        source: clone
            .as_ref()
            .map(|c| c.source.clone())
            .unwrap_or_else(|| root.display().to_string()),
        // A clone was scanned when it was taken: the same-second rule must compare with that.
        scan_started_ns: clone
            .as_ref()
            .map_or(s.scan_started_ns, |c| c.scan_started_ns),
        duration_ns: 0,
        // new_chunks and stored_bytes are counted when the store commits (commit_record).
        totals: s.totals(),
        owned_chunks,
        owned_bytes,
        manifest: s.manifest_chunks.clone(),
        manifest_bytes: s.manifest_bytes,
        warnings: s.warnings.clone(),
        host: host_name(),
    };
    rec.duration_ns = started.elapsed().as_nanos() as u64;
    let from_clone = clone.as_ref().map(|c| c.method);
    let (rec, stats) = commit_record(s.store, rec, started, clone)?;
    Ok(DumpOutcome {
        promoted: level != opts.level,
        record: rec,
        from_clone,
        elapsed_ns: started.elapsed().as_nanos() as u64,
        index_lookups: stats.index_lookups,
        filesystem_to_record: None,
    })
}

/// Store a copy of the dump record in the last pack (so the catalog can be rebuilt from packs),
/// seal it and commit the record, marking `clone` dumped in the same transaction.
fn commit_record(
    mut store: StoreWriter<'_>,
    mut rec: DumpRecord,
    started: std::time::Instant,
    clone: Option<CloneRecord>,
) -> Result<(DumpRecord, StoreStats)> {
    let blob = rec.encode();
    store.put_one(store.keys().chunk_id(&blob), &blob, BlobKind::DumpRecord)?;
    let id = rec.id;
    let stats = store.finish(|txn, stats| {
        rec.totals.new_chunks += stats.new_chunks;
        rec.totals.stored_bytes += stats.stored_bytes;
        rec.totals.new_raw_bytes += stats.new_raw_bytes;
        rec.duration_ns = started.elapsed().as_nanos() as u64;
        txn.record_dump(&rec)?;
        if let Some(mut c) = clone {
            c.dumped = Some(id);
            txn.put_clone(&c)?;
        }
        txn.set_next_dump_id(id + 1)
    })?;
    tracing::debug!(
        "dump {id}: {} chunk ids looked up in the catalog",
        stats.index_lookups
    );
    Ok((rec, stats))
}

/// Turn volume `name`'s undumped clone into a dump at `level`, under the shrink guard's share
/// check (`shrink`); the clone's root was checked when it was taken.
pub fn dump_clone(
    spool: &Spool,
    name: &str,
    clone: CloneRecord,
    level: u8,
    shrink: Shrink,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    check_level(level)?;
    let opts = DumpOptions {
        level,
        time_ns: Some(clone.time_ns),
        reread: false,
    };
    let mut out = match &clone.view {
        CloneView::Dir { path, .. } => {
            let path = PathBuf::from(path);
            let method = clone.method;
            let guard = Some(shrink);
            let mut out = dump_tree_as(spool, name, &path, &opts, Some(clone), guard, progress)?;
            out.from_clone = Some(method);
            out
        }
        CloneView::Manifest { .. } => {
            commit_store_clone(spool, name, clone, level, shrink, progress)?
        }
    };
    out.filesystem_to_record = guard::filesystem_to_record(spool, name);
    Ok(out)
}

/// A `store` clone is already in the store: its dump only settles what it owns (by comparing
/// its manifest with the base's: an entry with the same content as in the base is owned
/// within the chain) and commits the record.
fn commit_store_clone(
    spool: &Spool,
    name: &str,
    clone: CloneRecord,
    level_asked: u8,
    shrink: Shrink,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    let started = std::time::Instant::now();
    let dumps = spool.catalog.dumps(Some(name))?;
    timefmt::check_time(name, &dumps, clone.time_ns)?;
    // The clone's counts are the tree's: refuse before the store is opened.
    check_share(spool, name, dumps.last(), &clone.totals, shrink)?;
    let base = level::choose_base(&dumps, level_asked).cloned();
    let level = if base.is_none() { 0 } else { level_asked };
    let chain = base.as_ref().map(|b| b.full_chain()).unwrap_or_default();
    let CloneView::Manifest { chunks, bytes } = &clone.view else {
        unreachable!("caller checked the view");
    };
    let manifest: Vec<(ChunkId, u32)> = chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect();
    progress.message(&format!("dumping the clone of {name} at level {level}"));

    let mut store = StoreWriter::new(spool)?;
    store.catalog().clean_uncommitted()?;
    let id = store.catalog().next_dump_id()?;
    let reader = ChunkReader::new(spool)?;
    let mut base_entries = match &base {
        Some(b) => Some(reader.manifest(b)?.peekable()),
        None => None,
    };
    let entries = ManifestReader::new(
        reader.stream(manifest.clone(), format!("manifest of the clone of {name}")),
    )?;
    let mut refs: Vec<ChunkId> = manifest.iter().map(|(id, _)| *id).collect();
    for e in entries {
        let e = e?;
        if e.kind != EntryKind::File || e.extents.is_empty() {
            continue;
        }
        let same = match base_entries.as_mut() {
            Some(b) => same_content(b, &e)?,
            None => false,
        };
        if !same {
            refs.extend(e.chunks().map(|(id, _)| id));
        }
        if refs.len() >= 16_384 {
            store.record_owned(id, &chain, &refs)?;
            refs.clear();
            crate::signal::check_interrupted()?;
        }
    }
    store.record_owned(id, &chain, &refs)?;
    let owned = store.fold_owned(id)?;
    drop(base_entries);

    let rec = DumpRecord {
        version: DUMP_RECORD_VERSION,
        id,
        volume: name.to_string(),
        time_ns: clone.time_ns,
        level,
        requested_level: level_asked,
        base: base.as_ref().map(|b| b.id),
        chain,
        merged_from: None,
        source: clone.source.clone(),
        scan_started_ns: clone.scan_started_ns,
        duration_ns: 0,
        totals: clone.totals,
        owned_chunks: owned.0,
        owned_bytes: owned.1,
        manifest: chunks.clone(),
        manifest_bytes: *bytes,
        warnings: clone.warnings.clone(),
        host: host_name(),
    };
    let (rec, stats) = commit_record(store, rec, started, Some(clone))?;
    Ok(DumpOutcome {
        promoted: level != level_asked,
        record: rec,
        from_clone: Some(CloneMethod::Store),
        elapsed_ns: started.elapsed().as_nanos() as u64,
        index_lookups: stats.index_lookups,
        filesystem_to_record: None,
    })
}

/// The name of this host, as `hostname` prints it, for the dump record: a spool that several
/// hosts dump into (or whose dumps are imported elsewhere) says where each dump was made.
/// None when the system will not say.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Merge-join step for ownership: whether the base has `e.path` as a file with the same
/// extents.
fn same_content<I: Iterator<Item = Result<Entry>>>(
    base: &mut std::iter::Peekable<I>,
    e: &Entry,
) -> Result<bool> {
    Ok(crate::manifest::seek(base, &e.path)?
        .is_some_and(|b| b.kind == EntryKind::File && b.extents == e.extents))
}
