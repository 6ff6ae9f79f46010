//! `reel ls` and `reel cat`: read a dump without restoring it.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use clap::Args;
use reel::error::Damaged;
use reel::restore::{cat_entry, find_entry, normalise_path};
use reel::spool::Access;
use reel::timefmt::{format_rfc3339, format_short};
use reel::{EntryKind, Error, Result};

use super::restore::open_picked;
use super::{Ctx, print_json};
use reel::select::{PathPattern, Picked, is_glob, pick_dump_or_tape};
use reel::store::ChunkReader;

#[derive(Args)]
pub struct LsArgs {
    /// The volume; NAME@T for the dump current at T, NAME@backup for the latest clone.
    name: String,
    /// Path inside the volume (default: everything), or a glob pattern ('alice/*.txt',
    /// '**/*.jpg'; quote it) for every entry it matches and what matched directories hold.
    path: Option<std::path::PathBuf>,
    /// The dump current at this time (default: the latest).
    #[arg(long)]
    at: Option<String>,
    /// A dump by id.
    #[arg(long, conflicts_with = "at")]
    dump: Option<u64>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tapes: super::restore::TapeArgs,
}

fn mode_string(kind: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind.letter());
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        let set = mode & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

pub fn ls(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    // A dump only tapes hold (pruned) lists from its tapes; a dump of the catalog from the
    // spool, where its manifest stays after a purge.
    let picked = pick_dump_or_tape(&spool, &a.name, a.at.as_deref(), a.dump)?;
    let reading = open_picked(&spool, picked, &[], false, &a.tapes)?;
    let (d, reader) = (&reading.dump, &reading.reader);
    let filter: Vec<Vec<u8>> = a
        .path
        .iter()
        .map(|p| normalise_path(p.as_os_str().as_bytes()))
        .collect();
    let pattern = match filter.first() {
        Some(p) if is_glob(p) => Some(PathPattern::new(p)?),
        _ => None,
    };
    // Under a pattern: the last matched entry, whose subtree is listed with it (manifest order
    // is depth-first, so the subtree follows it).
    let mut inside: Option<Vec<u8>> = None;
    let selection = reel::types::Selection::new(&filter);
    let manifest = reader.manifest(d)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut json = Vec::new();
    let mut found = filter.is_empty();
    for e in manifest {
        let e = e?;
        if let Some(p) = &pattern {
            let take = inside
                .as_ref()
                .is_some_and(|top| reel::types::is_under(&e.path, top))
                || (p.matches(&e.path) && {
                    inside = Some(e.path.clone());
                    true
                });
            if !take {
                continue;
            }
        } else {
            let (take, ancestor) = selection.test(&e.path);
            if !take || ancestor {
                continue;
            }
        }
        found = true;
        if a.json {
            json.push(serde_json::json!({
                "path": e.display_path(),
                "type": format!("{:?}", e.kind).to_lowercase(),
                "mode": format!("{:04o}", e.mode),
                "uid": e.uid,
                "gid": e.gid,
                "size": e.size,
                "mtime": format_rfc3339(e.mtime_ns),
                "target": if e.target.is_empty() { None } else { Some(String::from_utf8_lossy(&e.target).into_owned()) },
            }));
        } else {
            let mut line = format!(
                "{} {:>5} {:>5} {:>12} {} {}",
                mode_string(e.kind, e.mode),
                e.uid,
                e.gid,
                e.size,
                format_short(e.mtime_ns),
                e.display_path()
            );
            match e.kind {
                EntryKind::Symlink => {
                    line += &format!(" -> {}", String::from_utf8_lossy(&e.target))
                }
                EntryKind::HardLink => {
                    line += &format!(" link to {}", String::from_utf8_lossy(&e.target))
                }
                _ => {}
            }
            writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e))?;
        }
    }
    if a.json {
        print_json(&serde_json::Value::Array(json));
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    if !found {
        if let Some(p) = pattern {
            return Err(p.matched_nothing(d));
        }
        return Err(Error::usage(format!(
            "{} is not in dump {} of volume {}",
            a.path.map(|p| p.display().to_string()).unwrap_or_default(),
            d.id,
            d.volume
        )));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct CatArgs {
    /// The volume; NAME@T for the dump current at T, NAME@backup for the latest clone.
    name: String,
    /// Path of a file inside the volume, or a glob pattern ('alice/*.txt'; quote it): every
    /// regular file it matches, in path order, one after another.
    path: std::path::PathBuf,
    /// The dump current at this time (default: the latest).
    #[arg(long)]
    at: Option<String>,
    /// A dump by id.
    #[arg(long, conflicts_with = "at")]
    dump: Option<u64>,
    #[command(flatten)]
    tapes: super::restore::TapeArgs,
}

pub fn cat(ctx: &Ctx, a: CatArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    let path = normalise_path(a.path.as_os_str().as_bytes());
    let picked = pick_dump_or_tape(&spool, &a.name, a.at.as_deref(), a.dump)?;
    if is_glob(&path) {
        return cat_matching(&spool, picked, &a, &path);
    }
    // A hard link's data is its group's first name's: the tapes to read are that file's.
    let mut wanted = vec![path.clone()];
    if let Picked::Spool(d) = &picked
        && let Some(e) = find_entry(&ChunkReader::new(&spool)?, d, &path)?
        && e.kind == EntryKind::HardLink
    {
        wanted.push(e.target);
    }
    let reading = open_picked(&spool, picked, &wanted, true, &a.tapes)?;
    let (d, reader) = (&reading.dump, &reading.reader);
    let mut e = find_entry(reader, d, &path)?.ok_or_else(|| {
        Error::usage(format!(
            "{} is not in dump {} of volume {}",
            a.path.display(),
            d.id,
            d.volume
        ))
    })?;
    if e.kind == EntryKind::HardLink {
        e = find_entry(reader, d, &e.target.clone())?.ok_or_else(|| {
            Error::damaged(
                Damaged::Entry(e.path.clone()),
                format!("hard link {} points to a missing entry", a.path.display()),
            )
        })?;
    }
    if e.kind != EntryKind::File {
        return Err(Error::usage(format!(
            "{} is not a regular file in dump {}",
            a.path.display(),
            d.id
        )));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    cat_entry(reader, &e, &mut out)?;
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(ExitCode::SUCCESS)
}

/// `cat` of a pattern: every regular file (or hard link to one) it matches, in path order, one
/// after another as `cat a*` writes them; other kinds are passed over. A pattern that matches
/// no such file is an error, before anything is written.
fn cat_matching(
    spool: &reel::spool::Spool,
    picked: Picked,
    a: &CatArgs,
    pattern: &[u8],
) -> Result<ExitCode> {
    let p = PathPattern::new(pattern)?;
    let none = |d: &reel::catalog::DumpRecord| {
        Error::usage(format!(
            "pattern {} matches no regular file in dump {} of volume {}; `reel ls {} '{}'` lists what it matches",
            p.shown, d.id, d.volume, d.volume, p.shown
        ))
    };
    // The tapes to read are those of the matches and of their hard links' first names, found
    // in the manifest on the spool; a dump only tapes hold reads the tapes its record names.
    let mut wanted = Vec::new();
    if let Picked::Spool(d) = &picked {
        let hits = matching_files(&ChunkReader::new(spool)?, d, &p)?;
        if hits.is_empty() {
            return Err(none(d));
        }
        for e in hits {
            if e.kind == EntryKind::HardLink {
                wanted.push(e.target.clone());
            }
            wanted.push(e.path);
        }
    }
    let reading = open_picked(spool, picked, &wanted, true, &a.tapes)?;
    let (d, reader) = (&reading.dump, &reading.reader);
    let hits = matching_files(reader, d, &p)?;
    if hits.is_empty() {
        return Err(none(d));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for mut e in hits {
        if e.kind == EntryKind::HardLink {
            let shown = e.display_path();
            e = find_entry(reader, d, &e.target.clone())?.ok_or_else(|| {
                Error::damaged(
                    Damaged::Entry(e.path.clone()),
                    format!("hard link {shown} points to a missing entry"),
                )
            })?;
        }
        cat_entry(reader, &e, &mut out)?;
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(ExitCode::SUCCESS)
}

/// The regular files and hard links of dump `d` that `p` matches, in path order.
fn matching_files(
    reader: &ChunkReader,
    d: &reel::catalog::DumpRecord,
    p: &PathPattern,
) -> Result<Vec<reel::Entry>> {
    let mut hits = Vec::new();
    for e in reader.manifest(d)? {
        let e = e?;
        if matches!(e.kind, EntryKind::File | EntryKind::HardLink) && p.matches(&e.path) {
            hits.push(e);
        }
    }
    Ok(hits)
}
