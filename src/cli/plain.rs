//! `reel export-plain`: write a volume's tree as a plain BSD dump at a level, for the stock
//! `restore -r` (the library side is `reel::tape::plain`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::spool::Access;
use reel::tape::bsd::Target;
use reel::tape::plain::export_plain;
use reel::timefmt::{format_bytes, format_rfc3339};
use reel::{Error, Result};

use super::Ctx;
use reel::select::pick_dump_or_tape;

#[derive(Args)]
pub struct ExportPlainArgs {
    /// The volume (or NAME@T for the dump current at T).
    name: String,
    /// The dump current at this time (default: the latest).
    #[arg(long)]
    at: Option<String>,
    /// Dump level: 0 = the whole tree; N = what changed since the latest plain export of this
    /// volume below level N.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    level: u8,
    /// The image to write: a file, or a tape device.
    #[arg(long)]
    to: PathBuf,
    /// Split into tape volumes of at most this size (PATH.001, PATH.002, …), like `dump -M`.
    #[arg(long)]
    capacity: Option<String>,
    /// Records (1 KiB) per tape block (dump's -b).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    block_size: u32,
    /// On an encrypted spool: write the tree anyway, as a plain dump anyone can read (the
    /// image is outside the spool's encryption).
    #[arg(long)]
    plaintext: bool,
    #[command(flatten)]
    tapes: super::restore::TapeArgs,
}

pub fn run(ctx: &Ctx, a: ExportPlainArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    if let Some(fp) = spool.keys().fingerprint()
        && !a.plaintext
    {
        return Err(Error::usage(format!(
            "this spool is encrypted (key {fp}) and export-plain writes the volume's files as a \
             plain BSD dump that anyone holding the image can read, outside the encryption; \
             give --plaintext to write it anyway"
        )));
    }
    // Data purge removed from the spool is read from the tapes that hold it, as a restore of
    // the whole dump reads it (none are needed when every chunk is on the spool); a dump only
    // tapes hold (pruned) is read from its tapes.
    let picked = pick_dump_or_tape(&spool, &a.name, a.at.as_deref(), None)?;
    let reading = super::restore::open_picked(&spool, picked, &[], true, &a.tapes)?;
    let d = &reading.dump;
    if d.id == 0 {
        return Err(Error::usage(format!(
            "{} is a clone that is not dumped yet; dump it first with `reel dump`",
            a.name
        )));
    }
    let target = match &a.capacity {
        Some(c) => Target::Split {
            path: a.to.clone(),
            capacity: super::tape::parse_size(c)?,
        },
        None => Target::File(a.to.clone()),
    };
    let s = export_plain(&spool, &reading.reader, d, a.level, target, a.block_size)?;
    if let Some(note) = &s.note {
        println!("{note}");
    }
    let r = &s.record;
    println!(
        "plain export {} of {}: level {} of dump {} ({}), {} in {} volume(s): {}",
        r.seq,
        r.volume,
        r.level,
        r.dump_id,
        format_rfc3339(r.dump_time_ns),
        format_bytes(s.written.bytes),
        s.written.volumes.len(),
        s.written
            .volumes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match r.base_seq {
        Some(b) => println!(
            "  based on plain export {b} (dumped from {}): {} directories, {} changed files ({})",
            format_rfc3339(r.ddate * 1_000_000_000),
            s.dirs,
            s.files,
            format_bytes(s.file_bytes)
        ),
        None => println!(
            "  full: {} directories, {} files ({})",
            s.dirs,
            s.files,
            format_bytes(s.file_bytes)
        ),
    }
    Ok(ExitCode::SUCCESS)
}
