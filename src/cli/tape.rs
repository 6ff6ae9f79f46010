//! `reel export`, `reel import`, `reel verify-tape`, `reel tapes`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use reel::spool::Access;
use reel::tape::export::{self, ExportOptions, Exported};
use reel::tape::locate::{self, image_volumes};
use reel::tape::{media, payload};
use reel::timefmt::{format_bytes, format_rfc3339, format_short};
use reel::{Error, Result};

use super::json::time;
use super::{Ctx, print_json};

/// A size like 4G, 700M, 1500000 (bytes; K/M/G/T are powers of 1024).
pub(super) fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::usage(format!("bad size {s:?}: use a number with K, M, G or T")))
}

#[derive(Args)]
pub struct ExportArgs {
    /// The tape image to write: a file, or a tape device.
    #[arg(long)]
    to: PathBuf,
    /// The tape's label (default: reel-YYYYMMDD-HHMMSS).
    #[arg(long)]
    label: Option<String>,
    /// Split into tape volumes of at most this size (PATH.001, PATH.002, …), like `dump -M`.
    #[arg(long)]
    capacity: Option<String>,
    /// Records (1 KiB) per tape block (dump's -b).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    block_size: u32,
    /// Leave out chunks already on earlier tapes of this media set.
    #[arg(long)]
    media_set: Option<String>,
    /// Only these volumes (default: all).
    volumes: Vec<String>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let opts = ExportOptions {
        to: a.to,
        label: a.label,
        capacity: a.capacity.as_deref().map(parse_size).transpose()?,
        block_size: a.block_size,
        media_set: a.media_set,
        volumes: a.volumes,
    };
    let bar = ctx.progress();
    let exported = export::export(&spool, &opts, &bar)?;
    drop(bar);
    let Some(Exported {
        label,
        plan,
        payload: summary,
        image: written,
    }) = exported
    else {
        if a.json {
            print_json(&serde_json::json!({
                "label": null, "media_set": null, "sequence": null, "bytes": 0,
                "image_files": [], "dumps": [],
            }));
        } else {
            println!("nothing to export: every dump is on tape already");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let of = |list: &[(u64, u64)], id: u64| {
        list.iter()
            .find(|(d, _)| *d == id)
            .map(|(_, b)| *b)
            .unwrap_or(0)
    };
    if a.json {
        print_json(&serde_json::json!({
            "label": label,
            "media_set": summary.media_set,
            "sequence": summary.sequence,
            "bytes": written.bytes,
            "image_files": written.volumes.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "dumps": plan.dumps.iter().map(|d| serde_json::json!({
                "id": d.id,
                "volume": d.volume,
                "time": time(d.time_ns),
                "level": d.level,
                "bytes": of(&summary.per_dump, d.id),
                "whole_file_bytes": of(&summary.whole_file, d.id),
            })).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "tape {label}: {} in {} volume(s) ({}), {} dumps",
        format_bytes(written.bytes),
        written.volumes.len(),
        written
            .volumes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        plan.dumps.len()
    );
    // Times as `reel list` shows them (local, to the second): the columns stay aligned.
    println!(
        "  {:>6}  {:<16} {:<19} {:>5} {:>12} {:>14}",
        "dump", "volume", "time", "level", "on tape", "whole-file"
    );
    for d in &plan.dumps {
        let bytes = of(&summary.per_dump, d.id);
        let whole = of(&summary.whole_file, d.id);
        println!(
            "  {:>6}  {:<16} {:<19} {:>5} {:>12} {:>14}",
            d.id,
            d.volume,
            format_short(d.time_ns),
            d.level,
            format_bytes(bytes),
            format_bytes(whole)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Name the image a verification error came from: the payload's own paths are under the
/// spool's tmp/ and are gone when the command ends, and an import may be given several images.
fn in_image(img: &Path, e: Error) -> Error {
    let name = img.display().to_string();
    let prefix = |m: String| {
        if m.contains(&name) {
            m
        } else {
            format!("{name}: {m}")
        }
    };
    match e {
        Error::Corrupt { object, msg } => Error::damaged(object, prefix(msg)),
        Error::Usage(m) => Error::Usage(prefix(m)),
        Error::Key(m) => Error::Key(prefix(m)),
        other => other,
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// Tape images (files, PATH prefixes of split images, or directories `restore -x` wrote).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let mut out = Vec::new();
    for (n, img) in a.images.iter().enumerate() {
        let staged = image_volumes(img)
            .and_then(|v| locate::stage(&spool, &v, "import", n))
            .map_err(|e| in_image(img, e))?;
        let s = payload::import_payload(&spool, staged.dir()).map_err(|e| in_image(img, e))?;
        if a.json {
            out.push(serde_json::json!({
                "image": img.display().to_string(),
                "label": s.label,
                "dumps_added": s.dumps_added.iter().map(|(id, volume, t, level)| serde_json::json!({
                    "id": id, "volume": volume, "time": time(*t), "level": level,
                })).collect::<Vec<_>>(),
                "dumps_present": s.dumps_present,
                "packs_adopted": s.packs_adopted,
                "pack_bytes": s.pack_bytes,
                "chunks_added": s.chunks_added,
                "tape_recorded": s.tape_recorded,
                "tapes_also_needed": s.tapes_also_needed,
            }));
            continue;
        }
        println!(
            "{}: tape {}: {} dumps added, {} already here; {} packs adopted ({}), {} new chunks",
            img.display(),
            s.label,
            s.dumps_added.len(),
            s.dumps_present,
            s.packs_adopted,
            format_bytes(s.pack_bytes),
            s.chunks_added
        );
        for (id, volume, time, level) in &s.dumps_added {
            println!(
                "  dump {id}: {volume} {} level {level}",
                format_rfc3339(*time)
            );
        }
        if !s.tapes_also_needed.is_empty() {
            println!(
                "  note: these dumps also need tapes {}; import them too",
                s.tapes_also_needed.join(", ")
            );
        }
    }
    if a.json {
        print_json(&serde_json::json!({ "images": out }));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The tape images to verify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// The key `verify-tape` reads tapes with: the spool's own (an encrypted spool is unlocked
/// when it opens, by `--key-file` too, whose key must then be the spool's); on a plain spool
/// the master key `--key-file` gives, so a tape can be verified away from its spool.
fn tape_key(spool: &reel::spool::Spool) -> Result<payload::TapeKey> {
    if spool.keys().is_encrypted() || !super::keys::key_file_given() {
        return Ok(payload::TapeKey::of_spool(spool));
    }
    let master = super::keys::master_from_sources(None, None)?;
    Ok(payload::TapeKey::new(
        reel::crypto::Keys::from_master(&master),
        "the key file given (--key-file)",
    ))
}

pub fn verify(ctx: &Ctx, a: VerifyArgs) -> Result<ExitCode> {
    // The spool's tmp/ holds the extracted files; its chunks complete the manifests of
    // incrementals whose base is on an earlier tape (when the tape is under the spool's key).
    let spool = ctx.open(Access::Read)?;
    let key = tape_key(&spool)?;
    let reader = reel::store::ChunkReader::new(&spool)?;
    let mut out = Vec::new();
    for (n, img) in a.images.iter().enumerate() {
        let staged = image_volumes(img)
            .and_then(|v| locate::stage(&spool, &v, "verify", n))
            .map_err(|e| in_image(img, e))?;
        let v = payload::verify_payload_with(staged.dir(), &key, Some((&reader, spool.keys())))
            .map_err(|e| in_image(img, e))?;
        let cat = &v.catalog;
        for &i in &v.manifests_elsewhere {
            let d = &cat.dumps[i];
            eprintln!(
                "reel: note: {}: the manifest of dump {}@{} was not checked: some of its chunks are on another tape ({}) and not in this spool",
                img.display(),
                d.volume,
                format_rfc3339(d.time_ns),
                d.tapes_needed
                    .iter()
                    .filter(|l| **l != cat.label)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if a.json {
            out.push(serde_json::to_value(cat).expect("catalog serialises"));
        } else {
            match &cat.key_fingerprint {
                Some(fp) => println!(
                    "{}: tape {} is good (sealed under key {fp})",
                    img.display(),
                    cat.label
                ),
                None => println!("{}: tape {} is good", img.display(), cat.label),
            }
            for d in &cat.dumps {
                println!(
                    "  {}  {}  level {}  {}",
                    d.volume,
                    format_rfc3339(d.time_ns),
                    d.level,
                    format_bytes(d.tape_bytes)
                );
            }
        }
    }
    if a.json {
        print_json(&serde_json::Value::Array(out));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct TapesArgs {
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// One dump of a tape as `reel tapes` shows it.
struct Held {
    id: u64,
    bytes: u64,
    /// (volume, time, level, chain), from the catalog or from the tape record's summary;
    /// None for a dump pruned from the catalog that a version 1 tape record names only by id.
    known: Option<(String, i64, u8, Vec<u64>)>,
    needs: Vec<String>,
    in_catalog: bool,
}

pub fn tapes(ctx: &Ctx, a: TapesArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    let tapes = media::tapes(&spool)?;
    // Per dump on tape: its bytes there, and the tapes a restore of it needs (its chain's).
    let mut rows = Vec::new();
    for t in &tapes {
        let mut dumps = Vec::new();
        for &(id, bytes) in &t.dumps {
            let summary = t.summary(id);
            // By id; after a prune and a re-import the catalog has it under another id.
            let d = match spool.catalog.dump(id)? {
                Some(d)
                    if summary.is_none_or(|s| (&s.volume, s.time_ns) == (&d.volume, d.time_ns)) =>
                {
                    Some(d)
                }
                _ => match summary {
                    Some(s) => media::in_catalog(&spool, s)?,
                    None => None,
                },
            };
            let held = match (d, summary) {
                (Some(d), _) => Held {
                    id,
                    bytes,
                    needs: media::tapes_needed(&spool, &d)?,
                    known: Some((d.volume, d.time_ns, d.level, d.chain)),
                    in_catalog: true,
                },
                (None, Some(s)) => Held {
                    id,
                    bytes,
                    known: Some((s.volume.clone(), s.time_ns, s.level, s.chain.clone())),
                    needs: s.tapes_needed.clone(),
                    in_catalog: false,
                },
                (None, None) => Held {
                    id,
                    bytes,
                    known: None,
                    needs: Vec::new(),
                    in_catalog: false,
                },
            };
            dumps.push(held);
        }
        rows.push((t, dumps));
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, dumps)| {
                let mut o = serde_json::to_value(t).expect("tape serialises");
                if let Some(o) = o.as_object_mut() {
                    // Shown per dump below.
                    o.remove("summaries");
                }
                o["created"] = format_rfc3339(t.created_ns).into();
                o["dumps"] = dumps
                    .iter()
                    .map(|h| {
                        let k = h.known.as_ref();
                        serde_json::json!({
                            "id": h.id,
                            "bytes": h.bytes,
                            "volume": k.map(|k| k.0.clone()),
                            "time": k.map(|k| format_rfc3339(k.1)),
                            "level": k.map(|k| k.2),
                            "chain": k.map(|k| k.3.clone()),
                            "needs": h.needs,
                            "in_catalog": h.in_catalog,
                        })
                    })
                    .collect();
                o
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
        return Ok(ExitCode::SUCCESS);
    }
    if tapes.is_empty() {
        println!("no tapes yet: `reel export --to PATH` writes one");
    }
    for (t, dumps) in &rows {
        println!(
            "{}  {}  {}  {} volume(s)  {} dumps{}",
            t.label,
            format_rfc3339(t.created_ns),
            format_bytes(t.bytes),
            t.volumes,
            t.dumps.len(),
            t.media_set
                .as_ref()
                .map(|m| format!("  media set {m} #{}", t.sequence))
                .unwrap_or_default()
        );
        for h in dumps {
            let what = match &h.known {
                Some((volume, time_ns, level, _)) => format!(
                    "{volume} {} level {level}{}",
                    format_rfc3339(*time_ns),
                    if h.in_catalog {
                        ""
                    } else {
                        " (pruned: restores from tapes)"
                    }
                ),
                None => "(no longer in the catalog)".into(),
            };
            println!(
                "    dump {:>5}  {what}  {}  restore needs: {}",
                h.id,
                format_bytes(h.bytes),
                h.needs.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration like 30d, 12h, 2w, 90m (minutes), 45s; in nanoseconds.
fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    let unit = s.chars().last().unwrap_or(' ');
    let secs: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => 0,
    };
    s[..s.len().saturating_sub(1)]
        .parse::<i64>()
        .ok()
        .filter(|_| secs > 0)
        .and_then(|n| n.checked_mul(secs * 1_000_000_000))
        .ok_or_else(|| {
            Error::usage(format!(
                "bad duration {s:?}: use a number with s, m, h, d or w (30d)"
            ))
        })
}

#[derive(Args)]
pub struct PurgeArgs {
    /// Remove the packs whose every chunk is on tape (required: the only purge there is).
    #[arg(long, required = true)]
    exported: bool,
    /// Only packs written longer ago than this (30d, 12h, 2w).
    #[arg(long)]
    older_than: Option<String>,
    /// Say what would go, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn purge(ctx: &Ctx, a: PurgeArgs) -> Result<ExitCode> {
    let _ = a.exported;
    let spool = ctx.open(Access::Write)?;
    let cutoff = a
        .older_than
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| reel::timefmt::now_ns() - d);
    let s = reel::tape::purge::purge_exported(&spool, cutoff, a.dry_run)?;
    if a.json {
        print_json(&serde_json::json!({
            "dry_run": a.dry_run,
            "packs_removed": s.packs.len(),
            "bytes_removed": s.bytes,
            "chunks_removed": s.chunks,
            "packs_kept_latest": s.latest,
            "bytes_kept_latest": s.latest_bytes,
            "packs_kept_not_on_tape": s.kept,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {} packs ({}, {} chunks) whose every chunk is on tape",
        if a.dry_run { "would remove" } else { "removed" },
        s.packs.len(),
        format_bytes(s.bytes),
        s.chunks,
    );
    println!(
        "kept {} packs ({}) on tape whose data the latest dumps and clones reference: the next dump's base and the users' .backup view",
        s.latest,
        format_bytes(s.latest_bytes)
    );
    if s.kept > 0 {
        println!("kept {} packs with data on no tape", s.kept);
    }
    let d = &s.doomed;
    if d.deleted > 0 && !a.dry_run {
        println!(
            "deleted {} pack files ({})",
            d.deleted,
            format_bytes(d.deleted_bytes)
        );
    }
    if d.waiting > 0 && a.dry_run {
        println!(
            "would delete {} pack files ({}) that an earlier purge or gc left waiting for readers",
            d.waiting,
            format_bytes(d.waiting_bytes)
        );
    } else if d.waiting > 0 {
        println!(
            "deletion deferred: {} pack files ({}) wait for readers (restore/cat/mount/export-plain) to finish; the next `reel purge` or `reel gc` deletes them",
            d.waiting,
            format_bytes(d.waiting_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
