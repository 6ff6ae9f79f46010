//! `reel restore`.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::catalog::DumpRecord;
use reel::restore::{RestoreOptions, normalise_path, restore_dump_with};
use reel::select::{Picked, expand_paths, is_glob, pick_dump_or_tape};
use reel::spool::{Access, Spool};
use reel::store::ChunkReader;
use reel::tape::locate::{self, Staged, TapeSources};
use reel::tape::media::{self, TapeDumpSummary};
use reel::timefmt::{format_bytes, format_rfc3339};

use super::json::{seconds, time};
use super::{Ctx, print_json};

/// Where a read finds the tapes holding data that purge removed from the spool: the same
/// arguments for `restore`, `cat`, `export-plain` and `mount`.
#[derive(Args, Clone, Debug, Default)]
pub struct TapeArgs {
    /// A folder of tape images (files, split sets, folders `restore -x` extracted), searched
    /// for the tapes the read needs.
    #[arg(long, value_name = "DIR")]
    tapes: Option<PathBuf>,
    /// A tape image (repeat for several): a file, the prefix of a split set, or LABEL=PATH for
    /// an image whose header does not say which tape it is.
    #[arg(long, value_name = "IMAGE")]
    tape: Vec<String>,
}

impl TapeArgs {
    pub fn sources(&self) -> TapeSources {
        TapeSources {
            dir: self.tapes.clone(),
            images: self.tape.clone(),
        }
    }
}

/// A dump opened for reading: its record, and a chunk reader that also reads the tapes the
/// read needs (staged while `_tapes` lives).
pub struct Reading<'a> {
    pub dump: DumpRecord,
    pub reader: ChunkReader<'a>,
    _tapes: Vec<Staged>,
}

