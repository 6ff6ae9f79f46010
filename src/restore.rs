//! Restore: rebuild a dump's tree (or subtrees) under a target directory, byte for byte and
//! with its metadata.
//!
//! The manifest streams in path order and is cut into batches of bounded size. Within a
//! batch, directories, symlinks and special files are made at once, in manifest order, through
//! the target's directory handles ([`TreeWriter`]: nothing is ever resolved by path from the
//! target, so a user who swaps a directory for a symlink in the target cannot send a write, a
//! chmod or a chown outside it). Regular files go into a plan of chunk writes, sorted by where
//! each chunk is stored; the plan then runs on several threads, a stored frame at a time: each
//! frame is read and decoded once a batch, each chunk verified before it is written (all-zero
//! chunks become holes), each file created in its directory's handle when its first chunk
//! arrives, written through that descriptor, and finished with its metadata through the same
//! descriptor when its last chunk is in. Decoding by frame rather than by file is what keeps a
//! volume whose copies of files are scattered over it from decoding the same frames again and
//! again. Then hard links, and the metadata of the directories the batch has left, deepest
//! first, so writing into a directory does not disturb its mtime.
//!
//! A subset of a hard-link group is restored whole: when a restored name's link target is not
//! itself restored, the first restored name of the group becomes the file, with the dump's
//! content and metadata, and the group's other restored names link to it. Finding those
//! targets takes one more read of the manifest before the restore, and only when paths are
//! given.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::catalog::DumpRecord;
use crate::dirfd::{self, Dir};
use crate::error::Damaged;
use crate::progress::Progress;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::tree_writer::{self, TreeWriter};
use crate::types::{Selection, path_cmp};
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// A batch closes at this many entries...
const BATCH_ENTRIES: usize = 1 << 17;
/// ...or this many chunk references (its plan: about 90 bytes each, so 45 MiB at most), or
/// when its directories would hold half the descriptors reel may open (`dirfd::fd_budget`).
/// Every frame a batch needs is read and decoded once a batch: a small batch would decode the
/// frames that hold copies of files, scattered over the volume, again for each batch.
const BATCH_CHUNKS: usize = 1 << 18;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Write into a non-empty target.
    pub overwrite: bool,
    /// Restore only these subtrees (paths relative to the volume root); all when empty.
    pub paths: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub chunks_read: u64,
    /// Entries left out (device nodes when not root).
    pub skipped: u64,
}

/// Normalise a user-given path inside a volume: no leading or trailing '/'.
pub fn normalise_path(p: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = p
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    parts.join(&b'/')
}

/// Is `path` itself restored (inside a selected subtree, not only an ancestor of one)?
fn restored(path: &[u8], sel: &Selection) -> bool {
    let (take, ancestor) = sel.test(path);
    take && !ancestor
}

/// Restore dump `rec` into `target`.
pub fn restore_dump(
    spool: &Spool,
    rec: &DumpRecord,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    restore_dump_with(&ChunkReader::new(spool)?, rec, target, opts, progress)
}

/// `restore_dump` reading through `reader` (which may hold packs from tapes).
pub fn restore_dump_with(
    reader: &ChunkReader,
    rec: &DumpRecord,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    restore_limited(reader, rec, target, opts, progress, Limits::default())
}

/// How large a batch may grow and how many of its files may wait open for later chunks.
#[derive(Clone, Copy, Debug)]
struct Limits {
    entries: usize,
    chunks: usize,
    /// Directories with entries in one batch.
    dirs: usize,
    open_files: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            entries: BATCH_ENTRIES,
            chunks: BATCH_CHUNKS,
            dirs: dirfd::fd_budget() / 2,
            open_files: dirfd::fd_budget() / 2,
        }
    }
}

