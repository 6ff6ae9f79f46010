//! The dump phase: walk a volume, reuse the chunk lists of unchanged files, read, cut, hash
//! and store the rest, and write the complete manifest and the dump record.
//!
//! Pipeline: the walker yields entries in path order; they are merge-joined with the previous
//! manifest (also in path order) to find unchanged files. Entries collect in a window of
//! bounded size; the window's small files are read, cut and hashed on all cores while this
//! thread walks the next window and stores the one before (so the pool is not left idle while
//! this thread indexes and fills frames); large files are cut and hashed in bounded segments
//! by a reader thread; new chunks are compressed on all cores and appended by one pack writer.
//! The manifest streams out as it is built, in chunks. Memory is bounded by two windows and
//! the tree depth, never by the volume.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use rayon::prelude::*;

use crate::ahead;
use crate::catalog::DumpRecord;
use crate::chunk::{self, ChunkerParams, Segment, StreamChunker};
use crate::dirfd::{Dir, Stat, Xattrs};
use crate::level;
use crate::manifest::{ManifestReader, ManifestWriter};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::record::{CloneRecord, CloneView};
use crate::scan::{self, Walker};
use crate::spool::{CloneMethod, Spool};
use crate::store::{ChunkReader, StoreWriter};
use crate::timefmt::{self, format_rfc3339};
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// Files up to this size are read whole, many at once; larger ones stream in segments.
const SMALL_FILE: u64 = 4 << 20;
/// A window of entries closes when its files to read reach this many bytes... Two windows are
/// in memory at a time (one being read, one being stored): 16 MiB rather than 32 keeps a dump
/// of many small files under 150 MB of memory for 3-5% of its time (docs/PERFORMANCE.md).
const WINDOW_BYTES: u64 = 16 << 20;
/// ...or this many entries.
const WINDOW_ENTRIES: usize = 4096;
/// Segment size for large files.
const SEGMENT: usize = 4 << 20;
/// How often a file that keeps changing while read is read again before it is stored with a
/// warning.
const READ_ATTEMPTS: u32 = 3;
/// Manifest bytes buffered before they are cut and stored.
const MANIFEST_FLUSH: usize = 4 << 20;
/// A write(2) stamps the file's ctime when it begins, so a write that began just before the
/// stat taken before a read may still be copying bytes while the file is read, and the stat
/// taken after shows no change: the read is torn and nothing says so. A file whose last change
/// is younger than this when its read begins is therefore read again once it is this old (by
/// then a write in flight at the first read has ended, or a later one has changed the ctime).
/// Files written long before the dump, as in a clone, never wait.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

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
}

enum Action {
    /// Nothing to read (not a file, or an empty one).
    None,
    /// Unchanged since the previous dump: its extents are reused.
    Reuse,
    /// Read the file.
    Read,
}

struct Work {
    entry: Entry,
    src: Source,
    action: Action,
    /// Whether this entry's chunks may be ones the dump owns (read, or reused from a previous
    /// dump outside the chain).
    may_own: bool,
    /// Set, with the reason, when the file could not be read as a file (it vanished or changed
    /// type since the walk): it is left out and the dump's warnings name it.
    left_out: Option<String>,
}

/// Where a walked entry is: the handle of its directory and its name there (so a read opens
/// the file in the directory the walk saw, whatever happened to the path since), and its stat
/// data as walked.
#[derive(Clone)]
struct Source {
    dir: Arc<Dir>,
    name: Vec<u8>,
    walked: Stat,
}

impl Source {
    fn shown(&self) -> PathBuf {
        self.dir.shown_child(&self.name)
    }
}

/// What reading a walked file gave: its content, or why it is left out.
enum Got<T> {
    Read(T),
    LeftOut(String),
}

/// Shared sink the manifest writer writes into; drained into chunks as it fills.
#[derive(Clone, Default)]
struct SharedBuf(Rc<RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The manifest a scan takes its stat cache from.
struct PrevManifest {
    chunks: Vec<(ChunkId, u32)>,
    scan_started_ns: i64,
    /// Whether its chunks are all owned inside the new dump's chain.
    in_chain: bool,
    label: String,
}

/// Who owns what a scan reads: the dump being made and its ancestors. None for a clone
/// capture, whose ownership is settled when it becomes a dump.
struct Owner {
    id: u64,
    chain: Vec<u64>,
}

struct Session<'a> {
    store: StoreWriter<'a>,
    params: ChunkerParams,
    owner: Option<Owner>,
    /// Scanning a copy of the volume: keep the volume's own ctime (from the stat map), not
    /// the copy's, when a file is read.
    keep_ctime: bool,
    manifest_buf: SharedBuf,
    manifest_chunks: Vec<([u8; 32], u32)>,
    manifest_bytes: u64,
    read_bytes: u64,
    warnings: Vec<String>,
    progress: &'a dyn Progress,
    /// Window buffers back from stored windows, for the next windows to read into (two are in
    /// use at a time: one being read, one being stored).
    spare_bufs: Vec<Vec<u8>>,
    /// How long a small file takes to read, a moving average in nanoseconds: while reads wait
    /// on the disk a window is spread over all reading threads, while they come from memory
    /// over a thread a core (waking eight threads for work two cores do made a warm
    /// incremental 7% slower).
    read_ns: f64,
}

/// A small file that takes longer than this to open and read is waiting on the disk (in memory
/// it takes a few microseconds, from a virtual disk a few hundred).
const READ_SLOW_NS: f64 = 50_000.0;

impl Session<'_> {
    /// On how many reading threads the next window's small files go.
    fn read_threads(&self) -> usize {
        if self.read_ns >= READ_SLOW_NS {
            READ_THREADS
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

/// The error for one of the dump's own threads that panicked.
fn thread_failed(what: &str) -> Error {
    Error::Spool(format!(
        "the {what} thread failed (panicked); nothing of this dump was committed, run it again"
    ))
}

/// What a finished scan holds: the open store (its last pack not sealed yet) and the manifest.
struct Scanned<'a> {
    s: Session<'a>,
    mstats: crate::manifest::ManifestStats,
    scan_started_ns: i64,
}

/// Dump volume `name` at `opts.level`: its latest clone when that has not been dumped yet,
/// otherwise its live tree.
pub fn dump_volume(
    spool: &Spool,
    name: &str,
    opts: &DumpOptions,
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
        return dump_clone(spool, name, clone, opts.level, progress);
    }
    dump_tree(spool, name, &vol.path.clone(), opts, progress)
}

