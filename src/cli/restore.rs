//! `reel restore`.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::restore::{RestoreOptions, normalise_path, restore_dump};
use reel::spool::Access;
use reel::timefmt::{format_bytes, format_rfc3339};

use super::Ctx;
use super::browse::pick_dump;

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
    let started = std::time::Instant::now();
    let bar = ctx.progress();
    let stats = restore_dump(&spool, &d, &a.to, &opts, &bar)?;
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
