//! Building a tree under a target directory by handle: the restore, a directory clone and a
//! BSD ingest's staging tree all make their nodes here.
//!
//! A manifest is data from disk or tape and the target may be a user's live home directory, so
//! neither the paths nor the target are trusted. Every path is checked to be plain relative
//! components ([`check_rel`]); every node is made by name in the open handle of its parent
//! ([`crate::dirfd::Dir`]), so no path is resolved from the target again and a directory that
//! a user swaps for a symlink mid-restore is never written through. The writer keeps the
//! handles of the directories along the current path (entries come depth-first: every parent
//! before its children), which is also what makes depth unlimited.
//!
//! Nodes are created without following what is there: a regular file with `O_CREAT | O_EXCL |
//! O_NOFOLLOW`, so an existing symlink, FIFO or file at the name is unlinked first, never
//! opened, followed or truncated (a truncate would reach every other name of that inode,
//! perhaps outside the target). Metadata goes on through a handle on the node itself, never a
//! name (see [`crate::dirfd`]): a file through the descriptor that created it, a directory
//! through its handle, a symlink or special file through an `O_PATH` handle that is checked to
//! be the node just made. A name raced into place by someone else is therefore never chmodded,
//! chowned or given times.
//!
//! Directory metadata goes on once nothing more is created inside: a directory the entries have
//! left behind (its subtree is complete) waits in `done` until the caller's batch of files and
//! links is in ([`TreeWriter::finish_done`]), and the rest go at [`TreeWriter::finish`],
//! deepest first, because creating anything inside a directory changes its mtime. Without root,
//! a directory whose mode would deny its owner access waits until the end, so later hard links
//! can still reach through it.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::dirfd::{Dir, Stat, with_what};
use crate::error::Damaged;
use crate::error::{Error, Result};
use crate::types::{Entry, EntryKind};

/// How often a name that keeps changing under us (created, replaced, removed by someone else)
/// is tried again before the restore gives up on it with an error.
const RACE_ATTEMPTS: u32 = 4;

/// Are we running as root (effective uid 0)? Decides whether owners are restored and which
/// xattr namespaces are attempted.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Check a manifest path: empty (the root), or `/`-separated non-empty components that are
/// not `.` or `..`, with no NUL and no leading `/`.
pub fn check_rel(rel: &[u8]) -> Result<()> {
    crate::manifest::validate_path(rel).map_err(|e| {
        Error::damaged(
            Damaged::Entry(rel.to_vec()),
            format!("{e}; refusing to restore it (the manifest is damaged or hostile)"),
        )
    })
}

/// Split a manifest path into its parent's path and its name.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// A directory along the current path, and the metadata it gets when it is finished.
struct OpenDir {
    rel: Vec<u8>,
    dir: Arc<Dir>,
    entry: Option<Entry>,
}

/// Builds a tree below a target directory; see the module documentation.
pub struct TreeWriter {
    /// Open directories along the current path, the target first.
    stack: Vec<OpenDir>,
    /// Directories whose subtree is complete, deepest first, waiting for `finish_done`.
    done: Vec<OpenDir>,
    /// Directories whose metadata must wait for the end (see the module documentation).
    deferred: Vec<OpenDir>,
    as_root: bool,
}

impl TreeWriter {
    /// Start building below `target`, an existing directory an admin named.
    pub fn open(target: &Path, as_root: bool) -> Result<TreeWriter> {
        crate::dirfd::raise_fd_limit();
        let dir = Dir::open(target).map_err(|e| Error::io(target, e))?;
        Ok(TreeWriter {
            stack: vec![OpenDir {
                rel: Vec::new(),
                dir: Arc::new(dir),
                entry: None,
            }],
            done: Vec::new(),
            deferred: Vec::new(),
            as_root,
        })
    }

    /// The target directory's handle.
    pub fn root(&self) -> &Arc<Dir> {
        &self.stack[0].dir
    }

    pub fn as_root(&self) -> bool {
        self.as_root
    }

