//! `reel ingest-dump NAME IMAGE...`: old BSD dump images become dumps of a volume.

use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::spool::Access;
use reel::tape::ingest::{IngestReport, image_volumes, ingest_dumps};
use reel::timefmt::format_rfc3339;

use super::dump::print_dump;
use super::{Ctx, compact_catalog};

#[derive(Args)]
pub struct IngestArgs {
    /// The volume the dumps belong to; a name that is not a volume of the spool becomes a
    /// catalog-only volume (its dumps have no live path).
    name: String,
    /// Dump images, level 0 first, each incremental right after its base. A multi-volume set
    /// is its volumes joined with commas, or a prefix P whose P001, P002, … (or P.001, …) exist.
    #[arg(required = true)]
    images: Vec<String>,
}

fn print_report(r: &IngestReport) {
    let i = &r.info;
    println!(
        "ingested {}: level {} dump of {}{} ({} inodes read, {} names)",
        r.image,
        i.level,
        format_rfc3339(i.date.saturating_mul(1_000_000_000)),
        if i.ddate != 0 {
            format!(
                ", based on {}",
                format_rfc3339(i.ddate.saturating_mul(1_000_000_000))
            )
        } else {
            String::new()
        },
        r.inodes,
        r.names
    );
    if !i.label.is_empty() || !i.host.is_empty() {
        println!("  from         {}:{} label {}", i.host, i.filesys, i.label);
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    print_dump(&r.outcome);
}

pub fn run(ctx: &Ctx, a: IngestArgs) -> Result<ExitCode> {
    let mut spool = ctx.open(Access::Write)?;
    let catalog_len = spool.catalog.file_len();
    let images = a
        .images
        .iter()
        .map(|s| image_volumes(s))
        .collect::<Result<Vec<_>>>()?;
    let bar = ctx.progress();
    let mut done = |r: &IngestReport| {
        bar.0.suspend(|| print_report(r));
    };
    ingest_dumps(&spool, &a.name, &images, &bar, &mut done)?;
    drop(bar);
    if let Some(line) = compact_catalog(&mut spool, catalog_len) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
