//! Walking a volume tree and reading its stat data.
//!
//! The dump merge-joins the walk with the previous manifest, so the walk must yield entries in
//! exactly the manifest order ([`crate::types::path_cmp`]): the root first, then depth-first
//! with siblings sorted by their raw name bytes. Sorting needs each directory's names in memory,
//! but only those: the walker keeps a stack with one sorted name list per open directory, so
//! memory is O(depth × directory width) and never the whole tree. The table of hard-linked
//! inodes (`links`) is bounded too: it spills to a file past a fixed number of inodes.
//!
//! The walk goes by directory handle ([`crate::dirfd`]): a directory is entered by opening it
//! from its parent's handle without following a symlink, its own stat data and extended
//! attributes come from that open handle, and every child is looked at by name in it. A
//! directory swapped for a symlink or a file during the walk is therefore never entered, a
//! renamed parent does not send the walk elsewhere, and depth is limited by nothing but the
//! filesystem. Each item carries the handle of its directory and its name, so the dump reads a
//! file from the same directory the walk saw it in.
//!
//! Names are raw bytes, never assumed to be UTF-8. A symlink is recorded, never followed. The
//! walk stays on the root's filesystem: a mount point inside the volume is recorded as an empty
//! directory with a warning, as BSD dump does.
//!
//! A live tree changes under the walk. A name that vanishes between `readdir` and its `stat`
//! is skipped with a warning; an entry that changes type between its `stat` and its use (a
//! directory replaced by a file, a symlink by a directory) is looked at again, and skipped with
//! a warning naming it if it keeps changing. Every other error (a directory we may not read, an
//! I/O error) is returned as an `Err` naming the path, and the walk can go on after it if the
//! caller wishes.
//!
//! What the volume excludes ([`exclude`]: patterns, cache directories, `nodump`) is decided
//! from a name's stat data before anything is opened: an excluded entry is not yielded and an
//! excluded directory is not opened, here or by the look-ahead.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dirfd::{Dir, Stat, entry_from_stat};
use crate::error::{Error, Result};
use crate::types::{Entry, EntryKind};

pub mod exclude;
mod links;
pub use exclude::Exclude;
use links::LinkTable;

pub(crate) use crate::dirfd::with_what;

/// How often an entry that changes type under the walk is looked at again before it is
/// skipped with a warning.
const TYPE_ATTEMPTS: u32 = 3;

/// One entry found by the walk.
#[derive(Clone, Debug)]
pub struct ScanItem {
    /// The entry with its stat data, xattrs and (for symlinks) target; `extents` is left empty
    /// for the dump to fill. A `HardLink` keeps the stat fields of the inode it names.
    pub entry: Entry,
    /// The directory that holds the entry (for the root: the root itself).
    pub dir: Arc<Dir>,
    /// The entry's name in `dir` (empty for the root).
    pub name: Vec<u8>,
    /// The entry's stat data as the walk saw it.
    pub stat: Stat,
}

impl ScanItem {
    /// Where the entry was, for messages.
    pub fn shown(&self) -> PathBuf {
        self.dir.shown_child(&self.name)
    }
}

/// One open directory on the walk stack.
struct Frame {
    /// The directory's path relative to the root (empty for the root).
    rel: Vec<u8>,
    dir: Arc<Dir>,
    /// Child names not yet yielded, sorted descending so that `pop` gives the smallest, with
    /// what was looked up for them ahead of their visit.
    names: Vec<(Vec<u8>, Option<Looked>)>,
}

/// What was looked up for one name ahead of its visit, on the stat threads: its stat data and,
/// for a non-directory, its extended attributes (a directory's come from its opened handle).
struct Looked {
    stat: io::Result<Stat>,
    xattrs: Option<io::Result<crate::dirfd::Xattrs>>,
    /// For a directory (on the volume's filesystem, within `OPEN_AHEAD_MAX`): opened, with its
    /// own stat data and xattrs and its sorted names, so that entering it waits for nothing.
    opened: Option<Opened>,
}

/// A subdirectory opened and read ahead of its visit (see `Looked::opened`).
struct Opened {
    dir: Dir,
    stat: Stat,
    xattrs: crate::dirfd::Xattrs,
    /// Sorted descending, as a frame holds them.
    names: Vec<Vec<u8>>,
}

/// Subdirectories of one directory opened ahead at most: each holds a descriptor and its names
/// until the walk enters it.
const OPEN_AHEAD_MAX: usize = 32;

