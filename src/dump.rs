//! The dump phase: walk a volume, reuse the chunk lists of unchanged files, read, cut, hash
//! and store the rest, and write the complete manifest and the dump record.
//!
//! Pipeline: the walker yields entries in path order; they are merge-joined with the previous
//! manifest (also in path order) to find unchanged files. Entries collect in a window of
//! bounded size; the window's small files are read and cut on all cores, large files are cut
//! in bounded segments whose chunks are hashed on all cores; new chunks are compressed on all
//! cores and appended by one pack writer. The manifest streams out as it is built, in chunks.
//! Memory is bounded by the window and the tree depth, never by the volume.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rayon::prelude::*;

use crate::catalog::{self, DumpRecord};
use crate::chunk::{self, ChunkerParams, StreamChunker};
use crate::level;
use crate::manifest::{ManifestReader, ManifestWriter};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::scan::{self, Walker};
use crate::spool::Spool;
use crate::store::{ChunkReader, StoreWriter};
use crate::timefmt::{self, format_rfc3339};
use crate::types::path_cmp;
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// Files up to this size are read whole, many at once; larger ones stream in segments.
const SMALL_FILE: u64 = 4 << 20;
/// A window of entries closes when its files to read reach this many bytes...
const WINDOW_BYTES: u64 = 64 << 20;
/// ...or this many entries.
const WINDOW_ENTRIES: usize = 4096;
/// Segment size for large files.
const SEGMENT: usize = 16 << 20;
/// How often a file that keeps changing while read is read again before it is stored with a
/// warning.
const READ_ATTEMPTS: u32 = 3;
/// Manifest bytes buffered before they are cut and stored.
const MANIFEST_FLUSH: usize = 4 << 20;

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
    abs: PathBuf,
    action: Action,
    /// Whether this entry's chunks may be ones the dump owns (read, or reused from a previous
    /// dump outside the chain).
    may_own: bool,
    /// Set when the file vanished before it could be read: it is left out.
    gone: bool,
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

struct Session<'a> {
    store: StoreWriter<'a>,
    params: ChunkerParams,
    id: u64,
    chain: Vec<u64>,
    manifest_buf: SharedBuf,
    manifest_chunks: Vec<([u8; 32], u32)>,
    manifest_bytes: u64,
    read_bytes: u64,
    owned: (u64, u64),
    warnings: Vec<String>,
    progress: &'a dyn Progress,
}

/// Dump volume `name` at `opts.level`.
pub fn dump_volume(
    spool: &Spool,
    name: &str,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    let vol = spool.volume(name)?;
    dump_tree(spool, name, &vol.path.clone(), opts, progress)
}

