//! `reel list` and `reel show`.

use std::process::ExitCode;

use clap::Args;
use reel::catalog::DumpRecord;
use reel::spool::Access;
use reel::timefmt::{format_bytes, format_duration, format_rfc3339, format_short};
use reel::{Error, Result};

use super::{Ctx, print_json};

#[derive(Args)]
pub struct ListArgs {
    /// Only this volume's dumps.
    name: Option<String>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn dump_json(d: &DumpRecord) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "volume": d.volume,
        "time": format_rfc3339(d.time_ns),
        "level": d.level,
        "requested_level": d.requested_level,
        "base": d.base,
        "chain": d.full_chain(),
        "merged_from": d.merged_from,
        "source": d.source,
        "entries": d.totals.entries,
        "files": d.totals.files,
        "dirs": d.totals.dirs,
        "logical_bytes": d.totals.logical_bytes,
        "read_bytes": d.totals.read_bytes,
        "new_chunks": d.totals.new_chunks,
        "stored_bytes": d.totals.stored_bytes,
        "new_raw_bytes": d.totals.new_raw_bytes,
        "host": d.host,
        "owned_chunks": d.owned_chunks,
        "owned_bytes": d.owned_bytes,
        "manifest_bytes": d.manifest_bytes,
        "manifest_chunks": d.manifest.iter().map(|(id, _)| reel::ChunkId(*id).to_hex()).collect::<Vec<_>>(),
        "duration_seconds": d.duration_ns as f64 / 1e9,
        "warnings": d.warnings,
    })
}

pub fn list(ctx: &Ctx, a: ListArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let spool = ctx.open(Access::Read)?;
    tracing::info!("spool {} opened", spool.root().display());
    if let Some(n) = &a.name {
        spool.known_volume(n)?;
    }
    let dumps = spool.catalog.dumps(a.name.as_deref())?;
    tracing::debug!(
        "{} dumps read from the catalog in {:.3} s",
        dumps.len(),
        started.elapsed().as_secs_f64()
    );
    if a.json {
        print_json(&serde_json::Value::Array(
            dumps.iter().map(dump_json).collect(),
        ));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:<16} {:<19} {:>5} {:>5} {:>9} {:>10} {:>10} {:>10}",
        "ID", "VOLUME", "TIME", "LEVEL", "BASE", "FILES", "LOGICAL", "STORED", "OWNED"
    );
    for d in &dumps {
        println!(
            "{:>5}  {:<16} {:<19} {:>5} {:>5} {:>9} {:>10} {:>10} {:>10}",
            d.id,
            d.volume,
            format_short(d.time_ns),
            if d.merged_from.is_some() {
                "0m".to_string()
            } else {
                d.level.to_string()
            },
            d.base.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            d.totals.files,
            format_bytes(d.totals.logical_bytes),
            format_bytes(d.totals.stored_bytes),
            format_bytes(d.owned_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ShowArgs {
    /// The dump id (from `reel list`).
    id: u64,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn show(ctx: &Ctx, a: ShowArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    let d = spool.catalog.dump(a.id)?.ok_or_else(|| {
        Error::usage(format!(
            "no dump {} in this spool; `reel list` shows the dumps",
            a.id
        ))
    })?;
    if a.json {
        print_json(&dump_json(&d));
        return Ok(ExitCode::SUCCESS);
    }
    println!("dump         {}", d.id);
    println!("volume       {}", d.volume);
    println!("time         {}", format_rfc3339(d.time_ns));
    println!(
        "level        {}{}{}",
        d.level,
        if d.requested_level != d.level {
            format!(" (asked for {}; no lower dump existed)", d.requested_level)
        } else {
            String::new()
        },
        d.merged_from
            .map(|m| format!(" (synthetic, merged from dump {m})"))
            .unwrap_or_default()
    );
    println!(
        "base         {}",
        d.base
            .map(|b| b.to_string())
            .unwrap_or_else(|| "none".into())
    );
    let chain: Vec<String> = d.full_chain().iter().map(|i| i.to_string()).collect();
    println!("chain        {}", chain.join(" -> "));
    println!("source       {}", d.source);
    println!(
        "host         {}",
        d.host
            .as_deref()
            .unwrap_or("- (recorded before reel kept it)")
    );
    println!(
        "entries      {} ({} files, {} directories)",
        d.totals.entries, d.totals.files, d.totals.dirs
    );
    println!(
        "logical      {} ({} read)",
        format_bytes(d.totals.logical_bytes),
        format_bytes(d.totals.read_bytes)
    );
    println!(
        "stored       {} added to the spool, {} new chunks ({} before compression)",
        format_bytes(d.totals.stored_bytes),
        d.totals.new_chunks,
        format_bytes(d.totals.new_raw_bytes)
    );
    println!(
        "owned        {} in {} chunks",
        format_bytes(d.owned_bytes),
        d.owned_chunks
    );
    println!(
        "manifest     {} in {} chunks",
        format_bytes(d.manifest_bytes),
        d.manifest.len()
    );
    println!("duration     {}", format_duration(d.duration_ns));
    for w in &d.warnings {
        println!("warning      {w}");
    }
    Ok(ExitCode::SUCCESS)
}
