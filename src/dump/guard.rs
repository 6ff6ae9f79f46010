//! The shrink guard: a volume whose tree vanished (its filesystem not mounted, its root
//! emptied, most of it deleted) must not dump as a success, or the retention policy goes on to
//! prune the good dumps behind it. Before a dump or a clone of a volume's own root, the root
//! must be on the filesystem recorded for the volume and must not be empty; after the walk and
//! before anything is committed, the tree must hold at least the volume's share
//! (`min_share_percent`) of its previous dump's files and logical bytes. `--allow-shrink`
//! (`Shrink::Allow`) lets such a dump through. docs/NIGHTLY.md, "The shrink guard".

use crate::catalog::DumpRecord;
use crate::dirfd::Dir;
use crate::error::IoContext;
use crate::record::ScanTotals;
use crate::settings::FsIdentity;
use crate::spool::Spool;
use crate::timefmt::{format_bytes, format_rfc3339};
use crate::{Error, Result};

/// What the shrink guard does with a dump (or clone) that looks like a lost volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shrink {
    /// Refuse it (`Error::Refused`), committing nothing.
    #[default]
    Refuse,
    /// `--allow-shrink`: the admin knows; dump it.
    Allow,
}

/// Before a dump or a clone of volume `name`'s own root (not of a clone of it): the root must
/// be a directory that can be read, on the filesystem recorded for the volume, and not empty
/// (unless the volume's share is 0). Nothing has been begun when this refuses.
pub fn check_live_root(spool: &Spool, name: &str, shrink: Shrink) -> Result<()> {
    let vol = spool.volume(name)?;
    let root = &vol.path;
    crate::fsutil::check_root(name, root)?;
    if shrink == Shrink::Allow {
        return Ok(());
    }
    let dir = Dir::open(root).at(root)?;
    if let Some(recorded) = &vol.filesystem {
        let now = FsIdentity::of(&dir).at(root)?;
        if recorded.differs(&now) {
            return Err(Error::Refused(format!(
                "volume {name}: its root {} is on another filesystem than the one recorded for it (recorded: {recorded}; now: {now}). Is the volume's filesystem mounted? Nothing was dumped. Mount it and run again; if the volume lives on this filesystem for good now, record it with `reel volume set {name} --record-fs`; to dump the tree as it is once, add --allow-shrink",
                root.display()
            )));
        }
    }
    if spool.settings.min_share_percent(name)? > 0 && dir.names().at(root)?.is_empty() {
        return Err(Error::Refused(format!(
            "volume {name}: its root {} is empty, which is what a volume whose filesystem is not mounted looks like. Nothing was dumped. Mount the volume's filesystem and run again; to dump an empty volume, add --allow-shrink (or set min_share_percent = 0 in reel.toml [volumes.{name}])",
            root.display()
        )));
    }
    Ok(())
}

/// After the walk, before anything is committed: refuse a tree (`new`) holding less than the
/// volume's share of the files or of the logical bytes of its previous dump `prev`. The first
/// dump of a volume has nothing to compare with and passes (its root was checked for being
/// empty). Both counts are the whole tree's at every level: a level N manifest lists every
/// entry, the unchanged ones too.
pub(crate) fn check_share(
    spool: &Spool,
    name: &str,
    prev: Option<&DumpRecord>,
    new: &ScanTotals,
    shrink: Shrink,
) -> Result<()> {
    let Some(prev) = prev else {
        return Ok(());
    };
    if shrink == Shrink::Allow {
        return Ok(());
    }
    let pct = spool.settings.min_share_percent(name)?;
    let under =
        |new: u64, old: u64| old > 0 && u128::from(new) * 100 < u128::from(old) * u128::from(pct);
    let old = &prev.totals;
    if !under(new.files, old.files) && !under(new.logical_bytes, old.logical_bytes) {
        return Ok(());
    }
    let share = |new: u64, old: u64| match old {
        0 => "-".to_string(),
        _ => format!("{}%", u128::from(new) * 100 / u128::from(old)),
    };
    Err(Error::Refused(format!(
        "volume {name}: the tree holds {} files and {}: {} of the files and {} of the bytes of the previous dump {} ({}: {} files, {}), under the {pct}% a dump must keep (min_share_percent in reel.toml), which is how a lost or emptied volume looks. Nothing was committed. If the files were removed on purpose, run again with --allow-shrink (`reel dump`, `backup` and `nightly` take it)",
        new.files,
        format_bytes(new.logical_bytes),
        share(new.files, old.files),
        share(new.logical_bytes, old.logical_bytes),
        prev.id,
        format_rfc3339(prev.time_ns),
        old.files,
        format_bytes(old.logical_bytes),
    )))
}

/// The filesystem to record for volume `name` after a successful dump: its root's, when the
/// volume has none recorded yet (added before reel recorded them) and the root is not empty
/// (an empty root may be the mount point of a filesystem that is missing).
pub(crate) fn filesystem_to_record(spool: &Spool, name: &str) -> Option<FsIdentity> {
    let vol = spool.settings.volumes.get(name)?;
    if vol.filesystem.is_some() {
        return None;
    }
    let dir = Dir::open(&vol.path).ok()?;
    if dir.names().ok()?.is_empty() {
        return None;
    }
    FsIdentity::of(&dir).ok()
}

/// Record `fs` as volume `name`'s filesystem in reel.toml, unless one is recorded already.
pub fn record_filesystem(spool: &mut Spool, name: &str, fs: FsIdentity) -> Result<()> {
    spool.update_volume(name, |v| {
        v.filesystem.get_or_insert(fs);
        Ok(())
    })
}
