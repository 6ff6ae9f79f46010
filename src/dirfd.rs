//! Directories by handle: the one layer through which reel touches a tree it walks or builds.
//!
//! A path names a file only until someone renames, replaces or symlinks one of its components,
//! and a volume or a restore target is a tree other users write while reel works. So nothing
//! below a root is ever resolved from the root again: a [`Dir`] is an open directory, and every
//! call on it names one entry *in* it (`openat`, `fstatat`, `mkdirat`, `linkat`, ... through
//! `rustix`) and never follows a symlink there (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`). A
//! subdirectory is entered by opening it from its parent's handle, so a directory swapped for a
//! symlink is refused (`ELOOP`/`ENOTDIR`), and a directory renamed elsewhere is still the one
//! reel opened. Path length stops mattering: each call resolves one name, so a tree deeper than
//! `PATH_MAX` walks and restores like any other.
//!
//! Names are single components: [`check_name`] refuses an empty name, `.`, `..` and anything
//! holding `/` or NUL, so a name cannot climb out of its directory whatever a manifest says.
//!
//! Metadata goes on through a handle on the node itself, never through a name: a file through
//! the descriptor that created it, a directory through its [`Dir`], and a symlink, FIFO or device
//! through a [`Node`] (an `O_PATH` descriptor, which opens nothing and pins the inode).
//! Calls that take no descriptor of that kind (extended attributes and modes on an `O_PATH`
//! node, extended attributes of an entry not opened) go through `/proc/self/fd/N`: a magic link
//! that resolves to exactly the inode behind descriptor N, with no name on the way that anybody
//! else can change.
//!
//! `rustix` rather than `cap-std`: cap-std's `Dir` offers the same confinement but hides the
//! calls that make a walk cheap (`getdents64` into one buffer with the inode numbers, `fstatat`
//! without building a `Metadata`, the `*xattr` family, `O_PATH`), and reel needs every one of
//! them on every entry.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir, Timespec, Timestamps};

use crate::types::{Entry, EntryKind};

/// Stat data of one entry, as the kernel gave it (`st_mode` with its type bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// The `nodump` file flag (`chattr +d`, `STATX_ATTR_NODUMP`), as `Dir::stat` reads it;
    /// false where the stat data came from `fstat` or the filesystem has no such flag.
    pub nodump: bool,
}

impl Stat {
    // The field types of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn from_raw(s: &rustix::fs::Stat) -> Stat {
        Stat {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            rdev: s.st_rdev as u64,
            size: s.st_size.max(0) as u64,
            blocks: s.st_blocks.max(0) as u64,
            mtime_ns: time_ns(s.st_mtime as i64, s.st_mtime_nsec as i64),
            ctime_ns: time_ns(s.st_ctime as i64, s.st_ctime_nsec as i64),
            nodump: false,
        }
    }

    /// Stat data from `statx`, with the `nodump` flag from its attributes.
    pub fn from_statx(s: &rustix::fs::Statx) -> Stat {
        use rustix::fs::StatxAttributes;
        Stat {
            dev: rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            mode: u32::from(s.stx_mode),
            nlink: u64::from(s.stx_nlink),
            uid: s.stx_uid,
            gid: s.stx_gid,
            rdev: rustix::fs::makedev(s.stx_rdev_major, s.stx_rdev_minor),
            size: s.stx_size,
            blocks: s.stx_blocks,
            mtime_ns: time_ns(s.stx_mtime.tv_sec, i64::from(s.stx_mtime.tv_nsec)),
            ctime_ns: time_ns(s.stx_ctime.tv_sec, i64::from(s.stx_ctime.tv_nsec)),
            nodump: s.stx_attributes.contains(StatxAttributes::NODUMP),
        }
    }

    pub fn kind(&self) -> EntryKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFIFO => EntryKind::Fifo,
            libc::S_IFCHR => EntryKind::CharDev,
            libc::S_IFBLK => EntryKind::BlockDev,
            _ => EntryKind::Socket,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// The same inode (device and inode number).
    pub fn same_inode(&self, other: &Stat) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }

    /// Does the file have holes worth keeping (fewer blocks than its size needs)?
    pub fn is_sparse(&self) -> bool {
        self.blocks.saturating_mul(512) < self.size
    }

    /// What a content read must see unchanged before and after: size, mtime and ctime.
    pub fn content_key(&self) -> (u64, i64, i64) {
        (self.size, self.mtime_ns, self.ctime_ns)
    }
}

