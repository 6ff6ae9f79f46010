//! The dump's file reading: a window's small files read whole into one buffer, cut and hashed
//! on a pool of reading threads; large and sparse files read, cut and hashed in segments on a
//! thread each, a few segments ahead of the thread that stores them. A file that changes while
//! it is read is read again (`READ_ATTEMPTS`, `SETTLE`). Nothing here touches the store: the
//! dumping thread stores what the reads give (`dump::pass`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;

use crate::chunk::{self, ChunkerParams, Segment, StreamChunker};
use crate::crypto::Keys;
use crate::dirfd::{Dir, Stat, Xattrs};
use crate::scan;
use crate::timefmt;
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// Files up to this size are read whole, many at once; larger ones stream in segments.
pub(super) const SMALL_FILE: u64 = 4 << 20;
/// A window of entries closes when its files to read reach this many bytes... Two windows are
/// in memory at a time (one being read, one being stored): 16 MiB rather than 32 keeps a dump
/// of many small files under 150 MB of memory for 3-5% of its time (docs/PERFORMANCE.md).
pub(super) const WINDOW_BYTES: u64 = 16 << 20;
/// ...or this many entries.
pub(super) const WINDOW_ENTRIES: usize = 4096;
/// Segment size for large files.
const SEGMENT: usize = 4 << 20;
/// How often a file that keeps changing while read is read again before it is stored with a
/// warning.
pub(super) const READ_ATTEMPTS: u32 = 3;
/// A write(2) stamps the file's ctime when it begins, so a write that began just before the
/// stat taken before a read may still be copying bytes while the file is read, and the stat
/// taken after shows no change: the read is torn and nothing says so. A file whose last change
/// is younger than this when its read begins is therefore read again once it is this old (by
/// then a write in flight at the first read has ended, or a later one has changed the ctime).
/// Files written long before the dump, as in a clone, never wait.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

pub(super) enum Action {
    /// Nothing to read (not a file, or an empty one).
    None,
    /// Unchanged since the previous dump: its extents are reused.
    Reuse,
    /// Read the file.
    Read,
}

pub(super) struct Work {
    pub(super) entry: Entry,
    pub(super) src: Source,
    pub(super) action: Action,
    /// Whether this entry's chunks may be ones the dump owns (read, or reused from a previous
    /// dump outside the chain).
    pub(super) may_own: bool,
    /// For a changed file, the chunks of its previous version (when they are known to be
    /// stored): see `reuse::KnownChunks`.
    pub(super) known: Option<super::reuse::KnownChunks>,
    /// Set, with the reason, when the file could not be read as a file (it vanished or changed
    /// type since the walk): it is left out and the dump's warnings name it.
    pub(super) left_out: Option<String>,
}

/// Where a walked entry is: the handle of its directory and its name there (so a read opens
/// the file in the directory the walk saw, whatever happened to the path since), and its stat
/// data as walked.
#[derive(Clone)]
pub(super) struct Source {
    pub(super) dir: Arc<Dir>,
    pub(super) name: Vec<u8>,
    pub(super) walked: Stat,
}

impl Source {
    pub(super) fn shown(&self) -> PathBuf {
        self.dir.shown_child(&self.name)
    }
}

/// What reading a walked file gave: its content, or why it is left out.
pub(super) enum Got<T> {
    Read(T),
    LeftOut(String),
}

