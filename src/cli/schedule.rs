//! `reel schedule import FILE` and `reel schedule show`: the admin's view of the dump
//! schedules (docs/SCHEDULES.md). The rules live in `reel::schedule`; this file reads
//! arguments, saves settings and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{Datelike, NaiveDate};
use clap::Subcommand;
use reel::error::IoContext;
use reel::schedule::{Schedule, import_dumplist, parse_date, today_local, volume_schedule};
use reel::spool::Access;
use reel::{Error, Result};

use super::{Ctx, print_json};

/// Longest `--days` window: a year and a bit covers any cycle of up to 64 days many times.
const MAX_DAYS: u32 = 400;

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Set volumes' schedules from a Coda dumplist (volume, schedule, comment per line);
    /// all or nothing.
    Import {
        /// The dumplist file.
        file: PathBuf,
    },
    /// Show the level each volume gets on each day.
    Show {
        /// First day (YYYY-MM-DD, local; default today).
        #[arg(long)]
        date: Option<String>,
        /// How many days.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Print the result as JSON (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Ctx, cmd: ScheduleCmd) -> Result<ExitCode> {
    match cmd {
        ScheduleCmd::Import { file } => import(ctx, &file),
        ScheduleCmd::Show { date, days, json } => show(ctx, date.as_deref(), days, json),
    }
}

fn import(ctx: &Ctx, file: &std::path::Path) -> Result<ExitCode> {
    let text = std::fs::read_to_string(file).at(file)?;
    let unchanged = |e: Error| {
        Error::usage(format!(
            "{}: {e}\nnothing was changed; fix the lines and import again",
            file.display()
        ))
    };
    let mut spool = ctx.open(Access::Write)?;
    let changes = import_dumplist(&mut spool.settings, &text).map_err(unchanged)?;
    spool.save_settings()?;
    for c in &changes {
        match &c.old {
            Some(old) if *old == c.new.to_string() => {
                println!("{}: schedule {} (unchanged)", c.volume, c.new)
            }
            Some(old) => println!("{}: schedule {} (was {old})", c.volume, c.new),
            None => println!("{}: schedule {} (had none)", c.volume, c.new),
        }
    }
    println!(
        "set {} schedule{} from {}",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &Ctx, date: Option<&str>, days: u32, json: bool) -> Result<ExitCode> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(Error::usage(format!(
            "--days {days}: give 1 to {MAX_DAYS} days"
        )));
    }
    let start = match date {
        Some(d) => parse_date(d)?,
        None => today_local(),
    };
    let dates: Vec<NaiveDate> = start.iter_days().take(days as usize).collect();
    if dates.len() != days as usize {
        return Err(Error::usage(format!(
            "--date {start} with --days {days} runs past the last date reel can show"
        )));
    }
    let spool = ctx.open(Access::Read)?;
    let mut rows: Vec<(&String, Option<Schedule>)> = Vec::new();
    for (name, v) in &spool.settings.volumes {
        rows.push((name, volume_schedule(name, v)?));
    }
    if json {
        print_json(&serde_json::Value::Array(
            rows.iter()
                .map(|(name, s)| {
                    let days: Vec<serde_json::Value> = match s {
                        Some(s) => dates
                            .iter()
                            .map(|d| {
                                serde_json::json!({
                                    "date": d.format("%Y-%m-%d").to_string(),
                                    "level": s.level_on(*d),
                                })
                            })
                            .collect(),
                        None => Vec::new(),
                    };
                    serde_json::json!({
                        "volume": name,
                        "schedule": s.as_ref().map(|s| s.to_string()),
                        "days": days,
                    })
                })
                .collect(),
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| s.len()))
        .max()
        .unwrap_or(0)
        .max("SCHEDULE".len());
    let mut header = format!("{:<20} {:<width$}", "VOLUME", "SCHEDULE");
    for d in &dates {
        header.push_str(&format!(
            "  {} {:02}-{:02}",
            d.weekday(),
            d.month(),
            d.day()
        ));
    }
    println!("{}", header.trim_end());
    for (name, s) in &rows {
        match s {
            Some(s) => {
                let mut line = format!("{name:<20} {:<width$}", s.to_string());
                for d in &dates {
                    // Centre the level under its 9-character column header.
                    line.push_str(&format!("  {:^9}", s.level_on(*d)));
                }
                println!("{}", line.trim_end());
            }
            None => println!("{name:<20} no schedule"),
        }
    }
    if rows.is_empty() {
        println!("(no volumes; add one with `reel volume add NAME PATH --schedule LETTERS`)");
    }
    Ok(ExitCode::SUCCESS)
}
