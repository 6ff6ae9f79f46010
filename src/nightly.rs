//! The nightly job: the day's work for every volume with a schedule, in Coda's order. Clone
//! every volume first (so all freezes happen close together, before the long work), then dump
//! every clone at its day's level, then give what failed one more try. One volume's failure
//! never stops the others; the report says what happened to each.

use chrono::NaiveDate;
use serde::Serialize;

use crate::catalog::DumpRecord;
use crate::clone::{self, CloneOptions, CloneOutcome};
use crate::dump::{self, DumpOutcome, Shrink};
use crate::error::IoContext;
use crate::progress::Progress;
use crate::schedule::Schedule;
use crate::settings::FsIdentity;
use crate::spool::Spool;
use crate::timefmt::{self, format_bytes, format_duration, format_rfc3339};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct NightlyOptions {
    /// The local date whose schedule letters apply.
    pub date: NaiveDate,
    /// Replaying another day (`--date`): clones are recorded on that date, at the current
    /// time of day. None: now.
    pub replay: bool,
    /// Dump volumes even if they already have a dump on `date`.
    pub force: bool,
    /// The shrink guard for every volume of the night (`--allow-shrink` is `Shrink::Allow`).
    pub shrink: Shrink,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Succeeded,
    Failed,
    /// Already dumped that day (no `--force`).
    Skipped,
}

/// One volume's night.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeReport {
    pub volume: String,
    pub status: Status,
    /// The level the schedule names for the day (None if the schedule could not be read).
    pub level: Option<u8>,
    pub schedule: String,
    /// The dump made, if any.
    pub dump_id: Option<u64>,
    /// The level the dump got (0 when no lower dump existed).
    pub dump_level: Option<u8>,
    pub clone_method: Option<String>,
    pub files: u64,
    pub logical_bytes: u64,
    pub added_bytes: u64,
    /// Logical bytes per byte added (None when nothing was added).
    pub dedup_ratio: Option<f64>,
    pub freeze_ns: u64,
    pub dump_ns: u64,
    /// Logical bytes per second over clone and dump together.
    pub bytes_per_sec: Option<f64>,
    /// Tries made (2 when the retry pass ran for it).
    pub attempts: u32,
    /// The phase that failed ("clone" or "dump") and the error, for a failed volume; the reason
    /// for a skipped one.
    pub phase: Option<String>,
    pub error: Option<String>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub files: u64,
    pub logical_bytes: u64,
    pub added_bytes: u64,
    pub freeze_ns: u64,
    pub dump_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NightlyReport {
    pub date: String,
    pub started: String,
    pub finished: String,
    pub elapsed_ns: u64,
    pub volumes: Vec<VolumeReport>,
    pub totals: Totals,
    /// Volumes in the spool with no schedule: the nightly job leaves them alone.
    pub unscheduled: Vec<String>,
    /// The signal that stopped the night early, if one did.
    pub interrupted: Option<i32>,
    /// Where the report was saved (text and JSON), once saved.
    pub saved: Vec<String>,
}

impl NightlyReport {
    pub fn any_failed(&self) -> bool {
        self.totals.failed > 0
    }
}

struct Job {
    report: VolumeReport,
    level: u8,
    clone: Option<CloneOutcome>,
    done: bool,
    /// The last failure cannot pass on a second try (a usage error: the volume's settings or
    /// dates are wrong; a refusal of the shrink guard: the tree is the same a minute later),
    /// so the retry pass leaves it.
    permanent: bool,
    /// The filesystem of the volume's root, to record once the night is done (a volume added
    /// before reel recorded them).
    filesystem: Option<FsIdentity>,
}

/// Run the night for every scheduled volume of the spool (opened for writing).
pub fn run(
    spool: &mut Spool,
    opts: &NightlyOptions,
    progress: &dyn Progress,
) -> Result<NightlyReport> {
    let (mut report, filesystems) = run_jobs(spool, opts, progress)?;
    // Volumes dumped tonight that had no filesystem recorded get theirs now (reel.toml is
    // written once the work is done, while the spool is still held).
    for (name, fs) in filesystems {
        let note = match dump::record_filesystem(spool, &name, fs) {
            Ok(()) => format!("recorded the filesystem of its root: {fs}"),
            Err(e) => format!("could not record the filesystem of its root: {e}"),
        };
        if let Some(v) = report.volumes.iter_mut().find(|v| v.volume == name) {
            v.notes.push(note);
        }
    }
    Ok(report)
}

/// Volumes and the filesystems of their roots, to record in reel.toml.
type ToRecord = Vec<(String, FsIdentity)>;

