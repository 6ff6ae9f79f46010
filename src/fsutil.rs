//! Small filesystem helpers: durability, and whether a volume's root can be walked.

use std::fs::File;
use std::path::Path;

use crate::error::IoContext;
use crate::{Error, Result};

/// fsync a directory so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).at(dir)?.sync_all().at(dir)
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
