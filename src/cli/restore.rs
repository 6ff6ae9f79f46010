//! `reel restore`.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::catalog::DumpRecord;
use reel::restore::{RestoreOptions, normalise_path, restore_dump_with};
use reel::select::{Picked, expand_paths, is_glob, pick_dump_or_tape};
use reel::spool::Access;
use reel::tape::media::{self, TapeDumpSummary};
use reel::tape::payload;
use reel::timefmt::{format_bytes, format_rfc3339};
use reel::{Error, Result};

use super::Ctx;

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
    /// A folder of tape images, searched for the tapes the restore needs.
    #[arg(long, value_name = "DIR")]
    tapes: Option<PathBuf>,
    /// A tape image for a label (repeat for several): LABEL=PATH.
    #[arg(long, value_name = "LABEL=PATH")]
    tape: Vec<String>,
    /// Print the chain, the tapes needed and the bytes; write nothing.
    #[arg(long)]
    dry_run: bool,
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
    let _guards =
        super::tape::supply_tapes(&spool, &mut reader, &labels, &a.tape, a.tapes.as_deref())?;
    restore_and_report(ctx, &reader, &d, &a, &opts)
}

/// The chain, newest first: from the catalog, or from the tape records for dumps it no
/// longer has.
fn print_chain(spool: &reel::spool::Spool, chain: &[u64]) -> Result<()> {
    let on_tapes: Vec<TapeDumpSummary> = media::tapes(spool)?
        .into_iter()
        .flat_map(|t| t.summaries)
        .collect();
    // Level 0 first: the order the dumps are read in, and the tapes' order.
    for &id in chain {
        let found = match spool.catalog.dump(id)? {
            Some(c) => Some((c.level, c.time_ns, "")),
            None => on_tapes
                .iter()
                .find(|s| s.id == id)
                .map(|s| (s.level, s.time_ns, " (on tape only)")),
        };
        if let Some((level, time_ns, note)) = found {
            println!(
                "  chain: dump {id} level {level} {}{note}",
                format_rfc3339(time_ns)
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
    let guards =
        super::tape::supply_tapes(spool, &mut reader, labels, &a.tape, a.tapes.as_deref())?;
    let mut record = None;
    for g in &guards {
        let cat = payload::read_catalog(g.dir())?;
        if let Some(td) = cat
            .dumps
            .iter()
            .find(|d| d.volume == s.volume && d.time_ns == s.time_ns)
        {
            record = Some(td.to_record());
            break;
        }
    }
    let Some(mut d) = record else {
        return Err(Error::usage(format!(
            "the tapes {} do not hold dump {} of volume {} ({}), which the media catalog places on tape {label}",
            labels.join(", "),
            s.id,
            s.volume,
            format_rfc3339(s.time_ns)
        )));
    };
    // Named by this spool's ids, as `reel tapes` lists it.
    d.id = s.id;
    d.base = s.chain.last().copied();
    d.chain = s.chain.clone();
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