pub(crate) fn check_root(name: &str, root: &Path) -> Result<()> {
    match std::fs::metadata(root) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(Error::usage(format!(
            "volume {name}: path {} is not a directory",
            root.display()
        ))),
        Err(e) => Err(Error::Volume(format!(
            "volume {name}: path {} cannot be read ({e}); mount the volume, or correct its path in reel.toml ([volumes.{name}] path)",
            root.display()
        ))),
    }
}

fn check_level(level: u8) -> Result<()> {
    if level > level::MAX_LEVEL {
        return Err(Error::usage(format!(
            "level {level} is out of range: use 0-9"
        )));
    }
    Ok(())
}

/// Refuse a dump time not later than the volume's latest dump.
pub(crate) fn check_time(name: &str, dumps: &[DumpRecord], time_ns: i64) -> Result<()> {
    if let Some(last) = dumps.last().filter(|l| time_ns <= l.time_ns) {
        // A latest dump dated ahead of the clock blocks every dump until then: say how out.
        let what_to_do = if last.time_ns > timefmt::now_ns().saturating_add(MAX_AHEAD_NS) {
            format!(
                "dump {} is dated ahead of the clock: `reel forget {}` removes it, and dumps of the present can follow again",
                last.id, last.id
            )
        } else {
            "give a later --date".to_string()
        };
        return Err(Error::usage(format!(
            "dump time {} is not later than the latest dump of volume {name} (dump {} at {}); {what_to_do}",
            format_rfc3339(time_ns),
            last.id,
            format_rfc3339(last.time_ns)
        )));
    }
    Ok(())
}

/// How far ahead of the clock a dump or clone time may be without `--force-date`.
pub const MAX_AHEAD_NS: i64 = 24 * 3600 * 1_000_000_000;

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

/// Dump the tree at `root` as a dump of volume `name` (the volume's path, or a clone of it).
pub fn dump_tree(
    spool: &Spool,
    name: &str,
    root: &Path,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    dump_tree_as(spool, name, root, opts, None, progress)
}

/// `dump_tree`, optionally for a directory clone (`clone`): then the stat map gives the
/// volume's inodes and ctimes, and the clone is marked dumped with the dump.
fn dump_tree_as(
    spool: &Spool,
    name: &str,
    root: &Path,
    opts: &DumpOptions,
    clone: Option<CloneRecord>,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    check_level(opts.level)?;
    check_root(name, root)?;
    let started = std::time::Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(timefmt::now_ns);
    let dumps = spool.catalog.dumps(Some(name))?;
    check_time(name, &dumps, time_ns)?;
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
    let Scanned {
        s,
        mstats,
        scan_started_ns,
    } = scan(
        spool,
        store,
        root,
        prev,
        Some(owner),
        statmap.as_deref(),
        progress,
    )?;

    let (owned_chunks, owned_bytes) = s.store.owned_later();
    let mut rec = DumpRecord {
        version: 1,
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
            .map_or(scan_started_ns, |c| c.scan_started_ns),
        duration_ns: 0,
        entries: mstats.entries,
        files: mstats.files,
        dirs: mstats.dirs,
        logical_bytes: mstats.logical_bytes,
        read_bytes: s.read_bytes,
        // Counted when the store commits (commit_record adds the store's totals).
        new_chunks: 0,
        stored_bytes: 0,
        owned_chunks,
        owned_bytes,
        manifest: s.manifest_chunks.clone(),
        manifest_bytes: s.manifest_bytes,
        warnings: s.warnings.clone(),
    };
    rec.duration_ns = started.elapsed().as_nanos() as u64;
    let from_clone = clone.as_ref().map(|c| c.method);
    let rec = commit_record(s.store, rec, started, clone)?;
    Ok(DumpOutcome {
        promoted: level != opts.level,
        record: rec,
        from_clone,
        elapsed_ns: started.elapsed().as_nanos() as u64,
    })
}

/// Store a copy of the dump record in the last pack (so the catalog can be rebuilt from packs),
/// seal it and commit the record, marking `clone` dumped in the same transaction.
fn commit_record(
    mut store: StoreWriter<'_>,
    mut rec: DumpRecord,
    started: std::time::Instant,
    clone: Option<CloneRecord>,
) -> Result<DumpRecord> {
    let blob = rec.encode();
    store.put_one(ChunkId::of(&blob), &blob, BlobKind::DumpRecord)?;
    let id = rec.id;
    store.finish(|txn, stats| {
        rec.new_chunks += stats.new_chunks;
        rec.stored_bytes += stats.stored_bytes;
        rec.duration_ns = started.elapsed().as_nanos() as u64;
        txn.record_dump(&rec)?;
        if let Some(mut c) = clone {
            c.dumped = Some(id);
            txn.put_clone(&c)?;
        }
        txn.set_next_dump_id(id + 1)
    })?;
    Ok(rec)
}

