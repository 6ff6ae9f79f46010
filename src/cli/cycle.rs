//! The nightly cycle's commands: `reel clone`, `reel backup`, `reel nightly`.

use std::process::ExitCode;

use clap::Args;
use reel::clone::{CloneOptions, CloneOutcome, clone_volume};
use reel::dump::dump_clone;
use reel::nightly::{self, NightlyOptions};
use reel::schedule::{self, Schedule};
use reel::spool::{Access, Spool};
use reel::timefmt::{self, format_bytes, format_duration, format_rfc3339};
use reel::{Error, Result};

use super::dump::{dump_outcome_json, print_dump, record_root_filesystem, shrink};
use super::json::{seconds, time};
use super::{Ctx, compact_catalog, dump_date, print_json};

#[derive(Args)]
pub struct CloneArgs {
    /// The volume.
    name: String,
    /// The clone's recorded time (default now): RFC 3339, or YYYY-MM-DD for midnight.
    #[arg(long)]
    date: Option<String>,
    /// Accept a --date more than a day ahead of the clock.
    #[arg(long, requires = "date")]
    force_date: bool,
    /// `store` method: read every file, even those whose stat data is unchanged.
    #[arg(long)]
    reread: bool,
    /// Clone the volume even if its root is on another filesystem than recorded, is empty, or
    /// (`store` method) holds less than min_share_percent of the previous dump's files or bytes.
    #[arg(long)]
    allow_shrink: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn clone(ctx: &Ctx, a: CloneArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let opts = CloneOptions {
        time_ns: dump_date(a.date.as_deref(), a.force_date)?,
        reread: a.reread,
        shrink: shrink(a.allow_shrink),
    };
    let bar = ctx.progress();
    let out = clone_volume(&spool, &a.name, &opts, &bar)?;
    drop(bar);
    if a.json {
        print_json(&clone_json(&out));
    } else {
        print_clone(&out);
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON of a clone (docs/CLI.md, `reel clone --json`).
fn clone_json(out: &CloneOutcome) -> serde_json::Value {
    let c = &out.record;
    let (view, path) = match &c.view {
        reel::record::CloneView::Manifest { .. } => ("manifest", None),
        reel::record::CloneView::Dir { path, .. } => ("dir", Some(path.clone())),
    };
    let t = &c.totals;
    serde_json::json!({
        "volume": c.volume,
        "time": time(c.time_ns),
        "method": c.method.to_string(),
        "frozen_seconds": seconds(out.frozen.as_nanos() as u64),
        "source": c.source,
        "view": view,
        "path": path,
        "entries": t.entries,
        "files": t.files,
        "dirs": t.dirs,
        "logical_bytes": t.logical_bytes,
        "read_bytes": t.read_bytes,
        "new_chunks": t.new_chunks,
        "new_raw_bytes": t.new_raw_bytes,
        "stored_bytes": t.stored_bytes,
        "notes": out.notes,
        "warnings": c.warnings,
    })
}

fn print_clone(out: &CloneOutcome) {
    let c = &out.record;
    println!(
        "clone of volume {} ({}), {}: frozen for {}",
        c.volume,
        c.method,
        format_rfc3339(c.time_ns),
        format_duration(out.frozen.as_nanos() as u64)
    );
    match &c.view {
        reel::record::CloneView::Manifest { .. } => println!(
            "  {} files, {} logical, {} read, {} added to the spool",
            c.totals.files,
            format_bytes(c.totals.logical_bytes),
            format_bytes(c.totals.read_bytes),
            format_bytes(c.totals.stored_bytes)
        ),
        reel::record::CloneView::Dir { path, .. } => println!("  read-only tree at {path}"),
    }
    for n in &out.notes {
        println!("  note: {n}");
    }
    for w in &c.warnings {
        println!("  warning: {w}");
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// The volume.
    name: String,
    /// The level (default: the one the volume's schedule names for the clone's local date).
    #[arg(short, long, value_parser = clap::value_parser!(u8).range(0..=9))]
    level: Option<u8>,
    /// The clone's recorded time (default now): RFC 3339, or YYYY-MM-DD for midnight.
    #[arg(long)]
    date: Option<String>,
    /// Accept a --date more than a day ahead of the clock.
    #[arg(long, requires = "date")]
    force_date: bool,
    /// Back the volume up even if its root is on another filesystem than recorded, is empty,
    /// or holds less than min_share_percent (reel.toml) of the previous dump's files or bytes.
    #[arg(long)]
    allow_shrink: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// Clone, then dump the clone.
pub fn backup(ctx: &Ctx, a: BackupArgs) -> Result<ExitCode> {
    let mut spool = ctx.open(Access::Write)?;
    let catalog_len = spool.catalog.file_len();
    let time_ns = dump_date(a.date.as_deref(), a.force_date)?;
    let level = match a.level {
        Some(l) => l,
        None => scheduled_level(
            &spool,
            &a.name,
            timefmt::local_date(time_ns.unwrap_or_else(timefmt::now_ns)),
        )?,
    };
    let bar = ctx.progress();
    let opts = CloneOptions {
        time_ns,
        reread: false,
        shrink: shrink(a.allow_shrink),
    };
    let cloned = clone_volume(&spool, &a.name, &opts, &bar)?;
    let out = dump_clone(
        &spool,
        &a.name,
        cloned.record.clone(),
        level,
        opts.shrink,
        &bar,
    )?;
    drop(bar);
    let recorded = record_root_filesystem(&mut spool, &out);
    let compacted = compact_catalog(&mut spool, catalog_len);
    if a.json {
        print_json(&serde_json::json!({
            "volume": a.name,
            "clone": clone_json(&cloned),
            "dump": dump_outcome_json(&out, compacted.is_some()),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    print_clone(&cloned);
    print_dump(&out);
    if let Some(line) = recorded {
        println!("{line}");
    }
    if let Some(line) = compacted {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn scheduled_level(spool: &Spool, name: &str, date: chrono::NaiveDate) -> Result<u8> {
    let vol = spool.volume(name)?;
    let text = vol.schedule.as_deref().ok_or_else(|| {
        Error::usage(format!(
            "volume {name} has no schedule: give --level N, or set one with `reel volume set {name} --schedule FIIIIII`"
        ))
    })?;
    Ok(Schedule::parse(text)?.level_on(date))
}

#[derive(Args)]
pub struct NightlyArgs {
    /// The day to run (default today, local): its schedule letters apply, and clones are
    /// recorded on it (replaying a night).
    #[arg(long)]
    date: Option<String>,
    /// Dump volumes that already have a dump that day.
    #[arg(long)]
    force: bool,
    /// Accept a --date more than a day ahead of the clock.
    #[arg(long, requires = "date")]
    force_date: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Dump every volume even if its root is on another filesystem than recorded, is empty, or
    /// holds less than min_share_percent (reel.toml) of the previous dump's files or bytes.
    #[arg(long)]
    allow_shrink: bool,
}

pub fn nightly(ctx: &Ctx, a: NightlyArgs) -> Result<ExitCode> {
    let mut spool = ctx.open(Access::Write)?;
    let catalog_len = spool.catalog.file_len();
    let date = match &a.date {
        Some(d) => timefmt::parse_day(d).map_err(|e| Error::usage(format!("--date: {e}")))?,
        None => schedule::today_local(),
    };
    if a.date.is_some() && !a.force_date {
        // The clones are recorded on that date at the current time of day.
        let now = timefmt::now_ns();
        reel::dump::check_not_ahead(timefmt::on_date(date, now)?, now)?;
    }
    let opts = NightlyOptions {
        date,
        replay: a.date.is_some(),
        force: a.force,
        shrink: shrink(a.allow_shrink),
    };
    let bar = ctx.progress();
    let mut report = nightly::run(&mut spool, &opts, &bar)?;
    drop(bar);
    // The nightly report has its own format (and a JSON form); the compaction is not in it.
    let _ = compact_catalog(&mut spool, catalog_len);
    let saved = nightly::save(&spool, &mut report);
    // Reports past keep_reports_days go once tonight's is written (no logrotate needed).
    let keep = spool.settings.keep_reports_days;
    let removed = nightly::remove_old_reports(&spool, keep, chrono::Local::now().naive_local());
    if a.json {
        let mut v = serde_json::to_value(&report).expect("report serialises");
        with_seconds(&mut v);
        print_json(&v);
    } else {
        print!("{}", nightly::render(&report));
        if let Some(p) = report.saved.first() {
            println!("report saved in {p}");
        }
        if let Ok(r) = &removed
            && !r.is_empty()
        {
            println!(
                "removed {} saved report file(s) older than {keep} days (keep_reports_days in reel.toml)",
                r.len()
            );
        }
    }
    if let Err(e) = &removed {
        eprintln!("reel: warning: old nightly reports were not removed: {e}");
    }
    if let Err(e) = saved {
        eprintln!("reel: the report could not be saved: {e}");
        return Ok(ExitCode::FAILURE);
    }
    if let Some(sig) = report.interrupted {
        return Ok(ExitCode::from(128u8.saturating_add(sig as u8)));
    }
    Ok(if report.any_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The nightly report's durations in seconds beside its nanosecond fields (`elapsed_ns`,
/// `freeze_ns`, `dump_ns` in the report, its totals and each volume), as every other document
/// gives durations; the `_ns` fields stay, as docs/CLI.md promises.
fn with_seconds(v: &mut serde_json::Value) {
    fn add(o: &mut serde_json::Value) {
        let Some(o) = o.as_object_mut() else { return };
        let ns: Vec<(String, u64)> = o
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix("_ns")?.to_string(), v.as_u64()?)))
            .collect();
        for (k, n) in ns {
            o.insert(format!("{k}_seconds"), seconds(n).into());
        }
    }
    add(v);
    if let Some(t) = v.get_mut("totals") {
        add(t);
    }
    if let Some(vs) = v.get_mut("volumes").and_then(|v| v.as_array_mut()) {
        vs.iter_mut().for_each(add);
    }
}
