//! Command-line front end: argument parsing (clap derive), progress bars, printing and exit
//! codes. Each subcommand lives in its own file and calls into the library.

mod browse;
mod check;
mod cycle;
mod diff;
mod dump;
mod gc;
mod info;
mod ingest;
mod json;
mod key;
mod keys;
mod list;
mod manage;
mod mount;
mod plain;
mod prune;
mod rebuild;
mod restore;
mod schedule;
mod tape;
mod unix;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reel::spool::{Access, Spool};
use reel::timefmt::{DayEdge, parse_time};
use reel::{Error, Result};

pub use json::print_json;

#[derive(Parser)]
#[command(
    name = "reel",
    version,
    about = "Levelled, deduplicated volume dumps on a spool disk, after the Coda backup design"
)]
pub struct Cli {
    /// The spool directory.
    #[arg(long, global = true, env = "REEL_SPOOL", value_name = "DIR")]
    spool: Option<PathBuf>,
    /// More log output (repeat for more); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Where the key of an encrypted spool comes from (docs/KEYS.md).
    #[command(flatten)]
    keys: keys::KeyOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new spool.
    Init(manage::InitArgs),
    /// Add, list or remove volumes.
    #[command(subcommand)]
    Volume(manage::VolumeCmd),
    /// An encrypted spool's keys: list, add, remove and change passphrases; export the
    /// master key for paper and import it back.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Dump a volume at a level (0 = full, N = changes since the latest dump below N).
    Dump(dump::DumpArgs),
    /// List dumps, one row each.
    List(list::ListArgs),
    /// Print one dump's header: volume, time, level, chain, counts and sizes.
    Show(list::ShowArgs),
    /// What takes space: per volume and dump the logical, deduplicated, compressed, owned and
    /// tape-only bytes, and the spool's totals.
    #[command(visible_alias = "du")]
    Info(info::InfoArgs),
    /// List the entries of a dump without restoring it.
    Ls(browse::LsArgs),
    /// Write one file of a dump to standard output.
    Cat(browse::CatArgs),
    /// Rebuild a dump's tree, or some of its subtrees, under a directory.
    Restore(restore::RestoreArgs),
    /// Record a synthetic level 0 for a point in time (no data copied).
    Merge(manage::MergeArgs),
    /// Freeze a volume, take its clone (the users' "yesterday"), thaw it.
    Clone(cycle::CloneArgs),
    /// Clone a volume, then dump the clone (at the level its schedule names for the day).
    Backup(cycle::BackupArgs),
    /// The day's work for every scheduled volume: clone all, dump all, retry, report.
    Nightly(cycle::NightlyArgs),
    /// Write the dumps not yet on tape to a tape image (BSD dump format).
    Export(tape::ExportArgs),
    /// Read tape images back into the spool (verifying every chunk).
    Import(tape::ImportArgs),
    /// Read tape images front to back and check every record and chunk, without importing.
    VerifyTape(tape::VerifyArgs),
    /// The media catalog: the tapes written or imported, and what they hold.
    Tapes(tape::TapesArgs),
    /// Free the spool of packs whose every chunk is on tape, keeping what the latest dumps and
    /// clones reference.
    Purge(tape::PurgeArgs),
    /// Forget the dumps a retention policy no longer keeps (their chunks go with `reel gc`).
    Prune(prune::PruneArgs),
    /// Forget the named dumps, a volume's latest included (their chunks go with `reel gc`).
    Forget(prune::ForgetArgs),
    /// Ingest old BSD dump images (levels 0-9, multi-volume sets) as dumps of a volume.
    IngestDump(ingest::IngestArgs),
    /// Write a volume's tree as a plain BSD dump at a level, for the stock `restore -r`.
    ExportPlain(plain::ExportPlainArgs),
    /// Delete chunks no dump or clone needs; rewrite packs that are mostly unused.
    Gc(gc::GcArgs),
    /// Verify the catalog against the packs (and every chunk's bytes with --read-data).
    Check(check::CheckArgs),
    /// Build a new catalog from the packs (and tape images), when catalog.redb is lost or damaged.
    RebuildCatalog(rebuild::RebuildArgs),
    /// Import a dumplist of schedules, or show which level each volume gets on which day.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCmd),
    /// List what was added, removed and changed between two points in time.
    Diff(diff::DiffArgs),
    /// Mount every dump of a volume read-only with FUSE, one folder per dump (Ctrl-C unmounts).
    Mount(mount::MountArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(unix::CompletionArgs),
    /// Write man pages for reel and each of its commands into a folder.
    Man(unix::ManArgs),
}

pub struct Ctx {
    spool_dir: Option<PathBuf>,
    quiet: bool,
}

impl Ctx {
    fn spool_dir(&self) -> Result<PathBuf> {
        self.spool_dir
            .clone()
            .ok_or_else(|| Error::usage("no spool given: use --spool DIR or set REEL_SPOOL"))
    }

