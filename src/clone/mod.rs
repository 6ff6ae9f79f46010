//! The clone phase: freeze a volume, take a read-only clone, thaw it, and say how long it was
//! frozen (docs/DESIGN.md, "The three phases").
//!
//! `hook` runs the admin's commands, `freeze` holds the freeze lock (with the signal guard,
//! `crate::signal`, it makes sure a volume is never left frozen), `copy` makes directory clones
//! (reflink and copy methods), `capture` takes a volume straight into the store (store
//! method). A volume has one clone at a time: the latest, its users' "yesterday" view.

pub mod capture;
pub mod copy;
pub mod freeze;
pub mod hook;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::progress::Progress;
use crate::record::ScanTotals;
use crate::record::{CloneRecord, CloneView};
use crate::spool::{CloneMethod, Spool, VolumeSettings};
use crate::timefmt;
use crate::{ChunkId, Error, Result};
use copy::CopyStats;
use hook::HookKind;

/// Where the tree of a volume's latest clone can be read.
#[derive(Clone, Debug)]
pub enum Tree {
    /// A manifest in the spool (a `store` clone, or any clone that has been dumped).
    Manifest(Vec<(ChunkId, u32)>),
    /// A read-only directory (a `reflink`, `copy` or `hook` clone not dumped yet).
    Dir(PathBuf),
}

/// The latest clone of `volume` and where to read it, or None when it has none.
pub fn backup_tree(spool: &Spool, volume: &str) -> Result<Option<(CloneRecord, Tree)>> {
    let Some(rec) = spool.catalog.clone_of(volume)? else {
        return Ok(None);
    };
    let tree = match (&rec.view, rec.dumped) {
        (CloneView::Manifest { chunks, .. }, _) => {
            Tree::Manifest(chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect())
        }
        (CloneView::Dir { .. }, Some(d)) if spool.catalog.dump(d)?.is_some() => {
            let d = spool.catalog.dump(d)?.expect("checked");
            Tree::Manifest(d.manifest_chunks())
        }
        (CloneView::Dir { path, .. }, _) => Tree::Dir(PathBuf::from(path)),
    };
    Ok(Some((rec, tree)))
}

#[derive(Clone, Debug, Default)]
pub struct CloneOptions {
    /// The clone's recorded time (its dump's time); now when None.
    pub time_ns: Option<i64>,
    /// `store` method: read every file, ignoring the stat-data cache.
    pub reread: bool,
    /// The shrink guard (`crate::dump::Shrink`): the volume's root is checked before the
    /// freeze, and a `store` clone's tree after its walk, before its commit.
    pub shrink: crate::dump::Shrink,
}

/// A clone taken, with what the admin wants to hear about it.
#[derive(Clone, Debug)]
pub struct CloneOutcome {
    pub record: CloneRecord,
    /// How long the volume was frozen: from taking the freeze lock to the thaw hook's end.
    pub frozen: Duration,
    /// Things worth a line in the report (a replaced clone that was never dumped, a release
    /// hook that failed).
    pub notes: Vec<String>,
}

