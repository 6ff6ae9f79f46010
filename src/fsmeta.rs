//! The restore side of the filesystem: creating nodes and applying metadata safely.
//!
//! A manifest is data from disk or tape, so its paths are not trusted: [`safe_join`] refuses
//! anything that could leave the restore root (`..`, absolute paths, empty components, NUL),
//! and [`ParentGuard`] checks that no ancestor of a path is a symlink, so a symlink restored
//! (or planted) earlier cannot redirect later writes outside the root. Nodes are created
//! without following what is already there: an existing symlink, FIFO or file at a path is
//! unlinked and replaced, never opened or written through. The check-then-create sequence
//! assumes nobody else is changing the restore target while we work; it protects against
//! hostile manifests, not against a concurrent hostile user in the target tree.
//!
//! Metadata goes on in the one order that works: extended attributes first (while the node
//! is still writable by us), then the owner (root only: a normal user cannot give files away,
//! and the attempt would only fail), then the mode (after chown, because chown clears setuid
//! and setgid), then times. Directory times go last of all, deepest first, through
//! [`set_dir_times`], because creating anything inside a directory changes its mtime.
//!
//! Errors keep the OS error's kind and name the path and the step that failed.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::scan::with_what;
use crate::types::{Entry, EntryKind};

/// Are we running as root (effective uid 0)? Decides whether owners are restored and which
/// xattr namespaces are attempted.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Check a manifest path: empty (the root), or `/`-separated non-empty components that are
/// not `.` or `..`, with no NUL and no leading `/`.
fn check_rel(rel: &[u8]) -> Result<()> {
    if rel.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| {
        Error::corrupt(format!(
            "manifest path {:?} {why}; refusing to restore it (the manifest is damaged or \
             hostile)",
            String::from_utf8_lossy(rel)
        ))
    };
    if rel.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    if rel[0] == b'/' {
        return Err(bad("is absolute"));
    }
    for c in rel.split(|&b| b == b'/') {
        match c {
            b"" => return Err(bad("has an empty component")),
            b"." | b".." => return Err(bad("has a '.' or '..' component")),
            _ => {}
        }
    }
    Ok(())
}

/// Join a manifest path under the restore root, refusing any path that could escape it
/// (`Error::Corrupt`). The empty path is the root itself.
pub fn safe_join(root: &Path, rel: &[u8]) -> Result<PathBuf> {
    check_rel(rel)?;
    if rel.is_empty() {
        Ok(root.to_path_buf())
    } else {
        Ok(root.join(OsStr::from_bytes(rel)))
    }
}

/// Verifies that every ancestor of a path below the root is a real directory (not a
/// symlink), remembering the last verified directory so that consecutive entries of one
/// directory cost no system call.
pub struct ParentGuard {
    root: PathBuf,
    /// A relative directory path whose every prefix has been verified (empty: none yet).
    verified: Vec<u8>,
}

impl ParentGuard {
    pub fn new(root: &Path) -> Self {
        ParentGuard {
            root: root.to_path_buf(),
            verified: Vec::new(),
        }
    }

    /// Check the ancestors of `rel` (not `rel` itself): each must exist and be a directory
    /// according to `lstat`. The root itself is trusted.
    pub fn check(&mut self, rel: &[u8]) -> Result<()> {
        check_rel(rel)?;
        let parent = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => &rel[..i],
            None => return Ok(()),
        };
        // Components shared with the verified path need no new lstat.
        let mut shared = 0;
        for (a, b) in parent
            .split(|&b| b == b'/')
            .zip(self.verified.split(|&b| b == b'/'))
        {
            // An empty `verified` splits into one empty component, which matches nothing.
            if a != b {
                break;
            }
            shared += 1;
        }
        let mut abs = self.root.clone();
        for (i, comp) in parent.split(|&b| b == b'/').enumerate() {
            abs.push(OsStr::from_bytes(comp));
            if i < shared {
                continue;
            }
            let md = fs::symlink_metadata(&abs)
                .map_err(|e| Error::io(&abs, with_what("cannot check parent directory", e)))?;
            if !md.is_dir() {
                let what = if md.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                };
                return Err(Error::io(
                    &abs,
                    io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!(
                            "is {what}, so {} cannot be restored below it safely; remove it \
                             or restore into an empty directory",
                            String::from_utf8_lossy(rel)
                        ),
                    ),
                ));
            }
        }
        self.verified = parent.to_vec();
        Ok(())
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })
}