    fn open(&self, access: Access) -> Result<Spool> {
        Spool::open_keyed(&self.spool_dir()?, access, &keys::unlock)
    }

    /// A progress bar on a terminal, nothing on a pipe.
    fn progress(&self) -> Bar {
        let bar = if self.quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec}) {elapsed}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        };
        Bar(bar, Mutex::new(None))
    }
}

/// The progress bar, and the phase it shows with its start: each phase is logged when it
/// starts (`-v`) and with its time when it ends (`-vv`), whether the bar is drawn or not.
pub struct Bar(ProgressBar, Mutex<Option<(String, Instant)>>);

impl Bar {
    fn end_phase(&self) {
        let done = self.1.lock().map(|mut p| p.take()).unwrap_or(None);
        if let Some((phase, started)) = done {
            tracing::debug!("{phase}: {:.3} s", started.elapsed().as_secs_f64());
        }
    }
}

impl reel::progress::Progress for Bar {
    fn message(&self, msg: &str) {
        self.end_phase();
        tracing::info!("{msg}");
        if let Ok(mut p) = self.1.lock() {
            *p = Some((msg.to_string(), Instant::now()));
        }
        self.0.set_message(msg.to_string());
    }
    fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
        if bytes > 0 && !self.0.is_hidden() {
            self.0.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
        }
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.end_phase();
        self.0.finish_and_clear();
    }
}

pub fn at_time(s: &str) -> Result<i64> {
    parse_time(s, DayEdge::End)
}

pub fn date_time(s: &str) -> Result<i64> {
    parse_time(s, DayEdge::Start)
}

/// A dump's or clone's `--date`: refused when more than a day ahead of the clock, unless
/// `force` (`--force-date`).
pub fn dump_date(s: Option<&str>, force: bool) -> Result<Option<i64>> {
    let Some(s) = s else { return Ok(None) };
    let t = date_time(s)?;
    if !force {
        reel::dump::check_not_ahead(t, reel::timefmt::now_ns())?;
    }
    Ok(Some(t))
}