/// Directories with at least this many names have them looked up ahead, in parallel.
const LOOK_AHEAD_MIN: usize = 8;
/// Threads that look up a directory's names ahead of the walk. A `stat` of an inode that is not
/// in memory waits for the disk; with one at a time, a cold walk of 200,000 files is a queue of
/// 200,000 reads of a few hundred microseconds each. Looked up eight at a time, the disk
/// answers the queue in a fraction of that.
const LOOK_AHEAD_THREADS: usize = 8;

/// A job for the look-ahead's threads.
type LookJob = Box<dyn FnOnce() + Send>;

/// The look-ahead's threads. They wait for work on a condition variable: rayon's threads spin
/// (yield in a loop) for a while each time they are woken, and being woken once a directory
/// made a warm walk of 6,000 files 20% slower. Here a warm walk pays only the hand-over.
struct LookAhead {
    queue: std::sync::Mutex<std::collections::VecDeque<LookJob>>,
    ready: std::sync::Condvar,
}

/// The look-ahead's threads, started on first use; None when not one could be started (the
/// names are then looked up on the walk's own thread).
fn look_ahead() -> Option<&'static LookAhead> {
    static POOL: std::sync::OnceLock<Option<&'static LookAhead>> = std::sync::OnceLock::new();
    *POOL.get_or_init(|| {
        let pool: &'static LookAhead = Box::leak(Box::new(LookAhead {
            queue: std::sync::Mutex::new(std::collections::VecDeque::new()),
            ready: std::sync::Condvar::new(),
        }));
        let mut started = 0;
        for i in 0..LOOK_AHEAD_THREADS {
            let spawned = std::thread::Builder::new()
                .name(format!("reel-stat-{i}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let mut q = pool.queue.lock().expect("look-ahead queue");
                            loop {
                                match q.pop_front() {
                                    Some(job) => break job,
                                    None => q = pool.ready.wait(q).expect("look-ahead queue"),
                                }
                            }
                        };
                        // A job that panics loses its part (the walk looks those names up
                        // itself), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if spawned.is_err() {
                break;
            }
            started += 1;
        }
        (started > 0).then_some(pool)
    })
}

/// Fold `n` lookups that took `ns` each into the moving average (over about the last 32).
fn note_lookups(avg: &mut f64, ns: f64, n: usize) {
    crate::ahead::note_times(avg, ns, n, 32);
}

/// Look up every name of `names` in `dir`, in parallel on the look-ahead threads, in order, with
/// the time the lookups took (the sum over the threads, so the hand-over is not counted).
fn look_all(
    dir: &Arc<Dir>,
    names: &Arc<Vec<Vec<u8>>>,
    dev: u64,
    ex: &Excluding,
) -> (Vec<Looked>, u128) {
    let here = || {
        let started = std::time::Instant::now();
        let looked = names.iter().map(|name| look(dir, name, None, ex)).collect();
        (looked, started.elapsed().as_nanos())
    };
    let Some(pool) = look_ahead() else {
        return here();
    };
    let n = names.len();
    let parts = LOOK_AHEAD_THREADS.min(n);
    let open_ahead = Arc::new(std::sync::atomic::AtomicUsize::new(OPEN_AHEAD_MAX));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<Looked>, u128)>();
    {
        let mut q = pool.queue.lock().expect("look-ahead queue");
        for p in 0..parts {
            let (dir, names, tx) = (Arc::clone(dir), Arc::clone(names), tx.clone());
            let open_ahead = Arc::clone(&open_ahead);
            let ex = ex.clone();
            q.push_back(Box::new(move || {
                let started = std::time::Instant::now();
                let looked = (p * n / parts..(p + 1) * n / parts)
                    .map(|i| look(&dir, &names[i], Some((dev, &open_ahead)), &ex))
                    .collect();
                let _ = tx.send((p, looked, started.elapsed().as_nanos()));
            }));
        }
    }
    pool.ready.notify_all();
    drop(tx);
    let mut done: Vec<Option<Vec<Looked>>> = (0..parts).map(|_| None).collect();
    let mut spent = 0;
    for (p, looked, ns) in rx.iter().take(parts) {
        done[p] = Some(looked);
        spent += ns;
    }
    if done.iter().any(Option::is_none) {
        // A part was lost (its thread panicked): look the names up here.
        return here();
    }
    (done.into_iter().flatten().flatten().collect(), spent)
}

/// What a directory's lookups need to know to leave excluded entries unopened: the rules and
/// the directory's path relative to the root. None when the volume excludes nothing.
type Excluding = Option<(Arc<Exclude>, Arc<Vec<u8>>)>;

/// `name`'s path relative to the root, in the directory at `parent`.
fn child_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        rel.extend_from_slice(parent);
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