/// Make room at `path` for a new non-directory node: remove whatever is there without
/// following it. An existing directory is removed only if it is empty.
fn clear_path(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, with_what("cannot stat", e))),
        Ok(md) if md.is_dir() => fs::remove_dir(path).map_err(|e| {
            Error::io(
                path,
                with_what("a directory is in the way and cannot be removed", e),
            )
        }),
        Ok(_) => fs::remove_file(path)
            .map_err(|e| Error::io(path, with_what("cannot remove the existing entry", e))),
    }
}

/// Create the node for `entry` at `path`, whose parent exists (see [`ParentGuard`]). For a
/// regular file the new file is returned, open for writing and already `entry.size` long
/// (all hole), for the caller to write the data into; mode 0600 until [`apply_metadata`].
/// Whatever non-directory is at `path` already is replaced, never followed.
pub fn create_node(root: &Path, path: &Path, entry: &Entry) -> Result<Option<File>> {
    match entry.kind {
        EntryKind::Dir => {
            match fs::symlink_metadata(path) {
                Ok(md) if md.is_dir() => return Ok(None),
                Ok(_) => clear_path(path)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, with_what("cannot stat", e))),
            }
            fs::create_dir(path)
                .map_err(|e| Error::io(path, with_what("cannot create directory", e)))?;
            Ok(None)
        }
        EntryKind::File => {
            clear_path(path)?;
            // O_EXCL after the unlink: never follows a symlink, never opens a FIFO, never
            // truncates an inode that another name (outside the root?) still shares.
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| Error::io(path, with_what("cannot create file", e)))?;
            file.set_len(entry.size)
                .map_err(|e| Error::io(path, with_what("cannot set file length", e)))?;
            Ok(Some(file))
        }
        EntryKind::Symlink => {
            clear_path(path)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&entry.target), path)
                .map_err(|e| Error::io(path, with_what("cannot create symlink", e)))?;
            Ok(None)
        }
        EntryKind::HardLink => {
            let target = safe_join(root, &entry.target)?;
            // The target's ancestors are checked like any restored path: a symlink restored
            // earlier (`a` -> /etc) must not turn a link to `a/passwd` into a second name,
            // inside the root, of a file outside it. And the target must be a regular file
            // (what the scanner records as hard links): link(2) would happily link a symlink,
            // a FIFO or a device node itself.
            ParentGuard::new(root).check(&entry.target)?;
            match fs::symlink_metadata(&target) {
                Ok(md) if md.is_file() => {}
                Ok(md) => {
                    let kind = if md.is_symlink() {
                        "symlink"
                    } else if md.is_dir() {
                        "directory"
                    } else {
                        "special file"
                    };
                    return Err(Error::corrupt(format!(
                        "{}: hard link to '{}', which is a {kind}, not a regular file; \
                         refusing to restore it (the manifest is damaged or hostile)",
                        path.display(),
                        String::from_utf8_lossy(&entry.target),
                    )));
                }
                Err(e) => {
                    let what = format!(
                        "cannot find hard link target {} (restored from this dump?)",
                        target.display()
                    );
                    return Err(Error::io(path, with_what(&what, e)));
                }
            }
            clear_path(path)?;
            fs::hard_link(&target, path).map_err(|e| {
                let what = format!("cannot create hard link to {}", target.display());
                Error::io(path, with_what(&what, e))
            })?;
            Ok(None)
        }
        EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev | EntryKind::Socket => {
            clear_path(path)?;
            let fmt = match entry.kind {
                EntryKind::Fifo => libc::S_IFIFO,
                EntryKind::CharDev => libc::S_IFCHR,
                EntryKind::BlockDev => libc::S_IFBLK,
                _ => libc::S_IFSOCK,
            };
            let rdev = match entry.kind {
                EntryKind::CharDev | EntryKind::BlockDev => entry.rdev as libc::dev_t,
                _ => 0,
            };
            let cp = c_path(path)?;
            // SAFETY: cp is a valid C string.
            if unsafe { libc::mknod(cp.as_ptr(), fmt | 0o600, rdev) } != 0 {
                let e = io::Error::last_os_error();
                let what = if matches!(entry.kind, EntryKind::CharDev | EntryKind::BlockDev) {
                    "cannot create device node (this needs root)"
                } else {
                    "cannot create special file"
                };
                return Err(Error::io(path, with_what(what, e)));
            }
            Ok(None)
        }
    }
}

