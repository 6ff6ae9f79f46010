//! `reel rebuild-catalog`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::timefmt::{format_bytes, format_rfc3339};

use super::{Ctx, print_json};

#[derive(Args)]
pub struct RebuildArgs {
    /// Also read the tape images in DIR (files, split PATH.001… sets, extracted folders):
    /// record them in the media catalog, and import dumps only they hold.
    #[arg(long, value_name = "DIR")]
    from_tapes: Option<PathBuf>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: RebuildArgs) -> Result<ExitCode> {
    let root = ctx.spool_dir()?;
    let bar = ctx.progress();
    let r = reel::recovery::rebuild::rebuild_catalog(
        &root,
        a.from_tapes.as_deref(),
        &bar,
        &super::keys::unlock,
    )?;
    drop(bar);
    let code = if r.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if a.json {
        print_json(&serde_json::to_value(&r).expect("json"));
        return Ok(code);
    }
    println!(
        "rebuilt {} from {} packs ({}), {} chunks: {} dumps restored",
        root.join(reel::spool::CATALOG_FILE).display(),
        r.packs_read,
        format_bytes(r.pack_bytes),
        r.chunks,
        r.dumps_restored.len()
    );
    if let Some(old) = &r.old_catalog {
        println!("the old catalog is kept as {}", old.display());
    }
    for p in &r.packs_refused {
        println!(
            "REFUSED: pack {} was skipped and left in place: {}",
            p.path.display(),
            p.reason
        );
    }
    if !r.dumps_forgotten.is_empty() {
        println!(
            "not brought back (pruned): dumps {}",
            r.dumps_forgotten
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for d in &r.records_ignored {
        println!(
            "ignored the record of dump {} ({} {}): its commit was interrupted and a later dump took its id",
            d.id,
            d.volume,
            format_rfc3339(d.time_ns)
        );
    }
    for v in &r.unknown_volumes {
        println!(
            "note: volume {v} has dumps but is not in reel.toml: `reel volume add {v} PATH` to dump it again"
        );
    }
    for l in &r.tapes_recorded {
        println!("tape {l} recorded in the media catalog");
    }
    for (l, n) in &r.tapes_imported {
        println!("tape {l}: imported {n} dumps that no pack held");
    }
    for t in &r.tapes_refused {
        println!("REFUSED: tape image {}: {}", t.path.display(), t.reason);
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for d in &r.incomplete {
        super::check::print_incomplete(d);
    }
    println!(
        "pending clones and plain-export history are not in packs: take the clones again; the next export-plain starts at level 0"
    );
    Ok(code)
}