/// Walk `root` and store what changed since `prev`: the shared first half of a dump and of a
/// `store` clone.
fn scan<'a>(
    spool: &Spool,
    store: StoreWriter<'a>,
    root: &Path,
    prev: Option<PrevManifest>,
    owner: Option<Owner>,
    statmap: Option<&Path>,
    progress: &'a dyn Progress,
) -> Result<Scanned<'a>> {
    let scan_started_ns = timefmt::now_ns();
    let prev_in_chain = prev.as_ref().is_some_and(|p| p.in_chain);
    let mut s = Session {
        store,
        params: spool.chunker(),
        owner,
        keep_ctime: statmap.is_some(),
        manifest_buf: SharedBuf::default(),
        manifest_chunks: Vec::new(),
        manifest_bytes: 0,
        read_bytes: 0,
        warnings: Vec::new(),
        progress,
        spare_bufs: Vec::new(),
        // Until the first window tells, assume the files are in memory: a cold first window
        // read on a thread a core costs a little; eight threads woken for a few files in memory
        // cost every incremental that much.
        read_ns: 0.0,
    };
    let owning = s.owner.is_some();
    // After a purge, an unchanged file's chunks may be on tape only. A dump that may own them
    // (and a clone, whose owner is not known yet) must have them on the spool, or its export
    // could not write them: such a file is read again.
    let purged = s.store.catalog().purges() > 0;

    // The previous manifest, for change detection.
    let reader = ChunkReader::new(spool)?;
    let mut statmap = match statmap {
        Some(p) => Some(StatMap::open(p)?),
        None => None,
    };

    let mut manifest = ManifestWriter::new(s.manifest_buf.clone())?;
    let walker = Walker::new(root)?;
    // The walk and the decoding of the previous manifest run on threads of their own, a few
    // batches ahead of this one, which merges them (see `crate::ahead`).
    let walk_warnings = std::thread::scope(|sc| -> Result<Vec<String>> {
        let start = |e: std::io::Error| Error::Spool(format!("cannot start a thread: {e}"));
        let mut prev_entries = match prev {
            Some(p) => {
                let decoded = ManifestReader::new(reader.stream(p.chunks, p.label))?;
                let (entries, _) =
                    ahead::spawn(sc, "reel-prev-manifest", decoded, 256).map_err(start)?;
                Some((entries.peekable(), p.scan_started_ns))
            }
            None => None,
        };
        let (mut items, walking) = ahead::spawn(sc, "reel-walk", walker, 256).map_err(start)?;
        let mut window: Vec<Work> = Vec::new();
        let mut window_bytes = 0u64;
        // The window before `window`: its small files are being read on the pool while this
        // thread walks on, and it is stored once `window` is full and reading in turn.
        let mut reading: Option<ReadingWindow> = None;
        // Directories with entries in the window: each holds a handle until the window is stored.
        let mut window_dirs = 0usize;
        let dir_budget = crate::dirfd::fd_budget() / 2;
        for item in items.by_ref() {
            let item = item?;
            if window
                .last()
                .is_none_or(|w: &Work| !Arc::ptr_eq(&w.src.dir, &item.dir))
            {
                window_dirs += 1;
            }
            let mut entry = item.entry;
            if let Some(sm) = statmap.as_mut() {
                sm.apply(&mut entry)?;
            }
            let mut action = Action::None;
            let mut may_own = false;
            if entry.kind == EntryKind::File && entry.size > 0 {
                action = Action::Read;
                may_own = owning;
                if let Some((prev_iter, prev_scan)) = prev_entries.as_mut()
                    && let Some(old) = unchanged(prev_iter, &entry, *prev_scan)?
                {
                    let own = owning && !prev_in_chain;
                    let on_spool = !(purged && (own || !owning)) || {
                        let ids: Vec<ChunkId> = old
                            .iter()
                            .filter_map(|x| match x {
                                Extent::Chunk { id, .. } => Some(*id),
                                Extent::Hole(_) => None,
                            })
                            .collect();
                        s.store.missing(&ids)?.iter().all(|m| !m)
                    };
                    if on_spool {
                        entry.extents = old;
                        action = Action::Reuse;
                        may_own = own;
                    }
                }
            }
            if matches!(action, Action::Read) {
                window_bytes += entry.size;
            }
            window.push(Work {
                entry,
                src: Source {
                    dir: item.dir,
                    name: item.name,
                    walked: item.stat,
                },
                action,
                may_own,
                left_out: None,
            });
            if window_bytes >= WINDOW_BYTES
                || window.len() >= WINDOW_ENTRIES
                || window_dirs >= dir_budget
            {
                crate::signal::check_interrupted()?;
                let buf = s.spare_bufs.pop().unwrap_or_else(window_buffer);
                let next = ReadingWindow::start(
                    std::mem::take(&mut window),
                    s.params,
                    buf,
                    s.read_threads(),
                );
                if let Some(before) = reading.replace(next) {
                    s.store_window(before, &mut manifest)?;
                }
                window_bytes = 0;
                window_dirs = 0;
            }
        }
        let buf = s.spare_bufs.pop().unwrap_or_else(window_buffer);
        let last = ReadingWindow::start(window, s.params, buf, s.read_threads());
        if let Some(before) = reading.take() {
            s.store_window(before, &mut manifest)?;
        }
        s.store_window(last, &mut manifest)?;
        drop(prev_entries);
        drop(items);
        let walker = walking.join().map_err(|_| thread_failed("walking"))?;
        Ok(walker.warnings().to_vec())
    })?;
    s.warnings.extend(walk_warnings);

    let (_, mstats) = manifest.finish()?;
    s.store_manifest(true)?;
    s.store.settle()?;
    Ok(Scanned {
        s,
        mstats,
        scan_started_ns,
    })
}

/// Capture volume `name` straight into the store as its new clone (`store` method): the
/// stat cache comes from its newest manifest (latest dump, or the clone it replaces), so only
/// changed files are read. Nothing is owned yet; `dump_clone` settles that.
pub fn capture_clone(
    spool: &Spool,
    name: &str,
    time_ns: i64,
    reread: bool,
    progress: &dyn Progress,
) -> Result<CloneRecord> {
    let vol = spool.volume(name)?;
    let root = vol.path.clone();
    check_root(name, &root)?;
    let dumps = spool.catalog.dumps(Some(name))?;
    check_time(name, &dumps, time_ns)?;
    let old = spool.catalog.clone_of(name)?;
    let prev = if reread {
        None
    } else {
        let from_clone = old.as_ref().and_then(|c| match &c.view {
            CloneView::Manifest { chunks, .. }
                if dumps.last().is_none_or(|d| d.time_ns < c.time_ns) =>
            {
                Some(PrevManifest {
                    chunks: chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect(),
                    scan_started_ns: c.scan_started_ns,
                    in_chain: false,
                    label: format!("manifest of the clone of {name}"),
                })
            }
            _ => None,
        });
        from_clone.or_else(|| {
            dumps.last().map(|p| PrevManifest {
                chunks: p.manifest_chunks(),
                scan_started_ns: p.scan_started_ns,
                in_chain: false,
                label: format!("manifest of dump {}", p.id),
            })
        })
    };
    let store = StoreWriter::new(spool)?;
    progress.message(&format!("cloning {name}"));
    let Scanned {
        s,
        mstats,
        scan_started_ns,
    } = scan(spool, store, &root, prev, None, None, progress)?;
    let mut rec = CloneRecord {
        version: 1,
        volume: name.to_string(),
        time_ns,
        method: CloneMethod::Store,
        frozen_ns: 0,
        scan_started_ns,
        source: root.display().to_string(),
        view: CloneView::Manifest {
            chunks: s.manifest_chunks.clone(),
            bytes: s.manifest_bytes,
        },
        dumped: None,
        entries: mstats.entries,
        files: mstats.files,
        dirs: mstats.dirs,
        logical_bytes: mstats.logical_bytes,
        read_bytes: s.read_bytes,
        new_chunks: 0,
        stored_bytes: 0,
        warnings: s.warnings.clone(),
    };
    s.store.finish(|txn, stats| {
        rec.new_chunks = stats.new_chunks;
        rec.stored_bytes = stats.stored_bytes;
        txn.put_clone(&rec)
    })?;
    Ok(rec)
}