/// Set atime and mtime of `path` itself (not a symlink's target) to `mtime_ns`.
fn set_times(path: &Path, mtime_ns: i64) -> Result<()> {
    let cp = c_path(path)?;
    // SAFETY: timespec is plain data; zeroed is valid, and the fields are set below.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = mtime_ns.div_euclid(1_000_000_000) as libc::time_t;
    ts.tv_nsec = mtime_ns.rem_euclid(1_000_000_000) as _;
    let times = [ts, ts];
    // SAFETY: cp is a valid C string and times points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cp.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(Error::io(path, with_what("cannot set times", e)));
    }
    Ok(())
}

/// Apply `entry`'s metadata to the node at `path`: xattrs (only `user.*` unless `as_root`),
/// owner (only `as_root`), mode with setuid/setgid/sticky (not for symlinks), then times.
/// Nothing for a `HardLink`, which shares its inode with an entry restored on its own.
pub fn apply_metadata(path: &Path, entry: &Entry, as_root: bool) -> Result<()> {
    if entry.kind == EntryKind::HardLink {
        return Ok(());
    }
    let cp = c_path(path)?;
    for (name, value) in &entry.xattrs {
        // A normal user may not set trusted.*, security.* and the like: skip, don't fail.
        if !as_root && !name.starts_with(b"user.") {
            continue;
        }
        let shown = String::from_utf8_lossy(name);
        let cname = CString::new(name.as_slice()).map_err(|_| {
            Error::corrupt(format!(
                "{}: manifest xattr name {shown:?} contains a NUL byte",
                path.display()
            ))
        })?;
        // SAFETY: both C strings are valid; value is valid for value.len() bytes.
        let rc = unsafe {
            libc::lsetxattr(
                cp.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            let what = format!("cannot set extended attribute {shown}");
            return Err(Error::io(path, with_what(&what, e)));
        }
    }
    if as_root {
        // SAFETY: cp is a valid C string.
        if unsafe { libc::lchown(cp.as_ptr(), entry.uid, entry.gid) } != 0 {
            let e = io::Error::last_os_error();
            return Err(Error::io(path, with_what("cannot set owner", e)));
        }
    }
    if entry.kind != EntryKind::Symlink {
        // After chown, which clears setuid/setgid. The node was just created by us and is
        // not a symlink, so following is not a concern here.
        let perms = std::os::unix::fs::PermissionsExt::from_mode(entry.mode & 0o7777);
        fs::set_permissions(path, perms)
            .map_err(|e| Error::io(path, with_what("cannot set mode", e)))?;
    }
    set_times(path, entry.mtime_ns)
}

/// Set a directory's times. Callers do this after everything inside it is restored, deepest
/// directories first, because creating entries changes a directory's mtime.
pub fn set_dir_times(path: &Path, entry: &Entry) -> Result<()> {
    set_times(path, entry.mtime_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::tests::{MIB, build_tree, walk_all};
    use crate::scan::{Walker, data_ranges};
    use std::os::unix::fs::FileExt;

    /// Restore `src` into `dst` the way the restore will: create in walk order, metadata for
    /// non-directories at once, directories last and deepest first.
    fn copy_tree(src: &Path, dst: &Path) {
        let as_root = is_root();
        let mut guard = ParentGuard::new(dst);
        let mut dirs = Vec::new();
        for item in Walker::new(src).unwrap() {
            let item = item.unwrap();
            let e = &item.entry;
            let path = safe_join(dst, &e.path).unwrap();
            guard.check(&e.path).unwrap();
            if !e.path.is_empty() {
                let file = create_node(dst, &path, e).unwrap();
                if let Some(out) = file {
                    let inp = File::open(&item.abs_path).unwrap();
                    for (off, len) in data_ranges(&inp, e.size).unwrap() {
                        let mut buf = vec![0u8; len as usize];
                        inp.read_exact_at(&mut buf, off).unwrap();
                        out.write_all_at(&buf, off).unwrap();
                    }
                }
            }
            if e.kind == EntryKind::Dir {
                dirs.push((path, e.clone()));
            } else {
                apply_metadata(&path, e, as_root).unwrap();
            }
        }
        for (path, e) in dirs.iter().rev() {
            apply_metadata(path, e, as_root).unwrap();
            set_dir_times(path, e).unwrap();
        }
    }

    /// The fields a restore must reproduce (not inode numbers and ctimes).
    fn restorable(mut e: Entry) -> Entry {
        e.ino = 0;
        e.ctime_ns = 0;
        e
    }

    #[test]
    fn round_trip_restores_every_field() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        let built = build_tree(&src);
        copy_tree(&src, &dst);

        let a = walk_all(&src);
        let b = walk_all(&dst);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                restorable(x.entry.clone()),
                restorable(y.entry.clone()),
                "{}",
                x.entry.display_path()
            );
        }
        let find = |items: &[crate::scan::ScanItem], p: &[u8]| {
            items
                .iter()
                .find(|i| i.entry.path == p)
                .unwrap()
                .entry
                .clone()
        };
        if is_root() {
            assert_eq!(
                (find(&b, b"a.txt").uid, find(&b, b"a.txt").gid),
                (1234, 5678)
            );
            assert_eq!(
                (find(&b, b"d/link").uid, find(&b, b"d/link").gid),
                (4321, 8765)
            );
        }
        if built.xattrs {
            assert_eq!(find(&b, b"a.txt").xattrs.len(), 2);
        }
        assert_eq!(find(&b, b"suid").mode, 0o4755);
        // Contents, holes and hard links survive.
        assert_eq!(fs::read(dst.join("a.txt")).unwrap(), b"hello, world\n");
        let sparse = fs::read(dst.join("sparse")).unwrap();
        assert_eq!(sparse.len() as u64, 3 * MIB);
        assert!(sparse[..MIB as usize].iter().all(|&b| b == 0));
        assert!(
            sparse[MIB as usize..MIB as usize + 4096]
                .iter()
                .all(|&b| b == 0xab)
        );
        let (fa, fb) = (
            File::open(src.join("sparse")).unwrap(),
            File::open(dst.join("sparse")).unwrap(),
        );
        assert_eq!(
            data_ranges(&fa, 3 * MIB).unwrap(),
            data_ranges(&fb, 3 * MIB).unwrap()
        );
        let ino = |p: &str| find(&b, p.as_bytes()).ino;
        let md = fs::symlink_metadata(dst.join("hard2")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&md), ino("d/hard3"));

        // Restoring again over the restored tree gives the same tree (nodes are replaced).
        copy_tree(&src, &dst);
        let c = walk_all(&dst);
        for (x, y) in a.iter().zip(&c) {
            assert_eq!(restorable(x.entry.clone()), restorable(y.entry.clone()));
        }
    }

    #[test]
    fn safe_join_rejects_escapes() {
        let root = Path::new("/restore");
        for bad in [
            &b"../x"[..],
            b"/x",
            b"a/../b",
            b"a/./b",
            b".",
            b"..",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            let err = safe_join(root, bad).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{bad:?}: {err}");
        }
        // The empty path is the root entry itself.
        assert_eq!(safe_join(root, b"").unwrap(), root);
        assert_eq!(safe_join(root, b"a/b").unwrap(), Path::new("/restore/a/b"));
        assert_eq!(
            safe_join(root, b"caf\xe9").unwrap().as_os_str().as_bytes(),
            b"/restore/caf\xe9"
        );
    }

    #[test]
    fn parent_guard_refuses_symlinked_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        fs::create_dir_all(root.join("real/deeper")).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("real/evil2")).unwrap();
        fs::write(root.join("plain"), b"").unwrap();

        let mut g = ParentGuard::new(&root);
        g.check(b"top").unwrap();
        g.check(b"real/x").unwrap();
        g.check(b"real/deeper/y").unwrap();
        g.check(b"real/z").unwrap(); // from the cache
        let err = g.check(b"evil/passwd").unwrap_err().to_string();
        assert!(err.contains("evil") && err.contains("symlink"), "{err}");
        let err = g.check(b"real/evil2/x").unwrap_err().to_string();
        assert!(err.contains("evil2"), "{err}");
        assert!(g.check(b"plain/x").is_err());
        assert!(g.check(b"missing/x").is_err());
        assert!(g.check(b"../x").is_err());
        // A parent verified earlier and swapped for a symlink afterwards is caught once the
        // walk moves to another directory and comes back.
        g.check(b"real/deeper/y").unwrap();
        fs::remove_dir(root.join("real/deeper")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("real/deeper")).unwrap();
        g.check(b"top2").unwrap();
        g.check(b"real/a").unwrap();
        assert!(g.check(b"real/deeper/y").is_err());
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn create_node_replaces_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let victim = root.join("victim");
        fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("f")).unwrap();
        let entry = Entry {
            path: b"f".to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            size: 5,
            ..Entry::default()
        };
        let file = create_node(root, &root.join("f"), &entry).unwrap().unwrap();
        file.write_all_at(b"fresh", 0).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(fs::read(root.join("f")).unwrap(), b"fresh");
        assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());

        // A FIFO in the way is replaced, not opened (which would block).
        crate::scan::tests::mknod(&root.join("p"), libc::S_IFIFO | 0o600, 0);
        create_node(root, &root.join("p"), &entry).unwrap();
        assert!(fs::symlink_metadata(root.join("p")).unwrap().is_file());

        // A directory over a file, a symlink over a file, and a non-empty dir refused.
        let dir = Entry {
            kind: EntryKind::Dir,
            ..entry.clone()
        };
        create_node(root, &root.join("f"), &dir).unwrap();
        assert!(fs::symlink_metadata(root.join("f")).unwrap().is_dir());
        fs::write(root.join("f/inside"), b"").unwrap();
        let err = create_node(root, &root.join("f"), &entry)
            .unwrap_err()
            .to_string();
        assert!(err.contains("directory is in the way"), "{err}");

        // A hard link target is checked like any manifest path.
        let hl = Entry {
            kind: EntryKind::HardLink,
            target: b"../victim".to_vec(),
            ..entry
        };
        assert!(matches!(
            create_node(root, &root.join("h"), &hl),
            Err(Error::Corrupt(_))
        ));

        // Nor may it reach through a symlink to a file outside the root, or name a non-file.
        let inner = root.join("inner");
        fs::create_dir(&inner).unwrap();
        std::os::unix::fs::symlink(root, inner.join("up")).unwrap();
        std::os::unix::fs::symlink(&victim, inner.join("s")).unwrap();
        for (target, why) in [(&b"up/victim"[..], "is a symlink"), (b"s", "not a regular")] {
            let hl = Entry {
                target: target.to_vec(),
                ..hl.clone()
            };
            let err = create_node(&inner, &inner.join("h"), &hl)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
            assert!(!inner.join("h").exists());
        }
        let md = fs::metadata(&victim).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::nlink(&md), 1);
    }

    #[test]
    fn metadata_errors_name_the_path_and_step() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nothing-here");
        let entry = Entry {
            kind: EntryKind::File,
            mode: 0o644,
            ..Entry::default()
        };
        let err = apply_metadata(&missing, &entry, is_root())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nothing-here") && err.contains("cannot set"),
            "{err}"
        );
        // A non-root restore skips namespaces it may not write, and owners.
        let f = tmp.path().join("f");
        fs::write(&f, b"").unwrap();
        let e = Entry {
            kind: EntryKind::File,
            mode: 0o600,
            uid: 4242,
            xattrs: vec![(b"trusted.x".to_vec(), b"1".to_vec())],
            ..Entry::default()
        };
        apply_metadata(&f, &e, false).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert_ne!(std::os::unix::fs::MetadataExt::uid(&md), 4242);
    }
}
