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
    /// The shrink guard (docs/NIGHTLY.md): a dump holding less than this percent of the files
    /// or of the logical bytes of the volume's previous dump is refused unless
    /// `--allow-shrink`, because a volume whose tree vanished would otherwise dump as a
    /// success. 0 turns the share and empty-root checks off; a volume's own
    /// `min_share_percent` overrides it.
    #[serde(default = "default_min_share_percent")]
    pub min_share_percent: u8,
    /// Days `reel nightly` keeps its saved reports in logs/ (it removes older ones itself, so
    /// no logrotate is needed); 0 keeps them all.
    #[serde(default = "default_keep_reports_days")]
    pub keep_reports_days: u32,
    /// Set on an encrypted spool (`reel init --encrypt`): the master key's fingerprint. Its
    /// presence is what makes every command ask for the key before it touches anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSettings>,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSettings>,
}

/// `[encryption]` in reel.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSettings {
    /// The master key's fingerprint, 16 hex digits (`crypto::Fingerprint`).
    pub fingerprint: String,
}

pub(crate) fn default_compression() -> i32 {
    2
}

pub(crate) fn default_checkpoint_mb() -> u64 {
    256
}

pub(crate) fn default_min_share_percent() -> u8 {
    50
}

pub(crate) fn default_keep_reports_days() -> u32 {
    60
}

impl Settings {
    /// The shrink guard's share for volume `name`, in percent: its own, or the spool's.
    pub fn min_share_percent(&self, name: &str) -> Result<u8> {
        let own = self.volumes.get(name).and_then(|v| v.min_share_percent);
        let (pct, key) = match own {
            Some(p) => (p, format!("[volumes.{name}] min_share_percent")),
            None => (self.min_share_percent, "min_share_percent".to_string()),
        };
        if pct > 100 {
            return Err(Error::Spool(format!(
                "reel.toml: {key} = {pct} is not a share: give a percentage from 0 to 100 (0 turns the shrink guard's share check off)"
            )));
        }
        Ok(pct)
    }
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
    /// This volume's shrink-guard share in percent, instead of the spool's
    /// `min_share_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_share_percent: Option<u8>,
    /// The filesystem the volume's root is on, recorded by `volume add` (or `volume set
    /// --record-fs`, or the first dump of a volume that has none): a dump whose root is on
    /// another filesystem is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsIdentity>,
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

/// Which filesystem a volume's root is on, as far as it survives a reboot (docs/NIGHTLY.md,
/// "The shrink guard"): the filesystem's type, its `f_fsid`, and whether the root is the root
/// of a mount. An empty mount point left by a filesystem that did not mount is a plain
/// directory of the filesystem above it, so `mount_root` flips, and usually the type or the
/// fsid too.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsIdentity {
    /// `statfs(2)` `f_type`: the filesystem type's magic number.
    #[serde(rename = "type", with = "hex")]
    pub fs_type: u64,
    /// `statfs(2)` `f_fsid`. Compared only for the types whose kernel driver derives it from
    /// the filesystem's UUID ([`FSID_FROM_UUID`]); others derive it from the device number
    /// (xfs, f2fs), which may change at a reboot, or give 0 or a new one at each mount (tmpfs).
    #[serde(with = "hex")]
    pub fsid: u64,
    /// Whether the root is the root of a mount (`STATX_ATTR_MOUNT_ROOT`, or a device number
    /// other than its parent's where the kernel does not say).
    pub mount_root: bool,
}

/// Filesystem types whose `f_fsid` the kernel derives from the filesystem's UUID (ext2/3/4:
/// the UUID; btrfs: the UUID and the subvolume), so it is the same after every reboot and
/// differs between two filesystems of the type.
pub const FSID_FROM_UUID: &[u64] = &[0xEF53, 0x9123_683E];

/// Names of common filesystem types, for messages.
const FS_TYPE_NAMES: &[(u64, &str)] = &[
    (0xEF53, "ext2/ext3/ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0x0102_1994, "tmpfs"),
    (0x794C_7630, "overlayfs"),
    (0x6969, "nfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x6573_5546, "fuse"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544E, "ntfs"),
    (0x0027_E0EB, "cgroup"),
];

impl FsIdentity {
    /// The identity of the filesystem holding directory `dir`.
    pub fn of(dir: &crate::dirfd::Dir) -> std::io::Result<FsIdentity> {
        let fs = rustix::fs::fstatfs(dir)?;
        let vfs = rustix::fs::fstatvfs(dir)?;
        Ok(FsIdentity {
            fs_type: fs.f_type as u64,
            fsid: vfs.f_fsid,
            mount_root: mount_root(dir)?,
        })
    }

    /// The identity of the filesystem at `root` (a volume's path, the admin's word: symlinks
    /// in it are followed).
    pub fn of_path(root: &std::path::Path) -> Result<FsIdentity> {
        use crate::error::IoContext;
        let dir = crate::dirfd::Dir::open(root).at(root)?;
        FsIdentity::of(&dir).at(root)
    }

    /// The type's name, or its magic number.
    pub fn type_name(&self) -> String {
        FS_TYPE_NAMES
            .iter()
            .find(|(m, _)| *m == self.fs_type)
            .map_or_else(
                || format!("type {:#x}", self.fs_type),
                |(_, n)| n.to_string(),
            )
    }

    /// Whether `now` is another filesystem than this recorded one: a different type, a
    /// root that became or stopped being a mount, or (for types whose fsid comes from their
    /// UUID) a different fsid.
    pub fn differs(&self, now: &FsIdentity) -> bool {
        self.fs_type != now.fs_type
            || self.mount_root != now.mount_root
            || (FSID_FROM_UUID.contains(&self.fs_type) && self.fsid != now.fsid)
    }
}

impl std::fmt::Display for FsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, fsid {:016x}, {}",
            self.type_name(),
            self.fsid,
            if self.mount_root {
                "the root of a mount"
            } else {
                "a directory inside a mount"
            }
        )
    }
}

/// Whether directory `dir` is the root of a mount: the kernel's `STATX_ATTR_MOUNT_ROOT` (Linux
/// 5.8 and later, any filesystem, bind mounts too); where it does not say, whether `..` is on
/// another device.
fn mount_root(dir: &crate::dirfd::Dir) -> std::io::Result<bool> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
    match rustix::fs::statx(dir, c"", AtFlags::EMPTY_PATH, StatxFlags::empty()) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        }
        Ok(_) => {}
        Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {}
        Err(e) => return Err(e.into()),
    }
    let parent = rustix::fs::statat(dir, c"..", AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(dir.stat_self()?.dev != parent.st_dev as u64)
}

/// Numbers that TOML's signed 64-bit integers cannot hold, as hex strings (`"0xef53"`).
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0x").unwrap_or(&text);
        u64::from_str_radix(digits, 16)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a hex number (0x...)")))
    }
}
