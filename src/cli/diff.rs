//! `reel diff NAME T1 T2`: what was added, removed and changed between two points in time.
//!
//! Each side is the dump current at a time (as `--at`) or the word `backup` (the volume's
//! latest clone). The library's merge-join streams both manifests, so the output starts at
//! once and memory stays flat; `--json` collects the changes into one document.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use reel::ChunkId;
use reel::clone::{Tree, backup_tree};
use reel::diff::{Change, ChangeKind, Summary, diff};
use reel::manifest::ManifestReader;
use reel::spool::{Access, Spool};
use reel::store::ChunkReader;
use reel::timefmt::format_rfc3339;
use reel::types::hex;
use reel::{Error, Result};

use super::{Ctx, at_time, print_json};

#[derive(Args)]
pub struct DiffArgs {
    /// The volume.
    name: String,
    /// The older point in time (RFC 3339 or YYYY-MM-DD, as --at), or `backup`.
    from: String,
    /// The newer point in time, or `backup`.
    to: String,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// One side of a diff: what to call it and where its manifest is.
struct Side {
    label: serde_json::Value,
    chunks: Vec<(ChunkId, u32)>,
    what: String,
}

fn side(spool: &Spool, volume: &str, t: &str) -> Result<Side> {
    if t == "backup" {
        let (rec, tree) = backup_tree(spool, volume)?.ok_or_else(|| {
            Error::usage(format!(
                "volume {volume} has no clone yet; run `reel clone {volume}` first"
            ))
        })?;
        return match tree {
            Tree::Manifest(chunks) => Ok(Side {
                label: serde_json::json!({
                    "id": rec.dumped,
                    "time": format_rfc3339(rec.time_ns),
                    "backup": true,
                }),
                chunks,
                what: format!("manifest of the latest clone of {volume}"),
            }),
            Tree::Dir(path) => Err(Error::usage(format!(
                "the latest clone of {volume} is a directory ({}) that has not been dumped yet; \
                 diff reads manifests only: run `reel dump {volume}` first, or compare the \
                 directory with `diff -r`",
                path.display()
            ))),
        };
    }
    let at = at_time(t)?;
    let d = spool.catalog.dump_at(volume, at)?.ok_or_else(|| {
        Error::usage(format!(
            "volume {volume} has no dump at or before {}; `reel list {volume}` shows its dumps",
            format_rfc3339(at)
        ))
    })?;
    Ok(Side {
        label: serde_json::json!({
            "id": d.id,
            "time": format_rfc3339(d.time_ns),
            "level": d.level,
        }),
        chunks: d.manifest_chunks(),
        what: format!("manifest of dump {}", d.id),
    })
}

fn display(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

fn change_json(c: &Change) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": display(&c.path),
        "change": c.kind.word(),
        "what": c.what,
    });
    // Names need not be UTF-8: the exact bytes go along when the lossy form is not exact.
    if std::str::from_utf8(&c.path).is_err() {
        v["path_bytes"] = serde_json::Value::String(hex(&c.path));
    }
    v
}

pub fn run(ctx: &Ctx, a: DiffArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    spool.known_volume(&a.name)?;
    let from = side(&spool, &a.name, &a.from)?;
    let to = side(&spool, &a.name, &a.to)?;
    let reader = ChunkReader::new(&spool)?;
    let old = ManifestReader::new(reader.stream(from.chunks, from.what))?;
    let new = ManifestReader::new(reader.stream(to.chunks, to.what))?;
    let mut summary = Summary::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut changes = Vec::new();
    for c in diff(old, new) {
        let c = c?;
        summary.count(&c);
        if a.json {
            changes.push(change_json(&c));
            continue;
        }
        let line = match c.kind {
            ChangeKind::Added => format!("+ {}", display(&c.path)),
            ChangeKind::Removed => format!("- {}", display(&c.path)),
            ChangeKind::Changed => format!("M {} ({})", display(&c.path), c.what.join(", ")),
        };
        writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e))?;
    }
    if a.json {
        print_json(&serde_json::json!({
            "from": from.label,
            "to": to.label,
            "changes": changes,
            "summary": {
                "added": summary.added,
                "removed": summary.removed,
                "changed": summary.changed,
            },
        }));
    } else {
        writeln!(
            out,
            "{} added, {} removed, {} changed",
            summary.added, summary.removed, summary.changed
        )
        .map_err(|e| Error::io("<stdout>", e))?;
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(ExitCode::SUCCESS)
}