/// The night's work, and the filesystems to record.
fn run_jobs(
    spool: &Spool,
    opts: &NightlyOptions,
    progress: &dyn Progress,
) -> Result<(NightlyReport, ToRecord)> {
    let started_ns = timefmt::now_ns();
    let mut jobs: Vec<Job> = Vec::new();
    let mut unscheduled = Vec::new();
    for (name, vol) in &spool.settings.volumes {
        let Some(text) = &vol.schedule else {
            unscheduled.push(name.clone());
            continue;
        };
        let mut report = VolumeReport {
            volume: name.clone(),
            status: Status::Failed,
            level: None,
            schedule: text.clone(),
            dump_id: None,
            dump_level: None,
            clone_method: Some(vol.clone.to_string()),
            files: 0,
            logical_bytes: 0,
            added_bytes: 0,
            dedup_ratio: None,
            freeze_ns: 0,
            dump_ns: 0,
            bytes_per_sec: None,
            attempts: 0,
            phase: None,
            error: None,
            notes: Vec::new(),
        };
        let level = match Schedule::parse(text) {
            Ok(s) => s.level_on(opts.date),
            Err(e) => {
                report.phase = Some("schedule".into());
                report.error = Some(format!("volume {name}: {e}"));
                jobs.push(Job {
                    report,
                    level: 0,
                    clone: None,
                    done: true,
                    permanent: true,
                    filesystem: None,
                });
                continue;
            }
        };
        report.level = Some(level);
        let mut done = false;
        if !opts.force
            && let Some(d) = dumped_on(spool, name, opts.date)?
        {
            report.status = Status::Skipped;
            report.phase = Some(format!(
                "already dumped on {}: dump {} at level {} ({}); --force dumps it again",
                opts.date,
                d.id,
                d.level,
                format_rfc3339(d.time_ns)
            ));
            done = true;
        }
        jobs.push(Job {
            report,
            level,
            clone: None,
            done,
            permanent: false,
            filesystem: None,
        });
    }

    // Pass 1 clones everything, pass 2 dumps; the retry pass does both for what failed.
    let mut interrupted = None;
    for job in jobs.iter_mut().filter(|j| !j.done) {
        if interrupted.is_some() {
            break;
        }
        job.report.attempts = 1;
        interrupted = take_clone(spool, job, opts, progress);
    }
    for job in jobs.iter_mut().filter(|j| !j.done && j.clone.is_some()) {
        if interrupted.is_some() {
            break;
        }
        interrupted = take_dump(spool, job, opts, progress);
    }
    for job in jobs
        .iter_mut()
        .filter(|j| !j.done && !j.permanent && j.report.attempts == 1)
    {
        if interrupted.is_some() {
            break;
        }
        let first = job.report.error.take().unwrap_or_default();
        job.report.notes.push(format!("first try failed: {first}"));
        job.report.attempts = 2;
        if job.clone.is_none() {
            interrupted = take_clone(spool, job, opts, progress);
        }
        if job.clone.is_some() && interrupted.is_none() {
            interrupted = take_dump(spool, job, opts, progress);
        }
    }
    for job in jobs.iter_mut().filter(|j| !j.done) {
        job.report.status = Status::Failed;
        if job.report.error.is_none() {
            job.report.error = Some(match interrupted {
                Some(sig) => format!("not done: the night was interrupted by signal {sig}"),
                None => "not done".into(),
            });
        }
    }

    let finished_ns = timefmt::now_ns();
    let filesystems = jobs
        .iter_mut()
        .filter_map(|j| Some((j.report.volume.clone(), j.filesystem.take()?)))
        .collect();
    let volumes: Vec<VolumeReport> = jobs.into_iter().map(|j| j.report).collect();
    let mut totals = Totals::default();
    for v in &volumes {
        match v.status {
            Status::Succeeded => totals.succeeded += 1,
            Status::Failed => totals.failed += 1,
            Status::Skipped => totals.skipped += 1,
        }
        totals.files += v.files;
        totals.logical_bytes += v.logical_bytes;
        totals.added_bytes += v.added_bytes;
        totals.freeze_ns += v.freeze_ns;
        totals.dump_ns += v.dump_ns;
    }
    let report = NightlyReport {
        date: opts.date.to_string(),
        started: format_rfc3339(started_ns),
        finished: format_rfc3339(finished_ns),
        elapsed_ns: (finished_ns - started_ns).max(0) as u64,
        volumes,
        totals,
        unscheduled,
        interrupted,
        saved: Vec::new(),
    };
    Ok((report, filesystems))
}

