//! `reel prune`: forget the dumps a retention policy no longer keeps.
//!
//! Why it is built this way:
//! - The policy is restic's `forget` policy (keep-last, -daily, -weekly, -monthly, -within),
//!   applied per volume, because admins already know how to read it. A dump is kept if any
//!   rule keeps it. Buckets (days, ISO weeks, months) are local calendar ones (`TZ`), like
//!   every time reel shows.
//! - Two rules sit above the policy, because breaking them would lose data or make the next
//!   dump wrong: each volume's latest dump is always kept (it is the base and the stat-data
//!   cache of tomorrow's dump, and the next dump's base is always in its chain), and every
//!   dump in the chain of a kept dump is kept (a restore needs the whole chain). A merged dump
//!   (a synthetic level 0) has an empty chain, so it keeps nothing below it.
//! - `plan` is pure (records in, decision out) so the policy is unit-tested on synthetic
//!   records; `prune` only reads the catalog around it and applies it.
//! - `forget_dumps` (`reel forget ID...`) removes named dumps the same way, the latest one
//!   included: the way out of a dump dated far ahead of the clock, which every later dump of
//!   its volume would have to follow. The chain rule holds there too: a dump another dump is
//!   based on goes only together with that dependant.
//! - Removal touches the catalog only: DUMPS, VOLUME_DUMPS and OWNED rows go, in one
//!   transaction. Chunks and packs stay until `reel gc`, and the media catalog is never
//!   touched (what is on tape stays restorable by `reel import`). Before that transaction
//!   commits, a `ForgetRecord` blob naming the removed dumps is made durable in a new pack, in
//!   the same transaction that indexes it: a catalog rebuilt from the packs (which still hold
//!   the removed dumps' `DumpRecord` blobs until gc) then knows not to bring them back. A crash
//!   before the commit leaves an unreferenced pack (`check` lists it) and every dump in place.
//! - What `reel gc` will free is announced from gc's own plan (`gc::plan_after_forgetting`:
//!   the mark without the removed dumps, then the per-pack delete-or-rewrite decision at gc's
//!   default `--max-unused`), not from the removed dumps' owned bytes: a removed level 0 owns
//!   every chunk it references, most of which the kept dumps still need. The plan reads what
//!   `reel gc --dry-run` reads, so above `PLAN_LIMITS` (a spool whose kept manifests or packs
//!   are that large) prune reports the owned bytes instead, and says that it did.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use chrono::{Datelike, NaiveDate};

use crate::catalog::DumpRecord;
use crate::error::Damaged;
use crate::gc::{self, GcOptions, PlanCost};
use crate::pack::BlobKind;
use crate::progress::NoProgress;
use crate::record::ForgetRecord;
use crate::spool::Spool;
use crate::store::StoreWriter;
use crate::tape::media;
use crate::timefmt;
use crate::{ChunkId, Error, Result};

const NS_PER_HOUR: i64 = 3_600_000_000_000;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// The options a policy is made of, for messages.
pub const POLICY_OPTIONS: &str =
    "--keep-last N, --keep-daily N, --keep-weekly N, --keep-monthly N or --keep-within DURATION";

/// What to keep of each volume's dumps. A dump is kept if any rule keeps it; each volume's
/// latest dump and the chains of kept dumps are kept whatever the policy says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The N most recent dumps.
    pub keep_last: Option<u32>,
    /// The latest dump of each of the N most recent local days that have dumps.
    pub keep_daily: Option<u32>,
    /// Likewise per ISO week (local time).
    pub keep_weekly: Option<u32>,
    /// Likewise per calendar month (local time).
    pub keep_monthly: Option<u32>,
    /// Every dump within this many nanoseconds of the volume's latest dump (inclusive).
    pub keep_within: Option<i64>,
}

impl Policy {
    /// No rule at all: pruning with it would keep only the latest dumps, which is never what
    /// an admin who forgot a flag meant, so `prune` refuses it.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_within.is_none()
    }

    /// Refuse an empty policy and zero counts (a usage error naming the options).
    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::usage(format!(
                "prune needs a retention policy: give at least one of {POLICY_OPTIONS} \
                 (each volume's latest dump and the chains of kept dumps are always kept)"
            )));
        }
        for (name, v) in [
            ("--keep-last", self.keep_last),
            ("--keep-daily", self.keep_daily),
            ("--keep-weekly", self.keep_weekly),
            ("--keep-monthly", self.keep_monthly),
        ] {
            if v == Some(0) {
                return Err(Error::usage(format!(
                    "{name} 0 keeps nothing; give 1 or more (the latest dump is always kept)"
                )));
            }
        }
        if self.keep_within.is_some_and(|d| d <= 0) {
            return Err(Error::usage("--keep-within must be longer than zero"));
        }
        Ok(())
    }
}

/// Parse a `--keep-within` duration: one or more number+unit pairs, units `h` (hour), `d`
/// (day), `w` (week), `m` (month = 30 days), `y` (year = 365 days): `7d`, `12h`, `1y6m`.
/// Returns nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let bad = || {
        Error::usage(format!(
            "bad duration {s:?}: use numbers with h, d, w, m (30 days) or y (365 days), e.g. 7d, 12h, 1y6m"
        ))
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => NS_PER_HOUR,
            'd' => NS_PER_DAY,
            'w' => 7 * NS_PER_DAY,
            'm' => 30 * NS_PER_DAY,
            'y' => 365 * NS_PER_DAY,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// A duration as days and hours (`30d`, `1d12h`, `6h`), for reasons.
