//! `reel init`, `reel volume ...`, `reel merge`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reel::Result;
use reel::spool::{Access, Spool};
use reel::timefmt::format_rfc3339;

use super::{Ctx, at_time, print_json};

pub fn init(ctx: &Ctx) -> Result<ExitCode> {
    let dir = ctx.spool_dir()?;
    Spool::init(&dir)?;
    println!("created spool {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Add a volume: a name and the directory tree it backs up.
    Add { name: String, path: PathBuf },
    /// List the volumes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume (refused while it has dumps, unless --force).
    Remove {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

pub fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Result<ExitCode> {
    match cmd {
        VolumeCmd::Add { name, path } => {
            let mut spool = ctx.open(Access::Write)?;
            spool.add_volume(&name, &path)?;
            println!(
                "added volume {name} at {}",
                spool.volume(&name)?.path.display()
            );
        }
        VolumeCmd::List { json } => {
            let spool = ctx.open(Access::Read)?;
            let mut rows = Vec::new();
            for (name, v) in &spool.settings.volumes {
                let dumps = spool.catalog.dumps(Some(name))?;
                rows.push((
                    name.clone(),
                    v.path.display().to_string(),
                    dumps.len(),
                    dumps.last().map(|d| d.time_ns),
                ));
            }
            if json {
                print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(n, p, c, l)| {
                            serde_json::json!({"name": n, "path": p, "dumps": c, "latest": l.map(format_rfc3339)})
                        })
                        .collect(),
                ));
            } else {
                println!("{:<20} {:>6}  {:<25}  PATH", "VOLUME", "DUMPS", "LATEST");
                for (n, p, c, l) in rows {
                    println!(
                        "{n:<20} {c:>6}  {:<25}  {p}",
                        l.map(format_rfc3339).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        VolumeCmd::Remove { name, force } => {
            let mut spool = ctx.open(Access::Write)?;
            let n = spool.remove_volume(&name, force)?;
            println!(
                "removed volume {name}{}",
                if n > 0 {
                    format!(" ({n} dumps kept in the catalog)")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct MergeArgs {
    /// The volume.
    name: String,
    /// The point in time (RFC 3339, or YYYY-MM-DD for the end of that day).
    #[arg(long)]
    at: String,
}

pub fn merge(ctx: &Ctx, a: MergeArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let rec = reel::merge::merge(&spool, &a.name, at_time(&a.at)?)?;
    println!(
        "dump {}: synthetic level 0 of volume {} at {}, merged from dump {} (no data copied; owns {} chunks)",
        rec.id,
        rec.volume,
        format_rfc3339(rec.time_ns),
        rec.merged_from.unwrap_or_default(),
        rec.owned_chunks
    );
    Ok(ExitCode::SUCCESS)
}
