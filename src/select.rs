//! Which dump a command reads: a volume's latest dump, the one current at a time (`--at T`, or
//! `NAME@T`), a dump by id (`--dump ID`), or the volume's latest clone (`NAME@backup`), the
//! users' "yesterday". `NAME@latest` is the latest dump, as `NAME` alone. `ls`, `cat`,
//! `restore` and `export-plain` name dumps this way, and all of them also reach a dump that
//! only tapes hold (`pick_dump_or_tape`).
//!
//! Paths inside a dump, for `ls`, `cat` and `restore`, may be glob patterns
//! ([`PathPattern`]), as restic's `--include`: `'alice/docs/*.txt'`, `'**/*.jpg'`. A path with
//! no glob character (`*`, `?`, `[`, `{`) keeps its exact meaning, so existing scripts and
//! names with none of them are unchanged.

use crate::catalog::DumpRecord;
use crate::clone::Tree;
use crate::error::{Error, Result};
use crate::record::TapeDumpSummary;
use crate::spool::Spool;
use crate::timefmt::{DayEdge, format_rfc3339, parse_time};
use crate::types::{Entry, is_under};

/// Pick what to read: the dump of `volume` current at `at` (latest when None), or dump `id`.
/// `volume` may be `NAME@T` (the same as `--at T`), `NAME@backup` (the latest clone) or
/// `NAME@latest` (the latest dump).
pub fn pick_dump(
    spool: &Spool,
    volume: &str,
    at: Option<&str>,
    id: Option<u64>,
) -> Result<DumpRecord> {
    let (volume, at) = match volume.split_once('@') {
        None => (volume, at),
        Some(_) if at.is_some() || id.is_some() => {
            return Err(Error::usage(format!(
                "{volume} already names a point in time: drop --at/--dump"
            )));
        }
        Some((v, "backup")) => return backup_record(spool, v),
        Some((v, "latest")) => (v, None),
        Some((v, t)) => (v, Some(t)),
    };
    spool.known_volume(volume)?;
    if let Some(id) = id {
        let d = spool.catalog.dump(id)?.ok_or_else(|| {
            Error::usage(format!(
                "no dump {id}; `reel list {volume}` shows the dumps"
            ))
        })?;
        if d.volume != volume {
            return Err(Error::usage(format!(
                "dump {id} is of volume {}, not {volume}",
                d.volume
            )));
        }
        return Ok(d);
    }
    match at {
        Some(t) => {
            let at = parse_time(t, DayEdge::End)?;
            spool.catalog.dump_at(volume, at)?.ok_or_else(|| {
                Error::usage(format!(
                    "volume {volume} has no dump at or before {}; `reel list {volume}` shows its dumps",
                    format_rfc3339(at)
                ))
            })
        }
        None => spool.catalog.latest_dump(volume)?.ok_or_else(|| {
            Error::usage(format!(
                "volume {volume} has no dumps yet; run `reel dump {volume} --level 0`"
            ))
        }),
    }
}

/// What a restore reads: a dump of the catalog, or one that only tapes still hold.
pub enum Picked {
    Spool(DumpRecord),
    /// Pruned or forgotten from the catalog; `label` is a tape holding it (its CATALOG has
    /// the dump's record), and `dump.tapes_needed` the tapes a restore reads.
    Tape {
        label: String,
        dump: TapeDumpSummary,
    },
}

/// [`pick_dump`], where `--at T` also considers the dumps the media catalog's tapes hold that
/// the catalog no longer has: the later of the two is the one current at T, so a pruned day
/// restores from its tapes instead of from an older dump. `--dump ID` of a dump only tapes
/// hold picks it too.
pub fn pick_dump_or_tape(
    spool: &Spool,
    volume: &str,
    at: Option<&str>,
    id: Option<u64>,
) -> Result<Picked> {
    let (name, t) = match (volume.split_once('@'), at, id) {
        (None, Some(t), None) => (volume, t),
        (Some((v, t)), None, None) if t != "backup" && t != "latest" => (v, t),
        (None, None, Some(id)) if spool.catalog.dump(id)?.is_none() => {
            return match tape_only_dump(spool, volume, id)? {
                Some((label, dump)) => Ok(Picked::Tape { label, dump }),
                None => pick_dump(spool, volume, at, Some(id)).map(Picked::Spool),
            };
        }
        _ => return pick_dump(spool, volume, at, id).map(Picked::Spool),
    };
    spool.known_volume(name)?;
    let at_ns = parse_time(t, DayEdge::End)?;
    let on_spool = spool.catalog.dump_at(name, at_ns)?;
    let on_tape = crate::tape::media::tape_only_dump_at(spool, name, at_ns)?;
    match (on_spool, on_tape) {
        (Some(d), Some((_, s))) if d.time_ns >= s.time_ns => Ok(Picked::Spool(d)),
        (_, Some((label, dump))) => Ok(Picked::Tape { label, dump }),
        (Some(d), None) => Ok(Picked::Spool(d)),
        // pick_dump's own "no dump at or before" error.
        (None, None) => pick_dump(spool, volume, at, id).map(Picked::Spool),
    }
}