pub fn format_span(ns: i64) -> String {
    let days = ns / NS_PER_DAY;
    let hours = (ns % NS_PER_DAY) / NS_PER_HOUR;
    match (days, hours) {
        (0, h) => format!("{h}h"),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d{h}h"),
    }
}

/// Why a dump is kept. Ordered as shown: policy rules first, then chains.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The volume's latest dump (always kept).
    Latest,
    /// The N-th most recent dump (1 = the latest), under keep-last.
    Last(u32),
    /// The latest dump of that local day.
    Daily(NaiveDate),
    /// The latest dump of that ISO week.
    Weekly { year: i32, week: u32 },
    /// The latest dump of that month.
    Monthly { year: i32, month: u32 },
    /// Within this span of the latest dump.
    Within(i64),
    /// In the chain of that kept dump (a restore of it needs this one).
    Chain(u64),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Latest => write!(f, "latest dump of the volume"),
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Daily(d) => write!(f, "daily {d}"),
            Reason::Weekly { year, week } => write!(f, "weekly {year}-W{week:02}"),
            Reason::Monthly { year, month } => write!(f, "monthly {year}-{month:02}"),
            Reason::Within(ns) => write!(f, "within {} of the latest", format_span(*ns)),
            Reason::Chain(id) => write!(f, "chain of dump {id}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Kept {
    pub dump: DumpRecord,
    /// Never empty; sorted (`Reason`'s order).
    pub reasons: Vec<Reason>,
}

/// One volume's decision; both lists in time order (oldest first).
#[derive(Clone, Debug)]
pub struct VolumePlan {
    pub volume: String,
    pub kept: Vec<Kept>,
    pub removed: Vec<DumpRecord>,
}

#[derive(Clone, Debug, Default)]
pub struct PrunePlan {
    /// By volume name.
    pub volumes: Vec<VolumePlan>,
}

/// Decide what `policy` keeps of `dumps` (any volumes, any order). Pure: time buckets use
/// the local time zone through `crate::timefmt`.
pub fn plan(dumps: &[DumpRecord], policy: &Policy) -> PrunePlan {
    let mut by_volume: BTreeMap<&str, Vec<&DumpRecord>> = BTreeMap::new();
    for d in dumps {
        by_volume.entry(d.volume.as_str()).or_default().push(d);
    }
    PrunePlan {
        volumes: by_volume
            .into_iter()
            .map(|(v, ds)| plan_volume(v, ds, policy))
            .collect(),
    }
}

/// Keep the newest dump of each of the first `n` distinct buckets, newest first.
fn keep_buckets<B: Eq + Hash>(
    newest_first: &[&DumpRecord],
    n: Option<u32>,
    bucket: impl Fn(i64) -> B,
    reason: impl Fn(&B) -> Reason,
    reasons: &mut HashMap<u64, Vec<Reason>>,
) {
    let Some(n) = n else { return };
    let mut seen: HashSet<B> = HashSet::new();
    for d in newest_first {
        if seen.len() >= n as usize {
            break;
        }
        let b = bucket(d.time_ns);
        if !seen.contains(&b) {
            reasons.entry(d.id).or_default().push(reason(&b));
            seen.insert(b);
        }
    }
}

fn plan_volume(volume: &str, mut dumps: Vec<&DumpRecord>, policy: &Policy) -> VolumePlan {
    dumps.sort_by_key(|d| (d.time_ns, d.id));
    dumps.dedup_by_key(|d| d.id);
    let newest_first: Vec<&DumpRecord> = dumps.iter().rev().copied().collect();
    let mut reasons: HashMap<u64, Vec<Reason>> = HashMap::new();
    let Some(latest) = newest_first.first() else {
        return VolumePlan {
            volume: volume.to_string(),
            kept: Vec::new(),
            removed: Vec::new(),
        };
    };
    reasons.entry(latest.id).or_default().push(Reason::Latest);
    if let Some(n) = policy.keep_last {
        for (i, d) in newest_first.iter().take(n as usize).enumerate() {
            reasons
                .entry(d.id)
                .or_default()
                .push(Reason::Last(i as u32 + 1));
        }
    }
    keep_buckets(
        &newest_first,
        policy.keep_daily,
        timefmt::local_date,
        |d| Reason::Daily(*d),
        &mut reasons,
    );
    keep_buckets(
        &newest_first,
        policy.keep_weekly,
        |t| {
            let w = timefmt::local_date(t).iso_week();
            (w.year(), w.week())
        },
        |&(year, week)| Reason::Weekly { year, week },
        &mut reasons,
    );
    keep_buckets(
        &newest_first,
        policy.keep_monthly,
        |t| {
            let d = timefmt::local_date(t);
            (d.year(), d.month())
        },
        |&(year, month)| Reason::Monthly { year, month },
        &mut reasons,
    );
    if let Some(span) = policy.keep_within {
        for d in &newest_first {
            if latest.time_ns.saturating_sub(d.time_ns) <= span {
                reasons.entry(d.id).or_default().push(Reason::Within(span));
            }
        }
    }
    // Chain closure. `chain` lists every ancestor, so one step suffices for well-formed
    // records; the work list also covers an ancestor whose own chain names more.
    let by_id: HashMap<u64, &DumpRecord> = dumps.iter().map(|d| (d.id, *d)).collect();
    let mut work: Vec<u64> = reasons.keys().copied().collect();
    work.sort_unstable();
    while let Some(k) = work.pop() {
        let Some(kd) = by_id.get(&k) else { continue };
        for a in &kd.chain {
            if !by_id.contains_key(a) {
                continue; // not in the catalog (any more): nothing to keep
            }
            let newly = !reasons.contains_key(a);
            let r = reasons.entry(*a).or_default();
            if !r.contains(&Reason::Chain(k)) {
                r.push(Reason::Chain(k));
            }
            if newly {
                work.push(*a);
            }
        }
    }
    let mut out = VolumePlan {
        volume: volume.to_string(),
        kept: Vec::new(),
        removed: Vec::new(),
    };
    for d in dumps {
        match reasons.remove(&d.id) {
            Some(mut r) => {
                r.sort();
                r.dedup();
                out.kept.push(Kept {
                    dump: d.clone(),
                    reasons: r,
                });
            }
            None => out.removed.push(d.clone()),
        }
    }
    out
}