/// Turn volume `name`'s undumped clone into a dump at `level`.
pub fn dump_clone(
    spool: &Spool,
    name: &str,
    clone: CloneRecord,
    level: u8,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    check_level(level)?;
    let opts = DumpOptions {
        level,
        time_ns: Some(clone.time_ns),
        reread: false,
    };
    match &clone.view {
        CloneView::Dir { path, .. } => {
            let path = PathBuf::from(path);
            let method = clone.method;
            let mut out = dump_tree_as(spool, name, &path, &opts, Some(clone), progress)?;
            out.from_clone = Some(method);
            Ok(out)
        }
        CloneView::Manifest { .. } => commit_store_clone(spool, name, clone, level, progress),
    }
}

/// A `store` clone is already in the store: its dump only settles what it owns (by comparing
/// its manifest with the base's: an entry with the same content as in the base is owned
/// within the chain) and commits the record.
fn commit_store_clone(
    spool: &Spool,
    name: &str,
    clone: CloneRecord,
    level_asked: u8,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    let started = std::time::Instant::now();
    let dumps = spool.catalog.dumps(Some(name))?;
    check_time(name, &dumps, clone.time_ns)?;
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
        Some(b) => Some(
            ManifestReader::new(
                reader.stream(b.manifest_chunks(), format!("manifest of dump {}", b.id)),
            )?
            .peekable(),
        ),
        None => None,
    };
    let entries = ManifestReader::new(
        reader.stream(manifest.clone(), format!("manifest of the clone of {name}")),
    )?;
    let mut owned = (0u64, 0u64);
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
            let (n, b) = store.record_owned(id, &chain, &refs)?;
            owned = (owned.0 + n, owned.1 + b);
            refs.clear();
            crate::signal::check_interrupted()?;
        }
    }
    let (n, b) = store.record_owned(id, &chain, &refs)?;
    owned = (owned.0 + n, owned.1 + b);
    drop(base_entries);

    let rec = DumpRecord {
        version: 1,
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
        entries: clone.entries,
        files: clone.files,
        dirs: clone.dirs,
        logical_bytes: clone.logical_bytes,
        read_bytes: clone.read_bytes,
        new_chunks: clone.new_chunks,
        stored_bytes: clone.stored_bytes,
        owned_chunks: owned.0,
        owned_bytes: owned.1,
        manifest: chunks.clone(),
        manifest_bytes: *bytes,
        warnings: clone.warnings.clone(),
    };
    let rec = commit_record(store, rec, started, Some(clone))?;
    Ok(DumpOutcome {
        promoted: level != level_asked,
        record: rec,
        from_clone: Some(CloneMethod::Store),
        elapsed_ns: started.elapsed().as_nanos() as u64,
    })
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

/// The volume's own stat data for the paths of a directory clone (written by the copy), so
/// change detection and the manifest see the volume's inodes and ctimes, not the copy's.
struct StatMap {
    entries: std::iter::Peekable<ManifestReader<std::io::BufReader<File>>>,
}

impl StatMap {
    fn open(path: &Path) -> Result<StatMap> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(StatMap {
            entries: ManifestReader::new(std::io::BufReader::new(f))?.peekable(),
        })
    }

    fn apply(&mut self, e: &mut Entry) -> Result<()> {
        if let Some(m) = crate::manifest::seek(&mut self.entries, &e.path)?
            && m.kind == e.kind
        {
            e.ino = m.ino;
            e.ctime_ns = m.ctime_ns;
        }
        Ok(())
    }
}

/// Merge-join step: advance the previous manifest to `entry.path`; if the file there has the
/// same identity and stat data, and its mtime was safely before the previous scan started
/// (not in the same second), return its extents.
fn unchanged<I: Iterator<Item = Result<Entry>>>(
    prev: &mut std::iter::Peekable<I>,
    entry: &Entry,
    prev_scan_ns: i64,
) -> Result<Option<Vec<Extent>>> {
    let Some(p) = crate::manifest::seek(prev, &entry.path)? else {
        return Ok(None);
    };
    let same = p.kind == EntryKind::File
        && p.ino == entry.ino
        && p.size == entry.size
        && p.mtime_ns == entry.mtime_ns
        && p.ctime_ns == entry.ctime_ns
        && p.mtime_ns.div_euclid(1_000_000_000) < prev_scan_ns.div_euclid(1_000_000_000);
    Ok(same.then_some(p.extents))
}

/// What reading one file gave.
struct FileContent {
    extents: Vec<Extent>,
    /// The bytes read: `len` bytes at the start of the file's slot in its window's buffer, or,
    /// when the file had grown past the size the walk saw, a buffer of its own.
    len: usize,
    own: Option<Vec<u8>>,
    /// The chunks, as ranges of those bytes.
    chunks: Vec<(ChunkId, Range<usize>)>,
    /// Stat data as read (the file may have changed since the walk).
    md: Stat,
    /// The file's extended attributes, read again when the name led to another inode than the
    /// one walked (replaced since): the entry must describe the file whose bytes it holds.
    xattrs: Option<Xattrs>,
    warning: Option<String>,
    /// How long opening and reading it took (its last attempt), in nanoseconds.
    read_ns: u128,
}

