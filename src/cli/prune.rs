//! `reel prune`: apply a retention policy to volumes' dumps; `reel forget`: remove named dumps
//! (docs/RETENTION.md).

use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::prune::{
    ForgetReport, GcFrees, Policy, PruneReport, RemovedDump, forget_dumps, parse_duration, prune,
};
use reel::spool::Access;
use reel::timefmt::{format_bytes, format_rfc3339, format_short};

use super::{Ctx, print_json};

#[derive(Args)]
pub struct PruneArgs {
    /// Only these volumes (default: every volume with dumps).
    volumes: Vec<String>,
    /// Keep the N most recent dumps.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the latest dump of each of the N most recent days that have dumps.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the latest dump of each of the N most recent ISO weeks that have dumps.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the latest dump of each of the N most recent months that have dumps.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep every dump within this span of the volume's latest dump (7d, 12h, 2w, 1m = 30
    /// days, 1y = 365 days; combined: 1y6m).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<ExitCode> {
    let policy = Policy {
        keep_last: a.keep_last,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_within: a.keep_within.as_deref().map(parse_duration).transpose()?,
    };
    // Before the spool is opened: a forgotten flag is a usage error whatever the spool.
    policy.validate()?;
    let spool = ctx.open(if a.dry_run {
        Access::Read
    } else {
        Access::Write
    })?;
    let report = prune(&spool, &a.volumes, &policy, a.dry_run)?;
    if a.json {
        print_json(&report_json(&report));
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn level(d: &reel::catalog::DumpRecord) -> String {
    if d.merged_from.is_some() {
        "0m".into()
    } else {
        d.level.to_string()
    }
}

/// Where a removed dump can still be restored from.
fn whence(d: &RemovedDump) -> String {
    if d.restorable_from_tapes {
        format!(
            "on tape: a restore needs {}; `reel import` those tapes to restore it",
            d.on_tapes.join(", ")
        )
    } else if !d.on_tapes.is_empty() {
        format!(
            "on tape {}, but its chain is not wholly on tape: gone once `reel gc` runs",
            d.on_tapes.join(", ")
        )
    } else {
        "on no tape: gone once `reel gc` runs".to_string()
    }
}

/// What `reel gc` will free, for the last line of prune and forget.
fn gc_frees(g: &GcFrees, dry_run: bool) -> String {
    let will = if dry_run {
        "would then free"
    } else {
        "will free"
    };
    match g {
        GcFrees::NothingRemoved => "nothing for `reel gc` to free".to_string(),
        GcFrees::Planned(b) => format!(
            "`reel gc` {will} {} (gc's own plan at its default --max-unused {})",
            format_bytes(*b),
            reel::gc::GcOptions::default().max_unused_percent
        ),
        GcFrees::OwnedBytes(b) => format!(
            "they own {}, of which `reel gc` frees what no kept dump or clone references (the spool is too large for prune to plan gc; `reel gc --dry-run` says what it frees)",
            format_bytes(*b)
        ),
    }
}

fn removed_json(d: &RemovedDump) -> serde_json::Value {
    serde_json::json!({
        "id": d.dump.id,
        "volume": d.dump.volume,
        "time": format_rfc3339(d.dump.time_ns),
        "level": d.dump.level,
        "owned_bytes": d.owned_bytes,
        "on_tapes": d.on_tapes,
        "restorable_from_tapes": d.restorable_from_tapes,
    })
}

/// The `--json` document (docs/RETENTION.md).
fn report_json(r: &PruneReport) -> serde_json::Value {
    serde_json::json!({
        "volumes": r.volumes.iter().map(|v| serde_json::json!({
            "volume": v.volume,
            "kept": v.kept.iter().map(|k| serde_json::json!({
                "id": k.dump.id,
                "time": format_rfc3339(k.dump.time_ns),
                "level": k.dump.level,
                "reasons": k.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "removed": v.removed.iter().map(|d| serde_json::json!({
                "id": d.dump.id,
                "time": format_rfc3339(d.dump.time_ns),
                "level": d.dump.level,
                "owned_bytes": d.owned_bytes,
                "on_tapes": d.on_tapes,
                "restorable_from_tapes": d.restorable_from_tapes,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "removed_owned_bytes": r.removed_owned_bytes,
        "gc_frees_bytes": r.gc_frees.bytes(),
        "gc_frees_basis": r.gc_frees.basis(),
        "dry_run": r.dry_run,
    })
}

fn print_report(r: &PruneReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for v in &r.volumes {
        println!(
            "volume {}: keeping {} dumps, {verb} {}",
            v.volume,
            v.kept.len(),
            v.removed.len()
        );
        for k in &v.kept {
            let reasons: Vec<String> = k.reasons.iter().map(|r| r.to_string()).collect();
            println!(
                "  keep    dump {:>5}  {}  level {:<2}  {}",
                k.dump.id,
                format_short(k.dump.time_ns),
                level(&k.dump),
                reasons.join(", ")
            );
        }
        for d in &v.removed {
            println!(
                "  {:<7} dump {:>5}  {}  level {:<2}  {}",
                if r.dry_run { "remove?" } else { "remove" },
                d.dump.id,
                format_short(d.dump.time_ns),
                level(&d.dump),
                whence(d)
            );
        }
    }
    let n = r.removed_count();
    if n == 0 {
        println!("nothing to remove");
    } else {
        println!("{verb} {n} dumps; {}", gc_frees(&r.gc_frees, r.dry_run));
    }
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}

#[derive(Args)]
pub struct ForgetArgs {
    /// The dumps to forget (ids from `reel list`). A dump another dump is based on must be
    /// named together with it.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<u64>,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn forget(ctx: &Ctx, a: ForgetArgs) -> Result<ExitCode> {
    let spool = ctx.open(if a.dry_run {
        Access::Read
    } else {
        Access::Write
    })?;
    let report = forget_dumps(&spool, &a.ids, a.dry_run)?;
    if a.json {
        print_json(&forget_json(&report));
    } else {
        print_forget(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `reel forget --json` document (docs/RETENTION.md).
fn forget_json(r: &ForgetReport) -> serde_json::Value {
    serde_json::json!({
        "removed": r.removed.iter().map(removed_json).collect::<Vec<_>>(),
        "removed_owned_bytes": r.removed_owned_bytes,
        "gc_frees_bytes": r.gc_frees.bytes(),
        "gc_frees_basis": r.gc_frees.basis(),
        "latest": r.new_latest.iter().map(|(v, d)| serde_json::json!({
            "volume": v,
            "id": d.as_ref().map(|d| d.id),
            "time": d.as_ref().map(|d| format_rfc3339(d.time_ns)),
        })).collect::<Vec<_>>(),
        "dry_run": r.dry_run,
    })
}

fn print_forget(r: &ForgetReport) {
    let verb = if r.dry_run { "would forget" } else { "forgot" };
    for d in &r.removed {
        println!(
            "{verb} dump {} of volume {}  {}  level {}  {}",
            d.dump.id,
            d.dump.volume,
            format_rfc3339(d.dump.time_ns),
            level(&d.dump),
            whence(d)
        );
    }
    for (v, latest) in &r.new_latest {
        match latest {
            Some(d) => println!(
                "volume {v}: its latest dump {} dump {} of {}; its next dump must be later than that",
                if r.dry_run { "would be" } else { "is now" },
                d.id,
                format_rfc3339(d.time_ns)
            ),
            None => println!(
                "volume {v}: no dump {}; its next dump is a level 0",
                if r.dry_run {
                    "would be left"
                } else {
                    "is left"
                }
            ),
        }
    }
    let n = r.removed.len();
    println!(
        "{verb} {n} dump{}; {}",
        if n == 1 { "" } else { "s" },
        gc_frees(&r.gc_frees, r.dry_run)
    );
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}
