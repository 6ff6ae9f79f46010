//! Walking a volume tree and reading its stat data.
//!
//! The dump merge-joins the walk with the previous manifest, so the walk must yield entries in
//! exactly the manifest order ([`crate::types::path_cmp`]): the root first, then depth-first
//! with siblings sorted by their raw name bytes. Sorting needs each directory's names in memory,
//! but only those: the walker keeps a stack with one sorted name list per open directory, so
//! memory is O(depth × directory width) and never the whole tree. The one structure that grows
//! with the tree is the map of hard-linked inodes, and only files with `nlink > 1` enter it.
//!
//! Names are raw bytes (`OsStrExt`), never assumed to be UTF-8. Every stat is an `lstat`: a
//! symlink is recorded, never followed. The walk stays on the root's filesystem: a mount point
//! inside the volume is recorded as an empty directory with a warning, as BSD dump does.
//!
//! A live tree changes under the walk: a name that vanishes between `readdir` and `lstat` is
//! skipped with a warning. Every other error (a directory we may not read, an I/O error) is
//! returned as an `Err` naming the path, and the walk can go on after it if the caller wishes.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::types::{Entry, EntryKind};

/// One entry found by the walk.
#[derive(Clone, Debug)]
pub struct ScanItem {
    /// The entry with its stat data, xattrs and (for symlinks) target; `extents` is left empty
    /// for the dump to fill. A `HardLink` keeps the stat fields of the inode it names.
    pub entry: Entry,
    /// Where the entry is on disk now (the root joined with `entry.path`).
    pub abs_path: PathBuf,
    /// Device of the filesystem holding the entry.
    pub dev: u64,
    /// Link count at scan time.
    pub nlink: u64,
}

/// One open directory on the walk stack.
struct Frame {
    /// The directory's path relative to the root (empty for the root).
    rel: Vec<u8>,
    /// Child names not yet yielded, sorted descending so that `pop` gives the smallest.
    names: Vec<Vec<u8>>,
}

/// A depth-first, name-sorted walk of one volume tree; see the module documentation.
pub struct Walker {
    root: PathBuf,
    root_dev: u64,
    /// The root's item, until it has been yielded.
    first: Option<ScanItem>,
    /// A directory just yielded whose children are to be read before the next item.
    descend: Option<Vec<u8>>,
    stack: Vec<Frame>,
    /// (dev, ino) of regular files with nlink > 1 -> the first path yielded for them.
    links: HashMap<(u64, u64), Vec<u8>>,
    warnings: Vec<String>,
}

impl Walker {
    /// Start a walk of `root`, which must be a directory. The root is followed if it is a
    /// symlink (a volume may be configured through one); nothing below it is.
    pub fn new(root: &Path) -> Result<Walker> {
        let md = fs::metadata(root).at(root)?;
        if !md.is_dir() {
            return Err(Error::usage(format!(
                "volume path {} is not a directory; give the directory to back up",
                root.display()
            )));
        }
        let mut entry = entry_from_metadata(b"", &md);
        // The l*xattr calls would read a symlinked root's own xattrs, not the directory's.
        let real_root = fs::canonicalize(root).at(root)?;
        entry.xattrs = read_xattrs(&real_root)?;
        let first = ScanItem {
            entry,
            abs_path: root.to_path_buf(),
            dev: md.dev(),
            nlink: md.nlink(),
        };
        Ok(Walker {
            root: root.to_path_buf(),
            root_dev: md.dev(),
            first: Some(first),
            descend: None,
            stack: Vec::new(),
            links: HashMap::new(),
            warnings: Vec::new(),
        })
    }

    /// Things the walk noticed but did not fail on (vanished entries, mount points skipped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn abs(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// Read and sort one directory's names and push them as a new frame.
    fn open_dir(&mut self, rel: Vec<u8>) -> Result<()> {
        let abs = self.abs(&rel);
        let rd = match fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warnings.push(format!(
                    "{}: directory vanished during the scan; recorded without its contents",
                    abs.display()
                ));
                return Ok(());
            }
            Err(e) => return Err(Error::io(&abs, with_what("cannot read directory", e))),
        };
        let mut names = Vec::new();
        for de in rd {
            let de = de.map_err(|e| Error::io(&abs, with_what("cannot read directory", e)))?;
            names.push(de.file_name().as_bytes().to_vec());
        }
        // Descending, so that pop() yields the names in ascending byte order.
        names.sort_unstable_by(|a, b| b.cmp(a));
        self.stack.push(Frame { rel, names });
        Ok(())
    }

    /// Stat one child and build its item; `Ok(None)` if it vanished.
    fn visit(&mut self, rel: Vec<u8>) -> Result<Option<ScanItem>> {
        let abs = self.abs(&rel);
        let md = match fs::symlink_metadata(&abs) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(&abs);
                return Ok(None);
            }
            Err(e) => return Err(Error::io(&abs, with_what("cannot stat", e))),
        };
        let mut entry = entry_from_metadata(&rel, &md);
        entry.xattrs = match read_xattrs(&abs) {
            Ok(x) => x,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                self.vanished(&abs);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match entry.kind {
            EntryKind::Symlink => match fs::read_link(&abs) {
                Ok(t) => {
                    entry.target = t.as_os_str().as_bytes().to_vec();
                    entry.size = entry.target.len() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.vanished(&abs);
                    return Ok(None);
                }
                Err(e) => return Err(Error::io(&abs, with_what("cannot read symlink", e))),
            },
            EntryKind::Dir if md.dev() != self.root_dev => {
                // A mount point: record the directory itself, not what is mounted on it.
                self.warnings.push(format!(
                    "{}: another filesystem is mounted here; recorded as an empty directory",
                    abs.display()
                ));
            }
            EntryKind::Dir => self.descend = Some(rel.clone()),
            EntryKind::File if md.nlink() > 1 => {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key) {
                    entry.kind = EntryKind::HardLink;
                    entry.target = first.clone();
                } else {
                    self.links.insert(key, rel.clone());
                }
            }
            _ => {}
        }
        Ok(Some(ScanItem {
            entry,
            abs_path: abs,
            dev: md.dev(),
            nlink: md.nlink(),
        }))
    }

    fn vanished(&mut self, abs: &Path) {
        self.warnings.push(format!(
            "{}: vanished during the scan; skipped",
            abs.display()
        ));
    }
}