/// Take a new clone of volume `name`: freeze (lock, freeze hook), clone by the volume's
/// method, thaw (thaw hook, unlock), record it as the volume's latest clone and drop the one
/// it replaces. The thaw hook runs whenever the freeze hook was started, also when the freeze
/// hook failed, on errors and on SIGINT/SIGTERM/SIGHUP (which then end the clone with
/// `Error::Interrupted`), with `REEL_FREEZE` set to `ok` or `failed`.
pub fn clone_volume(
    spool: &Spool,
    name: &str,
    opts: &CloneOptions,
    progress: &dyn Progress,
) -> Result<CloneOutcome> {
    let vol = spool.volume(name)?.clone();
    let time_ns = opts.time_ns.unwrap_or_else(timefmt::now_ns);
    timefmt::check_time(name, &spool.catalog.dumps(Some(name))?, time_ns)?;
    if vol.clone == CloneMethod::Hook && vol.snapshot_cmd.is_none() {
        return Err(Error::usage(format!(
            "volume {name} clones with the hook method but has no snapshot command: set one with `reel volume set {name} --snapshot-cmd CMD`"
        )));
    }
    // Before freezing: a missing, unmounted or emptied volume fails alone, with nothing to thaw.
    crate::dump::check_live_root(spool, name, opts.shrink)?;
    let old = spool.catalog.clone_of(name)?;
    let timeout = vol.hook_timeout();

    let _signals = crate::signal::catch_signals();
    let lock = freeze::acquire(&spool.freeze_lock_path(name), timeout)?;
    let frozen_at = Instant::now();
    let mut made = Ok(None);
    let mut froze = false;
    if let Some(cmd) = &vol.freeze_cmd {
        froze = true;
        made = hook::run_hook(HookKind::Freeze, cmd, name, &vol.path, &[], timeout, true)
            .map(|_| None);
    }
    let frozen_ok = made.is_ok();
    if made.is_ok() {
        made = crate::signal::check_interrupted()
            .and_then(|()| take(spool, name, &vol, time_ns, opts, progress).map(Some));
    }
    // Thaw after a failed freeze too: a freeze hook that failed part way may have frozen
    // (`fsfreeze -f` done, a later step failed). REEL_FREEZE tells the thaw hook which it was.
    let thawed = match (&vol.thaw_cmd, froze) {
        (Some(cmd), true) => {
            let freeze = if frozen_ok { "ok" } else { "failed" };
            let env = [("REEL_FREEZE", freeze)];
            hook::run_hook(HookKind::Thaw, cmd, name, &vol.path, &env, timeout, false).map(|_| ())
        }
        _ => Ok(()),
    };
    let frozen = frozen_at.elapsed();
    drop(lock);

    let mut notes = Vec::new();
    let record = match made {
        Ok(Some(mut rec)) => {
            rec.frozen_ns = frozen.as_nanos() as u64;
            let txn = spool.catalog.writer()?;
            txn.put_clone(&rec)?;
            txn.commit()?;
            drop_old_clone(spool, name, &vol, old.as_ref(), &rec, &mut notes);
            rec
        }
        Ok(None) => unreachable!("a clone is taken once the freeze succeeds"),
        Err(e) => {
            // Whatever the take left behind under clones/ is not recorded: remove it.
            sweep_clone_dir(spool, name, old.as_ref());
            return Err(match thawed {
                Err(t) => Error::Hook(format!("{e}; and then: {t}")),
                Ok(()) => e,
            });
        }
    };
    thawed.map_err(|t| {
        Error::Hook(format!(
            "{t}. The clone was taken, but volume {name} may still be frozen: run its thaw command by hand"
        ))
    })?;
    crate::signal::check_interrupted()?;
    Ok(CloneOutcome {
        record,
        frozen,
        notes,
    })
}