    /// The open directory that holds `rel`, and `rel`'s name in it. Directories the entries
    /// have left behind are set aside for their metadata. The parent must be the directory
    /// entered last or one of its ancestors: entries come depth-first, every parent first.
    pub fn parent_of<'r>(&mut self, rel: &'r [u8]) -> Result<(Arc<Dir>, &'r [u8])> {
        check_rel(rel)?;
        if rel.is_empty() {
            return Err(Error::damaged(
                Damaged::Entry(rel.to_vec()),
                "the volume root has no parent; refusing to restore it as a node",
            ));
        }
        let (parent, name) = split(rel);
        while self.stack.len() > 1 && self.stack.last().is_some_and(|d| d.rel != parent) {
            let left = self.stack.pop().expect("stack is not empty");
            self.leave(left);
        }
        let top = self.stack.last().expect("the target stays on the stack");
        if top.rel != parent {
            return Err(Error::damaged(
                Damaged::Entry(rel.to_vec()),
                format!(
                    "{}: its directory {} was not restored before it; refusing it (the manifest is \
                 damaged or out of order)",
                    String::from_utf8_lossy(rel),
                    String::from_utf8_lossy(parent)
                ),
            ));
        }
        Ok((Arc::clone(&top.dir), name))
    }

    /// A directory whose subtree is complete: its metadata goes on at the next `finish_done`,
    /// or at the end (see the module documentation).
    fn leave(&mut self, d: OpenDir) {
        let denies_owner = d.entry.as_ref().is_some_and(|e| e.mode & 0o700 != 0o700);
        if !self.as_root && denies_owner {
            self.deferred.push(d);
        } else {
            self.done.push(d);
        }
    }

    /// Make (or, when it is there already, enter) the directory of `entry`, or take the
    /// target's own metadata for the root entry (path empty). Something else in the way is
    /// removed; a symlink in the way is removed, never followed.
    pub fn dir(&mut self, entry: &Entry) -> Result<()> {
        if entry.path.is_empty() {
            self.stack[0].entry = Some(entry.clone());
            return Ok(());
        }
        let (parent, name) = self.parent_of(&entry.path)?;
        let shown = || parent.shown_child(name);
        for _ in 0..RACE_ATTEMPTS {
            match parent.mkdir(name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(shown(), with_what("cannot create directory", e))),
            }
            match parent.open_dir(name) {
                Ok(dir) => {
                    self.stack.push(OpenDir {
                        rel: entry.path.clone(),
                        dir: Arc::new(dir),
                        entry: Some(entry.clone()),
                    });
                    return Ok(());
                }
                // A symlink (ELOOP) or a non-directory (ENOTDIR) in the way: remove it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    remove_in_way(&parent, name)?;
                }
                // Removed by someone else between mkdir and open: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(shown(), with_what("cannot open directory", e))),
            }
        }
        Err(changing(&shown()))
    }

    /// Create the regular file `name` in `parent` (replacing a non-directory there), `size`
    /// bytes long and all hole, open for writing, mode 0600 until its metadata goes on.
    pub fn file(parent: &Dir, name: &[u8], size: u64) -> Result<File> {
        let shown = || parent.shown_child(name);
        for _ in 0..RACE_ATTEMPTS {
            match parent.create_file(name) {
                Ok(f) => {
                    if size > 0 {
                        f.set_len(size).map_err(|e| {
                            Error::io(shown(), with_what("cannot set file length", e))
                        })?;
                    }
                    return Ok(f);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_in_way(parent, name)?,
                Err(e) => return Err(Error::io(shown(), with_what("cannot create file", e))),
            }
        }
        Err(changing(&shown()))
    }

    /// Make a symlink, FIFO, socket or device node `name` in `parent` for `entry` (replacing
    /// a non-directory there) and apply its metadata through an `O_PATH` handle, after checking
    /// that the handle holds the node just made and not one raced into its place.
    pub fn special(parent: &Dir, name: &[u8], entry: &Entry, as_root: bool) -> Result<()> {
        let shown = || parent.shown_child(name);
        let made = (0..RACE_ATTEMPTS).find_map(|_| {
            let r = match entry.kind {
                EntryKind::Symlink => parent.symlink(&entry.target, name),
                kind => parent.mknod(name, kind, entry.rdev),
            };
            match r {
                Ok(()) => Some(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    remove_in_way(parent, name).err().map(Err)
                }
                Err(e) => {
                    let what = match entry.kind {
                        EntryKind::Symlink => "cannot create symlink",
                        EntryKind::CharDev | EntryKind::BlockDev => {
                            "cannot create device node (this needs root)"
                        }
                        _ => "cannot create special file",
                    };
                    Some(Err(Error::io(shown(), with_what(what, e))))
                }
            }
        });
        match made {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(changing(&shown())),
        }
        let node = parent
            .open_node(name)
            .map_err(|e| Error::io(shown(), with_what("cannot open the node just made", e)))?;
        let st = node.stat().map_err(|e| Error::io(shown(), e))?;
        let ours = st.kind() == entry.kind
            && st.uid == rustix::process::geteuid().as_raw()
            && st.nlink == 1
            && (entry.kind != EntryKind::Symlink
                || node.read_link().is_ok_and(|t| t == entry.target));
        if !ours {
            return Err(changing(&shown()));
        }
        node.apply_meta(entry, as_root)
            .map_err(|e| Error::io(shown(), e))
    }

    /// Make `name` in `parent` a further name of the regular file at `target` (a path below
    /// the target directory, made earlier), replacing a non-directory at `name`.
    pub fn hard_link(&self, parent: &Dir, name: &[u8], target: &[u8]) -> Result<()> {
        check_rel(target)?;
        let shown = || parent.shown_child(name);
        let (tparent, tname) = split(target);
        let from = self.find_dir(tparent).map_err(|e| {
            Error::io(
                shown(),
                with_what(
                    &format!(
                        "cannot reach the directory of hard link target {}",
                        String::from_utf8_lossy(target)
                    ),
                    e,
                ),
            )
        })?;
        // The target must be a regular file (what the scanner records as hard links): link(2)
        // would happily link a symlink, a FIFO or a device node itself.
        match from.stat(tname) {
            Ok(st) if st.is_file() => {}
            Ok(st) => {
                return Err(Error::damaged(
                    Damaged::Entry(target.to_vec()),
                    format!(
                        "{}: hard link to '{}', which is a {}, not a regular file: another \
                     process replaced it in the restore target while the restore ran, or the \
                     manifest is damaged; nothing was linked",
                        shown().display(),
                        String::from_utf8_lossy(target),
                        kind_word(&st)
                    ),
                ));
            }
            Err(e) => {
                let what = format!(
                    "cannot find hard link target {} (restored from this dump?)",
                    from.shown_child(tname).display()
                );
                return Err(Error::io(shown(), with_what(&what, e)));
            }
        }
        for _ in 0..RACE_ATTEMPTS {
            match parent.hard_link(&from, tname, name) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_in_way(parent, name)?,
                Err(e) => {
                    let what = format!(
                        "cannot create hard link to {}",
                        from.shown_child(tname).display()
                    );
                    return Err(Error::io(shown(), with_what(&what, e)));
                }
            }
        }
        Err(changing(&shown()))
    }

    /// The handle of directory `rel` (made earlier): from the stack when it is on the current
    /// path, else opened beneath the deepest ancestor on it, never through a symlink.
    fn find_dir(&self, rel: &[u8]) -> io::Result<Arc<Dir>> {
        let mut best = &self.stack[0];
        for d in &self.stack[1..] {
            if d.rel == rel {
                return Ok(Arc::clone(&d.dir));
            }
            if rel.starts_with(&d.rel) && rel.get(d.rel.len()) == Some(&b'/') {
                best = d;
            }
        }
        if rel.is_empty() {
            return Ok(Arc::clone(&self.stack[0].dir));
        }
        let rest = if best.rel.is_empty() {
            rel
        } else {
            &rel[best.rel.len() + 1..]
        };
        Ok(Arc::new(best.dir.open_dir_beneath(rest)?))
    }

    /// Apply the metadata of the directories set aside so far (deepest first). Call it once the
    /// files and links made since the last call are complete.
    pub fn finish_done(&mut self) -> Result<()> {
        for d in std::mem::take(&mut self.done) {
            self.apply_dir(&d)?;
        }
        Ok(())
    }

    /// Apply the metadata of every directory still waiting, deepest first, the target last.
    pub fn finish(mut self) -> Result<()> {
        while let Some(d) = self.stack.pop() {
            self.done.push(d);
        }
        self.finish_done()?;
        for d in std::mem::take(&mut self.deferred) {
            self.apply_dir(&d)?;
        }
        Ok(())
    }

    fn apply_dir(&self, d: &OpenDir) -> Result<()> {
        match &d.entry {
            Some(e) => d
                .dir
                .apply_meta(e, self.as_root)
                .map_err(|err| Error::io(d.dir.shown(), err)),
            None => Ok(()),
        }
    }
}