/// Dump `id` of `volume` as the media catalog keeps it, when only tapes hold it (prune or
/// forget removed it from the catalog), with the label of a tape holding it.
fn tape_only_dump(
    spool: &Spool,
    volume: &str,
    id: u64,
) -> Result<Option<(String, TapeDumpSummary)>> {
    spool.known_volume(volume)?;
    for t in crate::tape::media::tapes(spool)? {
        if let Some(s) = t.summaries.iter().find(|s| s.id == id) {
            if s.volume != volume {
                return Err(Error::usage(format!(
                    "dump {id} is of volume {}, not {volume}",
                    s.volume
                )));
            }
            return Ok(Some((t.label.clone(), s.clone())));
        }
    }
    Ok(None)
}

/// The latest clone of `volume` as a record to read: its dump once it has one, else (a
/// `store` clone) its manifest under the id 0.
fn backup_record(spool: &Spool, volume: &str) -> Result<DumpRecord> {
    spool.known_volume(volume)?;
    let Some((c, tree)) = crate::clone::backup_tree(spool, volume)? else {
        return Err(Error::usage(format!(
            "volume {volume} has no clone yet; take one with `reel clone {volume}` (or `reel backup {volume}`)"
        )));
    };
    if let Some(d) = c
        .dumped
        .map(|id| spool.catalog.dump(id))
        .transpose()?
        .flatten()
    {
        return Ok(d);
    }
    match tree {
        Tree::Manifest(chunks) => Ok(DumpRecord {
            version: crate::record::DUMP_RECORD_VERSION,
            id: 0,
            volume: format!("{volume}@backup"),
            time_ns: c.time_ns,
            level: 0,
            requested_level: 0,
            base: None,
            chain: Vec::new(),
            merged_from: None,
            source: c.source.clone(),
            scan_started_ns: c.scan_started_ns,
            duration_ns: 0,
            totals: c.totals,
            owned_chunks: 0,
            owned_bytes: 0,
            manifest: chunks.iter().map(|(id, n)| (id.0, *n)).collect(),
            manifest_bytes: 0,
            warnings: c.warnings.clone(),
            host: None,
        }),
        Tree::Dir(p) => Err(Error::usage(format!(
            "the clone of {volume} ({}) is the read-only directory {}: read it there, or dump it first with `reel dump {volume} --level N`",
            format_rfc3339(c.time_ns),
            p.display()
        ))),
    }
}

/// Does a path argument hold a glob character? One that does not names itself.
pub fn is_glob(path: &[u8]) -> bool {
    path.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'{'))
}

/// A glob pattern over paths in a dump, matched from the volume's root against whole paths
/// (`globset`, the matcher ripgrep and the `ignore` crate use): `*`, `?` and `[...]` stay
/// within one name, `**` crosses directories, `{a,b}` is either, `\` escapes.
pub struct PathPattern {
    matcher: globset::GlobMatcher,
    /// The pattern as given, for messages.
    pub shown: String,
}

impl PathPattern {
    /// `pattern` (normalised: no leading `/` or `./`); a bad one is a usage error naming it.
    pub fn new(pattern: &[u8]) -> Result<PathPattern> {
        let shown = String::from_utf8_lossy(pattern).into_owned();
        let norm = crate::restore::normalise_path(pattern);
        let text = std::str::from_utf8(&norm).map_err(|_| {
            Error::usage(format!(
                "pattern {shown:?} is not UTF-8; give the path without glob characters"
            ))
        })?;
        let glob = globset::GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::usage(format!("bad path pattern {shown:?}: {e}")))?;
        Ok(PathPattern {
            matcher: glob.compile_matcher(),
            shown,
        })
    }

    /// Does the pattern match the entry at `path` (relative to the root)?
    /// The root (empty path) is matched by no pattern: `'*'` means what the root holds.
    pub fn matches(&self, path: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        !path.is_empty()
            && self
                .matcher
                .is_match(std::path::Path::new(std::ffi::OsStr::from_bytes(path)))
    }

    /// The usage error for a pattern that matched nothing in dump `rec`.
    pub fn matched_nothing(&self, rec: &DumpRecord) -> Error {
        Error::usage(format!(
            "pattern {} matches nothing in dump {} of volume {}; `reel ls {}` lists what it holds",
            self.shown, rec.id, rec.volume, rec.volume
        ))
    }
}

