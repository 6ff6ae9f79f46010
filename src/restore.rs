//! Restore: rebuild a dump's tree (or subtrees) under a target directory, byte for byte and
//! with its metadata.
//!
//! The manifest streams in path order and is cut into windows of bounded size. For each
//! window: make the nodes through the target's directory handles ([`TreeWriter`]: nothing is
//! ever resolved by path from the target, so a user who swaps a directory for a symlink in the
//! target cannot send a write, a chmod or a chown outside it), the regular files from several
//! threads, each created once and kept open; plan which chunks go to which files at which
//! offsets, grouped by pack and sorted by offset; run the packs in parallel (each chunk verified
//! before it is written through the file's descriptor; all-zero chunks become holes); then hard
//! links, then each file's metadata through the descriptor that wrote it. A directory's metadata
//! goes on once the entries have left it and its window is complete, deepest first, so writing
//! into a directory does not disturb its mtime.
//!
//! A subset of a hard-link group is restored whole: when a restored name's link target is not
//! itself restored, the first restored name of the group becomes the file, with the dump's
//! content and metadata, and the group's other restored names link to it. Finding those
//! targets takes one more read of the manifest before the restore, and only when paths are
//! given.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::catalog::DumpRecord;
use crate::dirfd::{self, Dir};
use crate::manifest::ManifestReader;
use crate::progress::Progress;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::tree_writer::{self, TreeWriter};
use crate::types::path_cmp;
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// A window closes at this many chunk references...
const WINDOW_CHUNKS: usize = 65_536;
/// ...or this many entries (fewer when the descriptor limit is low: each file of a window
/// stays open from its creation to its metadata).
const WINDOW_ENTRIES: usize = 8192;

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

fn is_under(path: &[u8], top: &[u8]) -> bool {
    top.is_empty() || path == top || (path.starts_with(top) && path.get(top.len()) == Some(&b'/'))
}

/// Is `entry_path` selected by `filters`: inside one of them, or an ancestor directory of one?
pub fn selected(entry_path: &[u8], filters: &[Vec<u8>]) -> (bool, bool) {
    if filters.is_empty() {
        return (true, false);
    }
    for f in filters {
        if is_under(entry_path, f) {
            return (true, false);
        }
        if is_under(f, entry_path) {
            return (true, true);
        }
    }
    (false, false)
}

/// Is `path` itself restored (inside a selected subtree, not only an ancestor of one)?
fn restored(path: &[u8], filters: &[Vec<u8>]) -> bool {
    let (take, ancestor) = selected(path, filters);
    take && !ancestor
}

struct Write {
    file: usize,
    offset: u64,
}

/// The read plan of a window: pack number -> offset in the pack -> the chunk there and where
/// its bytes go. BTreeMaps keep each pack's reads in file order.
type Plan = BTreeMap<u64, BTreeMap<(u64, u32), (ChunkId, crate::catalog::ChunkLoc, Vec<Write>)>>;

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
    let manifest = || -> Result<ManifestReader<_>> {
        ManifestReader::new(reader.stream(
            rec.manifest_chunks(),
            format!("manifest of dump {}", rec.id),
        ))
    };
    // Link targets outside the selection, whose content a restored link name must carry.
    let orphans = if opts.paths.is_empty() {
        HashSet::new()
    } else {
        orphan_link_targets(manifest()?, &opts.paths)?
    };
    prepare_target(target, opts.overwrite)?;
    let as_root = tree_writer::is_root();
    let mut run = Runner {
        reader,
        tree: TreeWriter::open(target, as_root).map_err(on_target)?,
        as_root,
        stats: RestoreStats::default(),
        progress,
    };
    let window_entries = WINDOW_ENTRIES.min(dirfd::fd_budget());
    let mut window: Vec<Entry> = Vec::new();
    let mut window_chunks = 0usize;
    let mut matched = vec![false; opts.paths.len()];
    // Orphaned link targets met so far (not restored themselves), and the name each one
    // became once a link to it was restored.
    let mut stash: HashMap<Vec<u8>, Entry> = HashMap::new();
    let mut became: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    progress.set_total(rec.logical_bytes);
    for entry in manifest()? {
        let mut entry = entry?;
        let (take, _ancestor) = selected(&entry.path, &opts.paths);
        if !take {
            if entry.kind == EntryKind::File && orphans.contains(&entry.path) {
                stash.insert(entry.path.clone(), entry);
            }
            continue;
        }
        for (m, f) in matched.iter_mut().zip(&opts.paths) {
            if is_under(&entry.path, f) {
                *m = true;
            }
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
        window_chunks += entry.extents.len();
        window.push(entry);
        if window_chunks >= WINDOW_CHUNKS || window.len() >= window_entries {
            run.window(&mut window).map_err(on_target)?;
            window_chunks = 0;
        }
    }
    run.window(&mut window).map_err(on_target)?;
    if let Some((_, f)) = matched.iter().zip(&opts.paths).find(|(m, _)| !**m) {
        return Err(Error::usage(format!(
            "{} is not in dump {} of volume {}; `reel ls {}` lists what it holds",
            String::from_utf8_lossy(f),
            rec.id,
            rec.volume,
            rec.volume
        )));
    }
    run.tree.finish().map_err(on_target)?;
    Ok(run.stats)
}