/// A dump `prune` removed (or would remove).
#[derive(Clone, Debug)]
pub struct RemovedDump {
    pub dump: DumpRecord,
    /// Stored bytes of the chunks it owned (what its tape carries; gc frees those that no
    /// kept dump or clone references).
    pub owned_bytes: u64,
    /// When the dump is on tape: the tapes a restore of it needs (its chain's chunks), in
    /// the order to read them, as the media catalog saw them before the removal.
    pub on_tapes: Vec<String>,
    /// Every dump of its chain is on some tape: `reel import` of `on_tapes` brings it back.
    pub restorable_from_tapes: bool,
}

#[derive(Clone, Debug)]
pub struct VolumeReport {
    pub volume: String,
    pub kept: Vec<Kept>,
    pub removed: Vec<RemovedDump>,
}

/// The most `prune` and `forget` read to plan what gc will free: the bytes of the manifests
/// the mark reads (4 GiB, some 70 million entries) and of the packs whose chunk index rows it
/// scans (1 TiB, some 90 million chunks). Planning costs what `reel gc --dry-run` costs;
/// above either limit the removed dumps' owned bytes are reported instead.
pub const PLAN_LIMITS: PlanCost = PlanCost {
    manifest_bytes: 4 << 30,
    pack_bytes: 1 << 40,
};

/// What `reel gc` will free once the removed dumps are out of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcFrees {
    /// No dump removed: not planned.
    NothingRemoved,
    /// gc's own plan at its default `--max-unused`: the bytes a `reel gc` run right after
    /// frees if no reader is in (its dry run's `bytes_freed`), space that earlier prunes left
    /// and packs waiting for readers included. A partly live frame that gc rebuilds
    /// recompresses to a slightly different size, so this is within a few percent.
    Planned(u64),
    /// Not planned because the spool is larger than `PLAN_LIMITS`: the removed dumps' owned
    /// bytes (stored bytes of the chunks they own), which counts chunks kept dumps of other
    /// chains still reference; `reel gc --dry-run` gives the plan.
    OwnedBytes(u64),
}

impl GcFrees {
    pub fn bytes(&self) -> u64 {
        match self {
            GcFrees::NothingRemoved => 0,
            GcFrees::Planned(b) | GcFrees::OwnedBytes(b) => *b,
        }
    }

    /// How the figure was found, as `--json` names it (docs/RETENTION.md).
    pub fn basis(&self) -> &'static str {
        match self {
            GcFrees::NothingRemoved => "nothing removed",
            GcFrees::Planned(_) => "gc plan",
            GcFrees::OwnedBytes(_) => "owned bytes",
        }
    }
}

/// Plan what gc will free once `removed` are forgotten, unless that reads more than `limits`
/// (then the owned bytes `owned`).
fn gc_frees(
    spool: &Spool,
    removed: &HashSet<u64>,
    owned: u64,
    limits: PlanCost,
) -> Result<GcFrees> {
    if removed.is_empty() {
        return Ok(GcFrees::NothingRemoved);
    }
    let cost = gc::plan_cost(spool, removed)?;
    if cost.manifest_bytes > limits.manifest_bytes || cost.pack_bytes > limits.pack_bytes {
        return Ok(GcFrees::OwnedBytes(owned));
    }
    let plan = gc::plan_after_forgetting(
        spool,
        removed,
        GcOptions::default().max_unused_percent,
        &NoProgress,
    )?;
    Ok(GcFrees::Planned(plan.bytes_freed.max(0) as u64))
}

#[derive(Clone, Debug)]
pub struct PruneReport {
    pub volumes: Vec<VolumeReport>,
    /// Sum of the removed dumps' owned bytes (what their tapes carry; not what gc frees:
    /// kept dumps of other chains may reference the same chunks).
    pub removed_owned_bytes: u64,
    /// What `reel gc` will free once the removed dumps are gone.
    pub gc_frees: GcFrees,
    pub dry_run: bool,
    /// The id of the `ForgetRecord` blob written (None for a dry run or nothing removed).
    pub forget: Option<ChunkId>,
}