/// Path arguments for a restore of dump `rec` (normalised): each glob pattern is replaced by
/// the paths it matches in `manifest` (in manifest order, without those inside another match,
/// which the subtree of that match holds); a path without glob characters stays as given, for
/// the restore to check. A pattern that matches nothing is a usage error naming it, before
/// anything is written.
pub fn expand_paths(
    manifest: impl Iterator<Item = Result<Entry>>,
    args: &[Vec<u8>],
    rec: &DumpRecord,
) -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = args.iter().filter(|a| !is_glob(a)).cloned().collect();
    let patterns = args
        .iter()
        .filter(|a| is_glob(a))
        .map(|a| PathPattern::new(a))
        .collect::<Result<Vec<_>>>()?;
    if patterns.is_empty() {
        return Ok(out);
    }
    let mut matched = vec![false; patterns.len()];
    let mut found: Vec<Vec<u8>> = Vec::new();
    for e in manifest {
        let e = e?;
        let mut hit = false;
        for (m, p) in matched.iter_mut().zip(&patterns) {
            if p.matches(&e.path) {
                *m = true;
                hit = true;
            }
        }
        // Depth-first order: what lies inside the last match follows it.
        if hit && found.last().is_none_or(|last| !is_under(&e.path, last)) {
            found.push(e.path);
        }
    }
    if let Some((_, p)) = matched.iter().zip(&patterns).find(|(m, _)| !**m) {
        return Err(p.matched_nothing(rec));
    }
    out.extend(found);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::{DumpOptions, dump_volume};
    use crate::progress::NoProgress;

    const DAY: i64 = 86_400 * 1_000_000_000;

    /// A spool with volume `v` dumped at day 1 (level 0) and day 3 (level 1).
    fn spool_with_two_dumps(work: &std::path::Path) -> (Spool, u64, u64) {
        let vol = work.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("a"), b"first").unwrap();
        let mut spool = Spool::init(&work.join("spool")).unwrap();
        spool.add_volume("v", &vol).unwrap();
        let mut ids = Vec::new();
        for (day, level) in [(1, 0), (3, 1)] {
            std::fs::write(vol.join("a"), format!("day {day}")).unwrap();
            let opts = DumpOptions {
                level,
                time_ns: Some(day * DAY),
                reread: false,
            };
            ids.push(
                dump_volume(&spool, "v", &opts, &NoProgress)
                    .unwrap()
                    .record
                    .id,
            );
        }
        (spool, ids[0], ids[1])
    }

    #[test]
    fn names_pick_the_dump_they_mean() {
        let work = tempfile::tempdir().unwrap();
        let (spool, first, second) = spool_with_two_dumps(work.path());
        let at = |t: i64| crate::timefmt::format_rfc3339(t);
        assert_eq!(pick_dump(&spool, "v", None, None).unwrap().id, second);
        assert_eq!(
            pick_dump(&spool, "v", Some(&at(2 * DAY)), None).unwrap().id,
            first
        );
        let named = format!("v@{}", at(2 * DAY));
        assert_eq!(pick_dump(&spool, &named, None, None).unwrap().id, first);
        assert_eq!(pick_dump(&spool, "v", None, Some(first)).unwrap().id, first);

        let before = pick_dump(&spool, "v", Some(&at(DAY / 2)), None).unwrap_err();
        assert!(
            before.to_string().contains("no dump at or before"),
            "{before}"
        );
        let twice = pick_dump(&spool, &named, Some(&at(DAY)), None).unwrap_err();
        assert!(twice.to_string().contains("drop --at/--dump"), "{twice}");
        let unknown = pick_dump(&spool, "v", None, Some(99)).unwrap_err();
        assert!(unknown.to_string().contains("no dump 99"), "{unknown}");
        let no_volume = pick_dump(&spool, "w", None, None).unwrap_err();
        assert!(no_volume.to_string().contains('w'), "{no_volume}");
        let no_clone = pick_dump(&spool, "v@backup", None, None).unwrap_err();
        assert!(
            no_clone.to_string().contains("has no clone yet"),
            "{no_clone}"
        );
    }
}
