//! `reel dump`.

use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::dump::{DumpOptions, DumpOutcome, Shrink, dump_volume_with, record_filesystem};
use reel::spool::{Access, Spool};
use reel::timefmt::{format_bytes, format_duration, format_rfc3339};

use super::json::{ratio, seconds};
use super::{Ctx, compact_catalog, dump_date, print_json};

#[derive(Args)]
pub struct DumpArgs {
    /// The volume.
    name: String,
    /// 0 = full; N = what changed since the latest dump below level N.
    #[arg(short, long, value_parser = clap::value_parser!(u8).range(0..=9))]
    level: u8,
    /// The dump's recorded time (default now): RFC 3339, or YYYY-MM-DD for midnight.
    #[arg(long)]
    date: Option<String>,
    /// Accept a --date more than a day ahead of the clock.
    #[arg(long, requires = "date")]
    force_date: bool,
    /// Read every file, even those whose stat data is unchanged.
    #[arg(long)]
    reread: bool,
    /// Dump the volume even if its root is on another filesystem than recorded, is empty, or
    /// holds less than min_share_percent (reel.toml) of the previous dump's files or bytes.
    #[arg(long)]
    allow_shrink: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// The shrink guard's setting for `--allow-shrink`.
pub fn shrink(allow: bool) -> Shrink {
    if allow { Shrink::Allow } else { Shrink::Refuse }
}

pub fn run(ctx: &Ctx, a: DumpArgs) -> Result<ExitCode> {
    let mut spool = ctx.open(Access::Write)?;
    let catalog_len = spool.catalog.file_len();
    let opts = DumpOptions {
        level: a.level,
        time_ns: dump_date(a.date.as_deref(), a.force_date)?,
        reread: a.reread,
    };
    let bar = ctx.progress();
    let out = dump_volume_with(&spool, &a.name, &opts, shrink(a.allow_shrink), &bar)?;
    drop(bar);
    let recorded = record_root_filesystem(&mut spool, &out);
    let compacted = compact_catalog(&mut spool, catalog_len);
    if a.json {
        print_json(&dump_outcome_json(&out, compacted.is_some()));
        return Ok(ExitCode::SUCCESS);
    }
    print_dump(&out);
    if let Some(line) = recorded {
        println!("{line}");
    }
    if let Some(line) = compacted {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Record the filesystem of the dumped volume's root in reel.toml when the dump found none
/// recorded; the line that says so, for the caller to print (the dump itself is committed
/// either way).
pub fn record_root_filesystem(spool: &mut Spool, out: &DumpOutcome) -> Option<String> {
    let fs = out.filesystem_to_record?;
    let name = &out.record.volume;
    match record_filesystem(spool, name, fs) {
        Ok(()) => Some(format!("  recorded     the filesystem of its root: {fs}")),
        Err(e) => {
            eprintln!(
                "reel: warning: volume {name}: the filesystem of its root was not recorded: {e}"
            );
            None
        }
    }
}

/// The JSON of a finished dump: its record as `reel show --json` gives it, and what the dump
/// command adds (docs/CLI.md, `reel dump --json`).
pub fn dump_outcome_json(out: &DumpOutcome, compacted: bool) -> serde_json::Value {
    let r = &out.record;
    let mut v = super::list::dump_json(r);
    let o = v.as_object_mut().expect("a dump is an object");
    o.insert("promoted".into(), out.promoted.into());
    o.insert(
        "from_clone".into(),
        out.from_clone.map(|m| m.to_string()).into(),
    );
    o.insert("elapsed_seconds".into(), seconds(out.elapsed_ns).into());
    let (dedup, compression) = ratios(r);
    o.insert("dedup_ratio".into(), dedup);
    o.insert("compression_ratio".into(), compression);
    o.insert("catalog_compacted".into(), compacted.into());
    v
}

/// The dump's dedup ratio (logical bytes over the raw bytes of the chunks it added) and its
/// compression ratio (those raw bytes over the bytes its packs took); null when the divisor
/// is 0 (nothing new, or a record from before raw bytes were kept).
fn ratios(r: &reel::catalog::DumpRecord) -> (serde_json::Value, serde_json::Value) {
    let t = &r.totals;
    if t.new_raw_bytes == 0 {
        return (serde_json::Value::Null, serde_json::Value::Null);
    }
    (
        ratio(t.logical_bytes, t.new_raw_bytes),
        ratio(t.new_raw_bytes, t.stored_bytes),
    )
}

/// The dump's summary, as `dump`, `backup` and `nightly` print it.
pub fn print_dump(out: &DumpOutcome) {
    let r = &out.record;
    if out.promoted {
        println!(
            "note: volume {} has no dump below level {}; this dump is a level 0",
            r.volume, r.requested_level
        );
    }
    // The whole dump, its commit included (the record's own duration stops before it).
    let secs = out.elapsed_ns as f64 / 1e9;
    println!(
        "dump {} of volume {} at level {}{}, {}",
        r.id,
        r.volume,
        r.level,
        r.base
            .map(|b| format!(" (base dump {b})"))
            .unwrap_or_default(),
        format_rfc3339(r.time_ns)
    );
    if let Some(m) = out.from_clone {
        println!(
            "  from         its {m} clone of {}",
            format_rfc3339(r.time_ns)
        );
    }
    println!(
        "  files        {} ({} directories, {} entries)",
        r.totals.files, r.totals.dirs, r.totals.entries
    );
    println!("  logical      {}", format_bytes(r.totals.logical_bytes));
    println!("  read         {}", format_bytes(r.totals.read_bytes));
    println!(
        "  new chunks   {} ({} before compression)",
        r.totals.new_chunks,
        format_bytes(r.totals.new_raw_bytes)
    );
    println!(
        "  added        {} to the spool",
        format_bytes(r.totals.stored_bytes)
    );
    println!(
        "  owned        {} in {} chunks",
        format_bytes(r.owned_bytes),
        r.owned_chunks
    );
    println!("  ratios       {}", ratio_text(r));
    if r.totals.logical_bytes == 0 {
        println!("  time         {}", format_duration(out.elapsed_ns));
    } else {
        println!(
            "  time         {}, {}/s",
            format_duration(out.elapsed_ns),
            format_bytes((r.totals.logical_bytes as f64 / secs.max(1e-9)) as u64)
        );
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
}

/// "dedup x.xx×, compression y.yy×": the dump's logical bytes over the raw bytes of the chunks
/// it added, and those over the bytes its packs took. Kept apart because they answer different
/// questions (how much repeats, how well the new data packs) that one ratio would blur.
pub fn ratio_text(r: &reel::catalog::DumpRecord) -> String {
    let t = &r.totals;
    if t.logical_bytes == 0 {
        "- (no file data)".to_string()
    } else if t.new_raw_bytes == 0 {
        "all data already stored".to_string()
    } else {
        dedup_and_compression(t.logical_bytes, t.new_raw_bytes, t.stored_bytes)
    }
}

/// "dedup X×, compression Y×": `logical` bytes over the `raw` bytes of the new chunks, and
/// those over the `stored` bytes they took (`raw` must not be 0).
pub fn dedup_and_compression(logical: u64, raw: u64, stored: u64) -> String {
    format!(
        "dedup {:.2}\u{d7}, compression {:.2}\u{d7}",
        logical as f64 / raw as f64,
        raw as f64 / stored.max(1) as f64
    )
}