/// Make the clone by the volume's method, while it is frozen.
fn take(
    spool: &Spool,
    name: &str,
    vol: &VolumeSettings,
    time_ns: i64,
    opts: &CloneOptions,
    progress: &dyn Progress,
) -> Result<CloneRecord> {
    let scan_started_ns = timefmt::now_ns();
    let record = |view, stats: CopyStats| CloneRecord {
        version: crate::record::CLONE_RECORD_VERSION,
        volume: name.to_string(),
        time_ns,
        method: vol.clone,
        frozen_ns: 0,
        scan_started_ns,
        source: vol.path.display().to_string(),
        view,
        dumped: None,
        totals: ScanTotals {
            entries: stats.entries,
            files: stats.files,
            dirs: stats.dirs,
            logical_bytes: stats.bytes,
            ..ScanTotals::default()
        },
        warnings: Vec::new(),
    };
    match vol.clone {
        CloneMethod::Store => capture::capture_clone(spool, name, time_ns, opts, progress),
        CloneMethod::Reflink | CloneMethod::Copy => {
            let dir = spool.clones_dir(name);
            crate::fsutil::create_dir_all(&dir).at(&dir)?;
            let dst = dir.join(time_ns.to_string());
            let statmap = dir.join(format!("{time_ns}.statmap"));
            if dst.exists() {
                copy::remove_tree(&dst)?;
            }
            let mode = if vol.clone == CloneMethod::Reflink {
                copy::CopyMode::Reflink
            } else {
                copy::CopyMode::Copy
            };
            progress.message(&format!("cloning {name} ({})", vol.clone));
            let stats = copy::copy_tree_excluding(
                &vol.path,
                &dst,
                mode,
                &statmap,
                &crate::signal::check_interrupted,
                vol.exclusions()?,
            )
            .map_err(|e| match e {
                // The copy does not know the volume's name; its advice should.
                Error::Volume(m) => Error::Volume(format!(
                    "volume {name}: {}",
                    m.replace("reel volume set NAME", &format!("reel volume set {name}"))
                )),
                e => e,
            })?;
            Ok(record(
                CloneView::Dir {
                    path: dst.display().to_string(),
                    statmap: Some(statmap.display().to_string()),
                },
                stats,
            ))
        }
        CloneMethod::Hook => {
            let cmd = vol
                .snapshot_cmd
                .as_deref()
                .expect("checked before freezing");
            let out = hook::run_hook(
                HookKind::Snapshot,
                cmd,
                name,
                &vol.path,
                &[],
                vol.hook_timeout(),
                true,
            )?;
            let line = out
                .stdout
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("");
            let path = PathBuf::from(line);
            if !path.is_absolute() || !path.is_dir() {
                return Err(Error::Hook(format!(
                    "volume {name}: the snapshot command `{cmd}` must print the absolute path of a directory as its last line; it printed {line:?}"
                )));
            }
            Ok(record(
                CloneView::Dir {
                    path: path.display().to_string(),
                    statmap: None,
                },
                CopyStats::default(),
            ))
        }
    }
}

/// After a new clone is recorded: remove the directory clone it replaces, or release the
/// snapshot it replaces, and sweep leftovers of interrupted clones.
fn drop_old_clone(
    spool: &Spool,
    name: &str,
    vol: &VolumeSettings,
    old: Option<&CloneRecord>,
    new: &CloneRecord,
    notes: &mut Vec<String>,
) {
    if let Some(old) = old {
        if old.dumped.is_none() {
            notes.push(format!(
                "replaced the clone of {} that was never dumped",
                timefmt::format_rfc3339(old.time_ns)
            ));
        }
        if let (CloneMethod::Hook, CloneView::Dir { path, .. }) = (old.method, &old.view) {
            let same = matches!(&new.view, CloneView::Dir { path: p, .. } if p == path);
            if let (Some(cmd), false) = (&vol.release_cmd, same)
                && let Err(e) = hook::run_hook(
                    HookKind::Release,
                    cmd,
                    name,
                    &vol.path,
                    &[("REEL_SNAPSHOT", path)],
                    vol.hook_timeout(),
                    false,
                )
            {
                tracing::warn!("{e}");
                notes.push(format!("releasing the previous snapshot failed: {e}"));
            }
        }
    }
    sweep_clone_dir(spool, name, Some(new));
}

/// Remove everything under clones/NAME/ that is not the recorded clone's tree or stat map.
fn sweep_clone_dir(spool: &Spool, name: &str, keep: Option<&CloneRecord>) {
    let dir = spool.clones_dir(name);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let kept: Vec<PathBuf> = match keep.map(|k| &k.view) {
        Some(CloneView::Dir { path, statmap }) => {
            let mut v = vec![PathBuf::from(path)];
            v.extend(statmap.iter().map(PathBuf::from));
            v
        }
        _ => Vec::new(),
    };
    for e in rd.flatten() {
        let p = e.path();
        if kept.contains(&p) {
            continue;
        }
        let res = if p.is_dir() {
            copy::remove_tree(&p)
        } else {
            std::fs::remove_file(&p).at(&p)
        };
        if let Err(e) = res {
            tracing::warn!("cannot remove an old clone: {e}");
        }
    }
}