impl PruneReport {
    pub fn removed_count(&self) -> usize {
        self.volumes.iter().map(|v| v.removed.len()).sum()
    }
}

/// Apply `policy` to `volumes` (every volume with dumps when empty). The spool must be open
/// for writing unless `dry_run`. An unknown volume is a usage error naming it.
pub fn prune(
    spool: &Spool,
    volumes: &[String],
    policy: &Policy,
    dry_run: bool,
) -> Result<PruneReport> {
    policy.validate()?;
    let mut names: Vec<String> = volumes.to_vec();
    names.sort();
    names.dedup();
    let dumps = if names.is_empty() {
        spool.catalog.dumps(None)?
    } else {
        let mut all = Vec::new();
        for v in &names {
            spool.known_volume(v)?;
            all.extend(spool.catalog.dumps(Some(v))?);
        }
        all
    };
    let mut p = plan(&dumps, policy);
    // A named volume with no dumps still gets its (empty) line in the report.
    for v in &names {
        if !p.volumes.iter().any(|vp| &vp.volume == v) {
            p.volumes.push(VolumePlan {
                volume: v.clone(),
                kept: Vec::new(),
                removed: Vec::new(),
            });
        }
    }
    p.volumes.sort_by(|a, b| a.volume.cmp(&b.volume));
    check_closed(&p)?;

    // Where each removed dump can still come from: computed before anything is removed.
    let on_tape = dumps_on_tape(spool)?;
    let mut report = PruneReport {
        volumes: Vec::new(),
        removed_owned_bytes: 0,
        gc_frees: GcFrees::NothingRemoved,
        dry_run,
        forget: None,
    };
    for vp in p.volumes {
        let mut removed = Vec::new();
        for d in vp.removed {
            let r = removed_dump(spool, &on_tape, d)?;
            report.removed_owned_bytes += r.owned_bytes;
            removed.push(r);
        }
        report.volumes.push(VolumeReport {
            volume: vp.volume,
            kept: vp.kept,
            removed,
        });
    }
    let ids: HashSet<u64> = report
        .volumes
        .iter()
        .flat_map(|v| v.removed.iter().map(|r| r.dump.id))
        .collect();
    report.gc_frees = gc_frees(spool, &ids, report.removed_owned_bytes, PLAN_LIMITS)?;
    if dry_run || report.removed_count() == 0 {
        return Ok(report);
    }
    let removed: Vec<&DumpRecord> = report
        .volumes
        .iter()
        .flat_map(|v| v.removed.iter().map(|r| &r.dump))
        .collect();
    report.forget = Some(forget(spool, &removed)?);
    Ok(report)
}

/// The dumps of the media catalog's tapes.
fn dumps_on_tape(spool: &Spool) -> Result<HashSet<u64>> {
    Ok(media::tapes(spool)?
        .iter()
        .flat_map(|t| t.dumps.iter().map(|(d, _)| *d))
        .collect())
}

/// What removing `d` costs and where it can still come from (`on_tape`: the dumps on tape).
fn removed_dump(spool: &Spool, on_tape: &HashSet<u64>, d: DumpRecord) -> Result<RemovedDump> {
    let (_, owned_bytes) = spool.catalog.owned_summary(d.id)?;
    let on_tapes = if on_tape.contains(&d.id) {
        media::tapes_needed(spool, &d)?
    } else {
        Vec::new()
    };
    let restorable_from_tapes = d.full_chain().iter().all(|id| on_tape.contains(id));
    Ok(RemovedDump {
        dump: d,
        owned_bytes,
        on_tapes,
        restorable_from_tapes,
    })
}

/// What `forget_dumps` removed (or, for a dry run, would remove).
#[derive(Clone, Debug)]
pub struct ForgetReport {
    /// In time order (oldest first), across volumes.
    pub removed: Vec<RemovedDump>,
    /// Sum of the removed dumps' owned bytes (as in `PruneReport`).
    pub removed_owned_bytes: u64,
    /// What `reel gc` will free once the removed dumps are gone.
    pub gc_frees: GcFrees,
    /// Per volume that lost its latest dump: the volume and its latest dump after the removal
    /// (None: no dump left, its next dump is a level 0).
    pub new_latest: Vec<(String, Option<DumpRecord>)>,
    pub dry_run: bool,
    /// The id of the `ForgetRecord` blob written (None for a dry run).
    pub forget: Option<ChunkId>,
}

