//! One pass over a tree: the shared first half of a dump and of a clone by the `store` method.
//!
//! Pipeline: the walker yields entries in path order; they are merge-joined with the previous
//! manifest (also in path order) to find unchanged files. Entries collect in a window of
//! bounded size; the window's small files are read, cut and hashed on all cores while this
//! thread walks the next window and stores the one before (so the pool is not left idle while
//! this thread indexes and fills frames); large files are cut and hashed in bounded segments
//! by a reader thread; new chunks are compressed on all cores and appended by one pack writer.
//! The manifest streams out as it is built, in chunks. Memory is bounded by two windows and
//! the tree depth, never by the volume.
//!
//! The reading is `read_engine`'s; this module walks, fills the windows, stores what they read
//! and streams the manifest.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use crate::ahead;
use crate::chunk::{self, ChunkerParams};
use crate::crypto::Keys;
use crate::dirfd::{Stat, Xattrs};
use crate::manifest::{ManifestReader, ManifestWriter};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::record::ScanTotals;
use crate::scan::{Exclude, Walker};
use crate::spool::Spool;
use crate::store::{ChunkReader, StoreWriter};
use crate::timefmt;
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

use super::read_engine::{
    Action, FileContent, Got, LargeRead, Piece, READ_ATTEMPTS, READ_THREADS, ReadingWindow,
    SMALL_FILE, Source, WINDOW_BYTES, WINDOW_ENTRIES, Work, changed_while_read, fstat,
    refreshed_xattrs, wait_to_settle, window_buffer,
};
use super::reuse::{KnownChunks, PrevManifest, Previous, StatMap, previous};

/// Manifest bytes buffered before they are cut and stored.
const MANIFEST_FLUSH: usize = 4 << 20;

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

/// Who owns what a scan reads: the dump being made and its ancestors. None for a clone
/// capture, whose ownership is settled when it becomes a dump.
pub(crate) struct Owner {
    pub(super) id: u64,
    pub(super) chain: Vec<u64>,
}

struct Session<'a> {
    store: StoreWriter<'a>,
    params: ChunkerParams,
    /// The spool's keys: every chunk id is `keys.chunk_id` of its bytes.
    keys: Keys,
    owner: Option<Owner>,
    /// Whether the previous manifest's chunks are all owned in the owner's chain, so a changed
    /// file's known chunks (`Work::known`) need no ownership rows.
    known_owned: bool,
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

impl<'a> Session<'a> {
    /// `keep_ctime`: see the field.
    fn new(
        store: StoreWriter<'a>,
        params: ChunkerParams,
        owner: Option<Owner>,
        keep_ctime: bool,
        progress: &'a dyn Progress,
    ) -> Session<'a> {
        Session {
            keys: store.keys().clone(),
            store,
            params,
            owner,
            known_owned: false,
            keep_ctime,
            manifest_buf: SharedBuf::default(),
            manifest_chunks: Vec::new(),
            manifest_bytes: 0,
            read_bytes: 0,
            warnings: Vec::new(),
            progress,
            spare_bufs: Vec::new(),
            // Until the first window tells, assume the files are in memory: a cold first window
            // read on a thread a core costs a little; eight threads woken for a few files in
            // memory cost every incremental that much.
            read_ns: 0.0,
        }
    }

    /// Finish the manifest, store its last chunks and settle the store: what the pass made.
    fn finish(
        mut self,
        manifest: ManifestWriter<SharedBuf>,
        scan_started_ns: i64,
    ) -> Result<Scanned<'a>> {
        let (_, mstats) = manifest.finish()?;
        self.store_manifest(true)?;
        self.store.settle()?;
        Ok(Scanned {
            store: self.store,
            manifest_chunks: self.manifest_chunks,
            manifest_bytes: self.manifest_bytes,
            read_bytes: self.read_bytes,
            warnings: self.warnings,
            mstats,
            scan_started_ns,
        })
    }

    /// The buffer a window reads its small files into: a spare one, or a new one of the most a
    /// window can hold; none for a window without small files (of large files, directories or
    /// unchanged files only), which would otherwise hold two buffers of 20 MiB for nothing.
    fn window_buffer(&mut self, small_files: bool) -> Vec<u8> {
        if !small_files {
            return Vec::new();
        }
        self.spare_bufs.pop().unwrap_or_else(window_buffer)
    }

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
pub(crate) struct Scanned<'a> {
    pub(crate) store: StoreWriter<'a>,
    pub(crate) manifest_chunks: Vec<([u8; 32], u32)>,
    pub(crate) manifest_bytes: u64,
    pub(crate) read_bytes: u64,
    pub(crate) warnings: Vec<String>,
    pub(crate) mstats: crate::manifest::ManifestStats,
    pub(crate) scan_started_ns: i64,
}

impl Scanned<'_> {
    /// The tree's counts and the bytes read; what the store adds is counted when it commits.
    pub(crate) fn totals(&self) -> ScanTotals {
        ScanTotals {
            entries: self.mstats.entries,
            files: self.mstats.files,
            dirs: self.mstats.dirs,
            logical_bytes: self.mstats.logical_bytes,
            read_bytes: self.read_bytes,
            ..ScanTotals::default()
        }
    }
}

/// What a dump or clone of volume `name` leaves out (nothing for a volume `reel.toml` does
/// not list).
pub(crate) fn exclusions(spool: &Spool, name: &str) -> Result<Exclude> {
    match spool.settings.volumes.get(name) {
        Some(v) => v.exclusions(),
        None => Ok(Exclude::nothing()),
    }
}