/// Seconds and nanoseconds of a stat time as epoch nanoseconds (saturating).
pub(crate) fn time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// An entry from stat data: kind, mode (`& 0o7777`), owner, times, inode, and the size (files
/// and symlinks only: a directory's size is a filesystem detail) and rdev (devices only).
/// Xattrs, symlink target and extents are left for the caller.
pub fn entry_from_stat(rel: &[u8], st: &Stat) -> Entry {
    let kind = st.kind();
    Entry {
        path: rel.to_vec(),
        kind,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtime_ns: st.mtime_ns,
        ctime_ns: st.ctime_ns,
        ino: st.ino,
        size: match kind {
            EntryKind::File | EntryKind::Symlink => st.size,
            _ => 0,
        },
        rdev: match kind {
            EntryKind::CharDev | EntryKind::BlockDev => st.rdev,
            _ => 0,
        },
        ..Entry::default()
    }
}

/// Refuse anything that is not one plain name: empty, `.`, `..`, or holding `/` or NUL.
pub fn check_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "'{}' is not a single file name; refusing it",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

fn cname(name: &[u8]) -> io::Result<CString> {
    check_name(name)?;
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `/proc/self/fd/N`, or `/proc/self/fd/N/NAME`: see the module documentation.
fn proc_path(fd: BorrowedFd<'_>, name: Option<&[u8]>) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(name) = name {
        check_name(name)?;
        p.push(b'/');
        p.extend_from_slice(name);
    }
    CString::new(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Open flags of a directory reel enters: read, no symlink, not inherited by hooks.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// An open directory: see the module documentation.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where the directory was when it was opened, for messages only: nothing is resolved
    /// through it.
    shown: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Open a directory an admin named (a volume's path, a restore target). Symlinks in this
    /// path are followed: it is the admin's word, not something found in a tree.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            shown: path.to_path_buf(),
        })
    }

    /// Where this directory was when opened, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `name` in this directory, for messages (the directory itself when `name` is empty).
    pub fn shown_child(&self, name: &[u8]) -> PathBuf {
        if name.is_empty() {
            self.shown.clone()
        } else {
            self.shown.join(std::ffi::OsStr::from_bytes(name))
        }
    }

    /// Enter subdirectory `name`; `ELOOP` or `ENOTDIR` if it is a symlink or no directory.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let fd = rustix::fs::openat(
            &self.fd,
            cname(name)?.as_c_str(),
            dir_flags(),
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            shown: self.shown_child(name),
        })
    }

    /// Enter the directory `rel` below this one (`a/b/c`, no `.`/`..`, no symlink on the way).
    /// One `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it
    /// (5.6+) and the path fits in one call (`PATH_MAX`), one `openat` a component otherwise;
    /// either way nothing outside is reachable.
    pub fn open_dir_beneath(&self, rel: &[u8]) -> io::Result<Dir> {
        for part in rel.split(|&b| b == b'/') {
            check_name(part)?;
        }
        let how = rustix::fs::ResolveFlags::BENEATH
            | rustix::fs::ResolveFlags::NO_SYMLINKS
            | rustix::fs::ResolveFlags::NO_MAGICLINKS
            | rustix::fs::ResolveFlags::NO_XDEV;
        let path = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match rustix::fs::openat2(&self.fd, path.as_c_str(), dir_flags(), Mode::empty(), how) {
            Ok(fd) => Ok(Dir {
                fd,
                shown: self.shown_child(rel),
            }),
            Err(e)
                if e == rustix::io::Errno::NOSYS
                    || e == rustix::io::Errno::PERM
                    || e == rustix::io::Errno::NAMETOOLONG =>
            {
                // No openat2 (or a seccomp filter refusing it), or a path longer than the
                // kernel takes in one call: a component at a time.
                let mut parts = rel.split(|&b| b == b'/');
                let first = parts.next().unwrap_or_default();
                let mut dir = self.open_dir(first)?;
                for part in parts {
                    dir = dir.open_dir(part)?;
                }
                Ok(dir)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The directory's own stat data.
    pub fn stat_self(&self) -> io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::fstat(&self.fd)?))
    }

    /// Stat data of entry `name`, not following a symlink. `statx`, the same one call as
    /// `fstatat`, because its attributes carry the `nodump` flag the walk honours; where the
    /// kernel or a sandbox refuses `statx`, `fstatat` (and no flag).
    pub fn stat(&self, name: &[u8]) -> io::Result<Stat> {
        let name = cname(name)?;
        match rustix::fs::statx(
            &self.fd,
            name.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::BASIC_STATS,
        ) {
            Ok(st) => Ok(Stat::from_statx(&st)),
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                let st = rustix::fs::statat(&self.fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(Stat::from_raw(&st))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this directory (not `.` and `..`), in the order the filesystem gives them.
    pub fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        // A fresh descriptor: getdents moves the file offset, and this handle may be shared.
        let fd = rustix::fs::openat(&self.fd, c".", dir_flags(), Mode::empty())?;
        let mut buf = Vec::with_capacity(32 << 10);
        let mut iter = RawDir::new(fd, buf.spare_capacity_mut());
        let mut names = Vec::new();
        while let Some(entry) = iter.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        Ok(names)
    }

    /// Open file `name` for reading: never through a symlink, never blocking on a FIFO,
    /// never becoming a controlling terminal. The caller checks with `fstat` what it got.
    pub fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            cname(name)?.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// The target of symlink `name` (`EINVAL` if it is no symlink).
    pub fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        let t = rustix::fs::readlinkat(&self.fd, cname(name)?.as_c_str(), Vec::new())?;
        Ok(t.into_bytes())
    }

    /// Extended attributes of entry `name` itself (never a symlink's target), sorted by name.
    /// Most entries have none: that is asked with one `listxattrat` where the kernel has it
    /// (see [`list_xattrs_at`]); only an entry that has some is read through `/proc/self/fd`.
    pub fn xattrs_of(&self, name: &[u8]) -> io::Result<Xattrs> {
        let cn = cname(name)?;
        match list_xattrs_at(self.fd.as_fd(), &cn) {
            Some(Ok(0)) => return Ok(Vec::new()),
            Some(Err(e)) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(Err(e)) => return Err(with_what("cannot list extended attributes", e)),
            Some(Ok(_)) | None => {}
        }
        let p = proc_path(self.fd.as_fd(), Some(name))?;
        read_xattrs(XattrSource::Path(&p))
    }

    /// This directory's own extended attributes.
    pub fn own_xattrs(&self) -> io::Result<Xattrs> {
        read_xattrs(XattrSource::Fd(self.fd.as_fd()))
    }

    // --- building a tree -------------------------------------------------------------------

    /// Make directory `name` (mode 0700 until its metadata goes on).
    pub fn mkdir(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::mkdirat(
            &self.fd,
            cname(name)?.as_c_str(),
            Mode::from_raw_mode(0o700),
        )?;
        Ok(())
    }

    /// Create regular file `name`, which must not exist (`O_EXCL`: never a symlink followed,
    /// never an existing inode truncated), open for writing, mode 0600.
    pub fn create_file(&self, name: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            cname(name)?.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Open existing file `name` for writing, never through a symlink and never blocking on a
    /// FIFO; the caller checks with `fstat` that it is the inode it expects.
    pub fn open_write(&self, name: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            cname(name)?.as_c_str(),
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Make symlink `name` pointing at `target`.
    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        let target =
            CString::new(target).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        rustix::fs::symlinkat(target.as_c_str(), &self.fd, cname(name)?.as_c_str())?;
        Ok(())
    }

    /// Make a FIFO, device node or socket node `name` of `kind`, mode 0600.
    pub fn mknod(&self, name: &[u8], kind: EntryKind, rdev: u64) -> io::Result<()> {
        let (ft, rdev) = match kind {
            EntryKind::Fifo => (rustix::fs::FileType::Fifo, 0),
            EntryKind::CharDev => (rustix::fs::FileType::CharacterDevice, rdev),
            EntryKind::BlockDev => (rustix::fs::FileType::BlockDevice, rdev),
            EntryKind::Socket => (rustix::fs::FileType::Socket, 0),
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        rustix::fs::mknodat(
            &self.fd,
            cname(name)?.as_c_str(),
            ft,
            Mode::from_raw_mode(0o600),
            rdev as rustix::fs::Dev,
        )?;
        Ok(())
    }

    /// Make `name` here a further name of `from_name` in `from` (`linkat` without following:
    /// a symlink at `from_name` is linked itself, never its target).
    pub fn hard_link(&self, from: &Dir, from_name: &[u8], name: &[u8]) -> io::Result<()> {
        rustix::fs::linkat(
            &from.fd,
            cname(from_name)?.as_c_str(),
            &self.fd,
            cname(name)?.as_c_str(),
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Rename `from` to `to`, both in this directory, replacing a non-directory at `to`.
    pub fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        rustix::fs::renameat(
            &self.fd,
            cname(from)?.as_c_str(),
            &self.fd,
            cname(to)?.as_c_str(),
        )?;
        Ok(())
    }

    /// Remove non-directory `name` (a symlink itself, never its target).
    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, cname(name)?.as_c_str(), AtFlags::empty())?;
        Ok(())
    }

    /// Remove empty directory `name`.
    pub fn rmdir(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, cname(name)?.as_c_str(), AtFlags::REMOVEDIR)?;
        Ok(())
    }

    /// Remove `name` and, if it is a directory, everything below it, by handle all the way
    /// down (a symlink is removed, never followed). A directory whose mode denies its owner
    /// access (a copy keeps the volume's modes) is opened up first. Nothing at `name` is not an
    /// error. Depth costs a handle a level, not a path.
    pub fn remove_all(&self, name: &[u8]) -> io::Result<()> {
        match self.unlink(name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if is_dir_error(&e) => {}
            Err(e) => return Err(e),
        }
        let first = match self.open_dir_opened_up(name) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // Directories being emptied: the handle, its name in the one below it on the stack
        // (in `self` for the first), the names not removed yet, and how often it was re-read.
        type Emptying = (Dir, Vec<u8>, Vec<Vec<u8>>, u32);
        let names = first.names()?;
        let mut stack: Vec<Emptying> = vec![(first, name.to_vec(), names, 0)];
        while let Some(top) = stack.last_mut() {
            if let Some(child) = top.2.pop() {
                match top.0.unlink(&child) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) if is_dir_error(&e) => match top.0.open_dir_opened_up(&child) {
                        Ok(sub) => {
                            let names = sub.names()?;
                            stack.push((sub, child, names, 0));
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
                continue;
            }
            let (dir, its_name, _, rereads) = stack.pop().expect("the loop holds a top");
            let parent: &Dir = stack.last().map_or(self, |t| &t.0);
            match parent.rmdir(&its_name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Something was added meanwhile: read the names again, a few times at most.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && rereads < 3 => {
                    let names = dir.names()?;
                    stack.push((dir, its_name, names, rereads + 1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Enter subdirectory `name` to empty it, giving its owner rwx first if its mode denies
    /// them (without root, a directory without read or write permission cannot be emptied).
    fn open_dir_opened_up(&self, name: &[u8]) -> io::Result<Dir> {
        let dir = match self.open_dir(name) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let node = self.open_node(name)?;
                let mode = node.stat()?.mode;
                rustix::fs::chmod(
                    proc_path(node.0.as_fd(), None)?.as_c_str(),
                    Mode::from_raw_mode((mode | 0o700) & 0o7777),
                )?;
                self.open_dir(name)?
            }
            Err(e) => return Err(e),
        };
        let mode = dir.stat_self()?.mode;
        if mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode((mode | 0o700) & 0o7777))?;
        }
        Ok(dir)
    }

    /// An `O_PATH` handle on entry `name` itself (symlinks included): opens nothing (a FIFO
    /// does not block, a device is not touched) and pins the inode for [`Node`]'s calls.
    pub fn open_node(&self, name: &[u8]) -> io::Result<Node> {
        let fd = rustix::fs::openat(
            &self.fd,
            cname(name)?.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Node(fd))
    }

    /// Apply `entry`'s metadata to this directory (see [`apply_meta`]).
    pub fn apply_meta(&self, entry: &Entry, as_root: bool) -> io::Result<()> {
        apply_meta(Target::Fd(self.fd.as_fd()), entry, as_root)
    }
}

/// Remove the tree at `path` (a path an admin or reel itself chose, like a clone or a staging
/// area), by handle from its parent down: see [`Dir::remove_all`]. Nothing there is not an
/// error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a path to a removable directory",
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    match Dir::open(parent) {
        Ok(d) => d.remove_all(name.as_bytes()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `unlink` on a directory fails with `EISDIR` (Linux) or `EPERM` (POSIX).
fn is_dir_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM))
}

/// An `O_PATH` handle on one node: see [`Dir::open_node`].
#[derive(Debug)]
pub struct Node(OwnedFd);

impl Node {
    pub fn stat(&self) -> io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::fstat(&self.0)?))
    }

    /// The target of this node if it is a symlink.
    pub fn read_link(&self) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.0, c"", Vec::new())?.into_bytes())
    }

    /// Apply `entry`'s metadata to this node (see [`apply_meta`]).
    pub fn apply_meta(&self, entry: &Entry, as_root: bool) -> io::Result<()> {
        apply_meta(Target::Path(self.0.as_fd()), entry, as_root)
    }
}

