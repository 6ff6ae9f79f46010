//! `reel restore`.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::restore::{RestoreOptions, normalise_path, restore_dump_with};
use reel::spool::Access;
use reel::timefmt::{format_bytes, format_rfc3339};

use super::Ctx;
use reel::select::pick_dump;

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
    let d = pick_dump(&spool, &a.name, a.at.as_deref(), a.dump)?;
    let opts = RestoreOptions {
        overwrite: a.overwrite,
        paths: a
            .paths
            .iter()
            .map(|p| normalise_path(p.as_os_str().as_bytes()))
            .collect(),
    };
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
        // Level 0 first: the order the dumps are read in, and the tapes' order.
        for id in d.full_chain() {
            if let Some(c) = spool.catalog.dump(id)? {
                println!(
                    "  chain: dump {} level {} {}",
                    c.id,
                    c.level,
                    format_rfc3339(c.time_ns)
                );
            }
        }
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
    let started = std::time::Instant::now();
    let bar = ctx.progress();
    let stats = restore_dump_with(&reader, &d, &a.to, &opts, &bar)?;
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
