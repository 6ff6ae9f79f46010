//! `reel check`.

use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::spool::Access;
use reel::timefmt::format_bytes;

use super::{Ctx, print_json};

#[derive(Args)]
pub struct CheckArgs {
    /// Also decompress every chunk and check its hash.
    #[arg(long)]
    read_data: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    let bar = ctx.progress();
    let report = reel::check::check(&spool, a.read_data, &bar)?;
    drop(bar);
    if a.json {
        print_json(&serde_json::to_value(&report).expect("json"));
    } else {
        println!(
            "checked {} packs, {} chunks, {} dumps{}",
            report.packs,
            report.chunks,
            report.dumps,
            if a.read_data {
                format!(", read {}", format_bytes(report.bytes_read))
            } else {
                String::new()
            }
        );
        for p in &report.unreferenced_packs {
            println!(
                "note: pack {} is not named by the catalog (left by an interrupted dump; harmless)",
                p.display()
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
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