/// Stat data of an open file.
pub fn fstat(file: &File) -> io::Result<Stat> {
    Ok(Stat::from_raw(&rustix::fs::fstat(file)?))
}

/// Apply `entry`'s metadata to an open regular file (the descriptor that wrote it).
pub fn apply_file_meta(file: &File, entry: &Entry, as_root: bool) -> io::Result<()> {
    apply_meta(Target::Fd(file.as_fd()), entry, as_root)
}

/// What metadata goes on: a descriptor that allows `f*` calls, or an `O_PATH` descriptor,
/// reached through its `/proc/self/fd` magic link.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    Path(BorrowedFd<'a>),
}

/// Apply `entry`'s metadata in the one order that works: extended attributes first (while the
/// node is still writable by us; only `user.*` unless `as_root`, since a normal user may not set
/// the others), then the owner (root only: a normal user cannot give files away), then the mode
/// with setuid/setgid/sticky (after chown, which clears setuid and setgid; never on a symlink),
/// then the times. Errors name the step; the caller adds the path.
fn apply_meta(target: Target<'_>, entry: &Entry, as_root: bool) -> io::Result<()> {
    let step = |what: &'static str| move |e: rustix::io::Errno| with_what(what, e.into());
    let proc = match target {
        Target::Path(fd) => Some(proc_path(fd, None)?),
        Target::Fd(_) => None,
    };
    for (name, value) in &entry.xattrs {
        if !as_root && !name.starts_with(b"user.") {
            continue;
        }
        let shown = String::from_utf8_lossy(name);
        let n = CString::new(name.as_slice()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("xattr name {shown:?} contains a NUL byte"),
            )
        })?;
        let r = match (target, &proc) {
            (Target::Fd(fd), _) => {
                rustix::fs::fsetxattr(fd, n.as_c_str(), value, rustix::fs::XattrFlags::empty())
            }
            (Target::Path(_), Some(p)) => rustix::fs::setxattr(
                p.as_c_str(),
                n.as_c_str(),
                value,
                rustix::fs::XattrFlags::empty(),
            ),
            (Target::Path(_), None) => unreachable!("a path target has its proc path"),
        };
        r.map_err(|e| with_what(&format!("cannot set extended attribute {shown}"), e.into()))?;
    }
    let fd = match target {
        Target::Fd(fd) | Target::Path(fd) => fd,
    };
    if as_root {
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(entry.uid)),
            Some(rustix::fs::Gid::from_raw(entry.gid)),
        );
        match target {
            Target::Fd(fd) => rustix::fs::fchown(fd, uid, gid),
            Target::Path(fd) => rustix::fs::chownat(
                fd,
                c"",
                uid,
                gid,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            ),
        }
        .map_err(step("cannot set owner"))?;
    }
    if entry.kind != EntryKind::Symlink {
        let mode = Mode::from_raw_mode(entry.mode & 0o7777);
        match (target, &proc) {
            (Target::Fd(fd), _) => rustix::fs::fchmod(fd, mode),
            (Target::Path(_), Some(p)) => rustix::fs::chmod(p.as_c_str(), mode),
            (Target::Path(_), None) => unreachable!("a path target has its proc path"),
        }
        .map_err(step("cannot set mode"))?;
    }
    let ts = Timespec {
        tv_sec: entry.mtime_ns.div_euclid(1_000_000_000) as _,
        tv_nsec: entry.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    match (target, &proc) {
        (Target::Fd(_), _) => rustix::fs::futimens(fd, &times),
        // Following the magic link lands on the node itself, a symlink included.
        (Target::Path(_), Some(p)) => {
            rustix::fs::utimensat(rustix::fs::CWD, p.as_c_str(), &times, AtFlags::empty())
        }
        (Target::Path(_), None) => unreachable!("a path target has its proc path"),
    }
    .map_err(step("cannot set times"))
}