/// The volume's latest dump recorded on local date `date`, if any.
fn dumped_on(spool: &Spool, volume: &str, date: NaiveDate) -> Result<Option<DumpRecord>> {
    Ok(spool
        .catalog
        .dumps(Some(volume))?
        .into_iter()
        .rfind(|d| timefmt::local_date(d.time_ns) == date))
}

/// Clone one volume; returns the signal number if the night must stop.
fn take_clone(
    spool: &Spool,
    job: &mut Job,
    opts: &NightlyOptions,
    progress: &dyn Progress,
) -> Option<i32> {
    let now = timefmt::now_ns();
    let time_ns = if opts.replay {
        match timefmt::on_date(opts.date, now) {
            Ok(t) => Some(t),
            Err(e) => return fail(job, "clone", e),
        }
    } else {
        None
    };
    let copts = CloneOptions {
        time_ns,
        reread: false,
        shrink: opts.shrink,
    };
    match clone::clone_volume(spool, &job.report.volume, &copts, progress) {
        Ok(c) => {
            job.report.freeze_ns = c.frozen.as_nanos() as u64;
            job.report.notes.extend(c.notes.iter().cloned());
            job.clone = Some(c);
            None
        }
        Err(e) => fail(job, "clone", e),
    }
}

/// Dump one volume's clone at its level; returns the signal number if the night must stop.
fn take_dump(
    spool: &Spool,
    job: &mut Job,
    opts: &NightlyOptions,
    progress: &dyn Progress,
) -> Option<i32> {
    let c = job.clone.as_ref().expect("cloned");
    let started = std::time::Instant::now();
    match dump::dump_clone(
        spool,
        &job.report.volume,
        c.record.clone(),
        job.level,
        opts.shrink,
        progress,
    ) {
        Ok(out) => {
            job.report.dump_ns = started.elapsed().as_nanos() as u64;
            job.filesystem = out.filesystem_to_record;
            succeed(job, &out);
            None
        }
        Err(e) => {
            // A clone whose dump failed is taken again on the retry.
            job.clone = None;
            fail(job, "dump", e)
        }
    }
}

fn succeed(job: &mut Job, out: &DumpOutcome) {
    let r = &out.record;
    let v = &mut job.report;
    v.status = Status::Succeeded;
    v.error = None;
    v.phase = None;
    v.dump_id = Some(r.id);
    v.dump_level = Some(r.level);
    let t = &r.totals;
    v.files = t.files;
    v.logical_bytes = t.logical_bytes;
    v.added_bytes = t.stored_bytes;
    v.dedup_ratio = (t.stored_bytes > 0).then(|| t.logical_bytes as f64 / t.stored_bytes as f64);
    let secs = (v.freeze_ns + v.dump_ns) as f64 / 1e9;
    v.bytes_per_sec = (secs > 0.0).then(|| t.logical_bytes as f64 / secs);
    if out.promoted {
        v.notes.push(format!(
            "no dump below level {} existed: dumped at level 0",
            r.requested_level
        ));
    }
    v.notes.extend(r.warnings.iter().cloned());
    job.done = true;
}

fn fail(job: &mut Job, phase: &str, e: Error) -> Option<i32> {
    let volume = &job.report.volume;
    let message = e.to_string();
    // Most errors name the volume already; the log line names it once.
    let rest = message
        .strip_prefix(&format!("volume {volume}: "))
        .unwrap_or(&message);
    tracing::warn!("nightly: volume {volume}: {phase}: {rest}");
    job.report.status = Status::Failed;
    job.report.phase = Some(phase.to_string());
    job.report.error = Some(message);
    job.permanent = matches!(e, Error::Usage(_) | Error::Refused(_));
    match e {
        Error::Interrupted(sig) => Some(sig),
        _ => None,
    }
}