impl Iterator for Walker {
    type Item = Result<ScanItem>;

    fn next(&mut self) -> Option<Result<ScanItem>> {
        if let Some(first) = self.first.take() {
            self.descend = Some(Vec::new());
            return Some(Ok(first));
        }
        loop {
            if let Some(rel) = self.descend.take()
                && let Err(e) = self.open_dir(rel)
            {
                return Some(Err(e));
            }
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.pop() else {
                self.stack.pop();
                continue;
            };
            let mut rel = Vec::with_capacity(frame.rel.len() + 1 + name.len());
            if !frame.rel.is_empty() {
                rel.extend_from_slice(&frame.rel);
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            match self.visit(rel) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Wrap an OS error with what we were doing, keeping its kind. `ENOSPC` is kept as it is so
/// that [`Error::is_disk_full`] still recognises it.
pub(crate) fn with_what(what: &str, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return e;
    }
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A path as a C string for the l*xattr calls.
fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })
}

/// Call an l*xattr-style function that fills a buffer, growing the buffer on `ERANGE`.
/// `Ok(None)` means `ENODATA` (the attribute went away).
fn fill_buffer(mut call: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Option<Vec<u8>>> {
    loop {
        let need = call(std::ptr::null_mut(), 0);
        if need < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; need as usize];
        if buf.is_empty() {
            return Ok(Some(buf));
        }
        let got = call(buf.as_mut_ptr(), buf.len());
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue, // it grew in between: ask again
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

/// The extended attributes of `path` itself (never following a symlink), sorted by name.
/// A filesystem without xattr support gives an empty list.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let cp = c_path(path)?;
    let list = fill_buffer(|buf, len| {
        // SAFETY: cp is a valid C string; buf is null with len 0, or valid for len bytes.
        unsafe { libc::llistxattr(cp.as_ptr(), buf.cast(), len) }
    });
    let list = match list {
        Ok(l) => l.unwrap_or_default(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                path,
                with_what("cannot list extended attributes", e),
            ));
        }
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // The kernel's list holds NUL-free names, so this cannot fail.
        let cname = CString::new(name).map_err(|_| {
            Error::corrupt(format!(
                "{}: the kernel listed an xattr name with a NUL byte",
                path.display()
            ))
        })?;
        let value = fill_buffer(|buf, len| {
            // SAFETY: as above.
            unsafe { libc::lgetxattr(cp.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        })
        .map_err(|e| {
            let what = format!(
                "cannot read extended attribute {}",
                String::from_utf8_lossy(name)
            );
            Error::io(path, with_what(&what, e))
        })?;
        // None: removed between list and get; a live tree changes.
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
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

/// Seconds and nanoseconds of a stat time as epoch nanoseconds (saturating).
pub(crate) fn time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// An entry from `lstat` data: kind, mode (`& 0o7777`), owner, times, inode, and the size
/// (files and symlinks only: a directory's size is a filesystem detail) and rdev (devices
/// only). Xattrs, symlink target and extents are left for the caller.
pub fn entry_from_metadata(rel: &[u8], md: &Metadata) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDev
    } else if ft.is_block_device() {
        EntryKind::BlockDev
    } else {
        EntryKind::Socket
    };
    Entry {
        path: rel.to_vec(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: time_ns(md.mtime(), md.mtime_nsec()),
        ctime_ns: time_ns(md.ctime(), md.ctime_nsec()),
        ino: md.ino(),
        size: match kind {
            EntryKind::File | EntryKind::Symlink => md.size(),
            _ => 0,
        },
        rdev: match kind {
            EntryKind::CharDev | EntryKind::BlockDev => md.rdev(),
            _ => 0,
        },
        ..Entry::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::path_cmp;
    use std::io::Write;
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
        assert_eq!(items[0].abs_path, root);
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
        assert_eq!(item.nlink, 3);

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
        // dir's names are read on the next call, so this removal is seen by readdir itself.
        fs::remove_file(root.join("dir/gone")).unwrap();
        let rest: Vec<Vec<u8>> = w.by_ref().map(|r| r.unwrap().entry.path).collect();
        assert_eq!(rest, vec![b"dir/stays".to_vec(), b"z".to_vec()]);

        // The lstat race itself: a frame whose name no longer exists.
        let mut w = Walker::new(root).unwrap();
        w.next();
        w.descend = None;
        w.stack.push(Frame {
            rel: Vec::new(),
            names: vec![b"z".to_vec(), b"ghost".to_vec()],
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