/// The size of the xattr name list of `name` in `dir` (not following a symlink), with one
/// `listxattrat(2)` (Linux 6.13): `None` where the kernel lacks it, and then never asked again.
/// The alternative, `llistxattr` on `/proc/self/fd/N/NAME`, walks procfs first, and for most
/// entries (none have xattrs) that walk was a sixth of a cold walk's time. rustix and libc have
/// no wrapper for it yet; the number is the same on every architecture, as for every system
/// call added since 5.x.
fn list_xattrs_at(dir: BorrowedFd<'_>, name: &CStr) -> Option<io::Result<usize>> {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        const SYS_LISTXATTRAT: libc::c_long = 465;
        static MISSING: AtomicBool = AtomicBool::new(false);
        if MISSING.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: a valid directory descriptor, a NUL-terminated name, and a null list with
        // size 0: the kernel only returns the size the list would need.
        let r = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                std::ptr::null_mut::<libc::c_char>(),
                0usize,
            )
        };
        if r >= 0 {
            return Some(Ok(r as usize));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            MISSING.store(true, Ordering::Relaxed);
            return None;
        }
        Some(Err(e))
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = (dir, name);
        None
    }
}

/// Wrap an OS error with what we were doing, keeping its kind. `ENOSPC` is kept as it is so
/// that [`crate::Error::is_disk_full`] still recognises it.
pub(crate) fn with_what(what: &str, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return e;
    }
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Extended attributes, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Where extended attributes are read: a descriptor, or a path whose last component is not
/// followed.
#[derive(Clone, Copy)]
enum XattrSource<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CStr),
}