fn restore_limited(
    reader: &ChunkReader,
    rec: &DumpRecord,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
    limits: Limits,
) -> Result<RestoreStats> {
    // Link targets outside the selection, whose content a restored link name must carry. The
    // same read finds a requested path the dump does not hold, before anything is written.
    let started = std::time::Instant::now();
    tracing::debug!(
        "restore: dump {} of volume {}, level {}, chain {:?}, {} selected paths",
        rec.id,
        rec.volume,
        rec.level,
        rec.chain,
        opts.paths.len()
    );
    let orphans = if opts.paths.is_empty() {
        HashSet::new()
    } else {
        progress.message("checking the requested paths");
        survey_selection(reader.manifest(rec)?, &opts.paths, rec)?
    };
    let made = prepare_target(target, opts.overwrite)?;
    progress.message("restoring");
    let result = write_tree(reader, rec, target, opts, progress, limits, orphans);
    if let Ok(st) = &result {
        tracing::debug!(
            "restore: {} entries, {} files, {} bytes, {} chunks read, {} left out, {:.3} s",
            st.entries,
            st.files,
            st.bytes,
            st.chunks_read,
            st.skipped,
            started.elapsed().as_secs_f64()
        );
    }
    if let (Err(e), Some(made)) = (&result, made) {
        // Leave the target as we found it (absent), so the retry is not refused as non-empty.
        if let Err(undo) = made.undo() {
            tracing::warn!(
                "the restore failed ({e}), and what it wrote in {} could not be removed: {undo}",
                target.display()
            );
        }
    }
    result
}

/// The restore proper, into a prepared target.
fn write_tree(
    reader: &ChunkReader,
    rec: &DumpRecord,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
    limits: Limits,
    orphans: HashSet<Vec<u8>>,
) -> Result<RestoreStats> {
    let as_root = tree_writer::is_root();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WRITE_THREADS)
        .thread_name(|i| format!("reel-restore-{i}"))
        .build()
        .map_err(|e| Error::Spool(format!("cannot start the restore's threads: {e}")))?;
    let mut run = Runner {
        reader,
        tree: TreeWriter::open(target, as_root).map_err(on_target)?,
        as_root,
        stats: RestoreStats::default(),
        progress,
        pool,
        limits,
    };
    let mut batch = Batch::default();
    // Orphaned link targets met so far (not restored themselves), and the name each one
    // became once a link to it was restored.
    let mut stash: HashMap<Vec<u8>, Entry> = HashMap::new();
    let mut became: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    progress.set_total(rec.totals.logical_bytes);
    let sel = Selection::new(&opts.paths);
    for entry in reader.manifest(rec)? {
        let mut entry = entry?;
        let (take, _ancestor) = sel.test(&entry.path);
        if !take {
            if entry.kind == EntryKind::File && orphans.contains(&entry.path) {
                stash.insert(entry.path.clone(), entry);
            }
            continue;
        }
        if entry.kind == EntryKind::HardLink {
            if let Some(first) = became.get(&entry.target) {
                entry.target = first.clone();
            } else if let Some(mut file) = stash.remove(&entry.target) {
                became.insert(entry.target.clone(), entry.path.clone());
                file.path = std::mem::take(&mut entry.path);
                entry = file;
            }
        }
        run.admit(&mut batch, entry).map_err(on_target)?;
        if batch.full(&limits) {
            run.run(&mut batch).map_err(on_target)?;
        }
    }
    run.run(&mut batch).map_err(on_target)?;
    run.tree.finish().map_err(on_target)?;
    Ok(run.stats)
}

/// One read of the manifest before a restore of some paths: a usage error naming the first
/// requested path the dump does not hold, else the targets of restored hard links that are not
/// restored themselves (a set as large as the selection's links, never the volume).
fn survey_selection(
    manifest: impl Iterator<Item = Result<Entry>>,
    filters: &[Vec<u8>],
    rec: &DumpRecord,
) -> Result<HashSet<Vec<u8>>> {
    let mut orphans = HashSet::new();
    let sel = Selection::new(filters);
    // The selected paths met: each is the nearest selected path of its own entry.
    let mut matched: HashSet<Vec<u8>> = HashSet::new();
    for e in manifest {
        let e = e?;
        if let Some(top) = sel.top_of(&e.path)
            && !matched.contains(top)
        {
            matched.insert(top.to_vec());
        }
        if e.kind == EntryKind::HardLink && restored(&e.path, &sel) && !restored(&e.target, &sel) {
            orphans.insert(e.target);
        }
    }
    if let Some(f) = filters
        .iter()
        .find(|f| !f.is_empty() && !matched.contains(*f))
    {
        return Err(Error::usage(format!(
            "{} is not in dump {} of volume {}; `reel ls {}` lists what it holds",
            String::from_utf8_lossy(f),
            rec.id,
            rec.volume,
            rec.volume
        )));
    }
    Ok(orphans)
}

