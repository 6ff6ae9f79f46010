//! `reel gc`.

use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::gc::{GcOptions, GcReport};
use reel::spool::Access;
use reel::timefmt::format_bytes;

use super::{Ctx, print_json};

#[derive(Args)]
pub struct GcArgs {
    /// Rewrite a pack when more than this percentage of it is unused (0 = any unused byte,
    /// 100 = only delete packs with nothing live).
    #[arg(long, value_name = "PERCENT", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    max_unused: u8,
    /// Show what gc would do, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

fn signed_bytes(n: i64) -> String {
    if n < 0 {
        format!("-{}", format_bytes(n.unsigned_abs()))
    } else {
        format_bytes(n as u64)
    }
}

fn print_human(r: &GcReport) {
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} of {} packs {would}deleted, {} {would}rewritten into {} new; {} chunks {would}removed, {} moved",
        r.packs_deleted,
        r.packs_before,
        r.packs_rewritten,
        r.packs_written,
        r.chunks_removed,
        r.chunks_moved
    );
    println!(
        "{} {}freed{}",
        signed_bytes(r.bytes_freed),
        if r.dry_run { "would be " } else { "" },
        if r.dry_run { " (estimate)" } else { "" }
    );
    if r.chunks_on_tape > 0 {
        println!("{} of the freed chunks remain on tapes", r.chunks_on_tape);
    }
    if r.doomed_deleted > 0 {
        println!(
            "deleted {} packs an earlier gc left waiting for readers",
            r.doomed_deleted
        );
    }
    if r.doomed_waiting > 0 {
        println!(
            "{} packs ({}) wait for readers (restore/cat/mount) to finish; run `reel gc` again",
            r.doomed_waiting,
            format_bytes(r.doomed_waiting_bytes)
        );
    }
}

pub fn run(ctx: &Ctx, a: GcArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let bar = ctx.progress();
    let report = reel::gc::gc(
        &spool,
        GcOptions {
            max_unused_percent: a.max_unused,
            dry_run: a.dry_run,
        },
        &bar,
    )?;
    drop(bar);
    if a.json {
        print_json(&serde_json::to_value(&report).expect("json"));
    } else {
        print_human(&report);
    }
    Ok(ExitCode::SUCCESS)
}
