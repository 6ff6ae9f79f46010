//! `reel check`, and `reel check --repair`.

use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::recovery::check::CheckReport;
use reel::recovery::rebuild::IncompleteDump;
use reel::spool::Access;
use reel::timefmt::{format_bytes, format_rfc3339};

use super::{Ctx, print_json};

#[derive(Args)]
pub struct CheckArgs {
    /// Also decompress every chunk and check its hash.
    #[arg(long)]
    read_data: bool,
    /// Adopt verified packs the catalog does not name, drop the rows of packs whose file is
    /// gone (listing the dumps that lost chunks and the tapes that hold them), then check.
    /// Deletes no file.
    #[arg(long)]
    repair: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<ExitCode> {
    if a.repair {
        return repair(ctx, a);
    }
    let spool = ctx.open(Access::Read)?;
    let bar = ctx.progress();
    let report = reel::recovery::check::check(&spool, a.read_data, &bar)?;
    drop(bar);
    if a.json {
        print_json(&serde_json::to_value(&report).expect("json"));
    } else {
        print_check(&report, a.read_data);
    }
    Ok(exit(report.ok()))
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_check(report: &CheckReport, read_data: bool) {
    println!(
        "checked {} packs, {} chunks, {} dumps{}",
        report.packs,
        report.chunks,
        report.dumps,
        if read_data {
            format!(", read {}", format_bytes(report.bytes_read))
        } else {
            String::new()
        }
    );
    for p in &report.unreferenced_packs {
        println!(
            "note: pack {} is not named by the catalog (left by an interrupted dump; harmless; `reel check --repair` adopts it)",
            p.display()
        );
    }
    if report.doomed_packs > 0 {
        println!(
            "note: {} pack(s) left the catalog in a gc and wait for readers (restore, cat, mount) to finish; the next `reel gc` deletes them",
            report.doomed_packs
        );
    }
    for p in &report.problems {
        let mut where_ = Vec::new();
        if let Some(pk) = &p.pack {
            where_.push(format!("pack {pk}"));
        }
        if let Some(d) = p.dump {
            where_.push(format!(
                "dump {d} ({})",
                p.volume.clone().unwrap_or_default()
            ));
        }
        if let Some(f) = &p.file {
            where_.push(format!("file {f}"));
        }
        println!("PROBLEM: {}: {}", where_.join(", "), p.message);
    }
    if report.ok() {
        println!("no problems found");
    } else {
        println!("{} problems found", report.problems.len());
    }
}

/// One line per incomplete dump, naming what heals it.
pub(super) fn print_incomplete(d: &IncompleteDump) {
    let what = if d.manifest_lost {
        "its manifest is lost".to_string()
    } else {
        format!("{} chunks missing", d.missing_chunks)
    };
    let heal = match (d.tapes.is_empty(), d.on_no_tape) {
        (false, 0) => format!(
            "tapes {} hold them: `reel restore --tapes DIR` reads them, `reel import` brings them back",
            d.tapes.join(", ")
        ),
        (false, n) => format!(
            "tapes {} hold some; {n} chunks are on no recorded tape",
            d.tapes.join(", ")
        ),
        (true, _) => "on no recorded tape: lost unless a tape not recorded here holds them (`reel import` it)".to_string(),
    };
    println!(
        "INCOMPLETE: dump {} ({} {}): {what}; {heal}",
        d.id,
        d.volume,
        format_rfc3339(d.time_ns)
    );
}

fn repair(ctx: &Ctx, a: CheckArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let bar = ctx.progress();
    let report = reel::recovery::repair::repair(&spool, a.read_data, &bar)?;
    drop(bar);
    if a.json {
        print_json(&serde_json::to_value(&report).expect("json"));
        return Ok(exit(report.ok()));
    }
    for p in &report.adopted {
        println!(
            "adopted pack {} as number {}: {} chunks indexed{}",
            p.path.display(),
            p.pack_no,
            p.chunks_indexed,
            if p.dump_records > 0 {
                format!(
                    "; it holds {} dump record(s) of a dump whose commit never happened: not turned into dumps",
                    p.dump_records
                )
            } else {
                String::new()
            }
        );
    }
    for r in &report.refused {
        println!(
            "REFUSED: pack {} was not adopted and is left in place: {}",
            r.path.display(),
            r.reason
        );
    }
    for p in &report.dropped {
        println!(
            "dropped pack number {} ({} is gone): {} chunk rows removed",
            p.pack_no,
            p.path.display(),
            p.chunks
        );
    }
    for d in &report.incomplete {
        print_incomplete(d);
    }
    if report.adopted.is_empty() && report.dropped.is_empty() && report.refused.is_empty() {
        println!("nothing to repair");
    }
    print_check(&report.check, a.read_data);
    Ok(exit(report.ok()))
}