/// Forget the dumps `ids` names, whatever a retention policy would say: also a volume's
/// latest dump (a dump dated far ahead of the clock, say, which blocks every later dump).
/// Like `prune`, never a dump that a dump not forgotten needs (its chain): those dependants
/// must be named in the same call. Unknown ids and such dependants are usage errors, and
/// nothing is removed. The spool must be open for writing unless `dry_run`.
pub fn forget_dumps(spool: &Spool, ids: &[u64], dry_run: bool) -> Result<ForgetReport> {
    let mut ids: Vec<u64> = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::usage(
            "forget needs the ids of the dumps to forget; `reel list` shows them",
        ));
    }
    let all = spool.catalog.dumps(None)?;
    let by_id: HashMap<u64, &DumpRecord> = all.iter().map(|d| (d.id, d)).collect();
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !by_id.contains_key(id))
        .map(u64::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(Error::usage(format!(
            "no dump {} in this spool; `reel list` shows the dumps; nothing was forgotten",
            unknown.join(", ")
        )));
    }
    let gone: HashSet<u64> = ids.iter().copied().collect();
    // The chain rule: a dump that stays must find its whole chain.
    let mut needs: Vec<String> = Vec::new();
    let mut also: BTreeSet<u64> = BTreeSet::new();
    for d in all.iter().filter(|d| !gone.contains(&d.id)) {
        let lost: Vec<String> = d
            .chain
            .iter()
            .filter(|a| gone.contains(a))
            .map(u64::to_string)
            .collect();
        if !lost.is_empty() {
            needs.push(format!(
                "dump {} of volume {} ({}, level {}) is based on dump {}",
                d.id,
                d.volume,
                timefmt::format_rfc3339(d.time_ns),
                d.level,
                lost.join(" and ")
            ));
            also.insert(d.id);
        }
    }
    if !needs.is_empty() {
        let with: Vec<String> = gone
            .iter()
            .chain(&also)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(u64::to_string)
            .collect();
        return Err(Error::usage(format!(
            "{}; a restore of it needs its whole chain, so forget it in the same command (`reel forget {}`) or keep what it is based on; nothing was forgotten",
            needs.join("; "),
            with.join(" ")
        )));
    }

    let on_tape = dumps_on_tape(spool)?;
    let mut removed_records: Vec<DumpRecord> = ids.iter().map(|id| by_id[id].clone()).collect();
    removed_records.sort_by_key(|d| (d.time_ns, d.id));
    let mut report = ForgetReport {
        removed: Vec::new(),
        removed_owned_bytes: 0,
        gc_frees: GcFrees::NothingRemoved,
        new_latest: Vec::new(),
        dry_run,
        forget: None,
    };
    let volumes: BTreeSet<&str> = removed_records.iter().map(|d| d.volume.as_str()).collect();
    for v in volumes {
        let of_volume: Vec<&DumpRecord> = all.iter().filter(|d| d.volume == v).collect();
        let latest = of_volume
            .iter()
            .max_by_key(|d| (d.time_ns, d.id))
            .map(|d| d.id);
        if latest.is_some_and(|l| gone.contains(&l)) {
            let after = of_volume
                .iter()
                .filter(|d| !gone.contains(&d.id))
                .max_by_key(|d| (d.time_ns, d.id))
                .map(|d| (*d).clone());
            report.new_latest.push((v.to_string(), after));
        }
    }
    for d in removed_records {
        let r = removed_dump(spool, &on_tape, d)?;
        report.removed_owned_bytes += r.owned_bytes;
        report.removed.push(r);
    }
    report.gc_frees = gc_frees(spool, &gone, report.removed_owned_bytes, PLAN_LIMITS)?;
    if !dry_run {
        let removed: Vec<&DumpRecord> = report.removed.iter().map(|r| &r.dump).collect();
        report.forget = Some(forget(spool, &removed)?);
    }
    Ok(report)
}