/// Walk `root`, leaving out what `exclude` excludes, and store what changed since `prev`: the
/// shared first half of a dump and of a `store` clone.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan<'a>(
    spool: &Spool,
    store: StoreWriter<'a>,
    root: &Path,
    exclude: Exclude,
    prev: Option<PrevManifest>,
    owner: Option<Owner>,
    statmap: Option<&Path>,
    progress: &'a dyn Progress,
) -> Result<Scanned<'a>> {
    let scan_started_ns = timefmt::now_ns();
    let prev_in_chain = prev.as_ref().is_some_and(|p| p.in_chain);
    let mut s = Session::new(store, spool.chunker(), owner, statmap.is_some(), progress);
    let owning = s.owner.is_some();
    s.known_owned = prev_in_chain;
    // After a purge, an unchanged file's chunks may be on tape only. A dump that may own them
    // (and a clone, whose owner is not known yet) must have them on the spool, or its export
    // could not write them: such a file is read again.
    let purged = s.store.catalog().purges() > 0;

    // The previous manifest, for change detection.
    let reader = match prev {
        Some(_) => Some(ChunkReader::new(spool)?),
        None => None,
    };
    let mut statmap = match statmap {
        Some(p) => Some(StatMap::open(p)?),
        None => None,
    };

    let mut manifest = ManifestWriter::new(s.manifest_buf.clone())?;
    let mut walker = Walker::with_exclude(root, exclude)?;
    walker.spill_links_in(&spool.tmp_dir());
    // The walk and the decoding of the previous manifest run on threads of their own, a few
    // batches ahead of this one, which merges them (see `crate::ahead`).
    let walk_warnings = std::thread::scope(|sc| -> Result<Vec<String>> {
        let start = |e: std::io::Error| Error::Spool(format!("cannot start a thread: {e}"));
        let mut prev_entries = match prev {
            Some(p) => {
                let reader = reader.as_ref().expect("a reader for the previous manifest");
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
        // Whether the window has a small file to read, so needs a window buffer.
        let mut window_small = false;
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
            let mut known = None;
            if entry.kind == EntryKind::File && entry.size > 0 {
                action = Action::Read;
                may_own = owning;
                let before = match prev_entries.as_mut() {
                    Some((prev_iter, prev_scan)) => previous(prev_iter, &entry, *prev_scan)?,
                    None => Previous::Absent,
                };
                match before {
                    Previous::Unchanged(old) => {
                        let own = owning && !prev_in_chain;
                        let on_spool = !(purged && (own || !owning)) || {
                            let ids: Vec<ChunkId> = old.chunks().map(|(id, _)| id).collect();
                            s.store.missing(&ids)?.iter().all(|m| !m)
                        };
                        if on_spool {
                            entry.extents = old.extents;
                            action = Action::Reuse;
                            may_own = own;
                        }
                    }
                    // Without a purge every chunk the previous manifest names is on the spool
                    // (`purges` says so): its chunks can be trusted without a lookup.
                    Previous::Changed(old) if !purged => known = KnownChunks::of(&old),
                    Previous::Changed(_) | Previous::Absent => {}
                }
            }
            if matches!(action, Action::Read) {
                window_bytes += entry.size;
                window_small |= entry.size <= SMALL_FILE;
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
                known,
                left_out: None,
            });
            if window_bytes >= WINDOW_BYTES
                || window.len() >= WINDOW_ENTRIES
                || window_dirs >= dir_budget
            {
                crate::signal::check_interrupted()?;
                let buf = s.window_buffer(window_small);
                let next = ReadingWindow::start(
                    std::mem::take(&mut window),
                    s.params,
                    &s.keys,
                    buf,
                    s.read_threads(),
                );
                if let Some(before) = reading.replace(next) {
                    s.store_window(before, &mut manifest)?;
                }
                window_bytes = 0;
                window_small = false;
                window_dirs = 0;
            }
        }
        let buf = s.window_buffer(window_small);
        let last = ReadingWindow::start(window, s.params, &s.keys, buf, s.read_threads());
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
    s.finish(manifest, scan_started_ns)
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
        for (i, start, c) in &read {
            let data = c.own.as_deref().unwrap_or(&buf[*start..*start + c.len]);
            let known = window[*i].known.as_ref();
            for (id, r) in &c.chunks {
                if !known.is_some_and(|k| k.contains(id)) {
                    batch.push((*id, &data[r.clone()]));
                }
            }
        }
        self.store.put_batch(&batch, BlobKind::Data)?;
        drop(batch);
        if !buf.is_empty() {
            self.spare_bufs.push(buf);
        }
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
                ahead = Some((
                    j,
                    LargeRead::start(window[j].src.clone(), self.params, &self.keys),
                ));
            }
            let w = &mut window[i];
            match self.store_large(&w.src, w.known.as_ref(), this)? {
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
                // Chunks of the previous version are owned in the chain when it is.
                let known = w.known.as_ref().filter(|_| self.known_owned);
                refs.extend(
                    w.entry
                        .chunks()
                        .map(|(id, _)| id)
                        .filter(|id| !known.is_some_and(|k| k.contains(id))),
                );
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
        let (chunks, consumed) = chunk::cut_hashed(&self.keys, &data, &self.params, eof);
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
        known: Option<&KnownChunks>,
        mut ahead: Option<Result<Got<LargeRead>>>,
    ) -> Result<Got<LargeDone>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = match ahead.take() {
                Some(started) => started,
                None => LargeRead::start(src.clone(), self.params, &self.keys),
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
                            .filter(|(id, _)| !known.is_some_and(|k| k.contains(id)))
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