/// The key by which a window's files go into frames: the file name's extension, in ASCII
/// lower case (files without one first); the sort is stable, so path order stays within a
/// type. zstd sees one frame (4 MiB) at a time, and a frame of one type of file (prose with
/// prose, code with code, random bytes with random bytes) holds far more repeats than the same
/// bytes in path order: the benchmark tree's packs came out 7% smaller (docs/PERFORMANCE.md),
/// the way 7-Zip sorts a solid archive by extension. Which frame a chunk lands in changes
/// nothing else: the manifest keeps path order, and dedup and restore go by chunk id.
fn type_key(name: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name))
        .extension()
        .map_or_else(Vec::new, |e| e.as_bytes().to_ascii_lowercase())
}

/// How long until the last change of a file (stat `md`) is `SETTLE` old; None if it is already,
/// or if its ctime lies ahead of the clock (set back since: waiting would not tell anything).
fn settle_wait(md: &Stat) -> Option<std::time::Duration> {
    // The clock is read after the stat, so a change the stat saw is never ahead of it.
    let age = timefmt::now_ns() - md.ctime_ns;
    let age = std::time::Duration::from_nanos(u64::try_from(age).ok()?);
    SETTLE.checked_sub(age).filter(|wait| !wait.is_zero())
}

/// Before reading a file again, wait until its last change (stat `md`) has settled.
fn wait_to_settle(md: &Stat) {
    if let Some(wait) = settle_wait(md) {
        std::thread::sleep(wait);
    }
}

/// Read a small file whole into `slot` (its share of the window's buffer, as large as the walk
/// saw the file), cut and hash it. Retries while the file changes under us, or changed so
/// lately that a write may have been in flight (`SETTLE`). What is stored is what the last read
/// gave, with the size it gave: never more bytes than were read.
fn read_small(src: &Source, slot: &mut [u8], params: &ChunkerParams) -> Result<Got<FileContent>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = std::time::Instant::now();
        let (f, before, settled) = match open_for_read(src)? {
            Got::Read(opened) => opened,
            Got::LeftOut(why) => return Ok(Got::LeftOut(why)),
        };
        let want = before.size as usize;
        let (len, own) = if want <= slot.len() {
            let n = read_into(&f, &mut slot[..want]).map_err(|e| Error::io(src.shown(), e))?;
            (n, None)
        } else {
            // Grown since the walk: more than its slot holds.
            let data = read_up_to(&f, want).map_err(|e| Error::io(src.shown(), e))?;
            (data.len(), Some(data))
        };
        let after = fstat(&f, src)?;
        let read_ns = started.elapsed().as_nanos();
        let stable =
            settled && before.content_key() == after.content_key() && len as u64 == after.size;
        if !stable && attempt < READ_ATTEMPTS {
            wait_to_settle(&after);
            continue;
        }
        let xattrs = refreshed_xattrs(&f, src, &after)?;
        let data = own.as_deref().unwrap_or(&slot[..len]);
        let (chunks, _) = chunk::cut_hashed(data, params, true);
        let extents = chunks
            .iter()
            .map(|(id, r)| Extent::Chunk {
                id: *id,
                len: r.len() as u32,
            })
            .collect();
        let warning = (!stable).then(|| changed_while_read(src));
        return Ok(Got::Read(FileContent {
            extents,
            len,
            own,
            chunks,
            md: after,
            xattrs,
            warning,
            read_ns,
        }));
    }
}

/// Read from the start of `f` until `buf` is full or the file ends; the bytes read.
fn read_into(f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read at most `len` bytes of `f` (the size its stat gave) into a buffer of that capacity,
/// without zeroing the buffer first. `File::read_to_end` would also stat and seek for a size
/// hint and make one more read to meet the end: three syscalls more per file, for thousands of
/// small files. A file that grew or shrank meanwhile fails the stat comparison after the read.
fn read_up_to(f: &File, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut data: Vec<u8> = Vec::with_capacity(len);
    while data.len() < len {
        let want = len - data.len();
        let spare = data.spare_capacity_mut();
        // SAFETY: read(2) writes at most `want` (within the spare capacity) bytes there, and
        // only the count it returns is added to the length.
        let n = unsafe {
            libc::read(
                f.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want.min(spare.len()),
            )
        };
        match n {
            0 => break,
            n if n > 0 => unsafe { data.set_len(data.len() + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(data)
}

/// The warning for a file that kept changing while it was read: it is stored as last read,
/// with the size that read gave.
fn changed_while_read(src: &Source) -> String {
    format!(
        "{}: changed while being read {READ_ATTEMPTS} times; stored as last read (the bytes \
         and size that read gave)",
        src.shown().display()
    )
}

/// The file's stat data through its open descriptor.
fn fstat(f: &File, src: &Source) -> Result<Stat> {
    crate::dirfd::fstat(f).map_err(|e| Error::io(src.shown(), e))
}

/// The file's extended attributes when the name now leads to another inode than the walk saw.
fn refreshed_xattrs(f: &File, src: &Source, md: &Stat) -> Result<Option<Xattrs>> {
    if md.same_inode(&src.walked) {
        return Ok(None);
    }
    crate::dirfd::file_xattrs(f)
        .map(Some)
        .map_err(|e| Error::io(src.shown(), e))
}

/// Open a walked file to read it, by name in the directory the walk saw it in, with its stat
/// data once its last change has settled (`SETTLE`; false when it kept changing); left out if
/// it vanished or is no longer a regular file. Waiting before the read rather than reading
/// again after it spares a second read of a file written just before the dump reached it.
fn open_for_read(src: &Source) -> Result<Got<(File, Stat, bool)>> {
    let f = match src.dir.open_read(&src.name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Got::LeftOut("vanished before it could be read".into()));
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Got::LeftOut(
                "became a symlink before it could be read".into(),
            ));
        }
        Err(e) => return Err(Error::io(src.shown(), e)),
    };
    let mut md = fstat(&f, src)?;
    if !md.is_file() {
        return Ok(Got::LeftOut(format!(
            "became a {} before it could be read",
            kind_name(md.kind())
        )));
    }
    for _ in 0..READ_ATTEMPTS {
        match settle_wait(&md) {
            None => return Ok(Got::Read((f, md, true))),
            Some(wait) => std::thread::sleep(wait),
        }
        md = fstat(&f, src)?;
    }
    let settled = settle_wait(&md).is_none();
    Ok(Got::Read((f, md, settled)))
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "directory",
        EntryKind::File | EntryKind::HardLink => "file",
        EntryKind::Symlink => "symlink",
        EntryKind::Fifo => "FIFO",
        EntryKind::CharDev | EntryKind::BlockDev => "device node",
        EntryKind::Socket => "socket",
    }
}

/// Threads that read, cut and hash a window's small files. More than the cores: a small file
/// that is not in the page cache costs an inode and a data block read from the disk, a few
/// hundred microseconds each on a virtual disk, and with a thread a core only that many reads
/// are ever in flight; the disk answers a deeper queue much faster. The cutting and hashing on
/// the same threads take the cores as the reads leave them.
const READ_THREADS: usize = 8;

fn read_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(READ_THREADS)
            .thread_name(|i| format!("reel-read-{i}"))
            .build()
            .expect("the reading threads start")
    })
}