/// Dump the tree at `root` as a dump of volume `name` (the volume's path, or a clone of it).
pub fn dump_tree(
    spool: &Spool,
    name: &str,
    root: &Path,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<DumpOutcome> {
    if opts.level > level::MAX_LEVEL {
        return Err(Error::usage(format!(
            "level {} is out of range: use 0-9",
            opts.level
        )));
    }
    match std::fs::metadata(root) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(Error::usage(format!(
                "volume {name}: path {} is not a directory",
                root.display()
            )));
        }
        Err(e) => {
            return Err(Error::Volume(format!(
                "volume {name}: path {} cannot be read ({e}); mount the volume, or correct its path in reel.toml ([volumes.{name}] path)",
                root.display()
            )));
        }
    }
    let started = std::time::Instant::now();
    let scan_started_ns = timefmt::now_ns();
    let time_ns = opts.time_ns.unwrap_or(scan_started_ns);
    let dumps = spool.catalog.dumps(Some(name))?;
    if let Some(last) = dumps.last().filter(|l| time_ns <= l.time_ns) {
        return Err(Error::usage(format!(
            "dump time {} is not later than the latest dump of volume {name} (dump {} at {}); give a later --date",
            format_rfc3339(time_ns),
            last.id,
            format_rfc3339(last.time_ns)
        )));
    }
    let base = level::choose_base(&dumps, opts.level).cloned();
    let level = if base.is_none() { 0 } else { opts.level };
    let chain = base.as_ref().map(|b| b.full_chain()).unwrap_or_default();
    let prev = dumps.last().cloned();
    let prev_in_chain = prev.as_ref().is_some_and(|p| chain.contains(&p.id));

    let store = StoreWriter::new(spool)?;
    let stale = catalog::clean_uncommitted(store.txn())?;
    if stale > 0 {
        tracing::info!("dropped {stale} owned-chunk rows of an interrupted dump");
    }
    let id = catalog::get_meta_u64(store.txn(), "next_dump_id")?;
    let mut s = Session {
        store,
        params: spool.chunker(),
        id,
        chain: chain.clone(),
        manifest_buf: SharedBuf::default(),
        manifest_chunks: Vec::new(),
        manifest_bytes: 0,
        read_bytes: 0,
        owned: (0, 0),
        warnings: Vec::new(),
        progress,
    };

    // The previous manifest, for change detection (not with --reread).
    let reader = ChunkReader::new(spool)?;
    let mut prev_entries = match (&prev, opts.reread) {
        (Some(p), false) => {
            let stream = reader.stream(p.manifest_chunks(), format!("manifest of dump {}", p.id));
            Some((ManifestReader::new(stream)?.peekable(), p.scan_started_ns))
        }
        _ => None,
    };

    let mut manifest = ManifestWriter::new(s.manifest_buf.clone())?;
    let mut walker = Walker::new(root)?;
    let mut window: Vec<Work> = Vec::new();
    let mut window_bytes = 0u64;
    progress.message(&format!("dumping {name} at level {level}"));
    for item in walker.by_ref() {
        let item = item?;
        let mut entry = item.entry;
        let mut action = Action::None;
        let mut may_own = false;
        if entry.kind == EntryKind::File && entry.size > 0 {
            action = Action::Read;
            may_own = true;
            if let Some((prev_iter, prev_scan)) = prev_entries.as_mut()
                && let Some(old) = unchanged(prev_iter, &entry, *prev_scan)?
            {
                entry.extents = old;
                action = Action::Reuse;
                may_own = !prev_in_chain;
            }
        }
        if matches!(action, Action::Read) {
            window_bytes += entry.size;
        }
        window.push(Work {
            entry,
            abs: item.abs_path,
            action,
            may_own,
            gone: false,
        });
        if window_bytes >= WINDOW_BYTES || window.len() >= WINDOW_ENTRIES {
            s.flush_window(&mut window, &mut manifest)?;
            window_bytes = 0;
        }
    }
    s.flush_window(&mut window, &mut manifest)?;
    s.warnings.extend(walker.warnings().iter().cloned());
    drop(prev_entries);

    let (_, mstats) = manifest.finish()?;
    s.store_manifest(true)?;

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
        source: root.display().to_string(),
        scan_started_ns,
        duration_ns: 0,
        entries: mstats.entries,
        files: mstats.files,
        dirs: mstats.dirs,
        logical_bytes: mstats.logical_bytes,
        read_bytes: s.read_bytes,
        new_chunks: s.store.stats.new_chunks,
        stored_bytes: s.store.stats.stored_bytes,
        owned_chunks: s.owned.0,
        owned_bytes: s.owned.1,
        manifest: s.manifest_chunks.clone(),
        manifest_bytes: s.manifest_bytes,
        warnings: s.warnings.clone(),
    };
    rec.duration_ns = started.elapsed().as_nanos() as u64;
    // A copy of the record goes into the last pack, so the catalog can be rebuilt from packs.
    let blob = rec.encode();
    s.store
        .put_one(ChunkId::of(&blob), &blob, BlobKind::DumpRecord)?;
    let stats = s.store.finish(|txn, stats| {
        rec.new_chunks = stats.new_chunks;
        rec.stored_bytes = stats.stored_bytes;
        rec.duration_ns = started.elapsed().as_nanos() as u64;
        catalog::insert_dump(txn, &rec)?;
        catalog::set_meta_u64(txn, "next_dump_id", id + 1)
    })?;
    rec.stored_bytes = stats.stored_bytes;
    rec.new_chunks = stats.new_chunks;
    Ok(DumpOutcome {
        promoted: level != opts.level,
        record: rec,
    })
}

/// Merge-join step: advance the previous manifest to `entry.path`; if the file there has the
/// same identity and stat data, and its mtime was safely before the previous scan started
/// (not in the same second), return its extents.
fn unchanged<I: Iterator<Item = Result<Entry>>>(
    prev: &mut std::iter::Peekable<I>,
    entry: &Entry,
    prev_scan_ns: i64,
) -> Result<Option<Vec<Extent>>> {
    loop {
        let ord = match prev.peek() {
            None => return Ok(None),
            Some(Err(_)) => {
                let e = prev.next().expect("peeked").expect_err("peeked an error");
                return Err(e);
            }
            Some(Ok(p)) => path_cmp(&p.path, &entry.path),
        };
        match ord {
            std::cmp::Ordering::Less => {
                prev.next();
            }
            std::cmp::Ordering::Greater => return Ok(None),
            std::cmp::Ordering::Equal => {
                let p = prev.next().expect("peeked")?;
                let same = p.kind == EntryKind::File
                    && p.ino == entry.ino
                    && p.size == entry.size
                    && p.mtime_ns == entry.mtime_ns
                    && p.ctime_ns == entry.ctime_ns
                    && p.mtime_ns.div_euclid(1_000_000_000)
                        < prev_scan_ns.div_euclid(1_000_000_000);
                return Ok(same.then_some(p.extents));
            }
        }
    }
}