/// The report as text, as printed and saved in logs/.
pub fn render(r: &NightlyReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "reel nightly for {}: started {}, finished {} ({})",
        r.date,
        r.started,
        r.finished,
        format_duration(r.elapsed_ns)
    );
    let groups = [
        (Status::Succeeded, "succeeded"),
        (Status::Failed, "FAILED"),
        (Status::Skipped, "skipped"),
    ];
    for (status, title) in groups {
        let vols: Vec<&VolumeReport> = r.volumes.iter().filter(|v| v.status == status).collect();
        if vols.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{title} ({}):", vols.len());
        if status == Status::Succeeded {
            let _ = writeln!(
                s,
                "  {:<16} {:>5} {:>8} {:>11} {:>11} {:>7} {:>9} {:>9} {:>11}",
                "volume",
                "level",
                "files",
                "logical",
                "added",
                "dedup",
                "frozen",
                "dump",
                "throughput"
            );
        }
        for v in vols {
            match status {
                Status::Succeeded => {
                    let _ = writeln!(
                        s,
                        "  {:<16} {:>5} {:>8} {:>11} {:>11} {:>7} {:>9} {:>9} {:>11}",
                        v.volume,
                        v.dump_level.map(|l| l.to_string()).unwrap_or_default(),
                        v.files,
                        format_bytes(v.logical_bytes),
                        format_bytes(v.added_bytes),
                        v.dedup_ratio
                            .map(|d| format!("{d:.1}x"))
                            .unwrap_or_else(|| "-".into()),
                        format_duration(v.freeze_ns),
                        format_duration(v.dump_ns),
                        v.bytes_per_sec
                            .map(|b| format!("{}/s", format_bytes(b as u64)))
                            .unwrap_or_else(|| "-".into()),
                    );
                }
                Status::Failed => {
                    let _ = writeln!(
                        s,
                        "  {} (level {}, {} phase, {} tries): {}",
                        v.volume,
                        v.level.map(|l| l.to_string()).unwrap_or("?".into()),
                        v.phase.as_deref().unwrap_or("?"),
                        v.attempts,
                        v.error.as_deref().unwrap_or("")
                    );
                }
                Status::Skipped => {
                    let _ = writeln!(s, "  {}: {}", v.volume, v.phase.as_deref().unwrap_or(""));
                }
            }
            for n in &v.notes {
                let _ = writeln!(s, "      note: {n}");
            }
        }
    }
    let t = &r.totals;
    let _ = writeln!(
        s,
        "\ntotal: {} succeeded, {} failed, {} skipped; {} files, {} logical, {} added; frozen {} in all, dumps {}",
        t.succeeded,
        t.failed,
        t.skipped,
        t.files,
        format_bytes(t.logical_bytes),
        format_bytes(t.added_bytes),
        format_duration(t.freeze_ns),
        format_duration(t.dump_ns)
    );
    if r.unscheduled.is_empty() {
        let _ = writeln!(s, "every volume has a schedule");
    } else {
        let _ = writeln!(
            s,
            "no schedule (not dumped by nightly): {}",
            r.unscheduled.join(", ")
        );
    }
    s
}

/// Save the report under the spool's logs/ as text and JSON; records the paths in it.
pub fn save(spool: &Spool, r: &mut NightlyReport) -> Result<()> {
    let dir = spool.logs_dir();
    crate::fsutil::create_dir_all(&dir).at(&dir)?;
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
    let base = dir.join(format!("nightly-{}-{stamp}", r.date));
    let txt = base.with_extension("txt");
    let json = base.with_extension("json");
    r.saved = vec![txt.display().to_string(), json.display().to_string()];
    crate::fsutil::write_file(&txt, render(r).as_bytes()).at(&txt)?;
    let body = serde_json::to_string_pretty(r).expect("report serialises");
    crate::fsutil::write_file(&json, body.as_bytes()).at(&json)?;
    Ok(())
}

/// Remove the nightly reports in the spool's logs/ saved more than `keep_days` days before
/// `now` (0 keeps them all): the files `save` writes, `nightly-DATE-STAMP.txt` and `.json`,
/// aged by the STAMP in their name (when they were saved, also for a replayed night). Other
/// files in logs/ are never touched. Returns the files removed.
pub fn remove_old_reports(
    spool: &Spool,
    keep_days: u32,
    now: chrono::NaiveDateTime,
) -> Result<Vec<std::path::PathBuf>> {
    let mut removed = Vec::new();
    if keep_days == 0 {
        return Ok(removed);
    }
    let cutoff = now - chrono::Duration::days(i64::from(keep_days));
    let dir = spool.logs_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.at(&dir)?;
        let name = entry.file_name();
        let Some(saved) = name.to_str().and_then(report_saved_at) else {
            continue;
        };
        let path = entry.path();
        // A report is a file reel wrote; anything else of that name is left alone.
        if saved >= cutoff || !entry.file_type().at(&path)?.is_file() {
            continue;
        }
        std::fs::remove_file(&path).at(&path)?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// When the report named `name` was saved, if `name` is one `save` writes
/// (`nightly-YYYY-MM-DD-YYYYMMDDTHHMMSS.txt` or `.json`).
fn report_saved_at(name: &str) -> Option<chrono::NaiveDateTime> {
    let rest = name.strip_prefix("nightly-")?;
    let rest = rest
        .strip_suffix(".txt")
        .or_else(|| rest.strip_suffix(".json"))?;
    let (date, stamp) = rest.rsplit_once('-')?;
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S").ok()
}