/// A buffer for a window's small files: as large as they can be (a window closes once its
/// files reach `WINDOW_BYTES`, and the last one is at most `SMALL_FILE`), made once on this
/// thread and reused for every window, so it neither grows step by step nor lands in the
/// allocator arena of whichever reading thread first needs it.
fn window_buffer() -> Vec<u8> {
    vec![0u8; (WINDOW_BYTES + SMALL_FILE) as usize]
}

/// What `read_small` gave for each small file of a window, in window order, and the window's
/// buffer their bytes are in.
type SmallReads = (Vec<u8>, Vec<Result<Got<FileContent>>>, ReadTime);

/// How long a window's small files took to read: nanoseconds in all, and files.
type ReadTime = (u128, usize);

/// A window whose small files are being read, cut and hashed on the pool (`read_small`).
struct ReadingWindow {
    window: Vec<Work>,
    /// The window's indices of the files being read.
    small: Vec<usize>,
    done: std::sync::mpsc::Receiver<SmallReads>,
    /// The window's first large file (its index), being read ahead too.
    first_large: Option<(usize, Result<Got<LargeRead>>)>,
}

impl ReadingWindow {
    /// Start reading `window`'s small files into `buf` (a buffer from an earlier window, kept:
    /// allocating a window's worth for every window on the reading threads left each of their
    /// allocator arenas holding one).
    /// `threads`: on how many reading threads at most (see `Session::read_threads`).
    fn start(
        window: Vec<Work>,
        params: ChunkerParams,
        mut buf: Vec<u8>,
        threads: usize,
    ) -> ReadingWindow {
        let small: Vec<usize> = window
            .iter()
            .enumerate()
            .filter(|(_, w)| matches!(w.action, Action::Read) && w.entry.size <= SMALL_FILE)
            .map(|(i, _)| i)
            .collect();
        let sources: Vec<Source> = small.iter().map(|&i| window[i].src.clone()).collect();
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let work = move || {
            // One buffer for the window, a slot a file as large as the walk saw it, rather than
            // an allocation a file on each of the reading threads.
            let sizes: Vec<usize> = sources.iter().map(|s| s.walked.size as usize).collect();
            let total: usize = sizes.iter().sum();
            if buf.len() < total {
                // Exactly: `resize` alone would double the capacity, a window's worth of memory.
                buf.reserve_exact(total - buf.len());
                buf.resize(total, 0);
            }
            let mut slots: Vec<&mut [u8]> = Vec::with_capacity(sizes.len());
            let mut rest = buf.as_mut_slice();
            for &n in &sizes {
                let (slot, tail) = rest.split_at_mut(n);
                slots.push(slot);
                rest = tail;
            }
            // Fewer threads: as many tasks. All of them: rayon splits as the reads finish.
            let per_task = if threads >= READ_THREADS {
                1
            } else {
                sources.len().div_ceil(threads.max(1)).max(1)
            };
            let contents: Vec<Result<Got<FileContent>>> = sources
                .par_iter()
                .zip(slots.into_par_iter())
                .with_min_len(per_task)
                .map(|(s, slot)| read_small(s, slot, &params))
                .collect();
            let (mut spent, mut n) = (0u128, 0usize);
            for c in contents.iter().flatten() {
                if let Got::Read(c) = c {
                    spent += c.read_ns;
                    n += 1;
                }
            }
            let _ = tx.send((buf, contents, (spent, n)));
        };
        // A panic must not abort the process (rayon's default): the sender is dropped instead,
        // and `wait` reports it.
        read_pool().spawn(move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        });
        let first_large = window
            .iter()
            .position(|w| matches!(w.action, Action::Read) && w.entry.size > SMALL_FILE)
            .map(|i| (i, LargeRead::start(window[i].src.clone(), params)));
        ReadingWindow {
            window,
            small,
            done,
            first_large,
        }
    }

    /// What reading each small file gave, once they are all read.
    fn wait(&self) -> Result<SmallReads> {
        self.done.recv().map_err(|_| {
            Error::Spool(
                "a file reading worker failed (panicked); nothing of this dump was committed, \
                 run it again"
                    .into(),
            )
        })
    }
}

/// What storing a large file gave.
struct LargeDone {
    extents: Vec<Extent>,
    md: Stat,
    /// The bytes covered by `extents`: the size recorded.
    len: u64,
    xattrs: Option<Xattrs>,
    warning: Option<String>,
}