/// What reading one file gave.
struct FileContent {
    extents: Vec<Extent>,
    data: Vec<u8>,
    chunks: Vec<(ChunkId, Range<usize>)>,
    /// Stat data as read (the file may have changed since the walk).
    md: std::fs::Metadata,
    warning: Option<String>,
}

fn stat_key(md: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    )
}

/// Does the file have holes worth keeping?
fn is_sparse(md: &std::fs::Metadata) -> bool {
    md.blocks() * 512 < md.size()
}

/// Read a small file whole, cut and hash it. Retries while the file changes under us.
fn read_small(abs: &Path, params: &ChunkerParams) -> Result<Option<FileContent>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some((mut f, before)) = open_for_read(abs)? else {
            return Ok(None);
        };
        let mut data = Vec::with_capacity(before.size() as usize);
        f.read_to_end(&mut data).map_err(|e| Error::io(abs, e))?;
        let after = f.metadata().map_err(|e| Error::io(abs, e))?;
        let stable = stat_key(&before) == stat_key(&after) && data.len() as u64 == after.size();
        if !stable && attempt < READ_ATTEMPTS {
            continue;
        }
        let (lens, _) = chunk::cut(&data, params, true);
        let mut chunks = Vec::with_capacity(lens.len());
        let mut off = 0usize;
        for len in lens {
            let r = off..off + len as usize;
            chunks.push((ChunkId::of(&data[r.clone()]), r));
            off += len as usize;
        }
        let extents = chunks
            .iter()
            .map(|(id, r)| Extent::Chunk {
                id: *id,
                len: r.len() as u32,
            })
            .collect();
        let warning = (!stable).then(|| {
            format!(
                "{}: changed while being read {READ_ATTEMPTS} times; stored as last read",
                abs.display()
            )
        });
        return Ok(Some(FileContent {
            extents,
            data,
            chunks,
            md: after,
            warning,
        }));
    }
}

/// Open a file to read it, with its stat data; None if it vanished since the walk.
fn open_for_read(abs: &Path) -> Result<Option<(File, std::fs::Metadata)>> {
    let f = match open_nofollow(abs) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(abs, e)),
    };
    let md = f.metadata().map_err(|e| Error::io(abs, e))?;
    Ok(Some((f, md)))
}

fn open_nofollow(p: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(p)
}