/// The targets of restored hard links that are not restored themselves (one read of the
/// manifest; the set is as large as the selection's links, never the volume).
fn orphan_link_targets(
    manifest: impl Iterator<Item = Result<Entry>>,
    filters: &[Vec<u8>],
) -> Result<HashSet<Vec<u8>>> {
    let mut out = HashSet::new();
    for e in manifest {
        let e = e?;
        if e.kind == EntryKind::HardLink
            && restored(&e.path, filters)
            && !restored(&e.target, filters)
        {
            out.insert(e.target);
        }
    }
    Ok(out)
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
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
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))
        }
        Err(e) => Err(Error::io(target, e)),
    }
}

/// The state a restore carries from window to window.
struct Runner<'a> {
    reader: &'a ChunkReader<'a>,
    tree: TreeWriter,
    as_root: bool,
    stats: RestoreStats,
    progress: &'a dyn Progress,
}

/// A node of a window to make in a directory: the directory's handle, the name in it and the
/// entry's index in the window.
struct Slot {
    dir: Arc<Dir>,
    name: Vec<u8>,
    index: usize,
}

impl Slot {
    fn shown(&self) -> std::path::PathBuf {
        self.dir.shown_child(&self.name)
    }
}

impl Runner<'_> {
    /// Restore one window of entries: nodes, data pack by pack in parallel, links, metadata.
    fn window(&mut self, window: &mut Vec<Entry>) -> Result<()> {
        let (reader, as_root, progress) = (self.reader, self.as_root, self.progress);
        let stats = &mut self.stats;
        // 1. Nodes, and the plan: pack -> (offset in pack, chunk) -> writes.
        let mut files: Vec<Slot> = Vec::new();
        let mut plan: Plan = BTreeMap::new();
        let mut links: Vec<Slot> = Vec::new();
        // Symlinks, FIFOs and devices: made once the window's files are (`create_files`).
        let mut others: Vec<Slot> = Vec::new();
        for (index, e) in window.iter().enumerate() {
            stats.entries += 1;
            if e.kind == EntryKind::Dir {
                self.tree.dir(e)?;
                continue;
            }
            if matches!(e.kind, EntryKind::CharDev | EntryKind::BlockDev) && !as_root {
                // Only root can make device nodes; a user's restore of their own files should
                // not fail for the volume's /dev entries.
                tracing::warn!(
                    "{}: device node skipped (restoring devices needs root)",
                    e.display_path()
                );
                stats.skipped += 1;
                continue;
            }
            let (dir, name) = self.tree.parent_of(&e.path)?;
            let slot = Slot {
                dir,
                name: name.to_vec(),
                index,
            };
            match e.kind {
                EntryKind::File => {
                    let fi = files.len();
                    let mut off = 0u64;
                    for x in &e.extents {
                        if let Extent::Chunk { id, .. } = x {
                            let loc = reader
                                .locate_required(id, &|| format!("file {}", e.display_path()))?;
                            plan.entry(loc.pack_no)
                                .or_default()
                                .entry((loc.offset, loc.frame.map_or(0, |f| f.inner)))
                                .or_insert_with(|| (*id, loc, Vec::new()))
                                .2
                                .push(Write {
                                    file: fi,
                                    offset: off,
                                });
                        }
                        off += x.len();
                    }
                    files.push(slot);
                    stats.files += 1;
                    stats.bytes += e.size;
                }
                EntryKind::HardLink => links.push(slot),
                _ => others.push(slot),
            }
        }
        let handles = create_files(&files)?;
        // Files whose last bytes are not written (a trailing hole, or a trailing chunk of
        // zeros left as a hole) get their length set once the data is in; the others reach it
        // by the writes themselves, a system call less per file.
        let short: Vec<AtomicBool> = files
            .iter()
            .map(|f| {
                let e = &window[f.index];
                AtomicBool::new(matches!(e.extents.last(), Some(Extent::Hole(_))))
            })
            .collect();
        for o in &others {
            TreeWriter::special(&o.dir, &o.name, &window[o.index], as_root)?;
        }
        // 2. Data, pack by pack in parallel, each pack front to back, through the descriptors
        // that created the files.
        let window_ref: &Vec<Entry> = window;
        let (files_ref, handles_ref, short_ref) = (&files, &handles, &short);
        let chunks_read: u64 = plan
        .into_par_iter()
        .map(|(pack_no, chunks)| -> Result<u64> {
            let pack = reader.pack(pack_no)?;
            let mut frame: Option<(u64, Vec<u8>)> = None;
            let mut n = 0u64;
            for (_, (id, loc, writes)) in chunks {
                let what = || window_ref[files_ref[writes[0].file].index].display_path();
                let damaged = |e: Error| {
                    Error::corrupt(format!(
                        "restore of {} stopped: {e} (pack {}); nothing wrong was written, run `reel check --read-data`",
                        what(),
                        pack.path().display()
                    ))
                };
                let raw = match loc.frame {
                    None => {
                        let stored = pack.read_stored(&loc.blob_entry(id))?;
                        crate::pack::decode_blob(&loc.blob_entry(id), &stored).map_err(damaged)?
                    }
                    Some(slot) => {
                        // Chunks of one frame are adjacent in the plan: decompress it once.
                        if frame.as_ref().map(|(o, _)| *o) != Some(loc.offset) {
                            let stored = pack.read_stored(&loc.blob_entry(id))?;
                            frame = Some((loc.offset, loc.decode_frame(&stored).map_err(damaged)?));
                        }
                        let (_, f) = frame.as_ref().expect("frame decoded above");
                        crate::frame::slice(f, &id, slot.inner, loc.raw_len).map_err(damaged)?
                    }
                };
                n += 1;
                if raw.iter().all(|&b| b == 0) {
                    // Left as a hole; a file ending here gets its length set afterwards.
                    for w in &writes {
                        let f = &files_ref[w.file];
                        if w.offset + raw.len() as u64 == window_ref[f.index].size {
                            short_ref[w.file].store(true, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                for w in &writes {
                    handles_ref[w.file]
                        .write_all_at(&raw, w.offset)
                        .map_err(|e| target_error(&files_ref[w.file].shown(), e))?;
                }
                progress.advance(raw.len() as u64 * writes.len() as u64);
            }
            Ok(n)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
        stats.chunks_read += chunks_read;
        // 3. Hard links (their targets are complete now), then file metadata through the
        // descriptors, which are closed with it.
        for l in &links {
            self.tree
                .hard_link(&l.dir, &l.name, &window[l.index].target)?;
        }
        files
            .par_iter()
            .zip(handles)
            .zip(&short)
            .try_for_each(|((f, handle), short)| {
                let e = &window[f.index];
                if short.load(Ordering::Relaxed) {
                    handle
                        .set_len(e.size)
                        .map_err(|err| target_error(&f.shown(), err))?;
                }
                dirfd::apply_file_meta(&handle, e, as_root)
                    .map_err(|err| target_error(&f.shown(), err))
            })?;
        // 4. Directories the window has left: nothing more is made in them.
        self.tree.finish_done()?;
        window.clear();
        Ok(())
    }
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

/// Threads creating a window's files.
const CREATE_THREADS: usize = 8;

/// Create the window's files (in `files` order; empty, open for writing), from several threads, a directory's run of files per thread at a time. Creating a
/// file is a round trip to the filesystem's metadata (an inode, a directory entry): 20-50 µs
/// on the development VM with the CPU idle, and up to a millisecond of kernel work after many
/// deletions (ext4 without a journal skips recently freed inodes), more on a network
/// filesystem. Creations in one directory serialise on its lock, hence a run per thread, not a
/// file. Every file is made by name in its directory's handle, so the order between threads
/// does not matter to safety.
fn create_files(files: &[Slot]) -> Result<Vec<File>> {
    let create = |f: &Slot| -> Result<File> { TreeWriter::file(&f.dir, &f.name, 0) };
    // Runs of files with the same parent directory, in order.
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for k in 1..=files.len() {
        if k == files.len() || !Arc::ptr_eq(&files[k].dir, &files[start].dir) {
            runs.push(start..k);
            start = k;
        }
    }
    if runs.len() < 2 || files.len() < 16 {
        return files.iter().map(create).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || -> Result<Vec<(usize, File)>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut made = Vec::new();
        while let Some(run) = runs.get(next.fetch_add(1, Relaxed)) {
            if failed.load(Relaxed) {
                break;
            }
            for k in run.clone() {
                match create(&files[k]) {
                    Ok(f) => made.push((k, f)),
                    Err(e) => {
                        failed.store(true, Relaxed);
                        return Err(e);
                    }
                }
            }
        }
        Ok(made)
    };
    let made = std::thread::scope(|s| {
        let threads: Vec<_> = (0..CREATE_THREADS.min(runs.len()))
            .map(|_| s.spawn(work))
            .collect();
        let mut all = Vec::with_capacity(files.len());
        let mut first = Ok(());
        for t in threads {
            let r = t.join().unwrap_or_else(|_| {
                Err(Error::Spool(
                    "a file creating thread failed (panicked); run the restore again".into(),
                ))
            });
            match r {
                Ok(made) => all.extend(made),
                Err(e) if first.is_ok() => first = Err(e),
                Err(_) => {}
            }
        }
        first.map(|()| all)
    })?;
    let mut slots: Vec<Option<File>> = (0..files.len()).map(|_| None).collect();
    for (k, f) in made {
        slots[k] = Some(f);
    }
    Ok(slots
        .into_iter()
        .map(|f| f.expect("every file was created"))
        .collect())
}

/// Find one entry of a dump by path. The whole manifest is read, so its trailer (count and
/// hash) is verified before the entry is trusted.
pub fn find_entry(reader: &ChunkReader, rec: &DumpRecord, path: &[u8]) -> Result<Option<Entry>> {
    let manifest = ManifestReader::new(reader.stream(
        rec.manifest_chunks(),
        format!("manifest of dump {}", rec.id),
    ))?;
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