/// Read the extended attributes of a file that is open, sorted by name.
pub fn file_xattrs(file: &File) -> io::Result<Xattrs> {
    read_xattrs(XattrSource::Fd(file.as_fd()))
}

/// Read every extended attribute the caller may see. A filesystem without xattr support gives
/// an empty list; an attribute removed between list and get is left out (a live tree changes).
fn read_xattrs(src: XattrSource<'_>) -> io::Result<Xattrs> {
    let list = fill(
        || match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr_query(fd),
            XattrSource::Path(p) => rustix::fs::llistxattr_query(p),
        },
        |buf: &mut [u8]| match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XattrSource::Path(p) => rustix::fs::llistxattr(p, buf),
        },
    );
    let list = match list {
        Ok(l) => l.unwrap_or_default(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(with_what("cannot list extended attributes", e)),
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let value = fill(
            || match src {
                XattrSource::Fd(fd) => rustix::fs::fgetxattr_query(fd, cn.as_c_str()),
                XattrSource::Path(p) => rustix::fs::lgetxattr_query(p, cn.as_c_str()),
            },
            |buf: &mut [u8]| match src {
                XattrSource::Fd(fd) => rustix::fs::fgetxattr(fd, cn.as_c_str(), buf),
                XattrSource::Path(p) => rustix::fs::lgetxattr(p, cn.as_c_str(), buf),
            },
        )
        .map_err(|e| {
            let what = format!(
                "cannot read extended attribute {}",
                String::from_utf8_lossy(name)
            );
            with_what(&what, e)
        })?;
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Read an xattr list or value: ask its size, then fill a buffer of that size, and ask again
/// when it grew in between (`ERANGE`). `Ok(None)`: `ENODATA` (the attribute went away).
fn fill(
    mut query: impl FnMut() -> rustix::io::Result<usize>,
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        let need = match query() {
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::NODATA => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if need == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = vec![0u8; need];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e == rustix::io::Errno::RANGE => continue,
            Err(e) if e == rustix::io::Errno::NODATA => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Raise this process's soft limit on open descriptors to its hard limit, once. A walk holds
/// a directory handle per level of depth and per directory with entries in flight, and a
/// restore holds each file of a window open from its creation to its metadata; the usual soft
/// limit of 1024 is a default for programs that open a few files, not a ceiling. Returns the
/// soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current != lim.maximum {
            let want = rustix::process::Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            };
            if setrlimit(Resource::Nofile, want).is_ok() {
                lim = want;
            }
        }
        lim.current.unwrap_or(u64::MAX)
    })
}

/// How many descriptors one pipeline stage may hold: half the limit, so a restore batch's
/// directories and open files (or the dump's two windows of directory handles) fit beside the
/// packs, the catalog and the current path's directories with room to spare.
pub fn fd_budget() -> usize {
    (raise_fd_limit() / 2).clamp(64, 1 << 20) as usize
}