/// What reading one file gave.
pub(super) struct FileContent {
    pub(super) extents: Vec<Extent>,
    /// The bytes read: `len` bytes at the start of the file's slot in its window's buffer, or,
    /// when the file had grown past the size the walk saw, a buffer of its own.
    pub(super) len: usize,
    pub(super) own: Option<Vec<u8>>,
    /// The chunks, as ranges of those bytes.
    pub(super) chunks: Vec<(ChunkId, Range<usize>)>,
    /// Stat data as read (the file may have changed since the walk).
    pub(super) md: Stat,
    /// The file's extended attributes, read again when the name led to another inode than the
    /// one walked (replaced since): the entry must describe the file whose bytes it holds.
    pub(super) xattrs: Option<Xattrs>,
    pub(super) warning: Option<String>,
    /// How long opening and reading it took (its last attempt), in nanoseconds.
    read_ns: u128,
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
pub(super) fn wait_to_settle(md: &Stat) {
    if let Some(wait) = settle_wait(md) {
        std::thread::sleep(wait);
    }
}

/// Read a small file whole into `slot` (its share of the window's buffer, as large as the walk
/// saw the file), cut and hash it. Retries while the file changes under us, or changed so
/// lately that a write may have been in flight (`SETTLE`). What is stored is what the last read
/// gave, with the size it gave: never more bytes than were read.
fn read_small(
    src: &Source,
    slot: &mut [u8],
    params: &ChunkerParams,
    keys: &Keys,
) -> Result<Got<FileContent>> {
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
        let (chunks, _) = chunk::cut_hashed(keys, data, params, true);
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
pub(super) fn changed_while_read(src: &Source) -> String {
    format!(
        "{}: changed while being read {READ_ATTEMPTS} times; stored as last read (the bytes \
         and size that read gave)",
        src.shown().display()
    )
}

/// The file's stat data through its open descriptor.
pub(super) fn fstat(f: &File, src: &Source) -> Result<Stat> {
    crate::dirfd::fstat(f).map_err(|e| Error::io(src.shown(), e))
}

/// The file's extended attributes when the name now leads to another inode than the walk saw.
pub(super) fn refreshed_xattrs(f: &File, src: &Source, md: &Stat) -> Result<Option<Xattrs>> {
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
pub(super) const READ_THREADS: usize = 8;

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
pub(super) fn window_buffer() -> Vec<u8> {
    vec![0u8; (WINDOW_BYTES + SMALL_FILE) as usize]
}

/// What `read_small` gave for each small file of a window, in window order, and the window's
/// buffer their bytes are in.
pub(super) type SmallReads = (Vec<u8>, Vec<Result<Got<FileContent>>>, ReadTime);

/// How long a window's small files took to read: nanoseconds in all, and files.
pub(super) type ReadTime = (u128, usize);

/// A window whose small files are being read, cut and hashed on the pool (`read_small`).
pub(super) struct ReadingWindow {
    pub(super) window: Vec<Work>,
    /// The window's indices of the files being read.
    pub(super) small: Vec<usize>,
    done: std::sync::mpsc::Receiver<SmallReads>,
    /// The window's first large file (its index), being read ahead too.
    pub(super) first_large: Option<(usize, Result<Got<LargeRead>>)>,
}

impl ReadingWindow {
    /// Start reading `window`'s small files into `buf` (a buffer from an earlier window, kept:
    /// allocating a window's worth for every window on the reading threads left each of their
    /// allocator arenas holding one).
    /// `threads`: on how many reading threads at most (see `Session::read_threads`).
    pub(super) fn start(
        window: Vec<Work>,
        params: ChunkerParams,
        keys: &Keys,
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
        let reading_keys = keys.clone();
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
                .map(|(s, slot)| read_small(s, slot, &params, &reading_keys))
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
            .map(|i| (i, LargeRead::start(window[i].src.clone(), params, keys)));
        ReadingWindow {
            window,
            small,
            done,
            first_large,
        }
    }

    /// What reading each small file gave, once they are all read.
    pub(super) fn wait(&self) -> Result<SmallReads> {
        self.done.recv().map_err(|_| {
            Error::Spool(
                "a file reading worker failed (panicked); nothing of this dump was committed, \
                 run it again"
                    .into(),
            )
        })
    }
}

/// What a large file's reader hands the dumping thread, in file order.
pub(super) enum Piece {
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
pub(super) struct LargeRead {
    file: Arc<File>,
    before: Stat,
    /// The file's last change was `SETTLE` old when the reading began.
    settled: bool,
    pub(super) pieces: std::sync::mpsc::Receiver<std::io::Result<Piece>>,
    /// Says whether every range was read through to its end.
    thread: std::thread::JoinHandle<bool>,
}

impl LargeRead {
    /// Open the file and start reading it; left out if it vanished or changed type since the
    /// walk.
    pub(super) fn start(src: Source, params: ChunkerParams, keys: &Keys) -> Result<Got<LargeRead>> {
        let (file, before, settled) = match open_for_read(&src)? {
            Got::Read(opened) => opened,
            Got::LeftOut(why) => return Ok(Got::LeftOut(why)),
        };
        let file = Arc::new(file);
        let (size, sparse) = (before.size, before.is_sparse());
        let (tx, pieces) = std::sync::mpsc::sync_channel(1);
        let reader = Arc::clone(&file);
        let keys = keys.clone();
        let thread = std::thread::Builder::new()
            .name("reel-large-read".into())
            .spawn(
                move || match read_segments(&reader, size, sparse, params, &keys, &tx) {
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
    pub(super) fn finish(self) -> Result<(Arc<File>, Stat, bool, bool)> {
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
    keys: &Keys,
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
                .map(|r| keys.chunk_id(&seg.data[r.clone()]))
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
