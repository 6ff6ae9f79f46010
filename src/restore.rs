//! Restore: rebuild a dump's tree (or subtrees) under a target directory, byte for byte and
//! with its metadata.
//!
//! The manifest streams in path order and is cut into windows of bounded size. For each
//! window: create the nodes (checking that no parent is a symlink, so a crafted catalog cannot
//! write outside the target; the files from several threads), plan which chunks go to which
//! files at which offsets grouped by pack and sorted by offset, run the packs in parallel (each
//! chunk verified before it is written; all-zero chunks become holes), then hard links and
//! file metadata. Directory
//! metadata goes last, deepest first, so writing into a directory does not disturb its mtime.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::catalog::DumpRecord;
use crate::fsmeta::{self, ParentGuard};
use crate::manifest::ManifestReader;
use crate::progress::Progress;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::types::path_cmp;
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// A window closes at this many chunk references...
const WINDOW_CHUNKS: usize = 65_536;
/// ...or this many entries.
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
    prepare_target(target, opts.overwrite)?;
    let target = std::fs::canonicalize(target).map_err(|e| Error::io(target, e))?;
    let manifest = ManifestReader::new(reader.stream(
        rec.manifest_chunks(),
        format!("manifest of dump {}", rec.id),
    ))?;
    let as_root = fsmeta::is_root();
    let mut run = Runner {
        reader,
        target: &target,
        guard: ParentGuard::new(&target),
        dirs: Vec::new(),
        as_root,
        stats: RestoreStats::default(),
        progress,
    };
    let mut window: Vec<Entry> = Vec::new();
    let mut window_chunks = 0usize;
    let mut matched = vec![false; opts.paths.len()];
    progress.set_total(rec.logical_bytes);
    for entry in manifest {
        let entry = entry?;
        let (take, _ancestor) = selected(&entry.path, &opts.paths);
        if !take {
            continue;
        }
        for (m, f) in matched.iter_mut().zip(&opts.paths) {
            if is_under(&entry.path, f) {
                *m = true;
            }
        }
        window_chunks += entry.extents.len();
        window.push(entry);
        if window_chunks >= WINDOW_CHUNKS || window.len() >= WINDOW_ENTRIES {
            run.window(&mut window)?;
            window_chunks = 0;
        }
    }
    run.window(&mut window)?;
    if let Some((_, f)) = matched.iter().zip(&opts.paths).find(|(m, _)| !**m) {
        return Err(Error::usage(format!(
            "{} is not in dump {} of volume {}; `reel ls {}` lists what it holds",
            String::from_utf8_lossy(f),
            rec.id,
            rec.volume,
            rec.volume
        )));
    }
    // Directory metadata last, deepest first (reverse of the depth-first order).
    for (path, e) in run.dirs.iter().rev() {
        fsmeta::apply_metadata(path, e, as_root)?;
    }
    Ok(run.stats)
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
    target: &'a Path,
    guard: ParentGuard,
    /// Directories restored so far: their metadata is applied last, deepest first.
    dirs: Vec<(PathBuf, Entry)>,
    as_root: bool,
    stats: RestoreStats,
    progress: &'a dyn Progress,
}