/// Check the target (a directory, empty unless `overwrite`) or make it. Returns what was made,
/// for [`MadeTarget::undo`] if the restore fails.
fn prepare_target(target: &Path, overwrite: bool) -> Result<Option<MadeTarget>> {
    match std::fs::symlink_metadata(target) {
        Ok(md) if !md.is_dir() => Err(Error::usage(format!(
            "restore target {} is not a directory",
            target.display()
        ))),
        Ok(_) => {
            let non_empty = std::fs::read_dir(target)
                .map_err(|e| Error::io(target, e))?
                .next()
                .is_some();
            if non_empty && !overwrite {
                Err(Error::usage(format!(
                    "restore target {} is not empty; choose an empty directory or add --overwrite",
                    target.display()
                )))
            } else {
                Ok(None)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MadeTarget::make(target).map(Some),
        Err(e) => Err(Error::io(target, e)),
    }
}

/// A target directory this restore made, with the missing directories above it it made on the
/// way: what a failed restore removes, and nothing else.
struct MadeTarget {
    /// The target's parent, by handle, and the target's name in it.
    parent: Dir,
    name: Vec<u8>,
    /// The directory made, so a directory put in its place since is never emptied.
    made: dirfd::Stat,
    /// Directories made above the target, outermost first.
    ancestors: Vec<std::path::PathBuf>,
}

impl MadeTarget {
    fn make(target: &Path) -> Result<MadeTarget> {
        let Some(name) = target.file_name() else {
            return Err(Error::usage(format!(
                "restore target {} does not name a directory to make",
                target.display()
            )));
        };
        let parent_path = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The path above the target is the admin's word: made by path, with the usual modes.
        let mut ancestors = Vec::new();
        let mut missing: Vec<&Path> = parent_path
            .ancestors()
            .take_while(|p| {
                !p.as_os_str().is_empty()
                    && std::fs::symlink_metadata(p)
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            .collect();
        missing.reverse();
        for dir in missing {
            match std::fs::create_dir(dir) {
                Ok(()) => ancestors.push(dir.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    undo_ancestors(&ancestors);
                    return Err(Error::io(dir, e));
                }
            }
        }
        let made = (|| {
            let parent = Dir::open(parent_path)?;
            // Mode 0700 until the dump's root metadata goes on at the end: no other user can
            // put anything in it meanwhile, so all a failed restore removes is its own.
            parent.mkdir(name.as_bytes())?;
            let made = parent.open_dir(name.as_bytes())?.stat_self()?;
            Ok::<_, std::io::Error>((parent, made))
        })();
        match made {
            Ok((parent, made)) => Ok(MadeTarget {
                parent,
                name: name.as_bytes().to_vec(),
                made,
                ancestors,
            }),
            Err(e) => {
                undo_ancestors(&ancestors);
                Err(Error::io(target, e))
            }
        }
    }

    /// Remove the target and everything the restore put in it, through handles (a symlink is
    /// removed, never followed), then the directories made above it while they are empty.
    fn undo(self) -> std::io::Result<()> {
        let dir = self.parent.open_dir(&self.name)?;
        if !dir.stat_self()?.same_inode(&self.made) {
            return Ok(());
        }
        for name in dir.names()? {
            dir.remove_all(&name)?;
        }
        self.parent.rmdir(&self.name)?;
        undo_ancestors(&self.ancestors);
        Ok(())
    }
}

/// Remove the directories made above a target, innermost first, each only while empty.
fn undo_ancestors(made: &[std::path::PathBuf]) {
    for dir in made.iter().rev() {
        if std::fs::remove_dir(dir).is_err() {
            return;
        }
    }
}

/// The state a restore carries from batch to batch.
struct Runner<'a> {
    reader: &'a ChunkReader<'a>,
    tree: TreeWriter,
    as_root: bool,
    stats: RestoreStats,
    progress: &'a dyn Progress,
    /// Threads that decode frames and make and write files (see `WRITE_THREADS`).
    pool: rayon::ThreadPool,
    limits: Limits,
}

/// A regular file of a batch: where to make it, its metadata, and its state while its chunks
/// arrive, in whatever order the packs give them.
struct BatchFile {
    dir: Arc<Dir>,
    name: Vec<u8>,
    /// The entry without its path and extents (the plan holds those).
    entry: Entry,
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// Open from its creation until its last chunk is written and its metadata is on.
    handle: Option<File>,
    /// Made already (and, when `handle` is None before the end, closed to spare descriptors:
    /// its inode is in `ino`, checked when it is opened again).
    created: bool,
    ino: u64,
    /// Chunk writes still to come.
    left: u32,
    /// Its last bytes are a hole (a trailing hole, or a trailing chunk of zeros): its length
    /// is set at the end.
    short: bool,
    done: bool,
}

impl BatchFile {
    fn shown(&self) -> std::path::PathBuf {
        self.dir.shown_child(&self.name)
    }
}

/// One chunk write of a batch's plan. The plan is sorted by where the chunk is stored, so each
/// frame is read and decoded once a batch, whichever files and windows of the volume need it.
struct PlannedWrite {
    loc: crate::catalog::ChunkLoc,
    id: ChunkId,
    file: u32,
    offset: u64,
}

impl PlannedWrite {
    fn inner(&self) -> u32 {
        self.loc.frame.map_or(0, |f| f.inner)
    }
}

/// What a batch holds besides its files and plan.
#[derive(Default)]
struct Batch {
    files: Vec<BatchFile>,
    plan: Vec<PlannedWrite>,
    /// Hard links: made once every file of the batch is complete.
    links: Vec<(Arc<Dir>, Vec<u8>, Vec<u8>)>,
    entries: usize,
    /// Directories with entries in the batch: each holds a handle until the batch is done.
    dirs: usize,
    last_dir: Option<Arc<Dir>>,
}

impl Batch {
    fn full(&self, limits: &Limits) -> bool {
        self.entries >= limits.entries
            || self.plan.len() >= limits.chunks
            || self.dirs >= limits.dirs
    }
}

impl Runner<'_> {
    /// Take one entry into the batch: directories, symlinks and special files are made at
    /// once (in manifest order, so every parent exists before its children); regular files go
    /// into the plan; hard links wait for the batch's end.
    fn admit(&mut self, batch: &mut Batch, mut e: Entry) -> Result<()> {
        self.stats.entries += 1;
        batch.entries += 1;
        if e.kind == EntryKind::Dir {
            return self.tree.dir(&e);
        }
        if matches!(e.kind, EntryKind::CharDev | EntryKind::BlockDev) && !self.as_root {
            // Only root can make device nodes; a user's restore of their own files should not
            // fail for the volume's /dev entries.
            tracing::warn!(
                "{}: device node skipped (restoring devices needs root)",
                e.display_path()
            );
            self.stats.skipped += 1;
            return Ok(());
        }
        let (dir, name) = self.tree.parent_of(&e.path)?;
        let name = name.to_vec();
        if batch
            .last_dir
            .as_ref()
            .is_none_or(|d| !Arc::ptr_eq(d, &dir))
        {
            batch.dirs += 1;
            batch.last_dir = Some(Arc::clone(&dir));
        }
        match e.kind {
            EntryKind::File => {
                let file = u32::try_from(batch.files.len()).expect("a batch holds < 2^32 files");
                let mut offset = 0u64;
                let mut left = 0u32;
                for x in &e.extents {
                    if let Extent::Chunk { id, .. } = x {
                        let loc = self
                            .reader
                            .locate_required(id, &|| format!("file {}", e.display_path()))?;
                        batch.plan.push(PlannedWrite {
                            loc,
                            id: *id,
                            file,
                            offset,
                        });
                        left += 1;
                    }
                    offset += x.len();
                }
                let short = matches!(e.extents.last(), Some(Extent::Hole(_)));
                self.stats.files += 1;
                self.stats.bytes += e.size;
                e.extents = Vec::new();
                e.path = Vec::new();
                batch.files.push(BatchFile {
                    dir,
                    name,
                    entry: e,
                    state: Mutex::new(FileState {
                        left,
                        short,
                        ..FileState::default()
                    }),
                });
            }
            EntryKind::HardLink => batch.links.push((dir, name, e.target)),
            _ => TreeWriter::special(&dir, &name, &e, self.as_root)?,
        }
        Ok(())
    }

    /// Restore a batch's files: the plan frame by frame on the write threads (each frame read
    /// and decoded once, each chunk verified before it is written, each file made when its first
    /// chunk arrives and finished with its metadata when its last one is written), then the
    /// files without data, the hard links, and the directories the batch has left.
    fn run(&mut self, batch: &mut Batch) -> Result<()> {
        let mut b = std::mem::take(batch);
        b.plan
            .sort_unstable_by_key(|w| (w.loc.pack_no, w.loc.offset, w.inner(), w.file));
        // Units of work: the writes of one stored blob (a frame, or a chunk stored alone).
        let mut units: Vec<&[PlannedWrite]> = Vec::new();
        let mut rest: &[PlannedWrite] = &b.plan;
        while let Some(first) = rest.first() {
            let n = rest
                .iter()
                .position(|w| {
                    (w.loc.pack_no, w.loc.offset) != (first.loc.pack_no, first.loc.offset)
                })
                .unwrap_or(rest.len());
            let (unit, tail) = rest.split_at(n);
            units.push(unit);
            rest = tail;
        }
        let open = AtomicUsize::new(0);
        let open_budget = self.limits.open_files;
        let (reader, as_root, progress, files) =
            (self.reader, self.as_root, self.progress, &b.files);
        let chunks_read: u64 = self.pool.install(|| {
            units
                .par_iter()
                .map(|unit| write_unit(reader, unit, files, &open, open_budget, as_root, progress))
                .try_reduce(|| 0, |a, c| Ok(a + c))
        })?;
        self.stats.chunks_read += chunks_read;
        // Files that no chunk reached: empty, all hole, or all chunks of zeros.
        self.pool.install(|| {
            files.par_iter().try_for_each(|f| {
                let mut st = f.state.lock().expect("file state");
                if st.done {
                    return Ok(());
                }
                finish_file(f, &mut st, &open, as_root)
            })
        })?;
        // Hard links: their targets are complete now.
        for (dir, name, target) in &b.links {
            self.tree.hard_link(dir, name, target)?;
        }
        // Directories the batch has left: nothing more is made in them.
        self.tree.finish_done()
    }
}

/// Threads that decode frames and make and write a batch's files. More than the cores: making
/// a file is a round trip to the filesystem's metadata (20-50 µs on the development VM with the
/// CPU idle, up to a millisecond of kernel work after many deletions, more on a network
/// filesystem), and creations in different directories proceed in parallel.
const WRITE_THREADS: usize = 4;

/// Decode one stored blob and write its chunks where the plan says (`unit`: its writes, sorted
/// by the chunk's place in the blob). Returns the chunks read.
fn write_unit(
    reader: &ChunkReader,
    unit: &[PlannedWrite],
    files: &[BatchFile],
    open: &AtomicUsize,
    open_budget: usize,
    as_root: bool,
    progress: &dyn Progress,
) -> Result<u64> {
    let first = &unit[0];
    let pack = reader.pack(first.loc.pack_no)?;
    let damaged = |e: Error| {
        Error::damaged(
            Damaged::Pack {
                path: pack.path().to_path_buf(),
                offset: None,
            },
            format!(
                "restore of {} stopped: {e} (pack {}); nothing wrong was written, run `reel check --read-data`",
                files[first.file as usize].shown().display(),
                pack.path().display()
            ),
        )
    };
    // This thread's buffers: the stored bytes and the decoded frame, reused unit after unit
    // (a fresh 4 MiB pair per frame made the allocator keep many of them around).
    thread_local! {
        static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const {
            std::cell::RefCell::new((Vec::new(), Vec::new()))
        };
    }
    BUFFERS.with(|bufs| {
        let mut fresh = (Vec::new(), Vec::new());
        let mut held = bufs.try_borrow_mut();
        let (stored, decoded) = match held.as_deref_mut() {
            Ok((a, b)) => (a, b),
            Err(_) => (&mut fresh.0, &mut fresh.1),
        };
        // Opened in place in a sealed pack (authenticated before anything is decoded).
        let entry = first.loc.blob_entry(first.id);
        let opened = pack.read_opened_into(&entry, stored).map_err(damaged)?;
        let opened = &stored[opened];
        // A frame, whose chunks are sliced out and verified one by one below, or a chunk stored
        // alone, verified as it is decoded.
        match first.loc.frame {
            Some(_) => first.loc.decode_frame_into(opened, decoded),
            None => {
                crate::pack::decode_opened(reader.keys(), &entry, opened).map(|raw| *decoded = raw)
            }
        }
        .map_err(damaged)?;
        write_chunks(
            reader.keys(),
            unit,
            decoded,
            files,
            open,
            open_budget,
            as_root,
            progress,
            &damaged,
        )
    })
}

/// Write the chunks of one decoded blob (`decoded`: a frame, or a chunk stored alone) where the
/// plan says. Returns the chunks written.
#[allow(clippy::too_many_arguments)]
fn write_chunks(
    keys: &crate::crypto::Keys,
    unit: &[PlannedWrite],
    decoded: &[u8],
    files: &[BatchFile],
    open: &AtomicUsize,
    open_budget: usize,
    as_root: bool,
    progress: &dyn Progress,
    damaged: &dyn Fn(Error) -> Error,
) -> Result<u64> {
    let mut n = 0u64;
    let mut rest = unit;
    while let Some(w0) = rest.first() {
        let k = rest
            .iter()
            .position(|w| w.inner() != w0.inner())
            .unwrap_or(rest.len());
        let (writes, tail) = rest.split_at(k);
        rest = tail;
        let raw: &[u8] = match w0.loc.frame {
            Some(_) => crate::frame::slice_ref(keys, decoded, &w0.id, w0.inner(), w0.loc.raw_len)
                .map_err(damaged)?,
            None => decoded,
        };
        n += 1;
        let zeros = raw.iter().all(|&b| b == 0);
        for w in writes {
            let f = &files[w.file as usize];
            let mut st = f.state.lock().expect("file state");
            if zeros {
                // Left as a hole; a file ending here gets its length set at the end.
                if w.offset + raw.len() as u64 == f.entry.size {
                    st.short = true;
                }
            } else {
                let handle = ensure_open(f, &mut st, open)?;
                handle
                    .write_all_at(raw, w.offset)
                    .map_err(|e| target_error(&f.shown(), e))?;
            }
            st.left -= 1;
            if st.left == 0 {
                finish_file(f, &mut st, open, as_root)?;
            } else if open.load(Ordering::Relaxed) > open_budget {
                // Too many files waiting for later chunks: close this one until then.
                if let Some(h) = st.handle.take() {
                    st.ino = dirfd::fstat(&h)
                        .map_err(|e| target_error(&f.shown(), e))?
                        .ino;
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        progress.advance(raw.len() as u64 * writes.len() as u64);
    }
    Ok(n)
}

/// The file's descriptor: made now if it does not exist yet, or opened again by name in its
/// directory (never through a symlink) and checked to be the inode made before.
fn ensure_open<'s>(f: &BatchFile, st: &'s mut FileState, open: &AtomicUsize) -> Result<&'s File> {
    if st.handle.is_none() {
        let handle = if !st.created {
            st.created = true;
            TreeWriter::file(&f.dir, &f.name, 0)?
        } else {
            let h = f
                .dir
                .open_write(&f.name)
                .map_err(|e| target_error(&f.shown(), e))?;
            let ino = dirfd::fstat(&h)
                .map_err(|e| target_error(&f.shown(), e))?
                .ino;
            if ino != st.ino {
                return Err(Error::io(
                    f.shown(),
                    std::io::Error::other(
                        "was replaced while it was being restored (another process is writing \
                         here); nothing was written through it",
                    ),
                ));
            }
            h
        };
        open.fetch_add(1, Ordering::Relaxed);
        st.handle = Some(handle);
    }
    Ok(st.handle.as_ref().expect("opened above"))
}

/// A file's last chunk is in (or it has none): make it if no chunk did, give it its length if
/// it ends in a hole, apply its metadata through its descriptor, and close it.
fn finish_file(f: &BatchFile, st: &mut FileState, open: &AtomicUsize, as_root: bool) -> Result<()> {
    let short = st.short;
    let handle = ensure_open(f, st, open)?;
    if short {
        handle
            .set_len(f.entry.size)
            .map_err(|e| target_error(&f.shown(), e))?;
    }
    dirfd::apply_file_meta(handle, &f.entry, as_root).map_err(|e| target_error(&f.shown(), e))?;
    st.handle = None;
    st.done = true;
    open.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

/// An error writing the restore target. A full disk there is the target's, not the spool's:
/// the message says so, instead of the spool's advice to delete backups.
fn target_error(shown: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return Error::Volume(format!(
            "{}: the restore target's filesystem is full; free space there, or restore to a \
             filesystem with room (`reel restore --dry-run` shows the bytes needed)",
            shown.display()
        ));
    }
    Error::io(shown, e)
}

/// A full disk met while writing the target: see [`target_error`]. (A restore writes nothing
/// else: tapes it reads are staged by its caller.)
fn on_target(e: Error) -> Error {
    match e {
        Error::Io { path, source } if source.raw_os_error() == Some(libc::ENOSPC) => {
            target_error(&path, source)
        }
        other => other,
    }
}

/// Find one entry of a dump by path. The whole manifest is read, so its trailer (count and
/// hash) is verified before the entry is trusted.
pub fn find_entry(reader: &ChunkReader, rec: &DumpRecord, path: &[u8]) -> Result<Option<Entry>> {
    let manifest = reader.manifest(rec)?;
    let mut found = None;
    for e in manifest {
        let e = e?;
        if found.is_none() && path_cmp(&e.path, path) == std::cmp::Ordering::Equal {
            found = Some(e);
        }
    }
    Ok(found)
}

/// Write a file's content to `out`, verifying every chunk.
pub fn cat_entry(reader: &ChunkReader, e: &Entry, out: &mut dyn std::io::Write) -> Result<u64> {
    let mut n = 0u64;
    let zeros = vec![0u8; 1 << 16];
    for x in &e.extents {
        match x {
            Extent::Hole(len) => {
                let mut left = *len;
                while left > 0 {
                    let k = left.min(zeros.len() as u64) as usize;
                    out.write_all(&zeros[..k])
                        .map_err(|e| Error::io("<stdout>", e))?;
                    left -= k as u64;
                }
            }
            Extent::Chunk { id, .. } => {
                let raw = reader.read(id, &|| format!("file {}", e.display_path()))?;
                out.write_all(&raw).map_err(|e| Error::io("<stdout>", e))?;
            }
        }
        n += x.len();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::{DumpOptions, dump_volume};
    use crate::progress::NoProgress;
    use crate::scan::tests::{build_tree, walk_all};
    use std::os::unix::fs::MetadataExt;

    /// What a restore must reproduce: everything but inode numbers and ctimes.
    fn comparable(mut e: Entry) -> Entry {
        e.ino = 0;
        e.ctime_ns = 0;
        e
    }

    /// Batches of three entries, plans of four chunks and one file left open at a time: every
    /// batch boundary, the frame-ordered plan across files, and closing a file that waits for a
    /// later chunk and opening it again (checked to be the same inode) are all exercised, and
    /// the restore is the same as with the defaults.
    #[test]
    fn tiny_batches_and_reopened_files_restore_exactly() {
        let work = tempfile::tempdir().unwrap();
        let vol = work.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        build_tree(&vol);
        // Files of several chunks, copies of each other, so one frame feeds several files and
        // one file takes chunks from several frames.
        let mut x = 7u64;
        let big: Vec<u8> = (0..300_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        std::fs::create_dir(vol.join("copies")).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(vol.join("copies").join(name), &big).unwrap();
        }
        let mut tail = big.clone();
        tail.extend_from_slice(&[0u8; 70_000]); // ends in a chunk of zeros: a hole
        std::fs::write(vol.join("copies/zeros_at_end"), &tail).unwrap();
        let mut spool = Spool::init(&work.path().join("spool")).unwrap();
        spool.add_volume("v", &vol).unwrap();
        let opts = DumpOptions {
            level: 0,
            time_ns: Some(1_000_000_000),
            reread: false,
        };
        let rec = dump_volume(&spool, "v", &opts, &NoProgress).unwrap().record;
        let reader = ChunkReader::new(&spool).unwrap();
        let tiny = Limits {
            entries: 3,
            chunks: 4,
            dirs: 2,
            open_files: 0,
        };
        for (target, limits) in [("tiny", tiny), ("default", Limits::default())] {
            let target = work.path().join(target);
            let stats = restore_limited(
                &reader,
                &rec,
                &target,
                &RestoreOptions::default(),
                &NoProgress,
                limits,
            )
            .unwrap();
            assert_eq!(stats.entries, rec.totals.entries);
            let (a, b) = (walk_all(&vol), walk_all(&target));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                let what = x.entry.display_path();
                assert_eq!(
                    comparable(x.entry.clone()),
                    comparable(y.entry.clone()),
                    "{what}"
                );
                if x.entry.kind == EntryKind::File {
                    let (fx, fy) = (x.shown(), y.shown());
                    let same = std::fs::read(&fx).unwrap() == std::fs::read(&fy).unwrap();
                    assert!(same, "{what}: content differs");
                    // Holes stay holes: never more blocks than the original.
                    let (mx, my) = (
                        std::fs::metadata(fx).unwrap(),
                        std::fs::metadata(fy).unwrap(),
                    );
                    assert!(my.blocks() <= mx.blocks() + 8, "{what} lost its holes");
                }
            }
        }
    }
}
