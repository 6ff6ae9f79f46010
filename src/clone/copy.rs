//! Directory clones: the `reflink` and `copy` clone methods.
//!
//! A directory clone must look to the dump exactly like the volume did at the freeze, so it
//! preserves what a restore preserves, and it is built with the restore's own tools: the tree
//! is walked with [`crate::scan::Walker`] (sorted, one filesystem, hard links recognised, by
//! directory handle), every node is made by [`TreeWriter`] in walk order, and metadata goes on
//! through each node's handle once its content is in place; a directory's metadata goes on once
//! nothing more is made inside it, deepest first, because creating entries changes a
//! directory's mtime.
//!
//! Nodes are created in walk order on the calling thread (cheap, and it keeps hard links
//! simple: a link's target is always created before the link). File *data* is the costly
//! part, so files are queued and copied in parallel (rayon) in batches bounded by count and
//! bytes; a batch finishes before directory metadata is applied. With `Reflink` each file is
//! one `FICLONE` ioctl (copy-on-write, no data read); the first file is cloned alone, so a
//! filesystem that cannot reflink fails at once with a clear error rather than after a batch.
//! With `Copy` only the data ranges are copied (`copy_file_range`, else read/write), so holes
//! stay holes.
//!
//! The clone gets new inode numbers and ctimes, which would make every file look changed to
//! the dump's change detection. So the copy also writes a *statmap*: a manifest of the source
//! entries exactly as the walker saw them (source inode and ctime included), which the dump of
//! the clone uses for change detection. The manifest format insists that a file's extents
//! cover its size, so each file of the statmap carries one placeholder `Extent::Hole(size)`:
//! the statmap holds no content, only stat data.
//!
//! A failed copy (an error, or `check()` saying a signal arrived) removes the partial clone
//! and the statmap: a clone directory that exists is complete.

use std::cell::Cell;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dirfd::{self, Dir};
use crate::error::{Error, IoContext, Result};
use crate::manifest::ManifestWriter;
use crate::scan::{Exclude, Walker, data_ranges, with_what};
use crate::tree_writer::{TreeWriter, is_root};
use crate::types::{Entry, EntryKind, Extent};

/// How file data is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Copy-on-write clone of each file (`FICLONE`): btrfs, xfs with reflink, same filesystem.
    Reflink,
    /// Plain copy of the data ranges; holes are kept.
    Copy,
}

/// What a copy made. `entries` counts every entry walked (the root included), `files` the
/// regular files (not their further hard-link names), `dirs` the directories (the root
/// included), `bytes` the logical size of the files (holes included).
#[derive(Default, Debug, Clone)]
pub struct CopyStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// A batch of file copies runs when it holds this many files...
const BATCH_FILES: usize = 256;
/// ...or this many logical bytes. Bounds open descriptors and the time between `check()`s.
const BATCH_BYTES: u64 = 64 << 20;
/// Buffer of the read/write fallback.
const COPY_BUF: usize = 1 << 20;
/// `FICLONE` = `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Copy the tree at `src` to `dst` (which must not exist; it is created, and so are its
/// missing parents), preserving kinds, hard links, modes (setuid, sticky...), mtimes,
/// xattrs, holes, and owners when run as root. Writes the source's entries to `statmap` (see
/// the module documentation) and calls `check()` between entries, stopping with its error.
/// On any error the partial `dst` and `statmap` are removed before returning.
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    mode: CopyMode,
    statmap: &Path,
    check: &dyn Fn() -> Result<()>,
) -> Result<CopyStats> {
    copy_tree_excluding(src, dst, mode, statmap, check, Exclude::nothing())
}