/// The invariant the whole command rests on: no kept dump needs a removed one.
fn check_closed(p: &PrunePlan) -> Result<()> {
    for vp in &p.volumes {
        let removed: HashSet<u64> = vp.removed.iter().map(|d| d.id).collect();
        for k in &vp.kept {
            if let Some(a) = k.dump.chain.iter().find(|a| removed.contains(a)) {
                return Err(Error::damaged(
                    Damaged::Dump(*a),
                    format!(
                        "prune would remove dump {a}, which kept dump {} of volume {} needs; nothing was removed (this is a bug in reel)",
                        k.dump.id, vp.volume
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Write the `ForgetRecord` and remove the dumps' rows, in one transaction.
fn forget(spool: &Spool, removed: &[&DumpRecord]) -> Result<ChunkId> {
    let rec = ForgetRecord {
        version: 1,
        time_ns: timefmt::now_ns(),
        dumps: removed
            .iter()
            .map(|d| (d.id, d.volume.clone(), d.time_ns))
            .collect(),
    };
    let blob = rec.encode();
    let id = spool.keys().chunk_id(&blob);
    let mut store = StoreWriter::new(spool)?;
    // The record names its own time, so its id is new; a repeat would already be durable.
    if store.missing(&[id])?[0] {
        store.put_one(id, &blob, BlobKind::Forget)?;
    }
    // `finish` seals the pack (written, fsynced, renamed, directory fsynced) before `last`.
    store.finish(|w, _| {
        crate::failpoint::hit("prune-forget-written");
        w.forget_dumps(removed.iter().copied())
    })?;
    crate::failpoint::hit("prune-committed");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::{DayEdge, parse_time};

    fn rec(id: u64, level: u8, time_ns: i64, chain: Vec<u64>) -> DumpRecord {
        DumpRecord::sample(id, level, time_ns, chain)
    }

    /// Local noon of a date plus `minutes` (noon keeps clear of DST changes).
    fn at(date: &str, minutes: i64) -> i64 {
        parse_time(&format!("{date}T12:00:00"), DayEdge::Start).unwrap() + minutes * 60_000_000_000
    }

    /// Dumps at the given levels, one per day from 2026-11-01, with chains as `dump` makes
    /// them (base = the latest dump with a lower level).
    fn history(levels: &[u8]) -> Vec<DumpRecord> {
        let day0 = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let mut out: Vec<DumpRecord> = Vec::new();
        for (i, &l) in levels.iter().enumerate() {
            let date = day0 + chrono::Days::new(i as u64);
            let base = crate::level::choose_base(&out, l);
            let (level, chain) = match base {
                Some(b) => (l, b.full_chain()),
                None => (0, vec![]),
            };
            out.push(rec(i as u64 + 1, level, at(&date.to_string(), 0), chain));
        }
        out
    }

    fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::default();
        f(&mut p);
        p
    }

    fn ids(v: &VolumePlan) -> (Vec<u64>, Vec<u64>) {
        (
            v.kept.iter().map(|k| k.dump.id).collect(),
            v.removed.iter().map(|d| d.id).collect(),
        )
    }

    fn reasons(v: &VolumePlan, id: u64) -> Vec<String> {
        v.kept
            .iter()
            .find(|k| k.dump.id == id)
            .unwrap()
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_chains_of_levels_0121321() {
        let h = history(&[0, 1, 2, 1, 3, 2, 1]);
        // Chains: 2:[1] 3:[1,2] 4:[1] 5:[1,4] 6:[1,4] 7:[1].
        assert_eq!(h[5].chain, vec![1, 4]);
        let p = plan(&h, &policy(|p| p.keep_last = Some(3)));
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![1, 4, 5, 6, 7], vec![2, 3]));
        assert_eq!(reasons(v, 7), ["latest dump of the volume", "last 1"]);
        assert_eq!(reasons(v, 5), ["last 3"]);
        assert_eq!(
            reasons(v, 1),
            [
                "chain of dump 4",
                "chain of dump 5",
                "chain of dump 6",
                "chain of dump 7"
            ]
        );
        assert_eq!(reasons(v, 4), ["chain of dump 5", "chain of dump 6"]);

        let p = plan(&h, &policy(|p| p.keep_last = Some(1)));
        assert_eq!(ids(&p.volumes[0]), (vec![1, 7], vec![2, 3, 4, 5, 6]));
        // Keeping a level 3 keeps its level 1 and level 0, never the level 2 between.
        let p = plan(&h[..5], &policy(|p| p.keep_last = Some(1)));
        assert_eq!(ids(&p.volumes[0]), (vec![1, 4, 5], vec![2, 3]));
    }

    #[test]
    fn daily_keeps_the_latest_dump_of_each_recent_day() {
        let h = vec![
            rec(1, 0, at("2026-11-01", 0), vec![]),
            rec(2, 0, at("2026-11-02", 0), vec![]),
            rec(3, 0, at("2026-11-02", 60), vec![]),
            rec(4, 0, at("2026-11-03", 0), vec![]),
            rec(5, 0, at("2026-11-03", 30), vec![]),
            rec(6, 0, at("2026-11-03", 90), vec![]),
        ];
        let p = plan(&h, &policy(|p| p.keep_daily = Some(2)));
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![3, 6], vec![1, 2, 4, 5]));
        assert_eq!(reasons(v, 3), ["daily 2026-11-02"]);
        // Days without dumps do not count: 3 days with dumps cover everything.
        let p = plan(&h, &policy(|p| p.keep_daily = Some(5)));
        assert_eq!(ids(&p.volumes[0]), (vec![1, 3, 6], vec![2, 4, 5]));
    }

    #[test]
    fn weekly_and_monthly_use_iso_weeks_and_calendar_months() {
        // 2026-11-01 is a Sunday (ISO week 44); 11-02 Monday starts week 45; 11-30 is a
        // Monday (week 49); 12-01 starts December.
        let h = vec![
            rec(1, 0, at("2026-10-30", 0), vec![]), // W44, October
            rec(2, 0, at("2026-11-01", 0), vec![]), // W44, November
            rec(3, 0, at("2026-11-02", 0), vec![]), // W45
            rec(4, 0, at("2026-11-08", 0), vec![]), // W45
            rec(5, 0, at("2026-11-30", 0), vec![]), // W49, November
            rec(6, 0, at("2026-12-01", 0), vec![]), // W49, December
        ];
        let p = plan(&h, &policy(|p| p.keep_weekly = Some(3)));
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![2, 4, 6], vec![1, 3, 5]));
        assert_eq!(reasons(v, 4), ["weekly 2026-W45"]);
        let p = plan(&h, &policy(|p| p.keep_monthly = Some(2)));
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![5, 6], vec![1, 2, 3, 4]));
        assert_eq!(reasons(v, 5), ["monthly 2026-11"]);
        let p = plan(&h, &policy(|p| p.keep_monthly = Some(3)));
        assert_eq!(ids(&p.volumes[0]), (vec![1, 5, 6], vec![2, 3, 4]));
        // Rules add up: a dump is kept if any rule keeps it, with every reason.
        let p = plan(
            &h,
            &policy(|p| {
                p.keep_monthly = Some(2);
                p.keep_last = Some(2);
                p.keep_weekly = Some(1);
            }),
        );
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![5, 6], vec![1, 2, 3, 4]));
        assert_eq!(
            reasons(v, 6),
            [
                "latest dump of the volume",
                "last 1",
                "weekly 2026-W49",
                "monthly 2026-12"
            ]
        );
    }

    #[test]
    fn within_counts_from_the_latest_dump_inclusively() {
        let h = history(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let p = plan(
            &h,
            &policy(|p| p.keep_within = Some(parse_duration("3d").unwrap())),
        );
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![7, 8, 9, 10], vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(reasons(v, 7), ["within 3d of the latest"]);
    }

    #[test]
    fn the_latest_dump_is_always_kept_even_when_dated_before_a_newer_id() {
        // Dump 3 was made last but dated in the past: "latest" is by time, not by id.
        let h = vec![
            rec(1, 0, at("2026-11-01", 0), vec![]),
            rec(2, 1, at("2026-11-05", 0), vec![1]),
            rec(3, 0, at("2026-11-03", 0), vec![]),
        ];
        let p = plan(&h, &policy(|p| p.keep_within = Some(NS_PER_HOUR)));
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![1, 2], vec![3]));
        assert_eq!(
            reasons(v, 2),
            ["latest dump of the volume", "within 1h of the latest"]
        );
        assert_eq!(reasons(v, 1), ["chain of dump 2"]);
    }

    #[test]
    fn a_merged_dump_does_not_keep_its_source() {
        let mut merged = rec(3, 0, at("2026-11-02", 30), vec![]);
        merged.merged_from = Some(2);
        let h = vec![
            rec(1, 0, at("2026-11-01", 0), vec![]),
            rec(2, 1, at("2026-11-02", 0), vec![1]),
            merged,
            rec(4, 1, at("2026-11-03", 0), vec![3]),
        ];
        let p = plan(&h, &policy(|p| p.keep_last = Some(1)));
        let v = &p.volumes[0];
        assert_eq!(ids(v), (vec![3, 4], vec![1, 2]));
        assert_eq!(reasons(v, 3), ["chain of dump 4"]);
    }

    #[test]
    fn volumes_are_planned_separately() {
        let mut h = history(&[0, 1, 1]);
        let mut w = history(&[0, 1]);
        for d in &mut w {
            d.volume = "w".into();
            d.id += 100;
            d.chain.iter_mut().for_each(|c| *c += 100);
        }
        h.extend(w);
        let p = plan(&h, &policy(|p| p.keep_last = Some(1)));
        assert_eq!(p.volumes.len(), 2);
        assert_eq!(p.volumes[0].volume, "v");
        assert_eq!(ids(&p.volumes[0]), (vec![1, 3], vec![2]));
        assert_eq!(ids(&p.volumes[1]), (vec![101, 102], vec![]));
        assert!(
            plan(&[], &policy(|p| p.keep_last = Some(1)))
                .volumes
                .is_empty()
        );
    }

    /// Over many random level sequences and policies: no kept dump needs a removed one, the
    /// latest is kept, and a new dump's base (at any level) is among the kept dumps.
    #[test]
    fn random_histories_stay_closed_and_keep_tomorrows_base() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let len = 1 + next(40) as usize;
            let levels: Vec<u8> = (0..len).map(|_| next(6) as u8).collect();
            let h = history(&levels);
            let pol = Policy {
                keep_last: (next(2) == 0).then(|| 1 + next(4) as u32),
                keep_daily: (next(2) == 0).then(|| 1 + next(5) as u32),
                keep_weekly: (next(2) == 0).then(|| 1 + next(3) as u32),
                keep_monthly: (next(3) == 0).then(|| 1 + next(2) as u32),
                keep_within: (next(3) == 0).then(|| (1 + next(6) as i64) * NS_PER_DAY),
            };
            let p = plan(&h, &pol);
            let v = &p.volumes[0];
            assert!(check_closed(&p).is_ok(), "{levels:?} {pol:?}");
            assert_eq!(v.kept.len() + v.removed.len(), len);
            assert_eq!(v.kept.last().unwrap().dump.id, len as u64);
            let kept: Vec<DumpRecord> = v.kept.iter().map(|k| k.dump.clone()).collect();
            for l in 0..=9u8 {
                let before = crate::level::choose_base(&h, l).map(|d| d.id);
                let after = crate::level::choose_base(&kept, l).map(|d| d.id);
                assert_eq!(
                    before, after,
                    "base of a level {l} after {levels:?} {pol:?}"
                );
            }
        }
    }

    #[test]
    fn durations_parse_and_bad_ones_are_usage_errors() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * NS_PER_DAY);
        assert_eq!(parse_duration("12h").unwrap(), 12 * NS_PER_HOUR);
        assert_eq!(parse_duration("2w").unwrap(), 14 * NS_PER_DAY);
        assert_eq!(parse_duration("1m").unwrap(), 30 * NS_PER_DAY);
        assert_eq!(parse_duration("1y").unwrap(), 365 * NS_PER_DAY);
        assert_eq!(
            parse_duration("1y6m2d").unwrap(),
            (365 + 180 + 2) * NS_PER_DAY
        );
        for bad in ["", "7", "d", "7x", "-1d", "1.5d", "99999999999999y"] {
            assert!(
                matches!(parse_duration(bad), Err(Error::Usage(_))),
                "{bad:?}"
            );
        }
        assert_eq!(format_span(30 * NS_PER_DAY), "30d");
        assert_eq!(format_span(36 * NS_PER_HOUR), "1d12h");
        assert_eq!(format_span(6 * NS_PER_HOUR), "6h");
    }

    /// The byte example of docs/FORMAT.md ("ForgetRecord").
    #[test]
    fn forget_record_bytes_are_as_documented() {
        let r = ForgetRecord {
            version: 1,
            time_ns: 5,
            dumps: vec![(2, "v".into(), 3)],
        };
        assert_eq!(r.encode(), [0x01, 0x0a, 0x01, 0x02, 0x01, 0x76, 0x06]);
        assert_eq!(ForgetRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn an_empty_policy_or_a_zero_count_is_refused() {
        let e = Policy::default().validate().unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("--keep-last") && m.contains("--keep-within"))
        );
        assert!(policy(|p| p.keep_daily = Some(0)).validate().is_err());
        assert!(policy(|p| p.keep_within = Some(0)).validate().is_err());
        assert!(policy(|p| p.keep_monthly = Some(1)).validate().is_ok());
    }

    mod spool {
        use super::*;
        use crate::dump::{DumpOptions, dump_volume};
        use crate::progress::NoProgress;
        use crate::store::ChunkReader;

        fn dump(spool: &Spool, level: u8, t: i64) -> DumpRecord {
            let opts = DumpOptions {
                level,
                time_ns: Some(t),
                reread: false,
            };
            dump_volume(spool, "v", &opts, &NoProgress).unwrap().record
        }

        #[test]
        fn prune_removes_rows_writes_a_forget_record_and_dry_run_changes_nothing() {
            let tmp = tempfile::tempdir().unwrap();
            let vol = tmp.path().join("vol");
            std::fs::create_dir(&vol).unwrap();
            let mut spool = Spool::init(&tmp.path().join("spool")).unwrap();
            spool.add_volume("v", &vol).unwrap();
            for (i, l) in [0u8, 1, 2, 1].iter().enumerate() {
                std::fs::write(vol.join(format!("f{i}")), vec![i as u8 + 1; 70_000]).unwrap();
                dump(&spool, *l, at(&format!("2026-11-0{}", i + 1), 0));
            }
            let pol = policy(|p| p.keep_last = Some(1));
            assert!(matches!(
                prune(&spool, &["nope".into()], &pol, true),
                Err(Error::Usage(m)) if m.contains("nope")
            ));
            let before = spool.catalog.dumps(None).unwrap();
            let dry = prune(&spool, &[], &pol, true).unwrap();
            assert_eq!(spool.catalog.dumps(None).unwrap(), before);
            assert!(dry.forget.is_none());
            let removed: Vec<u64> = dry.volumes[0].removed.iter().map(|r| r.dump.id).collect();
            assert_eq!(removed, [2, 3]);
            let owned: u64 = [2, 3]
                .iter()
                .map(|d| spool.catalog.owned_summary(*d).unwrap().1)
                .sum();
            assert!(owned > 0);
            assert_eq!(dry.removed_owned_bytes, owned);
            assert!(
                dry.volumes[0]
                    .removed
                    .iter()
                    .all(|r| !r.restorable_from_tapes)
            );

            let done = prune(&spool, &["v".into()], &pol, false).unwrap();
            let left: Vec<u64> = spool
                .catalog
                .dumps(None)
                .unwrap()
                .iter()
                .map(|d| d.id)
                .collect();
            assert_eq!(left, [1, 4]);
            for d in [2, 3] {
                assert!(spool.catalog.dump(d).unwrap().is_none());
                assert_eq!(spool.catalog.owned_summary(d).unwrap(), (0, 0));
            }
            assert!(spool.catalog.owned_summary(1).unwrap().0 > 0);
            // The forget record is in the store, of kind Forget, and names the dumps.
            let id = done.forget.unwrap();
            let r = spool.catalog.reader().unwrap();
            assert_eq!(
                r.chunk_location(&id).unwrap().unwrap().kind,
                BlobKind::Forget
            );
            let reader = ChunkReader::new(&spool).unwrap();
            let f = ForgetRecord::decode(&reader.read(&id, &|| "forget".into()).unwrap()).unwrap();
            assert_eq!(
                f.dumps
                    .iter()
                    .map(|(d, v, _)| (*d, v.as_str()))
                    .collect::<Vec<_>>(),
                [(2, "v"), (3, "v")]
            );
            // Past the planning limits the owned bytes are reported, and said to be.
            let removed: HashSet<u64> = [2, 3].into();
            let small = PlanCost {
                manifest_bytes: 0,
                pack_bytes: u64::MAX,
            };
            assert_eq!(
                gc_frees(&spool, &removed, owned, small).unwrap(),
                GcFrees::OwnedBytes(owned)
            );
            assert!(matches!(
                gc_frees(&spool, &removed, owned, PLAN_LIMITS).unwrap(),
                GcFrees::Planned(_)
            ));
            // Nothing more to remove: no new pack, no new record.
            let again = prune(&spool, &[], &pol, false).unwrap();
            assert_eq!(again.removed_count(), 0);
            assert!(again.forget.is_none());
            // The next dump still works on top of what was kept.
            std::fs::write(vol.join("g"), b"new").unwrap();
            let d = dump(&spool, 2, at("2026-11-06", 0));
            assert_eq!(d.chain, vec![1, 4]);
        }
    }
}