impl Runner<'_> {
    /// Restore one window of entries: nodes, data pack by pack in parallel, links, metadata.
    fn window(&mut self, window: &mut Vec<Entry>) -> Result<()> {
        let (reader, target, as_root, progress) =
            (self.reader, self.target, self.as_root, self.progress);
        let guard = &mut self.guard;
        let dirs = &mut self.dirs;
        let stats = &mut self.stats;
        // 1. Nodes, and the plan: pack -> (offset in pack, chunk) -> writes.
        let mut files: Vec<(PathBuf, usize)> = Vec::new(); // (path, index in window)
        let mut plan: Plan = BTreeMap::new();
        let mut links: Vec<(PathBuf, usize)> = Vec::new();
        // Symlinks, FIFOs and devices: made once the window's files are (`create_files`).
        let mut others: Vec<(PathBuf, usize)> = Vec::new();
        for (i, e) in window.iter().enumerate() {
            guard.check(&e.path)?;
            let path = if e.path.is_empty() {
                target.to_path_buf()
            } else {
                fsmeta::safe_join(target, &e.path)?
            };
            stats.entries += 1;
            match e.kind {
                EntryKind::Dir => {
                    if !e.path.is_empty() {
                        fsmeta::create_node(target, &path, e)?;
                    }
                    dirs.push((path, e.clone()));
                }
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
                    files.push((path, i));
                    stats.files += 1;
                    stats.bytes += e.size;
                }
                EntryKind::HardLink => links.push((path, i)),
                EntryKind::CharDev | EntryKind::BlockDev if !as_root => {
                    // Only root can make device nodes; a user's restore of their own files should
                    // not fail for the volume's /dev entries.
                    tracing::warn!(
                        "{}: device node skipped (restoring devices needs root)",
                        e.display_path()
                    );
                    stats.skipped += 1;
                }
                _ => others.push((path, i)),
            }
        }
        create_files(target, &files, window)?;
        for (path, i) in &others {
            fsmeta::create_node(target, path, &window[*i])?;
            fsmeta::apply_metadata(path, &window[*i], as_root)?;
        }
        // 2. Data, pack by pack in parallel, each pack front to back.
        let window_ref: &Vec<Entry> = window;
        let files_ref = &files;
        let chunks_read: u64 = plan
        .into_par_iter()
        .map(|(pack_no, chunks)| -> Result<u64> {
            let pack = reader.pack(pack_no)?;
            let mut open: Option<(usize, std::fs::File)> = None;
            let mut frame: Option<(u64, Vec<u8>)> = None;
            let mut n = 0u64;
            for (_, (id, loc, writes)) in chunks {
                let what = || {
                    let (_, wi) = files_ref[writes[0].file];
                    window_ref[wi].display_path()
                };
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
                    continue; // the file was created at full length: zeros are a hole already
                }
                for w in &writes {
                    if open.as_ref().map(|(f, _)| *f) != Some(w.file) {
                        let p = &files_ref[w.file].0;
                        let f = OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(p)
                            .map_err(|e| Error::io(p, e))?;
                        open = Some((w.file, f));
                    }
                    let (_, f) = open.as_ref().expect("opened above");
                    f.write_all_at(&raw, w.offset)
                        .map_err(|e| Error::io(&files_ref[w.file].0, e))?;
                }
                progress.advance(raw.len() as u64 * writes.len() as u64);
            }
            Ok(n)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
        stats.chunks_read += chunks_read;
        // 3. Hard links (their targets are complete now), then file metadata.
        for (path, i) in &links {
            fsmeta::create_node(target, path, &window[*i])?;
        }
        files
            .par_iter()
            .try_for_each(|(path, i)| fsmeta::apply_metadata(path, &window[*i], as_root))?;
        window.clear();
        Ok(())
    }
}

/// Threads creating a window's files.
const CREATE_THREADS: usize = 8;

/// Create the window's files (`files`: path, index in `window`), from several threads, a
/// directory's run of files per thread at a time. Creating a file is a round trip to the
/// filesystem's metadata (an inode, a directory entry): 20-50 µs on the development VM with the
/// CPU idle, and up to a millisecond of kernel work after many deletions (ext4 without a
/// journal skips recently freed inodes), more on a network filesystem. Creations in one
/// directory serialise on its lock, hence a run per thread, not a file.
///
/// Why this is safe: every path was checked against symlinked parents just before (its parent
/// directories exist by then, made in manifest order), and until these files exist nothing
/// else is created: directories of the window are made before, symlinks, FIFOs and devices
/// after, and the manifest's validation guarantees that no listed entry has anything but a
/// directory as an ancestor.
fn create_files(target: &Path, files: &[(PathBuf, usize)], window: &[Entry]) -> Result<()> {
    let create = |(path, i): &(PathBuf, usize)| -> Result<()> {
        fsmeta::create_node(target, path, &window[*i]).map(drop)
    };
    // Runs of files with the same parent directory, in order.
    let mut runs: Vec<&[(PathBuf, usize)]> = Vec::new();
    let mut start = 0;
    for k in 1..=files.len() {
        if k == files.len() || files[k].0.parent() != files[start].0.parent() {
            runs.push(&files[start..k]);
            start = k;
        }
    }
    if runs.len() < 2 || files.len() < 16 {
        return files.iter().try_for_each(create);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        while let Some(run) = runs.get(next.fetch_add(1, Relaxed)) {
            if failed.load(Relaxed) {
                break;
            }
            if let Err(e) = run.iter().try_for_each(create) {
                failed.store(true, Relaxed);
                return Err(e);
            }
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..CREATE_THREADS.min(runs.len()))
            .map(|_| s.spawn(work))
            .collect();
        let mut first = Ok(());
        for t in threads {
            let r = t.join().unwrap_or_else(|_| {
                Err(Error::Spool(
                    "a file creating thread failed (panicked); run the restore again".into(),
                ))
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
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