/// After a writing command: compact the catalog if the command grew it by
/// [`COMPACT_AFTER_GROWTH`](reel::catalog::COMPACT_AFTER_GROWTH) from `before` bytes. A
/// failure is only a warning: everything is committed by then. When it compacted, returns a
/// line for the command's summary: after a dump of a million files it takes seconds, which
/// the dump's own time does not show.
pub fn compact_catalog(spool: &mut Spool, before: u64) -> Option<String> {
    let growth = reel::catalog::COMPACT_AFTER_GROWTH;
    let started = std::time::Instant::now();
    let grown = spool.catalog.file_len();
    match spool.catalog.compact_if_grown(before, growth) {
        Ok(true) => Some(format!(
            "  catalog      compacted from {} to {} in {}",
            reel::timefmt::format_bytes(grown),
            reel::timefmt::format_bytes(spool.catalog.file_len()),
            reel::timefmt::format_duration(started.elapsed().as_nanos() as u64)
        )),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// What to do after `e`, if it is a full disk. On the spool's disk the advice names commands
/// that free space as written: what the failed command wrote and did not commit is already
/// gone (`StoreWriter` removes it), so space comes from forgetting dumps and collecting their
/// chunks.
fn disk_full_advice(e: &Error, spool: Option<&std::path::Path>) -> Option<String> {
    if !e.is_disk_full() {
        return None;
    }
    let Error::Io { path, .. } = e else {
        return None;
    };
    let on_spool = spool.is_some_and(|s| {
        let s = std::fs::canonicalize(s).unwrap_or_else(|_| s.to_path_buf());
        path.starts_with(&s)
            || std::fs::canonicalize(path.parent().unwrap_or(path)).is_ok_and(|p| p.starts_with(&s))
    });
    Some(if on_spool {
        "the spool's filesystem is full; nothing committed was changed (a failed dump, clone, \
         import or prune removes what it wrote). To free space, forget dumps you can do without: `reel prune \
         --keep-daily N --keep-weekly N ...` (add --dry-run first to see what goes) or \
         `reel forget ID...` for single dumps; then `reel gc` deletes the chunks no dump needs. \
         Packs an earlier crash left (`reel check` lists them as unreferenced) go with \
         `reel check --repair`, then `reel gc`. Or move the spool to a larger disk. Then run \
         the command again"
            .to_string()
    } else {
        format!(
            "the filesystem holding {} is full; free space there and run the command again",
            path.display()
        )
    })
}

/// The dump and restore pipelines allocate and free buffers of a few MiB all the time (read
/// buffers, frames, compressed blobs). glibc serves such sizes with fresh mmaps by default,
/// and the kernel must fault in and zero every page again: 8-10% of a full dump's CPU
/// (docs/PERFORMANCE.md). Keep them on the heap and keep freed memory for reuse instead; the
/// peak stays bounded by what the pipelines hold at once. One arena, not glibc's eight a core:
/// each thread's arena kept its own freed buffers, and a 4 GiB first dump peaked at 222 MB of
/// RSS for 128 MB of heap (149 MB with two arenas, as fast); a 16 GiB one peaked at 168 MB
/// with two and 147 MB with one (docs/PERFORMANCE.md).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Colour codes only for a person at a terminal: never in a log file or cron mail, and never
/// when `NO_COLOR` is set to anything (https://no-color.org). tracing-subscriber's default
/// honours `NO_COLOR` but not a redirected stderr.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn main() -> ExitCode {
    // `reel list | head`: end quietly when the reader goes away, as Unix tools do, instead of
    // panicking in println!. reel writes to no other pipe (hooks get no stdin from it).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    reel::catalog::install_damage_report_hook();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // fuser warns "Unmount failed" when it finds its mount already gone, which is how every
    // `fusermount -u` or `umount` of `reel mount` ends: not a problem, so not shown.
    let filter = format!("{level},fuser::mnt=error");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .without_time()
        .with_target(false)
        .init();
    keys::set_sources(&cli.keys);
    let ctx = Ctx {
        spool_dir: cli.spool.clone(),
        quiet: cli.quiet,
    };
    let result = match cli.command {
        Command::Init(a) => manage::init(&ctx, a),
        Command::Volume(c) => manage::volume(&ctx, c),
        Command::Key(c) => key::run(&ctx, c),
        Command::Dump(a) => dump::run(&ctx, a),
        Command::Info(a) => info::run(&ctx, a),
        Command::List(a) => list::list(&ctx, a),
        Command::Show(a) => list::show(&ctx, a),
        Command::Ls(a) => browse::ls(&ctx, a),
        Command::Cat(a) => browse::cat(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Merge(a) => manage::merge(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Gc(a) => gc::run(&ctx, a),
        Command::RebuildCatalog(a) => rebuild::run(&ctx, a),
        Command::Clone(a) => cycle::clone(&ctx, a),
        Command::Backup(a) => cycle::backup(&ctx, a),
        Command::Nightly(a) => cycle::nightly(&ctx, a),
        Command::Schedule(c) => schedule::run(&ctx, c),
        Command::Export(a) => tape::export(&ctx, a),
        Command::Import(a) => tape::import(&ctx, a),
        Command::VerifyTape(a) => tape::verify(&ctx, a),
        Command::Tapes(a) => tape::tapes(&ctx, a),
        Command::Purge(a) => tape::purge(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Forget(a) => prune::forget(&ctx, a),
        Command::IngestDump(a) => ingest::run(&ctx, a),
        Command::ExportPlain(a) => plain::run(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Mount(a) => mount::run(&ctx, a),
        Command::Completion(a) => unix::completion(a),
        Command::Man(a) => unix::man(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Error::Io { source, .. } = &e
                && source.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("reel: {e}");
            if let Some(advice) = disk_full_advice(&e, ctx.spool_dir.as_deref()) {
                eprintln!("reel: {advice}");
            }
            match e {
                Error::Usage(_) | Error::OnTape { .. } => ExitCode::from(2),
                Error::Interrupted(sig) => ExitCode::from(128u8.saturating_add(sig as u8)),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is in `--help` and the man pages: none is
    /// a bare `<NAME>`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, bare: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !arg.is_hide_set()
                    && !["help", "version"].contains(&id)
                    && arg.get_help().is_none()
                {
                    bare.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bare);
            }
        }
        let mut cmd = <Cli as clap::CommandFactory>::command();
        cmd.build();
        let mut bare = Vec::new();
        walk(&cmd, "reel", &mut bare);
        assert!(bare.is_empty(), "arguments without help text: {bare:#?}");
    }

    /// The summary line comes only from a compaction that ran, and names both sizes.
    #[test]
    fn compaction_is_reported_only_when_it_ran() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        drop(Spool::init(&root).unwrap());
        let mut spool = Spool::open(&root, Access::Write).unwrap();
        let before = spool.catalog.file_len();
        assert_eq!(compact_catalog(&mut spool, before), None, "nothing grew");

        // Grow the file past the threshold, then free it all: a compaction gives it back.
        spool
            .catalog
            .fill_and_free(reel::catalog::COMPACT_AFTER_GROWTH + (8 << 20))
            .unwrap();
        let grown = spool.catalog.file_len();
        assert!(grown >= before + reel::catalog::COMPACT_AFTER_GROWTH);

        let line = compact_catalog(&mut spool, before).expect("a compaction after the growth");
        assert!(
            line.contains("catalog      compacted from")
                && line.contains(&reel::timefmt::format_bytes(grown)),
            "{line}"
        );
        let compacted = spool.catalog.file_len();
        assert!(compacted < grown / 2, "{grown} -> {compacted}");
        assert_eq!(compact_catalog(&mut spool, compacted), None);
    }
}