/// Look up `name` in `dir`. `open_ahead`: the volume's device and how many more
/// subdirectories may be opened ahead; a directory on that device (that `ex` does not exclude)
/// is then opened and listed too (anything that goes wrong there is left for the visit to meet
/// and report).
fn look(
    dir: &Dir,
    name: &[u8],
    open_ahead: Option<(u64, &std::sync::atomic::AtomicUsize)>,
    ex: &Excluding,
) -> Looked {
    use std::sync::atomic::Ordering::Relaxed;
    let stat = dir.stat(name);
    let xattrs = match &stat {
        Ok(st) if !st.is_dir() => Some(dir.xattrs_of(name)),
        _ => None,
    };
    let mut opened = None;
    if let (Ok(st), Some((dev, budget))) = (&stat, open_ahead)
        && st.is_dir()
        && st.dev == dev
        && !ex
            .as_ref()
            .is_some_and(|(ex, parent)| ex.excludes(&child_rel(parent, name), st))
        && budget
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(1))
            .is_ok()
    {
        opened = open_ahead_dir(dir, name, ex.as_ref().map(|(ex, _)| &**ex));
    }
    Looked {
        stat,
        xattrs,
        opened,
    }
}

fn open_ahead_dir(dir: &Dir, name: &[u8], ex: Option<&Exclude>) -> Option<Opened> {
    let sub = dir.open_dir(name).ok()?;
    let stat = sub.stat_self().ok()?;
    let xattrs = sub.own_xattrs().ok()?;
    let mut names = sub.names().ok()?;
    if let Some(ex) = ex {
        names = ex.names_to_walk(&sub, names);
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Some(Opened {
        dir: sub,
        stat,
        xattrs,
        names,
    })
}

/// A depth-first, name-sorted walk of one volume tree; see the module documentation.
pub struct Walker {
    root_dev: u64,
    /// The root's item, until it has been yielded.
    first: Option<ScanItem>,
    /// A directory just yielded, open and read, to be pushed before the next item.
    descend: Option<Frame>,
    stack: Vec<Frame>,
    /// (dev, ino) of regular files with nlink > 1 -> the first path yielded for them.
    links: LinkTable,
    warnings: Vec<String>,
    /// How long a name takes to look up (`stat` and xattrs), a moving average in nanoseconds.
    /// Looking ahead pays when the inodes wait on the disk and costs a little when they are in
    /// memory, so it is done only while lookups are slow (`LOOK_AHEAD_SLOW_NS`).
    lookup_ns: f64,
    /// What the volume leaves out; None when nothing (the walk then asks nothing).
    exclude: Option<Arc<Exclude>>,
}

/// A name that takes longer than this to look up is waiting on the disk (in memory it takes a
/// few microseconds, from a virtual disk a few hundred).
const LOOK_AHEAD_SLOW_NS: f64 = 25_000.0;

impl Walker {
    /// Start a walk of `root`, which must be a directory. The root is followed if it is a
    /// symlink (a volume may be configured through one); nothing below it is.
    pub fn new(root: &Path) -> Result<Walker> {
        Walker::with_exclude(root, Exclude::nothing())
    }

    /// [`Walker::new`], leaving out what `exclude` excludes (never the root itself).
    pub fn with_exclude(root: &Path, exclude: Exclude) -> Result<Walker> {
        let exclude = exclude.is_active().then(|| Arc::new(exclude));
        crate::dirfd::raise_fd_limit();
        let dir = Dir::open(root).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                Error::usage(format!(
                    "volume path {} is not a directory; give the directory to back up",
                    root.display()
                ))
            } else {
                Error::io(root, e)
            }
        })?;
        let st = dir.stat_self().map_err(|e| Error::io(root, e))?;
        let mut entry = entry_from_stat(b"", &st);
        entry.xattrs = dir.own_xattrs().map_err(|e| Error::io(root, e))?;
        let dir = Arc::new(dir);
        // Until the first lookups tell, assume the volume is on the disk, not in memory.
        let mut lookup_ns = LOOK_AHEAD_SLOW_NS * 2.0;
        let names = read_names(&dir, st.dev, &mut lookup_ns, excluding(&exclude, b""))?;
        let first = ScanItem {
            entry,
            dir: Arc::clone(&dir),
            name: Vec::new(),
            stat: st,
        };
        Ok(Walker {
            root_dev: st.dev,
            first: Some(first),
            descend: Some(Frame {
                rel: Vec::new(),
                dir,
                names,
            }),
            stack: Vec::new(),
            links: LinkTable::new(links::IN_MEMORY),
            warnings: Vec::new(),
            lookup_ns,
            exclude,
        })
    }

    /// Spill the table of hard-linked inodes into `dir` (the spool's tmp/) rather than the
    /// system's temporary directory, which may be in memory.
    pub fn spill_links_in(&mut self, dir: &Path) {
        self.links.spill_in(dir);
    }

    /// Things the walk noticed but did not fail on (vanished entries, mount points skipped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Look at child `name` of the top frame; `None` when it is skipped (vanished, or kept
    /// changing type; the warning is recorded). See the module documentation.
    fn visit(&mut self, name: Vec<u8>, mut looked: Option<Looked>) -> Result<Option<ScanItem>> {
        let frame = self.stack.last().expect("visit has a frame");
        let dir = Arc::clone(&frame.dir);
        let rel = child_rel(&frame.rel, &name);
        let shown = || dir.shown_child(&name);
        for _ in 0..TYPE_ATTEMPTS {
            // What was looked up ahead serves the first look; a retry looks again.
            let (stat, mut xattrs, opened) = match looked.take() {
                Some(l) => (l.stat, l.xattrs, l.opened),
                None => {
                    let started = std::time::Instant::now();
                    let l = look(&dir, &name, None, &None);
                    note_lookups(&mut self.lookup_ns, started.elapsed().as_nanos() as f64, 1);
                    (l.stat, l.xattrs, None)
                }
            };
            let st = match stat {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(self.vanished(shown())),
                Err(e) => return Err(Error::io(shown(), with_what("cannot stat", e))),
            };
            if let Some(ex) = &self.exclude
                && ex.excludes(&rel, &st)
            {
                tracing::debug!("{}: excluded", shown().display());
                return Ok(None);
            }
            let mut entry = entry_from_stat(&rel, &st);
            let mut stat = st;
            match entry.kind {
                EntryKind::Dir if st.dev != self.root_dev => {
                    // A mount point: record the directory itself, not what is mounted on it.
                    self.warnings.push(format!(
                        "{}: another filesystem is mounted here; recorded as an empty directory",
                        shown().display()
                    ));
                }
                EntryKind::Dir => {
                    // The directory walked is the one opened (ahead, or now): its stat data and
                    // xattrs, not those of whatever the name held a moment before.
                    let (sub, names, own_xattrs) = match opened {
                        Some(o) => {
                            stat = o.stat;
                            let sub = Arc::new(o.dir);
                            let names = look_names(
                                &sub,
                                o.names,
                                self.root_dev,
                                &mut self.lookup_ns,
                                excluding(&self.exclude, &rel),
                            );
                            (sub, names, o.xattrs)
                        }
                        None => {
                            let sub = match dir.open_dir(&name) {
                                Ok(sub) => sub,
                                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                    return Ok(self.vanished(shown()));
                                }
                                Err(e) if changed_type(&e) => continue,
                                Err(e) => {
                                    return Err(Error::io(
                                        shown(),
                                        with_what("cannot read directory", e),
                                    ));
                                }
                            };
                            stat = sub.stat_self().map_err(|e| Error::io(shown(), e))?;
                            let own = sub.own_xattrs().map_err(|e| Error::io(shown(), e))?;
                            let sub = Arc::new(sub);
                            let names = read_names(
                                &sub,
                                self.root_dev,
                                &mut self.lookup_ns,
                                excluding(&self.exclude, &rel),
                            )?;
                            (sub, names, own)
                        }
                    };
                    entry = entry_from_stat(&rel, &stat);
                    entry.xattrs = own_xattrs;
                    self.descend = Some(Frame {
                        rel: rel.clone(),
                        dir: sub,
                        names,
                    });
                    return Ok(Some(ScanItem {
                        entry,
                        dir,
                        name,
                        stat,
                    }));
                }
                EntryKind::Symlink => match dir.read_link(&name) {
                    Ok(t) => {
                        entry.size = t.len() as u64;
                        entry.target = t;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(self.vanished(shown()));
                    }
                    // EINVAL: no longer a symlink.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
                    Err(e) => return Err(Error::io(shown(), with_what("cannot read symlink", e))),
                },
                EntryKind::File if st.nlink > 1 => {
                    let first = self
                        .links
                        .first_link((st.dev, st.ino), st.nlink, &rel)
                        .map_err(|e| Error::io(shown(), with_what("cannot spill hard links", e)))?;
                    if let Some(first) = first {
                        entry.kind = EntryKind::HardLink;
                        entry.target = first;
                    }
                }
                _ => {}
            }
            entry.xattrs = match xattrs.take().unwrap_or_else(|| dir.xattrs_of(&name)) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(self.vanished(shown())),
                Err(e) => return Err(Error::io(shown(), e)),
            };
            return Ok(Some(ScanItem {
                entry,
                dir,
                name,
                stat,
            }));
        }
        self.warnings.push(format!(
            "{}: changed type {TYPE_ATTEMPTS} times while the scan looked at it; skipped",
            shown().display()
        ));
        Ok(None)
    }

    fn vanished(&mut self, shown: PathBuf) -> Option<ScanItem> {
        self.warnings.push(format!(
            "{}: vanished during the scan; skipped",
            shown.display()
        ));
        None
    }
}

