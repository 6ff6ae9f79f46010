//! The spool's settings file, `reel.toml`: its format and the rules its values follow. The
//! spool (`crate::spool`) reads and writes it; schedules and the nightly job read the volumes'
//! entries. FORMAT.md lists the keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkerParams;
pub use crate::record::CloneMethod;
use crate::{Error, Result};

/// `reel.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Layout version of the spool directory (1).
    pub format: u32,
    #[serde(default)]
    pub chunker: ChunkerSettings,
    /// zstd level for new chunks (1-19). 2 by default: with 4 MiB frames it stores as little as
    /// level 3 did with 1 MiB frames, and faster; see docs/PERFORMANCE.md.
    #[serde(default = "default_compression")]
    pub compression_level: i32,
    /// MiB of new packs a dump (or any writing session) seals between two catalog commits,
    /// its checkpoints: a killed dump keeps what its last checkpoint committed. A commit
    /// rewrites every page of the chunk index that changed, so fewer commits make a dump
    /// faster (measured in docs/PERFORMANCE.md). 0 commits after every pack.
    #[serde(default = "default_checkpoint_mb")]
    pub checkpoint_mb: u64,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSettings>,
}

pub(crate) fn default_compression() -> i32 {
    2
}

pub(crate) fn default_checkpoint_mb() -> u64 {
    256
}

/// Chunk sizes, fixed when the spool is made: changing them would stop new dumps from
/// deduplicating against old ones.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerSettings {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerSettings {
    fn default() -> Self {
        let p = ChunkerParams::DEFAULT;
        ChunkerSettings {
            min: p.min,
            avg: p.avg,
            max: p.max,
        }
    }
}

/// One volume's section of `reel.toml`. Only `path` is required; the rest is the nightly
/// cycle's configuration (docs/NIGHTLY.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeSettings {
    pub path: PathBuf,
    /// Day letters: `F` = level 0, `I` = level 1, `0`-`9` = that level (crate::schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How `reel clone` takes the clone.
    #[serde(default, skip_serializing_if = "CloneMethod::is_default")]
    pub clone: CloneMethod,
    /// Run through `sh -c` before the clone; the volume is frozen once it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_cmd: Option<String>,
    /// Run through `sh -c` after the clone, whatever happened, once the freeze hook started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thaw_cmd: Option<String>,
    /// `hook` method: prints the path of a read-only view of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_cmd: Option<String>,
    /// `hook` method: removes the view (gets its path in `REEL_SNAPSHOT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_cmd: Option<String>,
    /// Seconds a hook may run before it is killed and the clone fails (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout: Option<u64>,
    /// What dumps leave out (`crate::scan::exclude`): gitignore lines matched from the
    /// volume's root, in order (a later `!pattern` takes back an earlier one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Leave out the contents of directories tagged with a valid `CACHEDIR.TAG` (not the tag).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_caches: bool,
    /// Dump entries flagged `nodump` (`chattr +d`) too; by default they are left out of
    /// every dump (docs/DESIGN-NOTES.md, "Excludes", says why at every level).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_nodump: bool,
}

/// Default seconds a hook may run.
pub const DEFAULT_HOOK_TIMEOUT: u64 = 300;

impl VolumeSettings {
    pub fn new(path: PathBuf) -> VolumeSettings {
        VolumeSettings {
            path,
            ..Default::default()
        }
    }

    /// What the volume's dumps and clones leave out.
    pub fn exclusions(&self) -> Result<crate::scan::Exclude> {
        crate::scan::Exclude::new(&self.exclude, self.exclude_caches, !self.ignore_nodump)
    }

    pub fn hook_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT))
    }
}

/// Volume names become file names and keys: keep them plain.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "bad volume name {name:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )))
    }
}