impl Session<'_> {
    /// Store a window once its small files are read: their chunks, then the large files',
    /// then the manifest entries and ownership, in order.
    fn store_window(
        &mut self,
        reading: ReadingWindow,
        manifest: &mut ManifestWriter<SharedBuf>,
    ) -> Result<()> {
        if reading.window.is_empty() {
            return Ok(());
        }
        let (buf, contents, (spent, files)) = reading.wait()?;
        if files > 0 {
            let each = spent as f64 / files as f64;
            ahead::note_times(&mut self.read_ns, each, files, 64);
        }
        let ReadingWindow {
            mut window,
            small,
            first_large,
            ..
        } = reading;
        let mut batch: Vec<(ChunkId, &[u8])> = Vec::new();
        // (index in the window, where its slot starts in `buf`, what was read)
        let mut read: Vec<(usize, usize, FileContent)> = Vec::new();
        let mut slot_start = 0usize;
        for (&i, c) in small.iter().zip(contents) {
            let start = slot_start;
            slot_start += window[i].src.walked.size as usize;
            match c? {
                Got::Read(c) if !c.md.is_sparse() || c.md.size == 0 => read.push((i, start, c)),
                // Sparse: no extents yet, so the segment path below reads it and keeps its holes.
                Got::Read(_) => {}
                Got::LeftOut(why) => window[i].left_out = Some(why),
            }
        }
        // Into the frames by file type, then in path order: see `type_key`.
        read.sort_by_cached_key(|(i, _, _)| type_key(&window[*i].src.name));
        for (_, start, c) in &read {
            let data = c.own.as_deref().unwrap_or(&buf[*start..*start + c.len]);
            for (id, r) in &c.chunks {
                batch.push((*id, &data[r.clone()]));
            }
        }
        self.store.put_batch(&batch, BlobKind::Data)?;
        drop(batch);
        self.spare_bufs.push(buf);
        for (i, _, c) in read {
            let w = &mut window[i];
            self.read_bytes += c.len as u64;
            self.progress.advance(c.len as u64);
            apply_read_stat(&mut w.entry, &c.md, c.len as u64, c.xattrs, self.keep_ctime);
            w.entry.extents = c.extents;
            if let Some(msg) = c.warning {
                tracing::warn!("{msg}");
                self.warnings.push(msg);
            }
        }
        // Large or sparse files: one at a time, in segments, each file's reader started while
        // the one before is stored.
        let large: Vec<usize> = (0..window.len())
            .filter(|&i| {
                let w = &window[i];
                matches!(w.action, Action::Read)
                    && w.left_out.is_none()
                    && w.entry.extents.is_empty()
                    && w.entry.size > 0
            })
            .collect();
        let mut ahead = first_large;
        for (k, &i) in large.iter().enumerate() {
            let this = match ahead.take() {
                Some((j, read)) if j == i => Some(read),
                other => {
                    ahead = other;
                    None
                }
            };
            if ahead.is_none()
                && let Some(&j) = large.get(k + 1)
            {
                ahead = Some((j, LargeRead::start(window[j].src.clone(), self.params)));
            }
            let w = &mut window[i];
            match self.store_large(&w.src, this)? {
                Got::Read(done) => {
                    apply_read_stat(
                        &mut w.entry,
                        &done.md,
                        done.len,
                        done.xattrs,
                        self.keep_ctime,
                    );
                    w.entry.extents = done.extents;
                    if let Some(msg) = done.warning {
                        tracing::warn!("{msg}");
                        self.warnings.push(msg);
                    }
                }
                Got::LeftOut(why) => w.left_out = Some(why),
            }
        }
        // Manifest entries in order, and the chunks this dump owns.
        let mut refs: Vec<ChunkId> = Vec::new();
        for w in window.iter() {
            if let Some(why) = &w.left_out {
                let msg = format!("{}: {why}; left out", w.src.shown().display());
                tracing::warn!("{msg}");
                self.warnings.push(msg);
                continue;
            }
            manifest.push(&w.entry)?;
            if w.may_own {
                refs.extend(w.entry.chunks().map(|(id, _)| id));
            }
        }
        self.progress.entries(window.len() as u64);
        self.own(refs)?;
        self.store_manifest(false)
    }

    /// Record the chunks of `refs` this dump owns, once they are indexed (`own_later`).
    fn own(&mut self, refs: Vec<ChunkId>) -> Result<()> {
        match &self.owner {
            Some(owner) => self.store.own_later(owner.id, &owner.chain, refs),
            None => Ok(()),
        }
    }

    /// Cut the buffered manifest bytes into chunks and store them (all of them when `eof`).
    fn store_manifest(&mut self, eof: bool) -> Result<()> {
        let data = std::mem::take(&mut *self.manifest_buf.0.borrow_mut());
        if data.len() < MANIFEST_FLUSH && !eof {
            *self.manifest_buf.0.borrow_mut() = data;
            return Ok(());
        }
        let (chunks, consumed) = chunk::cut_hashed(&data, &self.params, eof);
        let batch: Vec<(ChunkId, &[u8])> = chunks
            .iter()
            .map(|(id, r)| (*id, &data[r.clone()]))
            .collect();
        self.manifest_chunks
            .extend(chunks.iter().map(|(id, r)| (id.0, r.len() as u32)));
        self.store.put_batch(&batch, BlobKind::Manifest)?;
        self.manifest_bytes += consumed as u64;
        let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
        self.own(ids)?;
        self.manifest_buf
            .0
            .borrow_mut()
            .extend_from_slice(&data[consumed..]);
        Ok(())
    }

    /// Store a large or sparse file from its reader (`ahead`, or one started now), segment
    /// by segment. Holes become `Hole` extents. What is stored is what the last read gave:
    /// the bytes it read and, for a sparse file read through to its end, the holes between
    /// and after them, never a byte beyond the size the file had when that read began.
    fn store_large(
        &mut self,
        src: &Source,
        mut ahead: Option<Result<Got<LargeRead>>>,
    ) -> Result<Got<LargeDone>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = match ahead.take() {
                Some(started) => started,
                None => LargeRead::start(src.clone(), self.params),
            };
            let read = match started? {
                Got::Read(read) => read,
                Got::LeftOut(why) => return Ok(Got::LeftOut(why)),
            };
            let mut extents = Vec::new();
            let mut pos = 0u64;
            for piece in &read.pieces {
                match piece.map_err(|e| Error::io(src.shown(), e))? {
                    Piece::Range { off } => {
                        if off > pos {
                            extents.push(Extent::Hole(off - pos));
                        }
                        pos = off;
                    }
                    Piece::Segment { seg, ids } => {
                        let batch: Vec<(ChunkId, &[u8])> = ids
                            .iter()
                            .zip(&seg.chunks)
                            .map(|(id, r)| (*id, &seg.data[r.clone()]))
                            .collect();
                        self.store.put_batch(&batch, BlobKind::Data)?;
                        for (id, r) in ids.iter().zip(&seg.chunks) {
                            extents.push(Extent::Chunk {
                                id: *id,
                                len: r.len() as u32,
                            });
                        }
                        let n = seg.data.len() as u64;
                        pos += n;
                        self.read_bytes += n;
                        self.progress.advance(n);
                    }
                }
            }
            let (file, before, settled, complete) = read.finish()?;
            let after = fstat(&file, src)?;
            if complete && pos < before.size {
                // Every data range was read to its end: the rest up to the size the read
                // began with was a hole then.
                extents.push(Extent::Hole(before.size - pos));
                pos = before.size;
            }
            let stable = settled
                && complete
                && before.content_key() == after.content_key()
                && pos == after.size;
            if !stable && attempt < READ_ATTEMPTS {
                wait_to_settle(&after);
                continue;
            }
            let xattrs = refreshed_xattrs(&file, src, &after)?;
            let warning = (!stable).then(|| changed_while_read(src));
            return Ok(Got::Read(LargeDone {
                extents,
                md: after,
                len: pos,
                xattrs,
                warning,
            }));
        }
    }
}