/// A directory's names, sorted descending (so that `pop` yields them in ascending byte order),
/// each with its stat data and xattrs looked up ahead when the directory has enough of them.
fn read_names(
    dir: &Arc<Dir>,
    dev: u64,
    lookup_ns: &mut f64,
    ex: Excluding,
) -> Result<Vec<(Vec<u8>, Option<Looked>)>> {
    let mut names = dir
        .names()
        .map_err(|e| Error::io(dir.shown(), with_what("cannot read directory", e)))?;
    if let Some((ex, _)) = &ex {
        names = ex.names_to_walk(dir, names);
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(look_names(dir, names, dev, lookup_ns, ex))
}

/// The lookups' view of `exclude` for the directory at `rel`.
fn excluding(exclude: &Option<Arc<Exclude>>, rel: &[u8]) -> Excluding {
    exclude
        .as_ref()
        .map(|ex| (Arc::clone(ex), Arc::new(rel.to_vec())))
}

/// A directory's sorted names, each with its stat data and xattrs (and, for a subdirectory,
/// its listing) looked up ahead when the directory has enough of them and lookups are slow.
fn look_names(
    dir: &Arc<Dir>,
    names: Vec<Vec<u8>>,
    dev: u64,
    lookup_ns: &mut f64,
    ex: Excluding,
) -> Vec<(Vec<u8>, Option<Looked>)> {
    if names.len() < LOOK_AHEAD_MIN || *lookup_ns < LOOK_AHEAD_SLOW_NS {
        return names.into_iter().map(|n| (n, None)).collect();
    }
    let names = Arc::new(names);
    let (looked, spent_ns) = look_all(dir, &names, dev, &ex);
    note_lookups(lookup_ns, spent_ns as f64 / names.len() as f64, names.len());
    let names = Arc::try_unwrap(names).unwrap_or_else(|shared| (*shared).clone());
    names
        .into_iter()
        .zip(looked.into_iter().map(Some))
        .collect()
}

/// An error that says the name no longer holds what its `stat` said: a directory turned into a
/// file (`ENOTDIR`) or a symlink (`ELOOP` under `O_NOFOLLOW`).
fn changed_type(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP))
}