impl Session<'_> {
    fn flush_window(
        &mut self,
        window: &mut Vec<Work>,
        manifest: &mut ManifestWriter<SharedBuf>,
    ) -> Result<()> {
        if window.is_empty() {
            return Ok(());
        }
        let params = self.params;
        // Small, dense files: read and cut on all cores.
        let small: Vec<usize> = window
            .iter()
            .enumerate()
            .filter(|(_, w)| matches!(w.action, Action::Read) && w.entry.size <= SMALL_FILE)
            .map(|(i, _)| i)
            .collect();
        let contents: Vec<Result<Option<FileContent>>> = small
            .par_iter()
            .map(|&i| read_small(&window[i].abs, &params))
            .collect();
        let mut batch: Vec<(ChunkId, &[u8])> = Vec::new();
        let mut read: Vec<(usize, FileContent)> = Vec::new();
        for (&i, c) in small.iter().zip(contents) {
            match c? {
                Some(c) if !is_sparse(&c.md) || c.md.size() == 0 => read.push((i, c)),
                // Sparse: no extents yet, so the segment path below reads it and keeps its holes.
                Some(_) => {}
                None => window[i].gone = true,
            }
        }
        for (_, c) in &read {
            for (id, r) in &c.chunks {
                batch.push((*id, &c.data[r.clone()]));
            }
        }
        self.store.put_batch(&batch, BlobKind::Data)?;
        drop(batch);
        for (i, c) in read {
            let w = &mut window[i];
            self.read_bytes += c.data.len() as u64;
            self.progress.advance(c.data.len() as u64);
            apply_read_stat(&mut w.entry, &c.md, c.data.len() as u64);
            w.entry.extents = c.extents;
            if let Some(msg) = c.warning {
                tracing::warn!("{msg}");
                self.warnings.push(msg);
            }
        }
        // Large or sparse files: one at a time, in segments, hashing on all cores.
        for w in window.iter_mut() {
            if matches!(w.action, Action::Read)
                && !w.gone
                && w.entry.extents.is_empty()
                && w.entry.size > 0
            {
                match self.read_large(&w.abs)? {
                    Some((extents, md, len, warning)) => {
                        apply_read_stat(&mut w.entry, &md, len);
                        w.entry.extents = extents;
                        if let Some(msg) = warning {
                            tracing::warn!("{msg}");
                            self.warnings.push(msg);
                        }
                    }
                    None => w.gone = true,
                }
            }
        }
        // Manifest entries in order, and the chunks this dump owns.
        let mut refs: Vec<ChunkId> = Vec::new();
        for w in window.iter() {
            if w.gone {
                let msg = format!(
                    "{}: vanished before it could be read; left out",
                    w.abs.display()
                );
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
        window.clear();
        self.own(&refs)?;
        self.store_manifest(false)
    }

    fn own(&mut self, refs: &[ChunkId]) -> Result<()> {
        let (n, b) = self.store.record_owned(self.id, &self.chain, refs)?;
        self.owned.0 += n;
        self.owned.1 += b;
        Ok(())
    }

    /// Cut the buffered manifest bytes into chunks and store them (all of them when `eof`).
    fn store_manifest(&mut self, eof: bool) -> Result<()> {
        let data = std::mem::take(&mut *self.manifest_buf.0.borrow_mut());
        if data.len() < MANIFEST_FLUSH && !eof {
            *self.manifest_buf.0.borrow_mut() = data;
            return Ok(());
        }
        let (lens, consumed) = chunk::cut(&data, &self.params, eof);
        let mut batch = Vec::with_capacity(lens.len());
        let mut off = 0usize;
        for len in lens {
            let piece = &data[off..off + len as usize];
            let id = ChunkId::of(piece);
            batch.push((id, piece));
            self.manifest_chunks.push((id.0, len));
            off += len as usize;
        }
        self.store.put_batch(&batch, BlobKind::Manifest)?;
        self.manifest_bytes += consumed as u64;
        let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
        self.own(&ids)?;
        self.manifest_buf
            .0
            .borrow_mut()
            .extend_from_slice(&data[consumed..]);
        Ok(())
    }

    /// Read a large or sparse file in segments. Holes become `Hole` extents. Returns None
    /// if the file vanished.
    #[allow(clippy::type_complexity)]
    fn read_large(
        &mut self,
        abs: &Path,
    ) -> Result<Option<(Vec<Extent>, std::fs::Metadata, u64, Option<String>)>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some((mut f, before)) = open_for_read(abs)? else {
                return Ok(None);
            };
            let size = before.size();
            let ranges = if is_sparse(&before) {
                scan::data_ranges(&f, size).map_err(|e| Error::io(abs, e))?
            } else {
                vec![(0, size)]
            };
            let mut extents = Vec::new();
            let mut pos = 0u64;
            for (off, len) in ranges {
                if off > pos {
                    extents.push(Extent::Hole(off - pos));
                }
                f.seek(SeekFrom::Start(off))
                    .map_err(|e| Error::io(abs, e))?;
                // A reader thread reads and cuts the next segments while this one is hashed,
                // compressed and stored, so disk reads overlap the CPU work.
                let params = self.params;
                let file = &f;
                let got = std::thread::scope(|scope| -> Result<u64> {
                    let (tx, rx) = std::sync::mpsc::sync_channel(2);
                    let reader = scope.spawn(move || {
                        let mut sc = StreamChunker::new(file.take(len), params, SEGMENT);
                        loop {
                            match sc.next_segment() {
                                Ok(Some(seg)) => {
                                    if tx.send(Ok(seg)).is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    let _ = tx.send(Err(e));
                                    break;
                                }
                            }
                        }
                        sc.bytes_read()
                    });
                    for seg in rx {
                        let seg = seg.map_err(|e| Error::io(abs, e))?;
                        let ids: Vec<ChunkId> = seg
                            .chunks
                            .par_iter()
                            .map(|r| ChunkId::of(&seg.data[r.clone()]))
                            .collect();
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
                        self.progress.advance(seg.data.len() as u64);
                    }
                    Ok(reader.join().expect("segment reader thread"))
                })?;
                self.read_bytes += got;
                pos = off + got;
                if got < len {
                    break; // shrank while reading: the stat check below notices
                }
            }
            let after = f.metadata().map_err(|e| Error::io(abs, e))?;
            if after.size() > pos {
                // Trailing hole (or growth, which the stat check catches).
                extents.push(Extent::Hole(after.size() - pos));
                pos = after.size();
            }
            let stable = stat_key(&before) == stat_key(&after);
            if !stable && attempt < READ_ATTEMPTS {
                continue;
            }
            let warning = (!stable).then(|| {
                format!(
                    "{}: changed while being read {READ_ATTEMPTS} times; stored as last read",
                    abs.display()
                )
            });
            let _ = f;
            return Ok(Some((extents, after, pos, warning)));
        }
    }
}

/// The file was read with this stat data: record it, so the manifest matches what was read.
fn apply_read_stat(e: &mut Entry, md: &std::fs::Metadata, len: u64) {
    e.size = len;
    e.mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    e.ctime_ns = md.ctime() * 1_000_000_000 + md.ctime_nsec();
    e.mode = md.mode() & 0o7777;
    e.uid = md.uid();
    e.gid = md.gid();
}
