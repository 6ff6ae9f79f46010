//! Small filesystem helpers for durability.

use std::fs::File;
use std::path::Path;

use crate::Result;
use crate::error::IoContext;

/// fsync a directory so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}