impl Iterator for Walker {
    type Item = Result<ScanItem>;

    fn next(&mut self) -> Option<Result<ScanItem>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        loop {
            if let Some(frame) = self.descend.take() {
                // A frame with nothing left to yield holds a handle for nothing: drop it, so a
                // deep chain of single directories holds one handle, not one per level.
                while self.stack.last().is_some_and(|f| f.names.is_empty()) {
                    self.stack.pop();
                }
                self.stack.push(frame);
            }
            let frame = self.stack.last_mut()?;
            let Some((name, looked)) = frame.names.pop() else {
                self.stack.pop();
                continue;
            };
            match self.visit(name, looked) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The data regions of `file` as `(offset, len)`, found with `SEEK_DATA`/`SEEK_HOLE` and
/// clipped to `size`. A filesystem without hole reporting gives the whole file as one region;
/// a file that is all hole gives `[]`. The file offset is restored before returning.
pub fn data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let fd = file.as_raw_fd();
    // SAFETY: plain lseek calls on an fd we borrow for the duration of this function.
    let saved = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if saved < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let mut ranges = Vec::new();
        let mut off: u64 = 0;
        while off < size {
            let data = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    // No data at or after `off`: the rest is hole.
                    Some(libc::ENXIO) => Ok(ranges),
                    // No hole support: one region, whole file.
                    Some(libc::EINVAL) | Some(libc::ENOTSUP) if off == 0 => Ok(vec![(0, size)]),
                    _ => Err(e),
                };
            }
            let data = data as u64;
            if data >= size {
                break;
            }
            let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(io::Error::last_os_error());
            }
            // The file may have changed size since `size` was read: clip.
            let end = (hole as u64).min(size);
            if end <= data {
                break;
            }
            ranges.push((data, end - data));
            off = end;
        }
        Ok(ranges)
    })();
    // SAFETY: as above.
    unsafe { libc::lseek(fd, saved, libc::SEEK_SET) };
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::path_cmp;
    use std::ffi::{CString, OsStr};
    use std::fs;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};

    pub(crate) const MIB: u64 = 1 << 20;

    /// Try to set a user.* xattr; false if the filesystem refuses xattrs.
    pub(crate) fn try_set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
        let cp = CString::new(path.as_os_str().as_bytes()).unwrap();
        let cn = CString::new(name).unwrap();
        let rc = unsafe {
            libc::lsetxattr(
                cp.as_ptr(),
                cn.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        rc == 0
    }

    pub(crate) fn mknod(path: &Path, mode: libc::mode_t, rdev: libc::dev_t) -> bool {
        let cp = CString::new(path.as_os_str().as_bytes()).unwrap();
        unsafe { libc::mknod(cp.as_ptr(), mode, rdev) == 0 }
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What the test tree managed to include on this machine.
    pub(crate) struct Built {
        pub xattrs: bool,
        pub device: bool,
    }

    /// A tree with one of everything the walker must handle.
    pub(crate) fn build_tree(root: &Path) -> Built {
        let w = |rel: &str, data: &[u8]| fs::write(root.join(rel), data).unwrap();
        w("a.txt", b"hello, world\n");
        w("empty", b"");
        w("a.b", b"dot");
        fs::create_dir(root.join("a")).unwrap();
        w("a/z", b"in a");
        fs::create_dir(root.join("emptydir")).unwrap();
        fs::create_dir_all(root.join("d/sub")).unwrap();
        w("d/sub/deep.txt", b"deep");
        symlink("../a.txt", root.join("d/link")).unwrap();
        symlink("nowhere/at/all", root.join("d/dangling")).unwrap();
        // Sparse: 3 MiB long, one 4 KiB block of data at 1 MiB.
        let mut f = File::create(root.join("sparse")).unwrap();
        f.set_len(3 * MIB).unwrap();
        use std::io::Seek;
        f.seek(io::SeekFrom::Start(MIB)).unwrap();
        f.write_all(&[0xab; 4096]).unwrap();
        drop(f);
        // Hard links: "d/hard3" sorts first, so it is the name the others point at.
        w("d/hard3", b"linked");
        fs::hard_link(root.join("d/hard3"), root.join("hard1")).unwrap();
        fs::hard_link(root.join("d/hard3"), root.join("hard2")).unwrap();
        assert!(mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0));
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name").unwrap();
        w("suid", b"#!/bin/sh\n");
        chmod(&root.join("suid"), 0o4755);
        fs::create_dir(root.join("sgid")).unwrap();
        chmod(&root.join("sgid"), 0o2775);
        fs::create_dir(root.join("sticky")).unwrap();
        chmod(&root.join("sticky"), 0o1777);
        chmod(&root.join("empty"), 0o400);
        let xattrs = try_set_xattr(&root.join("a.txt"), "user.reel.test", b"value\0bin")
            && try_set_xattr(&root.join("a.txt"), "user.a", b"")
            && try_set_xattr(&root.join("emptydir"), "user.dir", b"x");
        let is_root = unsafe { libc::geteuid() } == 0;
        let device = is_root
            && mknod(
                &root.join("null"),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3),
            );
        if is_root {
            let cp = CString::new(root.join("a.txt").as_os_str().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::lchown(cp.as_ptr(), 1234, 5678) }, 0);
            let cp = CString::new(root.join("d/link").as_os_str().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::lchown(cp.as_ptr(), 4321, 8765) }, 0);
        }
        Built { xattrs, device }
    }

    pub(crate) fn walk_all(root: &Path) -> Vec<ScanItem> {
        let mut w = Walker::new(root).unwrap();
        let items: Vec<ScanItem> = w.by_ref().map(|r| r.unwrap()).collect();
        assert!(w.warnings().is_empty(), "{:?}", w.warnings());
        items
    }

    fn find<'a>(items: &'a [ScanItem], rel: &[u8]) -> &'a Entry {
        &items
            .iter()
            .find(|i| i.entry.path == rel)
            .unwrap_or_else(|| panic!("{} not walked", String::from_utf8_lossy(rel)))
            .entry
    }

    #[test]
    fn walk_order_kinds_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let built = build_tree(root);
        let items = walk_all(root);

        assert_eq!(items[0].entry.path, b"");
        assert_eq!(items[0].entry.kind, EntryKind::Dir);
        assert_eq!(items[0].shown(), root);
        for pair in items.windows(2) {
            assert_eq!(
                path_cmp(&pair[0].entry.path, &pair[1].entry.path),
                std::cmp::Ordering::Less,
                "{} then {}",
                pair[0].entry.display_path(),
                pair[1].entry.display_path()
            );
        }
        let paths: Vec<&[u8]> = items.iter().map(|i| i.entry.path.as_slice()).collect();
        // Depth-first: a's child comes before the sibling "a.b".
        let pos = |p: &[u8]| paths.iter().position(|x| *x == p).unwrap();
        assert!(pos(b"a/z") < pos(b"a.b"));
        assert_eq!(items.len(), 22 + usize::from(built.device));

        let e = find(&items, b"a.txt");
        assert_eq!((e.kind, e.size), (EntryKind::File, 13));
        assert!(e.extents.is_empty());
        if built.xattrs {
            assert_eq!(
                e.xattrs,
                vec![
                    (b"user.a".to_vec(), b"".to_vec()),
                    (b"user.reel.test".to_vec(), b"value\0bin".to_vec())
                ]
            );
        }
        assert_eq!(find(&items, b"empty").mode, 0o400);
        assert_eq!(find(&items, b"suid").mode, 0o4755);
        assert_eq!(find(&items, b"sgid").mode, 0o2775);
        assert_eq!(find(&items, b"sticky").mode, 0o1777);
        assert_eq!(find(&items, b"emptydir").kind, EntryKind::Dir);
        assert_eq!(find(&items, b"emptydir").size, 0);
        let l = find(&items, b"d/link");
        assert_eq!(
            (l.kind, &l.target[..], l.size),
            (EntryKind::Symlink, &b"../a.txt"[..], 8)
        );
        let l = find(&items, b"d/dangling");
        assert_eq!(
            (l.kind, &l.target[..]),
            (EntryKind::Symlink, &b"nowhere/at/all"[..])
        );
        assert_eq!(find(&items, b"fifo").kind, EntryKind::Fifo);
        assert_eq!(find(&items, b"fifo").mode, 0o640);
        assert_eq!(find(&items, b"sock").kind, EntryKind::Socket);
        assert_eq!(find(&items, b"caf\xe9").kind, EntryKind::File);
        if built.device {
            let d = find(&items, b"null");
            assert_eq!((d.kind, d.rdev), (EntryKind::CharDev, libc::makedev(1, 3)));
        }

        let first = find(&items, b"d/hard3");
        assert_eq!(first.kind, EntryKind::File);
        for name in [&b"hard1"[..], b"hard2"] {
            let h = find(&items, name);
            assert_eq!(h.kind, EntryKind::HardLink);
            assert_eq!(h.target, b"d/hard3");
            assert_eq!(
                (h.ino, h.size, h.mtime_ns),
                (first.ino, first.size, first.mtime_ns)
            );
        }
        let item = items.iter().find(|i| i.entry.path == b"hard2").unwrap();
        assert_eq!(item.stat.nlink, 3);

        let s = find(&items, b"sparse");
        assert_eq!(s.size, 3 * MIB);
        let f = File::open(root.join("sparse")).unwrap();
        let ranges = data_ranges(&f, s.size).unwrap();
        if ranges != vec![(0, 3 * MIB)] {
            // The filesystem reports holes: exactly the one block we wrote.
            assert_eq!(ranges, vec![(MIB, 4096)]);
        }
    }

    #[test]
    fn data_ranges_edge_cases() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let f = File::create(&p).unwrap();
        assert_eq!(data_ranges(&f, 0).unwrap(), vec![]);
        f.set_len(MIB).unwrap();
        let all_hole = data_ranges(&f, MIB).unwrap();
        assert!(all_hole.is_empty() || all_hole == vec![(0, MIB)]);
        fs::write(&p, vec![7u8; 10_000]).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(data_ranges(&f, 10_000).unwrap(), vec![(0, 10_000)]);
        // Clipped to the size the caller saw.
        assert_eq!(data_ranges(&f, 100).unwrap(), vec![(0, 100)]);
    }

    #[test]
    fn root_must_be_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("file");
        fs::write(&p, b"x").unwrap();
        let err = Walker::new(&p).err().unwrap().to_string();
        assert!(
            err.contains("is not a directory") && err.contains("file"),
            "{err}"
        );
        let err = Walker::new(&tmp.path().join("missing"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing"), "{err}");
        // A volume configured through a symlink is walked as the directory it names.
        fs::create_dir(tmp.path().join("real")).unwrap();
        fs::write(tmp.path().join("real/x"), b"x").unwrap();
        symlink("real", tmp.path().join("via")).unwrap();
        let items = walk_all(&tmp.path().join("via"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].entry.kind, EntryKind::Dir);
    }

    #[test]
    fn vanished_entries_are_skipped_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("dir")).unwrap();
        fs::write(root.join("dir/gone"), b"x").unwrap();
        fs::write(root.join("dir/stays"), b"y").unwrap();
        fs::write(root.join("z"), b"z").unwrap();
        let mut w = Walker::new(root).unwrap();
        assert_eq!(w.next().unwrap().unwrap().entry.path, b"");
        assert_eq!(w.next().unwrap().unwrap().entry.path, b"dir");
        // dir's names were read when it was entered: the removal is seen by the stat.
        fs::remove_file(root.join("dir/gone")).unwrap();
        let rest: Vec<Vec<u8>> = w.by_ref().map(|r| r.unwrap().entry.path).collect();
        assert_eq!(rest, vec![b"dir/stays".to_vec(), b"z".to_vec()]);
        assert!(w.warnings()[0].contains("gone"), "{:?}", w.warnings());

        // The lstat race itself: a frame whose name no longer exists.
        let mut w = Walker::new(root).unwrap();
        w.next();
        w.descend = None;
        w.stack.push(Frame {
            rel: Vec::new(),
            dir: Arc::new(Dir::open(root).unwrap()),
            names: vec![(b"z".to_vec(), None), (b"ghost".to_vec(), None)],
        });
        let rest: Vec<Vec<u8>> = w.by_ref().map(|r| r.unwrap().entry.path).collect();
        assert_eq!(rest, vec![b"z".to_vec()]);
        assert_eq!(w.warnings().len(), 1);
        assert!(w.warnings()[0].contains("ghost"), "{:?}", w.warnings());
    }

    #[test]
    fn unreadable_directory_is_an_error_naming_it() {
        if unsafe { libc::geteuid() } == 0 {
            return; // root reads everything
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("locked")).unwrap();
        fs::write(root.join("after"), b"x").unwrap();
        chmod(&root.join("locked"), 0o000);
        let results: Vec<Result<ScanItem>> = Walker::new(root).unwrap().collect();
        chmod(&root.join("locked"), 0o755);
        let err = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .unwrap()
            .to_string();
        assert!(
            err.contains("locked") && err.contains("cannot read directory"),
            "{err}"
        );
        // The walk goes on after the error.
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Ok(i) if i.entry.path == b"after"))
        );
    }

    #[test]
    fn excluded_entries_are_not_walked_ahead_or_in_turn() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Nine names at the root: enough for the look-ahead (which also opens directories).
        for i in 0..6 {
            fs::write(root.join(format!("f{i}.o")), b"o").unwrap();
        }
        fs::write(root.join("keep.o"), b"k").unwrap();
        fs::create_dir_all(root.join("build/deep")).unwrap();
        fs::write(root.join("build/deep/x"), b"x").unwrap();
        fs::create_dir_all(root.join("c/sub")).unwrap();
        fs::write(root.join("c/CACHEDIR.TAG"), exclude::CACHEDIR_SIGNATURE).unwrap();
        fs::write(root.join("c/sub/y"), b"y").unwrap();
        let patterns = ["*.o", "!keep.o", "build/"].map(String::from);
        let ex = Exclude::new(&patterns, true, true).unwrap();
        let mut w = Walker::with_exclude(root, ex).unwrap();
        let paths: Vec<Vec<u8>> = w.by_ref().map(|r| r.unwrap().entry.path).collect();
        let expected: [&[u8]; 4] = [b"", b"c", b"c/CACHEDIR.TAG", b"keep.o"];
        assert_eq!(paths, expected.map(|p| p.to_vec()));
        assert!(w.warnings().is_empty(), "{:?}", w.warnings());
        // The same tree with nothing excluded walks everything.
        assert_eq!(walk_all(root).len(), 15);
    }

    /// Unmounts on drop, so a failing assertion leaves no mount behind.
    struct Mounted(CString);
    impl Drop for Mounted {
        fn drop(&mut self) {
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }

    #[test]
    fn mount_points_are_not_crossed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("mp")).unwrap();
        fs::write(root.join("zz"), b"after").unwrap();
        let target = CString::new(root.join("mp").as_os_str().as_bytes()).unwrap();
        let (src, fstype) = (c"none", c"tmpfs");
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return; // not root, or no mount permission here: nothing to test
        }
        let _guard = Mounted(target);
        fs::write(root.join("mp/inside"), b"other fs").unwrap();
        let mut w = Walker::new(root).unwrap();
        let paths: Vec<Vec<u8>> = w.by_ref().map(|r| r.unwrap().entry.path).collect();
        assert_eq!(paths, vec![b"".to_vec(), b"mp".to_vec(), b"zz".to_vec()]);
        assert_eq!(w.warnings().len(), 1);
        assert!(w.warnings()[0].contains("mp"), "{:?}", w.warnings());
    }
}