/// [`copy_tree`], leaving out what the volume excludes: a clone holds what its dump will, and
/// the `nodump` flag, which a copy does not carry, is honoured while it is still on the source.
pub fn copy_tree_excluding(
    src: &Path,
    dst: &Path,
    mode: CopyMode,
    statmap: &Path,
    check: &dyn Fn() -> Result<()>,
    exclude: Exclude,
) -> Result<CopyStats> {
    match fs::symlink_metadata(dst) {
        Ok(_) => {
            return Err(Error::Volume(format!(
                "clone target {} already exists; remove it (or let reel remove the old \
                 clone) before cloning again",
                dst.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dst, with_what("cannot stat clone target", e))),
    }
    if let Some(parent) = dst.parent() {
        crate::fsutil::create_dir_all(parent).at(parent)?;
    }
    // From here on, whatever exists at dst and statmap is ours to remove on failure.
    let result = copy_inner(src, dst, mode, statmap, check, exclude);
    if result.is_err() {
        if let Err(e) = remove_tree(dst) {
            tracing::warn!("cannot remove the partial clone: {e}");
        }
        if let Err(e) = fs::remove_file(statmap)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", statmap.display());
        }
    }
    result
}

/// One file whose node exists and whose data and metadata are still to come.
struct Job {
    /// The source file: its directory's handle and its name there.
    src_dir: std::sync::Arc<Dir>,
    src_name: Vec<u8>,
    src: PathBuf,
    dst: PathBuf,
    out: File,
    entry: Entry,
}

fn copy_inner(
    src: &Path,
    dst: &Path,
    mode: CopyMode,
    statmap: &Path,
    check: &dyn Fn() -> Result<()>,
    exclude: Exclude,
) -> Result<CopyStats> {
    let as_root = is_root();
    let mut walker = Walker::with_exclude(src, exclude)?;
    if let Some(dir) = statmap.parent() {
        walker.spill_links_in(dir);
    }
    let map_file = crate::fsutil::create_file(statmap).at(statmap)?;
    let mut map = ManifestWriter::new(map_file).map_err(|e| in_statmap(statmap, e))?;
    // The root is created here: it must not exist yet (checked above).
    crate::fsutil::create_dir(dst)
        .map_err(|e| Error::io(dst, with_what("cannot create clone", e)))?;
    let mut tree = TreeWriter::open(dst, as_root)?;

    let mut stats = CopyStats::default();
    let mut batch: Vec<Job> = Vec::new();
    let batch_bytes = Cell::new(0u64);
    let run_batch = |batch: &mut Vec<Job>, tree: &mut TreeWriter| -> Result<()> {
        batch
            .par_iter()
            .try_for_each(|job| copy_file(job, mode, as_root))?;
        batch.clear();
        batch_bytes.set(0);
        // Every file made so far is complete: the directories left behind can be finished.
        tree.finish_done()
    };

    for item in walker.by_ref() {
        check()?;
        let item = item?;
        let e = &item.entry;
        map.push(&statmap_entry(e))
            .map_err(|err| in_statmap(statmap, err))?;
        stats.entries += 1;
        if e.kind == EntryKind::Dir {
            tree.dir(e)?;
            stats.dirs += 1;
            continue;
        }
        let (dir, name) = tree.parent_of(&e.path)?;
        match e.kind {
            EntryKind::File => {
                let out = TreeWriter::file(&dir, name, e.size)?;
                stats.files += 1;
                stats.bytes += e.size;
                let job = Job {
                    src: item.shown(),
                    dst: dir.shown_child(name),
                    src_dir: item.dir,
                    src_name: item.name,
                    out,
                    entry: item.entry,
                };
                if mode == CopyMode::Reflink && stats.files == 1 {
                    // Probe: a filesystem without reflink fails here, alone and at once.
                    copy_file(&job, mode, as_root)?;
                } else {
                    batch_bytes.set(batch_bytes.get() + job.entry.size);
                    batch.push(job);
                    if batch.len() >= BATCH_FILES || batch_bytes.get() >= BATCH_BYTES {
                        run_batch(&mut batch, &mut tree)?;
                    }
                }
            }
            // The target's node exists already (walk order); its data may still be queued,
            // which does not matter to a second name of the same inode.
            EntryKind::HardLink => tree.hard_link(&dir, name, &e.target)?,
            _ => TreeWriter::special(&dir, name, e, as_root)?,
        }
    }
    run_batch(&mut batch, &mut tree)?;
    for w in walker.warnings() {
        tracing::warn!("clone of {}: {w}", src.display());
    }
    check()?;
    tree.finish()?;
    let (map_file, _) = map.finish().map_err(|e| in_statmap(statmap, e))?;
    map_file.sync_all().at(statmap)?;
    Ok(stats)
}

/// The ManifestWriter's I/O errors name no file; name the statmap.
fn in_statmap(statmap: &Path, e: Error) -> Error {
    match e {
        Error::Io { source, .. } => Error::io(statmap, with_what("cannot write statmap", source)),
        other => other,
    }
}

/// The source entry as the statmap records it: unchanged, except that a non-empty file gets
/// one placeholder hole covering its size (the manifest format wants extents to add up).
fn statmap_entry(e: &Entry) -> Entry {
    let mut s = e.clone();
    if s.kind == EntryKind::File && s.size > 0 {
        s.extents = vec![Extent::Hole(s.size)];
    }
    s
}

/// Copy one file's data into its new node, then apply its metadata.
fn copy_file(job: &Job, mode: CopyMode, as_root: bool) -> Result<()> {
    // By name in the directory the walk saw; never through a symlink, never blocking on a FIFO.
    let src = job
        .src_dir
        .open_read(&job.src_name)
        .map_err(|e| Error::io(&job.src, with_what("cannot open for the clone", e)))?;
    let md = dirfd::fstat(&src).map_err(|e| Error::io(&job.src, with_what("cannot stat", e)))?;
    if !md.is_file() {
        return Err(Error::Volume(format!(
            "{}: is no longer a regular file; the volume changed while frozen (does every \
             writer honour the freeze?)",
            job.src.display()
        )));
    }
    match mode {
        CopyMode::Reflink => reflink(&src, job)?,
        CopyMode::Copy => copy_data(&src, job)?,
    }
    dirfd::apply_file_meta(&job.out, &job.entry, as_root).map_err(|e| Error::io(&job.dst, e))
}

fn reflink(src: &File, job: &Job) -> Result<()> {
    // create_node sized the file; a clone replaces the content, start from empty.
    job.out
        .set_len(0)
        .map_err(|e| Error::io(&job.dst, with_what("cannot truncate", e)))?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source fd as its argument by value.
    let rc = unsafe { libc::ioctl(job.out.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY) => {
            Err(Error::Volume(format!(
                "reflink is not supported here: cloning {} to {} failed ({e}); reflink clones \
                 need a copy-on-write filesystem (btrfs, or xfs made with reflink=1) holding \
                 both the volume and the spool's clones/ directory. Use the copy method \
                 instead: `reel volume set NAME --clone copy`",
                job.src.display(),
                job.dst.display()
            )))
        }
        _ => Err(Error::io(
            &job.dst,
            with_what("reflink (FICLONE) failed", e),
        )),
    }
}

/// Copy the data ranges of `src` (as of the walk's size) to the same offsets; the rest of
/// the new file stays hole.
fn copy_data(src: &File, job: &Job) -> Result<()> {
    let ranges = data_ranges(src, job.entry.size)
        .map_err(|e| Error::io(&job.src, with_what("cannot find data ranges", e)))?;
    let mut use_cfr = true;
    let mut buf = Vec::new();
    for (off, len) in ranges {
        let mut done = 0u64;
        while done < len {
            let pos = off + done;
            let want = len - done;
            if use_cfr {
                let mut off_in = pos as libc::loff_t;
                let mut off_out = pos as libc::loff_t;
                // SAFETY: both fds are open; the offsets point to live locals.
                let n = unsafe {
                    libc::copy_file_range(
                        src.as_raw_fd(),
                        &mut off_in,
                        job.out.as_raw_fd(),
                        &mut off_out,
                        want.min(1 << 30) as usize,
                        0,
                    )
                };
                if n > 0 {
                    done += n as u64;
                    continue;
                }
                if n == 0 {
                    break; // the source shrank since the walk; keep the hole
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Not across these filesystems / not implemented: plain reads and writes.
                    Some(
                        libc::ENOSYS | libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::EPERM,
                    ) => {
                        use_cfr = false;
                        continue;
                    }
                    _ => return Err(Error::io(&job.dst, with_what("cannot copy data", e))),
                }
            }
            if buf.is_empty() {
                buf = vec![0u8; COPY_BUF];
            }
            let chunk = want.min(COPY_BUF as u64) as usize;
            let n = src
                .read_at(&mut buf[..chunk], pos)
                .map_err(|e| Error::io(&job.src, with_what("cannot read", e)))?;
            if n == 0 {
                break;
            }
            job.out
                .write_all_at(&buf[..n], pos)
                .map_err(|e| Error::io(&job.dst, with_what("cannot write", e)))?;
            done += n as u64;
        }
    }
    Ok(())
}

/// Remove a directory clone made by [`copy_tree`], by handle (a symlink in it is removed, never
/// followed). Directories without write or search permission (a clone keeps the volume's
/// modes) are opened up first. A missing `dst` is not an error.
pub fn remove_tree(dst: &Path) -> Result<()> {
    dirfd::remove_tree(dst).map_err(|e| Error::io(dst, with_what("cannot remove clone", e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestReader;
    use crate::scan::ScanItem;
    use crate::scan::tests::{MIB, build_tree, walk_all};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn ok() -> Result<()> {
        Ok(())
    }

    /// What a clone must reproduce: everything but inode numbers and ctimes.
    fn comparable(mut e: Entry) -> Entry {
        e.ino = 0;
        e.ctime_ns = 0;
        e
    }

    fn assert_same_tree(src: &Path, dst: &Path) -> Vec<ScanItem> {
        let a = walk_all(src);
        let b = walk_all(dst);
        let pa: Vec<_> = a.iter().map(|i| i.entry.display_path()).collect();
        let pb: Vec<_> = b.iter().map(|i| i.entry.display_path()).collect();
        assert_eq!(pa, pb);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                comparable(x.entry.clone()),
                comparable(y.entry.clone()),
                "{}",
                x.entry.display_path()
            );
            if x.entry.kind == EntryKind::File {
                assert_eq!(
                    fs::read(x.shown()).unwrap(),
                    fs::read(y.shown()).unwrap(),
                    "{}",
                    x.entry.display_path()
                );
                let (fa, fb) = (
                    File::open(x.shown()).unwrap(),
                    File::open(y.shown()).unwrap(),
                );
                assert_eq!(
                    data_ranges(&fa, x.entry.size).unwrap(),
                    data_ranges(&fb, y.entry.size).unwrap(),
                    "holes of {}",
                    x.entry.display_path()
                );
            }
        }
        b
    }

    /// build_tree plus deeper nesting and a read-only directory.
    fn rich(src: &Path) {
        fs::create_dir(src).unwrap();
        build_tree(src);
        fs::create_dir_all(src.join("n1/n2/n3")).unwrap();
        fs::write(src.join("n1/n2/n3/leaf"), b"leaf").unwrap();
        fs::write(src.join(OsStr::from_bytes(b"n1/\xff\xfe")), b"bytes").unwrap();
        fs::create_dir(src.join("ro")).unwrap();
        fs::write(src.join("ro/f"), b"read only").unwrap();
        fs::set_permissions(src.join("ro/f"), fs::Permissions::from_mode(0o444)).unwrap();
        fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        // Distinct, old mtimes on directories, so a late directory write would show.
        let old = 1_000_000_000_123_456_789;
        for d in ["n1", "n1/n2", "n1/n2/n3", "d", "ro"] {
            set_mtime(&src.join(d), old);
        }
        set_mtime(src, old + 1);
    }

    fn set_mtime(p: &Path, ns: i64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64);
        let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
        File::open(p).unwrap().set_times(times).unwrap();
    }

    #[test]
    fn copy_preserves_everything_and_writes_the_statmap() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, map) = (
            tmp.path().join("src"),
            tmp.path().join("clones/v/today"),
            tmp.path().join("statmap"),
        );
        rich(&src);
        let stats = copy_tree(&src, &dst, CopyMode::Copy, &map, &ok).unwrap();
        let src_items = walk_all(&src);
        let dst_items = assert_same_tree(&src, &dst);

        let count = |k: EntryKind| src_items.iter().filter(|i| i.entry.kind == k).count() as u64;
        assert_eq!(stats.entries, src_items.len() as u64);
        assert_eq!(stats.files, count(EntryKind::File));
        assert_eq!(stats.dirs, count(EntryKind::Dir));
        let bytes: u64 = src_items
            .iter()
            .filter(|i| i.entry.kind == EntryKind::File)
            .map(|i| i.entry.size)
            .sum();
        assert_eq!(stats.bytes, bytes);
        assert!(bytes >= 3 * MIB);

        let find = |items: &[ScanItem], p: &[u8]| {
            items
                .iter()
                .find(|i| i.entry.path == p)
                .unwrap()
                .entry
                .clone()
        };
        // Hard links are links in the clone, grouped as in the source.
        let hard = find(&dst_items, b"d/hard3");
        for name in ["hard1", "hard2"] {
            assert_eq!(
                fs::symlink_metadata(dst.join(name)).unwrap().ino(),
                hard.ino
            );
        }
        assert_eq!(fs::symlink_metadata(dst.join("hard1")).unwrap().nlink(), 3);
        assert_eq!(find(&dst_items, b"suid").mode, 0o4755);
        assert_eq!(find(&dst_items, b"sticky").mode, 0o1777);
        assert_eq!(find(&dst_items, b"fifo").kind, EntryKind::Fifo);
        assert_eq!(find(&dst_items, b"n1/\xff\xfe").size, 5);
        if is_root() {
            assert_eq!(find(&dst_items, b"a.txt").uid, 1234);
        }
        // Clone and source are distinct inodes.
        assert_ne!(
            find(&dst_items, b"a.txt").ino,
            find(&src_items, b"a.txt").ino
        );

        // The statmap is the source walk, with source inodes and ctimes.
        let reader = ManifestReader::new(File::open(&map).unwrap()).unwrap();
        let recorded: Vec<Entry> = reader.map(|r| r.unwrap()).collect();
        assert_eq!(recorded.len(), src_items.len());
        for (r, s) in recorded.iter().zip(&src_items) {
            let mut want = s.entry.clone();
            if want.kind == EntryKind::File && want.size > 0 {
                want.extents = vec![Extent::Hole(want.size)];
            }
            assert_eq!(r, &want, "{}", s.entry.display_path());
        }

        // A clone can be removed even with read-only directories in it.
        remove_tree(&dst).unwrap();
        assert!(!dst.exists());
        remove_tree(&dst).unwrap();
        assert!(tmp.path().join("clones/v").is_dir());
    }

    #[test]
    fn many_files_go_through_several_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, map) = (
            tmp.path().join("src"),
            tmp.path().join("dst"),
            tmp.path().join("map"),
        );
        fs::create_dir_all(src.join("a/b")).unwrap();
        for i in 0..(BATCH_FILES * 2 + 17) {
            let dir = if i % 3 == 0 { "a/b" } else { "a" };
            let data = format!("file {i} ").repeat(i % 50 + 1);
            fs::write(src.join(format!("{dir}/f{i:04}")), data).unwrap();
        }
        // Bigger than one byte-bounded batch.
        let big: Vec<u8> = (0..(BATCH_BYTES + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(src.join("a/big"), &big).unwrap();
        let stats = copy_tree(&src, &dst, CopyMode::Copy, &map, &ok).unwrap();
        assert_eq!(stats.files, (BATCH_FILES * 2 + 17 + 1) as u64);
        assert_same_tree(&src, &dst);
    }

    #[test]
    fn reflink_works_or_fails_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, map) = (
            tmp.path().join("src"),
            tmp.path().join("dst"),
            tmp.path().join("map"),
        );
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"content").unwrap();
        fs::write(src.join("g"), vec![9u8; 100_000]).unwrap();
        // ext2/3/4 (this machine's /tmp, usually) can never reflink: insist on the error there.
        let ext4 = {
            let cp = std::ffi::CString::new(tmp.path().as_os_str().as_bytes()).unwrap();
            let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::statfs(cp.as_ptr(), &mut sf) };
            rc == 0 && sf.f_type == 0xEF53
        };
        let result = copy_tree(&src, &dst, CopyMode::Reflink, &map, &ok);
        assert!(!(ext4 && result.is_ok()), "reflink succeeded on ext4?");
        match result {
            // btrfs, xfs: a real reflink copy.
            Ok(stats) => {
                assert_eq!(stats.files, 2);
                assert_same_tree(&src, &dst);
            }
            // ext4, tmpfs, overlay: the clear error, and nothing left behind.
            Err(err) => {
                let msg = err.to_string();
                assert!(matches!(err, Error::Volume(_)), "{err:?}");
                assert!(
                    msg.contains("reflink is not supported")
                        && msg.contains("reel volume set NAME --clone copy")
                        && (msg.contains("sub/f") || msg.contains("/g")),
                    "{msg}"
                );
                assert!(!dst.exists());
                assert!(!map.exists());
            }
        }
    }

    #[test]
    fn failing_check_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, map) = (
            tmp.path().join("src"),
            tmp.path().join("clones/dst"),
            tmp.path().join("map"),
        );
        rich(&src);
        let calls = Cell::new(0);
        let check = || {
            calls.set(calls.get() + 1);
            if calls.get() > 5 {
                Err(Error::Interrupted(libc::SIGTERM))
            } else {
                Ok(())
            }
        };
        let err = copy_tree(&src, &dst, CopyMode::Copy, &map, &check).unwrap_err();
        assert!(matches!(err, Error::Interrupted(15)), "{err:?}");
        assert_eq!(calls.get(), 6);
        assert!(!dst.exists());
        assert!(!map.exists());
        // The source is untouched.
        walk_all(&src);
    }

    #[test]
    fn existing_target_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, map) = (
            tmp.path().join("src"),
            tmp.path().join("dst"),
            tmp.path().join("map"),
        );
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("keep"), b"x").unwrap();
        let msg = copy_tree(&src, &dst, CopyMode::Copy, &map, &ok)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("already exists") && msg.contains("dst"),
            "{msg}"
        );
        assert!(dst.join("keep").exists());

        // A missing source names itself, and leaves no target behind.
        let msg = copy_tree(
            &tmp.path().join("nope"),
            &tmp.path().join("dst2"),
            CopyMode::Copy,
            &map,
            &ok,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("nope"), "{msg}");
        assert!(!tmp.path().join("dst2").exists());
    }

    #[test]
    fn remove_tree_opens_up_locked_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("clone");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/etc")).unwrap();
        for d in ["a/b", "a", ""] {
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o000)).unwrap();
        }
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(Path::new("/etc").is_dir());
        // A plain file in the clone's place is removed too.
        fs::write(&root, b"x").unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }
}
