//! Small filesystem helpers: durability, whether a volume's root can be walked, and the
//! owner-only creation of every file and folder reel makes for itself.
//!
//! Every file reel writes into a spool, a staging folder under `tmp/` or a tape image is created
//! with mode 0600 and every folder with 0700, in the `open(2)`/`mkdir(2)` call itself: the
//! umask can only take bits away, so there is no moment in which another user could open what
//! reel writes, and the library does this for any front end, not only the `reel` command
//! (docs/DESIGN-NOTES.md, "Spool, volumes and locking"). What reel restores into a user's tree
//! keeps the modes the dump recorded (`dirfd`, `tree_writer`).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::IoContext;
use crate::{Error, Result};

/// fsync a directory so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

/// The mode of every file reel makes for itself: read and write by its owner alone.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every folder reel makes for itself: its owner alone may list, enter or change it.
pub const DIR_MODE: u32 = 0o700;

/// Options for a file of reel's own that must not exist yet: write, `O_CREAT | O_EXCL` (never
/// a symlink followed, never an existing file reused), mode 0600. Add `read` and the like as
/// needed.
pub fn new_file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true).mode(FILE_MODE);
    o
}

/// Options for a file of reel's own that may exist (a lock file): read and write, created
/// 0600 if missing, never truncated. A file that exists keeps its mode.
pub fn lock_file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE);
    o
}

/// `File::create` for a file of reel's own (settings, reports, tape images, payload files):
/// created 0600; a regular file that was there is truncated and, if its mode let anyone but
/// its owner in, set to 0600 before a byte is written into it. A device (a tape drive) is
/// opened as it is.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    let md = f.metadata()?;
    if md.is_file() && md.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(f)
}

/// `fs::write` for a file of reel's own: [`create_file`], then the bytes.
pub fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    create_file(path)?.write_all(data)
}

/// `fs::create_dir_all` for folders of reel's own: each one made is made 0700; one that exists
/// keeps its mode (an older reel's spool keeps its folders as they are).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// `fs::create_dir` for a folder of reel's own: made 0700; fails if it exists.
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)
}

/// Refuse volume `name`'s root `root` unless it is a directory that can be read: before a dump
/// or a clone starts, so a volume not mounted fails alone, with nothing begun.
pub(crate) fn check_root(name: &str, root: &Path) -> Result<()> {
    match std::fs::metadata(root) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(Error::usage(format!(
            "volume {name}: path {} is not a directory",
            root.display()
        ))),
        Err(e) => Err(Error::Volume(format!(
            "volume {name}: path {} cannot be read ({e}); mount the volume, or correct its path in reel.toml ([volumes.{name}] path)",
            root.display()
        ))),
    }
}