/// What a large file's reader hands the dumping thread, in file order.
enum Piece {
    /// A data range starts at this offset (after a hole, in a sparse file).
    Range { off: u64 },
    /// The next bytes of the range, cut and hashed.
    Segment { seg: Segment, ids: Vec<ChunkId> },
}

/// A large or sparse file being read, cut and hashed in segments by its own thread, a few
/// segments ahead of the dumping thread that stores them. It hashes itself rather than on the
/// pool: there the hashing would queue behind the frames being compressed, and the dumping
/// thread would hand the pool no new frame until they were all done. The dumping thread starts
/// the next large file's reader while it stores this one, so the pool never waits for a file's
/// first segment.
struct LargeRead {
    file: Arc<File>,
    before: Stat,
    /// The file's last change was `SETTLE` old when the reading began.
    settled: bool,
    pieces: std::sync::mpsc::Receiver<std::io::Result<Piece>>,
    /// Says whether every range was read through to its end.
    thread: std::thread::JoinHandle<bool>,
}

impl LargeRead {
    /// Open the file and start reading it; left out if it vanished or changed type since the
    /// walk.
    fn start(src: Source, params: ChunkerParams) -> Result<Got<LargeRead>> {
        let (file, before, settled) = match open_for_read(&src)? {
            Got::Read(opened) => opened,
            Got::LeftOut(why) => return Ok(Got::LeftOut(why)),
        };
        let file = Arc::new(file);
        let (size, sparse) = (before.size, before.is_sparse());
        let (tx, pieces) = std::sync::mpsc::sync_channel(1);
        let reader = Arc::clone(&file);
        let thread = std::thread::Builder::new()
            .name("reel-large-read".into())
            .spawn(
                move || match read_segments(&reader, size, sparse, params, &tx) {
                    Ok(complete) => complete,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        false
                    }
                },
            )
            .map_err(|e| Error::io(src.shown(), e))?;
        Ok(Got::Read(LargeRead {
            file,
            before,
            settled,
            pieces,
            thread,
        }))
    }

    /// The file, its stat data from before it was read, whether its last change had settled
    /// then and whether every range was read to its end, once the reader is done.
    fn finish(self) -> Result<(Arc<File>, Stat, bool, bool)> {
        drop(self.pieces);
        let complete = self.thread.join().map_err(|_| {
            Error::Spool(
                "a file reading thread failed (panicked); nothing of this dump was committed, \
                 run it again"
                    .into(),
            )
        })?;
        Ok((self.file, self.before, self.settled, complete))
    }
}

/// The reader's side of `LargeRead`: each data range (the whole file unless it is sparse),
/// cut and hashed in segments. Returns whether every range was read through to its end (false
/// when the file shrank under the read, or the dumping thread hung up).
fn read_segments(
    mut file: &File,
    size: u64,
    sparse: bool,
    params: ChunkerParams,
    tx: &std::sync::mpsc::SyncSender<std::io::Result<Piece>>,
) -> std::io::Result<bool> {
    let ranges = if sparse {
        scan::data_ranges(file, size)?
    } else {
        vec![(0, size)]
    };
    for (off, len) in ranges {
        if tx.send(Ok(Piece::Range { off })).is_err() {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(off))?;
        let mut sc = StreamChunker::new(file.take(len), params, SEGMENT);
        while let Some(seg) = sc.next_segment()? {
            let ids = seg
                .chunks
                .iter()
                .map(|r| ChunkId::of(&seg.data[r.clone()]))
                .collect();
            if tx.send(Ok(Piece::Segment { seg, ids })).is_err() {
                return Ok(false);
            }
        }
        if sc.bytes_read() < len {
            return Ok(false); // shrank while reading: stored as far as it was read
        }
    }
    Ok(true)
}

/// The file was read with this stat data: record it, so the manifest matches what was read.
/// `len` is the size recorded: the bytes the extents cover. `xattrs` replaces the walk's when
/// the read found another inode. `keep_ctime`: the entry's inode and ctime are the volume's
/// (from a clone's stat map), not the copy's.
fn apply_read_stat(e: &mut Entry, md: &Stat, len: u64, xattrs: Option<Xattrs>, keep_ctime: bool) {
    e.size = len;
    e.mtime_ns = md.mtime_ns;
    if !keep_ctime {
        e.ctime_ns = md.ctime_ns;
        e.ino = md.ino;
    }
    e.mode = md.mode & 0o7777;
    e.uid = md.uid;
    e.gid = md.gid;
    if let Some(x) = xattrs {
        e.xattrs = x;
    }
}