/// Remove the non-directory (or empty directory) at `name` to make room for a new node; a
/// symlink is removed itself, never followed.
fn remove_in_way(parent: &Dir, name: &[u8]) -> Result<()> {
    let shown = || parent.shown_child(name);
    match parent.unlink(name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {
            match parent.rmdir(name) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(
                    shown(),
                    with_what("a directory is in the way and cannot be removed", e),
                )),
            }
        }
        Err(e) => Err(Error::io(
            shown(),
            with_what("cannot remove the existing entry", e),
        )),
    }
}

/// The error for a name that someone else keeps changing while we make a node there.
fn changing(shown: &Path) -> Error {
    Error::io(
        shown,
        io::Error::other(
            "keeps changing while it is being restored (another process is writing here); \
             nothing was written through it",
        ),
    )
}

fn kind_word(st: &Stat) -> &'static str {
    match st.kind() {
        EntryKind::Symlink => "symlink",
        EntryKind::Dir => "directory",
        _ => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            ..Entry::default()
        }
    }

    #[test]
    fn check_rel_refuses_escapes() {
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
            let err = check_rel(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Corrupt {
                        object: Damaged::Entry(_),
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        check_rel(b"").unwrap();
        check_rel(b"a/b").unwrap();
        check_rel(b"caf\xe9").unwrap();
    }

    #[test]
    fn a_file_replaces_what_is_in_the_way_without_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let victim = root.join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::fs::create_dir(root.join("t")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("t/f")).unwrap();
        let mut tw = TreeWriter::open(&root.join("t"), is_root()).unwrap();
        let (dir, name) = tw.parent_of(b"f").unwrap();
        let file = TreeWriter::file(&dir, name, 5).unwrap();
        file.write_all_at(b"fresh", 0).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(root.join("t/f")).unwrap(), b"fresh");

        // A FIFO in the way is replaced, not opened (which would block).
        crate::scan::tests::mknod(&root.join("t/p"), libc::S_IFIFO | 0o600, 0);
        TreeWriter::file(&dir, b"p", 0).unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("t/p"))
                .unwrap()
                .is_file()
        );

        // A directory over a file; then a non-empty directory in a file's way is refused.
        tw.dir(&entry("f", EntryKind::Dir)).unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("t/f"))
                .unwrap()
                .is_dir()
        );
        std::fs::write(root.join("t/f/inside"), b"").unwrap();
        let err = TreeWriter::file(&dir, b"f", 0).unwrap_err().to_string();
        assert!(err.contains("directory is in the way"), "{err}");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_never_entered() {
        let tmp = tempfile::tempdir().unwrap();
        let (t, outside) = (tmp.path().join("t"), tmp.path().join("outside"));
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, t.join("d")).unwrap();
        let mut tw = TreeWriter::open(&t, is_root()).unwrap();
        tw.dir(&entry("d", EntryKind::Dir)).unwrap();
        assert!(std::fs::symlink_metadata(t.join("d")).unwrap().is_dir());
        // Entered: the handle stays on the directory made, whatever happens to the name.
        let (dir, name) = tw.parent_of(b"d/x").unwrap();
        std::fs::rename(t.join("d"), t.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, t.join("d")).unwrap();
        TreeWriter::file(&dir, name, 0).unwrap();
        assert!(t.join("moved/x").exists());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn entries_out_of_order_and_links_to_non_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut tw = TreeWriter::open(tmp.path(), is_root()).unwrap();
        let err = tw.parent_of(b"missing/x").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Corrupt {
                    object: Damaged::Entry(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            tw.parent_of(b"../x"),
            Err(Error::Corrupt {
                object: Damaged::Entry(_),
                ..
            })
        ));

        let mut link = entry("s", EntryKind::Symlink);
        link.target = b"/etc/passwd".to_vec();
        let root = Arc::clone(tw.root());
        TreeWriter::special(&root, b"s", &link, is_root()).unwrap();
        let err = tw.hard_link(&root, b"h", b"s").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(!tmp.path().join("h").exists());
    }
}