/// Open the dump `picked` names for `ls`, `cat` or `export-plain`. A dump of the catalog reads
/// the tapes that hold the data of the entries `paths` selects (every entry when empty; none
/// when `data` is false: its manifest is on the spool); a dump only tapes hold reads the tapes
/// its record names, its manifest included. Tapes come from `tapes`, and needed tapes not
/// given are named in the error.
pub fn open_picked<'a>(
    spool: &'a Spool,
    picked: Picked,
    paths: &[Vec<u8>],
    data: bool,
    tapes: &TapeArgs,
) -> Result<Reading<'a>> {
    let mut reader = ChunkReader::new(spool)?;
    let sources = tapes.sources();
    match picked {
        Picked::Spool(dump) => {
            let labels = if data {
                media::tapes_for_restore(spool, &dump, paths)?.1
            } else {
                Vec::new()
            };
            let staged = locate::supply(spool, &mut reader, &labels, &sources)?;
            Ok(Reading {
                dump,
                reader,
                _tapes: staged,
            })
        }
        Picked::Tape { label, dump: s } => {
            let staged = locate::supply(spool, &mut reader, &s.tapes_needed, &sources)?;
            let dump = locate::tape_dump_record(&staged, &label, &s)?;
            Ok(Reading {
                dump,
                reader,
                _tapes: staged,
            })
        }
    }
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The volume; NAME@T for the dump current at T, NAME@backup for the latest clone.
    name: String,
    /// Restore only these paths (subtrees) of the volume.
    paths: Vec<PathBuf>,
    /// The dump current at this time (RFC 3339, or YYYY-MM-DD for the end of that day).
    #[arg(long)]
    at: Option<String>,
    /// A dump by id.
    #[arg(long, conflicts_with = "at")]
    dump: Option<u64>,
    /// The directory to rebuild the tree in.
    #[arg(long)]
    to: PathBuf,
    /// Write into a non-empty directory.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    tapes: TapeArgs,
    /// Print the chain, the tapes needed and the bytes; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result (or with --dry-run the plan) as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    let opts = RestoreOptions {
        overwrite: a.overwrite,
        paths: a
            .paths
            .iter()
            .map(|p| normalise_path(p.as_os_str().as_bytes()))
            .collect(),
    };
    let d = match pick_dump_or_tape(&spool, &a.name, a.at.as_deref(), a.dump)? {
        Picked::Spool(d) => d,
        Picked::Tape { label, dump } => return from_tapes(ctx, &spool, &a, &opts, &label, &dump),
    };
    let opts = with_globs_expanded(&spool, None, &d, opts)?;
    let (missing, labels) = reel::tape::media::tapes_for_restore(&spool, &d, &opts.paths)?;
    if a.dry_run && a.json {
        print_json(&serde_json::json!({
            "dry_run": true,
            "id": d.id,
            "volume": d.volume,
            "time": time(d.time_ns),
            "level": d.level,
            "in_catalog": true,
            "logical_bytes": d.totals.logical_bytes,
            "chain": chain_json(&spool, &d.full_chain())?,
            "tape_only_bytes": missing,
            "tapes_needed": labels,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if a.dry_run {
        println!(
            "dump {} of volume {} ({}, level {}): {}",
            d.id,
            d.volume,
            format_rfc3339(d.time_ns),
            d.level,
            format_bytes(d.totals.logical_bytes)
        );
        print_chain(&spool, &d.full_chain())?;
        if labels.is_empty() {
            println!("  every chunk is on the spool: no tape needed");
        } else {
            println!(
                "  {} of file data is on tape only; tapes needed, in this order: {}",
                format_bytes(missing),
                labels.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut reader = reel::store::ChunkReader::new(&spool)?;
    let _guards = locate::supply(&spool, &mut reader, &labels, &a.tapes.sources())?;
    restore_and_report(ctx, &reader, &d, &a, &opts)
}

/// The chain as JSON, level 0 first: `id`, `level`, `time`, `in_catalog` per dump.
fn chain_json(spool: &reel::spool::Spool, chain: &[u64]) -> Result<serde_json::Value> {
    let mut out = Vec::new();
    for (id, found) in chain_dumps(spool, chain)? {
        out.push(match found {
            Some((level, time_ns, in_catalog)) => serde_json::json!({
                "id": id,
                "level": level,
                "time": time(time_ns),
                "in_catalog": in_catalog,
            }),
            None => serde_json::json!({
                "id": id, "level": null, "time": null, "in_catalog": false,
            }),
        });
    }
    Ok(out.into())
}

/// Each dump of `chain`: (level, time, whether the catalog has it), from the catalog or from
/// the tape records for dumps it no longer has; None when neither knows it.
#[allow(clippy::type_complexity)]
fn chain_dumps(
    spool: &reel::spool::Spool,
    chain: &[u64],
) -> Result<Vec<(u64, Option<(u8, i64, bool)>)>> {
    let on_tapes: Vec<TapeDumpSummary> = media::tapes(spool)?
        .into_iter()
        .flat_map(|t| t.summaries)
        .collect();
    let mut out = Vec::new();
    for &id in chain {
        let found = match spool.catalog.dump(id)? {
            Some(c) => Some((c.level, c.time_ns, true)),
            None => on_tapes
                .iter()
                .find(|s| s.id == id)
                .map(|s| (s.level, s.time_ns, false)),
        };
        out.push((id, found));
    }
    Ok(out)
}

/// The chain, newest first: from the catalog, or from the tape records for dumps it no
/// longer has.
fn print_chain(spool: &reel::spool::Spool, chain: &[u64]) -> Result<()> {
    // Level 0 first: the order the dumps are read in, and the tapes' order.
    for (id, found) in chain_dumps(spool, chain)? {
        if let Some((level, time_ns, in_catalog)) = found {
            println!(
                "  chain: dump {id} level {level} {}{}",
                format_rfc3339(time_ns),
                if in_catalog { "" } else { " (on tape only)" }
            );
        }
    }
    Ok(())
}

/// A dump that only tapes hold (prune removed it from the catalog): the tapes its record names
/// are the plan, and its record comes from the CATALOG of the tape holding it.
fn from_tapes(
    ctx: &Ctx,
    spool: &reel::spool::Spool,
    a: &RestoreArgs,
    opts: &RestoreOptions,
    label: &str,
    s: &TapeDumpSummary,
) -> Result<ExitCode> {
    let labels = &s.tapes_needed;
    if a.dry_run && a.json {
        let mut chain = s.chain.clone();
        chain.push(s.id);
        print_json(&serde_json::json!({
            "dry_run": true,
            "id": s.id,
            "volume": s.volume,
            "time": time(s.time_ns),
            "level": s.level,
            "in_catalog": false,
            "logical_bytes": null,
            "chain": chain_json(spool, &chain)?,
            "tape_only_bytes": null,
            "tapes_needed": labels,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if a.dry_run {
        println!(
            "dump {} of volume {} ({}, level {}): not in the catalog any more (pruned), on tape {label}",
            s.id,
            s.volume,
            format_rfc3339(s.time_ns),
            s.level
        );
        let mut chain = s.chain.clone();
        chain.push(s.id);
        print_chain(spool, &chain)?;
        println!(
            "  it restores from tapes only; tapes needed, in this order: {}",
            labels.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut reader = reel::store::ChunkReader::new(spool)?;
    let guards = locate::supply(spool, &mut reader, labels, &a.tapes.sources())?;
    let d = locate::tape_dump_record(&guards, label, s)?;
    let opts = with_globs_expanded(spool, Some(&reader), &d, opts.clone())?;
    restore_and_report(ctx, &reader, &d, a, &opts)
}

/// `opts` with its glob patterns replaced by the paths they match in `d`'s manifest (read by
/// `reader`, or from the spool): a pattern that matches nothing fails before anything is
/// written. Without patterns, `opts` as it is and no read.
fn with_globs_expanded(
    spool: &reel::spool::Spool,
    reader: Option<&reel::store::ChunkReader>,
    d: &DumpRecord,
    opts: RestoreOptions,
) -> Result<RestoreOptions> {
    if !opts.paths.iter().any(|p| is_glob(p)) {
        return Ok(opts);
    }
    let own;
    let reader = match reader {
        Some(r) => r,
        None => {
            own = reel::store::ChunkReader::new(spool)?;
            &own
        }
    };
    let paths = expand_paths(reader.manifest(d)?, &opts.paths, d)?;
    Ok(RestoreOptions { paths, ..opts })
}

fn restore_and_report(
    ctx: &Ctx,
    reader: &reel::store::ChunkReader,
    d: &DumpRecord,
    a: &RestoreArgs,
    opts: &RestoreOptions,
) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let bar = ctx.progress();
    let stats = restore_dump_with(reader, d, &a.to, opts, &bar)?;
    drop(bar);
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        print_json(&serde_json::json!({
            "dry_run": false,
            "id": d.id,
            "volume": d.volume,
            "time": time(d.time_ns),
            "level": d.level,
            "to": a.to.display().to_string(),
            "paths": opts.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
            "entries": stats.entries,
            "files": stats.files,
            "bytes": stats.bytes,
            "chunks_read": stats.chunks_read,
            "skipped": stats.skipped,
            "duration_seconds": seconds(started.elapsed().as_nanos() as u64),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "restored dump {} of volume {} ({}, level {}) to {}: {} entries, {} files, {} in {:.2} s ({}/s)",
        d.id,
        d.volume,
        format_rfc3339(d.time_ns),
        d.level,
        a.to.display(),
        stats.entries,
        stats.files,
        format_bytes(stats.bytes),
        secs,
        format_bytes((stats.bytes as f64 / secs.max(1e-9)) as u64)
    );
    Ok(ExitCode::SUCCESS)
}
