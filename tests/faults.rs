//! Fault injection: kill -9 at random moments and at every failpoint, a full disk, flipped
//! bytes in packs, tape images and the catalog, and commands racing on one spool. Every test
//! runs the real binary and judges it by the only promise that matters to an admin: a dump is
//! either listed and restores byte for byte (metadata included) to the tree of its day, or it is
//! not listed; reel never panics and never writes a wrong tree with exit status 0.
//!
//! Why it is built this way:
//! - The oracle is independent of reel: a `cp -a` copy of the volume for each (volume, day)
//!   that a command may commit (tests/common/faults.rs, `Truth`).
//! - Commands are rows of tables ([`KILL_SCENARIOS`], [`concurrent_commands`]): adding `prune`
//!   or `gc` to the kill loop is one `kill_test!` line plus its scenario row.
//! - Randomness comes from `REEL_FAULT_SEED` (fixed default) and the number of random kills
//!   from `REEL_FAULT_RUNS`, so CI is reproducible and tools/faults.sh can run for hours.
//! - Each kill loop runs in epochs of [`EPOCH`] attempts on a fresh lab, so the spool (and the
//!   cost of checking it) stays small however many runs are asked for.
//! - Each test prints a `FAULTS name key=value ...` line (kills, flips detected, ...):
//!   docs/RELIABILITY.md quotes these lines from a run of tools/faults.sh.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::faults::*;
use common::*;

/// Random kills per command when `REEL_FAULT_RUNS` is not set (CI).
const DEFAULT_KILL_RUNS: usize = 4;
/// Attempts on one lab before a fresh one is built.
const EPOCH: usize = 8;
/// Byte flips per target (pack, tape image, catalog) when `REEL_FAULT_FLIPS` is not set.
const DEFAULT_FLIPS: usize = 48;

fn flips() -> usize {
    match std::env::var("REEL_FAULT_FLIPS") {
        Ok(s) => s.trim().parse().expect("REEL_FAULT_FLIPS is a number"),
        Err(_) => DEFAULT_FLIPS,
    }
}

/// Day `n` (1-based) as a date: 28-day months from 2026-01-01, so any n < 336 is valid.
fn date(n: u32) -> String {
    let n = n - 1;
    format!(
        "{}-{:02}-{:02}",
        2026 + n / 336,
        1 + (n % 336) / 28,
        1 + n % 28
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// =============================================================================================
// The lab: a spool, a volume that changes day by day, and the truth for every day
// =============================================================================================

struct Lab {
    /// Holds everything below; removed when the lab is dropped.
    work: tempfile::TempDir,
    /// The spool the command under test runs on.
    spool: Spool,
    /// Volume `v`.
    vol: PathBuf,
    truth: Truth,
    /// The last day used.
    day: u32,
    rng: Rng,
    /// Import: the spool the tapes were exported from, and the tapes.
    source: Option<Spool>,
    images: Vec<PathBuf>,
    /// (volume, day) of the dumps listed at the last verification.
    known: BTreeSet<(String, String)>,
    /// Dump ids already restored and compared on this spool.
    restored: BTreeSet<u64>,
    /// Scenario-specific counters (reported with the kill counts).
    notes: std::collections::BTreeMap<&'static str, u64>,
    /// Size of the file each day adds, in MiB (a pack is sealed mid-dump above 32).
    day_mb: usize,
}

impl Lab {
    /// A lab with volume `v` (the rich tree plus 16 MB of incompressible files, so a dump
    /// lasts long enough to be killed in the middle) and an empty spool.
    fn new(seed: u64) -> Lab {
        let work = tempfile::tempdir().expect("tempdir");
        let vol = work.path().join("vol");
        rich_tree(&vol);
        let mut rng = Rng::new(seed);
        fs::create_dir_all(vol.join("big")).unwrap();
        for i in 0..4 {
            fs::write(vol.join(format!("big/base{i}.bin")), rng.bytes(4 << 20)).unwrap();
        }
        let spool = Spool::new();
        // `pack-committed` is then passed once a pack fills up mid-run.
        spool.checkpoint_every_pack();
        spool.add_volume("v", &vol);
        fs::create_dir_all(work.path().join("snaps")).unwrap();
        fs::create_dir_all(work.path().join("scratch")).unwrap();
        Lab {
            work,
            spool,
            vol,
            truth: Truth::default(),
            day: 0,
            rng,
            source: None,
            images: Vec::new(),
            known: BTreeSet::new(),
            restored: BTreeSet::new(),
            notes: Default::default(),
            day_mb: 3,
        }
    }

    fn scratch(&self) -> PathBuf {
        self.work.path().join("scratch")
    }

    /// Moves the volume to the next day (the rich tree's daily changes plus a new file of `day_mb` MiB;
    /// files of three days ago go) and records its truth. Returns the date.
    fn next_day(&mut self) -> String {
        self.day += 1;
        let day = self.day;
        if day > 1 {
            mutate_day(&self.vol, day);
            fs::write(
                self.vol.join(format!("big/day{day}.bin")),
                self.rng.bytes(self.day_mb << 20),
            )
            .unwrap();
            let _ = fs::remove_file(self.vol.join(format!("big/day{}.bin", day - 3)));
        }
        let d = date(day);
        self.truth
            .record("v", &d, &self.vol, &self.work.path().join("snaps"));
        d
    }

    /// The arguments of a dump of the next day at a random level (0-3).
    fn dump_args(&mut self) -> Vec<String> {
        let d = self.next_day();
        let level = if self.day == 1 { 0 } else { self.rng.below(4) };
        s(&["dump", "v", "--level", &level.to_string(), "--date", &d])
    }

    /// Dumps the next day, uninterrupted.
    fn commit_day(&mut self) {
        let args = self.dump_args();
        run_ok_timed(self.spool.cmd().args(&args), "dump");
    }

    fn note(&mut self, k: &'static str) {
        *self.notes.entry(k).or_default() += 1;
    }

    /// The invariants after any attempt: the spool opens, (with `check`) `check --read-data`
    /// passes, every listed dump has a truth and (if new, or `all`) restores exactly, no dump
    /// committed before is gone (unless `removes` allows it), and every tape the media catalog
    /// names lists only dumps the catalog has.
    fn verify(&mut self, what: &str, check: bool, all: bool, removes: bool) {
        run_ok_timed(self.spool.cmd().arg("list"), what);
        if check {
            assert_check_passes(&self.spool, what);
        }
        let now = listed(&self.spool);
        let keys: BTreeSet<(String, String)> = now
            .iter()
            .map(|d| (d.volume.clone(), d.day.clone()))
            .collect();
        assert_eq!(
            keys.len(),
            now.len(),
            "{what}: two dumps of one day: {now:?}"
        );
        if !removes {
            let lost: Vec<_> = self.known.difference(&keys).collect();
            assert!(
                lost.is_empty(),
                "{what}: committed dumps vanished: {lost:?}"
            );
        }
        let scratch = self.scratch();
        for d in &now {
            if all || !self.restored.contains(&d.id) {
                self.truth.assert_restores(&self.spool, d, &scratch, what);
                self.restored.insert(d.id);
            }
        }
        let ids: BTreeSet<u64> = now.iter().map(|d| d.id).collect();
        for (label, dumps) in tapes(&self.spool) {
            for id in dumps {
                assert!(
                    ids.contains(&id),
                    "{what}: tape {label} names dump {id}, which the catalog does not list"
                );
            }
        }
        self.known = keys;
    }
}

/// `reel tapes --json`: (label, dump ids) per tape.
fn tapes(s: &dyn SpoolLike) -> Vec<(String, Vec<u64>)> {
    let r = run_ok_timed(s.command().args(["tapes", "--json"]), "reel tapes --json");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("tapes --json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| {
            (
                t["label"].as_str().expect("label").to_string(),
                t["dumps"]
                    .as_array()
                    .expect("dumps")
                    .iter()
                    .map(|d| d["id"].as_u64().expect("id"))
                    .collect(),
            )
        })
        .collect()
}

// =============================================================================================
// 1. kill -9 loops
// =============================================================================================

/// One command under kill -9. Add a command by adding a row to [`KILL_SCENARIOS`] and a
/// `kill_test!` line.
struct KillScenario {
    name: &'static str,
    /// `REEL_FAILPOINT` values tried once each before the random kills (a point the command
    /// never passes is counted as not reached, not as a failure).
    failpoints: &'static [&'static str],
    /// True for commands that may take dumps out of the catalog (prune): then a dump listed
    /// before may be gone after; it still may never be listed and wrong.
    removes_dumps: bool,
    /// Builds a lab with the history the command works on.
    setup: fn(u64) -> Lab,
    /// Readies attempt `n` (changes volumes, records truth) and returns the arguments.
    prepare: fn(&mut Lab, usize) -> Vec<String>,
    /// The next uninterrupted run after a kill (given the killed run's arguments).
    rerun: fn(&mut Lab, &[String]) -> Vec<String>,
    /// Command-specific checks after any run (killed or complete) with these arguments.
    after: fn(&mut Lab, &[String], &Ran),
}

const FAILPOINTS: &[&str] = &[
    "chunk-appended:3",
    "pack-renamed:1",
    "pack-committed:1",
    "before-record-commit:1",
    "record-committed:1",
];

const KILL_SCENARIOS: &[KillScenario] = &[
    KillScenario {
        name: "dump",
        failpoints: FAILPOINTS,
        removes_dumps: false,
        setup: dump_setup,
        prepare: |lab, _| lab.dump_args(),
        rerun: |lab, _| lab.dump_args(),
        after: |_, _, _| {},
    },
    KillScenario {
        name: "export",
        // Between the complete image and its record in the media catalog.
        failpoints: &["export-image-written"],
        removes_dumps: false,
        setup: dump_setup,
        prepare: export_prepare,
        rerun: export_rerun,
        after: export_after,
    },
    KillScenario {
        name: "import",
        failpoints: FAILPOINTS,
        removes_dumps: false,
        setup: import_setup,
        prepare: import_prepare,
        rerun: |_, args| args.to_vec(),
        after: |_, _, _| {},
    },
    KillScenario {
        name: "prune",
        failpoints: &["prune-forget-written", "prune-committed"],
        removes_dumps: true,
        setup: dump_setup,
        prepare: |lab, _| {
            lab.commit_day();
            lab.commit_day();
            s(&["prune", "--keep-last", "2"])
        },
        rerun: |_, args| args.to_vec(),
        after: |_, _, _| {},
    },
    KillScenario {
        name: "gc",
        failpoints: &["gc-packs-written", "gc-committed", "gc-deleting"],
        // The garbage comes from an uninterrupted prune before each gc.
        removes_dumps: true,
        setup: dump_setup,
        prepare: |lab, _| {
            lab.commit_day();
            lab.commit_day();
            run_ok_timed(
                lab.spool.cmd().args(["prune", "--keep-last", "1"]),
                "prune before gc",
            );
            s(&["gc", "--max-unused", "0"])
        },
        rerun: |_, args| args.to_vec(),
        after: |_, _, _| {},
    },
];

macro_rules! kill_test {
    ($test:ident, $name:literal) => {
        #[test]
        fn $test() {
            kill_loop(
                KILL_SCENARIOS
                    .iter()
                    .find(|s| s.name == $name)
                    .expect("scenario"),
            );
        }
    };
}

kill_test!(kill_dump, "dump");
kill_test!(kill_export, "export");
kill_test!(kill_import, "import");
kill_test!(kill_prune, "prune");
kill_test!(kill_gc, "gc");

/// A lab whose spool holds the level 0 of day 1.
fn dump_setup(seed: u64) -> Lab {
    let mut lab = Lab::new(seed);
    lab.commit_day();
    lab
}

/// Export: a new dump (uninterrupted), then an export of everything not on tape to a new image.
fn export_prepare(lab: &mut Lab, n: usize) -> Vec<String> {
    lab.commit_day();
    let img = lab.work.path().join(format!("tape-{n}.img"));
    vec![
        "export".into(),
        "--to".into(),
        img.to_string_lossy().into_owned(),
        "--label".into(),
        format!("fault-{n}"),
    ]
}

/// The same export again; if the killed one had finished (its label is taken), a new one.
fn export_rerun(lab: &mut Lab, args: &[String]) -> Vec<String> {
    if tapes(&lab.spool).iter().any(|(l, _)| *l == args[4]) {
        lab.commit_day();
        let mut a = args.to_vec();
        a[2].push_str(".again");
        a[4].push_str("-again");
        a
    } else {
        args.to_vec()
    }
}

/// After an export: the tape is in the media catalog only if its image is complete; a partial
/// image is refused by `verify-tape` (naming the image) and by `import` (importing nothing).
fn export_after(lab: &mut Lab, args: &[String], ran: &Ran) {
    let img = PathBuf::from(&args[2]);
    let label = &args[4];
    let recorded = tapes(&lab.spool).iter().any(|(l, _)| l == label);
    if ran.code() == Some(0) {
        assert!(
            recorded,
            "export succeeded but tape {label} is not recorded"
        );
    }
    if !img.exists() {
        assert!(!recorded, "tape {label} is recorded but its image is gone");
        lab.note("no_image");
        return;
    }
    let v = run_until(lab.spool.cmd().arg("verify-tape").arg(&img), None, DEADLINE);
    v.assert_no_panic("verify-tape");
    match v.code() {
        Some(0) => {
            if !recorded {
                // Killed between the image's last byte and the catalog commit: a good tape
                // the catalog does not know; the next export writes those dumps again.
                lab.note("complete_unrecorded");
            }
        }
        Some(1) => {
            assert!(
                !recorded,
                "tape {label} is recorded but its image does not verify\n{}",
                v.describe()
            );
            let name = img.to_string_lossy();
            assert!(
                v.stderr.contains(name.as_ref()),
                "verify-tape refuses a partial image without naming it\n{}",
                v.describe()
            );
            lab.note("partial_refused");
            // Import refuses it too and changes nothing.
            let other = Spool::new();
            let r = run_until(other.cmd().arg("import").arg(&img), None, DEADLINE);
            r.assert_no_panic("import of a partial image");
            assert_eq!(
                r.code(),
                Some(1),
                "import of a partial image\n{}",
                r.describe()
            );
            assert!(listed(&other).is_empty(), "a partial image imported dumps");
        }
        _ => panic!("verify-tape\n{}", v.describe()),
    }
}

/// Import: a source spool with three days, each exported to its own tape; the spool under
/// test starts empty at each attempt.
fn import_setup(seed: u64) -> Lab {
    let mut lab = Lab::new(seed);
    for t in 1..=3 {
        lab.commit_day();
        let img = lab.work.path().join(format!("src-{t}.img"));
        run_ok_timed(
            lab.spool
                .cmd()
                .args(["export", "--label", &format!("src-{t}"), "--to"])
                .arg(&img),
            "export for import",
        );
        lab.images.push(img);
    }
    lab.source = Some(std::mem::replace(&mut lab.spool, Spool::new()));
    lab
}

fn import_prepare(lab: &mut Lab, _: usize) -> Vec<String> {
    lab.spool = Spool::new();
    lab.known.clear();
    lab.restored.clear();
    let mut a = vec!["import".to_string()];
    a.extend(lab.images.iter().map(|p| p.to_string_lossy().into_owned()));
    a
}

/// Runs one scenario: per epoch a fresh lab, a calibrating uninterrupted run, (first epoch)
/// one kill at each failpoint, then kills at random moments within an uninterrupted run's
/// duration; after each: the invariants, then an uninterrupted run that must succeed.
fn kill_loop(sc: &KillScenario) {
    let total = runs(DEFAULT_KILL_RUNS);
    let mut rng = rng_for(&format!("kill-{}", sc.name));
    let (mut kills, mut finished, mut fp_hit, mut fp_missed, mut reruns) = (0u64, 0, 0, 0, 0);
    let mut notes: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut done = 0;
    let mut first = true;
    while first || done < total {
        let mut lab = (sc.setup)(rng.next_u64());
        let removes = sc.removes_dumps;
        // Calibrate: how long an uninterrupted run of this command takes here. Twice: the
        // first run on a new lab may do more (a first export writes every dump).
        let mut duration = Duration::ZERO;
        for i in 0..2 {
            let args = (sc.prepare)(&mut lab, 1000 + i);
            let ran = run_ok_timed(lab.spool.cmd().args(&args), sc.name);
            (sc.after)(&mut lab, &args, &ran);
            lab.verify("calibration", false, false, removes);
            duration = ran.elapsed;
        }
        let mut n = 1;
        let attempt =
            |lab: &mut Lab, n: usize, failpoint: Option<&str>, delay: Option<Duration>| {
                let args = (sc.prepare)(lab, n);
                let mut cmd = lab.spool.cmd();
                cmd.args(&args);
                if let Some(fp) = failpoint {
                    cmd.env("REEL_FAILPOINT", fp);
                }
                let ran = run_until(&mut cmd, delay, DEADLINE);
                let what = format!(
                    "{} attempt {n} ({})",
                    sc.name,
                    match (failpoint, delay) {
                        (Some(fp), _) => format!("failpoint {fp}"),
                        (None, Some(d)) => format!("kill after {d:?}"),
                        _ => "uninterrupted".into(),
                    }
                );
                ran.assert_no_panic(&what);
                let killed = ran.signal() == Some(9);
                assert!(
                    killed || ran.code() == Some(0),
                    "{what}: neither killed nor successful\n{}",
                    ran.describe()
                );
                (sc.after)(lab, &args, &ran);
                lab.verify(&what, true, false, removes);
                // The next uninterrupted run succeeds.
                let again = (sc.rerun)(lab, &args);
                let r2 = run_ok_timed(lab.spool.cmd().args(&again), &format!("{what}, rerun"));
                (sc.after)(lab, &again, &r2);
                let left = tmp_leftovers(lab.spool.path());
                assert!(
                    left.is_empty(),
                    "{what}: tmp/ after the rerun holds {left:?}"
                );
                lab.verify(&format!("{what}, after the rerun"), false, false, removes);
                (killed, ran.killed_by_us, r2.elapsed)
            };
        if first {
            for fp in sc.failpoints {
                // `pack-committed` is passed only when a pack fills up (32 MiB) mid-run.
                lab.day_mb = if fp.starts_with("pack-committed") {
                    36
                } else {
                    3
                };
                let (killed, _, _) = attempt(&mut lab, n, Some(fp), None);
                lab.day_mb = 3;
                if killed {
                    fp_hit += 1;
                } else {
                    fp_missed += 1;
                    println!("{}: failpoint {fp} not reached", sc.name);
                }
                n += 1;
            }
            first = false;
        }
        for _ in 0..EPOCH.min(total - done) {
            let delay = Duration::from_micros(rng.below(duration.as_micros().max(1) as u64));
            let (_, by_us, rerun_took) = attempt(&mut lab, n, None, Some(delay));
            if by_us {
                kills += 1;
            } else {
                finished += 1;
            }
            reruns += 1;
            duration = rerun_took;
            n += 1;
            done += 1;
        }
        // End of the epoch: everything restores, check passes.
        lab.verify(&format!("{} end of epoch", sc.name), true, true, removes);
        for (k, v) in &lab.notes {
            *notes.entry(k).or_default() += v;
        }
    }
    let mut counts = vec![
        ("kills", kills),
        ("finished_before_kill", finished),
        ("failpoints_hit", fp_hit),
        ("failpoints_not_reached", fp_missed),
        ("reruns_ok", reruns),
    ];
    counts.extend(notes);
    report(&format!("kill-{}", sc.name), &counts);
}

// =============================================================================================
// 2. Disk full
// =============================================================================================

#[test]
fn disk_full_fails_clearly_and_keeps_the_spool() {
    let work = tempfile::tempdir().unwrap();
    let Some(mnt) = TmpfsMount::new(&work.path().join("mnt"), 48) else {
        println!("skipped: needs root for a loop mount (tmpfs)");
        return;
    };
    let spool_dir = mnt.dir.join("spool");
    run_ok(reel().arg("--spool").arg(&spool_dir).arg("init"));
    let spool = spool_at(&spool_dir);
    let vol = work.path().join("vol");
    rich_tree(&vol);
    run_ok(spool.cmd().args(["volume", "add", "v"]).arg(&vol));
    let mut truth = Truth::default();
    let snaps = work.path().join("snaps");
    fs::create_dir_all(&snaps).unwrap();
    truth.record("v", "2026-03-01", &vol, &snaps);
    run_ok_timed(
        spool
            .cmd()
            .args(["dump", "v", "--level", "0", "--date", "2026-03-01"]),
        "first dump",
    );

    // More incompressible data than the tmpfs has room for.
    let mut rng = rng_for("disk-full");
    fs::create_dir_all(vol.join("huge")).unwrap();
    for i in 0..8 {
        fs::write(vol.join(format!("huge/h{i}.bin")), rng.bytes(8 << 20)).unwrap();
    }
    let r = run_until(
        spool
            .cmd()
            .args(["dump", "v", "--level", "1", "--date", "2026-03-02"]),
        None,
        DEADLINE,
    );
    r.assert_no_panic("dump onto a full disk");
    assert_eq!(r.code(), Some(1), "dump onto a full disk\n{}", r.describe());
    let msg = r.stderr.to_lowercase();
    assert!(
        msg.contains("no space left") || msg.contains("disk full") || msg.contains("disk is full"),
        "the error does not say the disk is full\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains(&spool_dir.to_string_lossy().into_owned()),
        "the error does not name the path\n{}",
        r.describe()
    );
    println!("disk full error: {}", r.stderr.trim());

    // The spool is intact: it opens, checks, and the earlier dump restores exactly.
    let ids = listed(&spool);
    assert_eq!(ids.len(), 1, "the failed dump is listed: {ids:?}");
    assert_check_passes(&spool, "after disk full");
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    truth.assert_restores(&spool, &ids[0], &scratch, "after disk full");

    // The next write open empties tmp/ (a dump of an unchanged tiny volume is a write open).
    let left = tmp_leftovers(&spool_dir);
    println!("tmp/ after the failed dump: {left:?}");
    let tiny = work.path().join("tiny");
    fs::create_dir_all(&tiny).unwrap();
    fs::write(tiny.join("t.txt"), b"tiny").unwrap();
    run_ok(spool.cmd().args(["volume", "add", "tiny"]).arg(&tiny));
    truth.record("tiny", "2026-03-02", &tiny, &snaps);
    let r = run_until(
        spool
            .cmd()
            .args(["dump", "tiny", "--level", "0", "--date", "2026-03-02"]),
        None,
        DEADLINE,
    );
    r.assert_no_panic("small dump on a nearly full disk");
    let left = tmp_leftovers(&spool_dir);
    assert!(
        left.is_empty(),
        "tmp/ not cleaned by the next write open: {left:?}"
    );

    // Free the space (the extra data goes), and the next dump succeeds and restores.
    fs::remove_dir_all(vol.join("huge")).unwrap();
    truth.record("v", "2026-03-03", &vol, &snaps);
    let r = run_until(
        spool
            .cmd()
            .args(["dump", "v", "--level", "1", "--date", "2026-03-03"]),
        None,
        DEADLINE,
    );
    r.assert_no_panic("dump after freeing the volume");
    if r.code() != Some(0) {
        // The first dump's packs and the catalog may leave too little room; give more.
        println!(
            "dump after removing the data still fails, growing the tmpfs:\n{}",
            r.stderr
        );
        mnt.resize(160);
        run_ok_timed(
            spool
                .cmd()
                .args(["dump", "v", "--level", "1", "--date", "2026-03-03"]),
            "dump after growing the disk",
        );
    }
    assert_check_passes(&spool, "after the disk-full recovery");
    for d in listed(&spool) {
        truth.assert_restores(&spool, &d, &scratch, "after the disk-full recovery");
    }
    report("disk-full", &[("refused_cleanly", 1), ("recovered", 1)]);
}

/// Bytes of the files under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            dir_bytes(&e.path())
        } else {
            md.len()
        };
    }
    total
}

/// A dump that fills the disk after sealing a pack (the default checkpoint, 256 MiB, is far
/// away, so the catalog never named it) leaves nothing behind: no pack in tmp/, no unnamed pack
/// in packs/. What its advice says to run then frees the space, and the dump goes through.
#[test]
fn a_dump_failing_on_a_full_disk_leaves_no_unnamed_pack_and_the_advice_frees_space() {
    let work = tempfile::tempdir().unwrap();
    let Some(_mnt) = TmpfsMount::new(&work.path().join("mnt"), 80) else {
        println!("skipped: needs root for a loop mount (tmpfs)");
        return;
    };
    let spool_dir = work.path().join("mnt/spool");
    run_ok(reel().arg("--spool").arg(&spool_dir).arg("init"));
    let spool = spool_at(&spool_dir);
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    run_ok(spool.cmd().args(["volume", "add", "v"]).arg(&vol));
    let mut rng = rng_for("disk-full-cleanup");
    // Two days of 16 MiB each, the first day's file gone on the second.
    fs::write(vol.join("old.bin"), rng.bytes(16 << 20)).unwrap();
    run_ok_timed(
        spool
            .cmd()
            .args(["dump", "v", "--level", "0", "--date", &date(1)]),
        "day 1",
    );
    fs::remove_file(vol.join("old.bin")).unwrap();
    fs::write(vol.join("new.bin"), rng.bytes(16 << 20)).unwrap();
    run_ok_timed(
        spool
            .cmd()
            .args(["dump", "v", "--level", "0", "--date", &date(2)]),
        "day 2",
    );
    let packs = spool_dir.join("packs");
    let before = dir_bytes(&packs);

    // 56 MiB more than the ~46 MiB left: one 32 MiB pack seals, the second does not fit.
    fs::create_dir_all(vol.join("huge")).unwrap();
    for i in 0..7 {
        fs::write(vol.join(format!("huge/h{i}.bin")), rng.bytes(8 << 20)).unwrap();
    }
    let dump3 = ["dump", "v", "--level", "1", "--date", &date(3)];
    let r = run_until(spool.cmd().args(dump3), None, DEADLINE);
    r.assert_no_panic("dump onto a full disk");
    assert_eq!(r.code(), Some(1), "dump onto a full disk\n{}", r.describe());
    assert!(
        r.stderr.to_lowercase().contains("no space left"),
        "{}",
        r.describe()
    );
    println!("disk full error: {}", r.stderr.trim());

    // Nothing of it is left: not in tmp/, not in packs/.
    assert_eq!(tmp_leftovers(&spool_dir), Vec::<String>::new());
    assert_eq!(
        dir_bytes(&packs),
        before,
        "the failed dump left pack bytes behind"
    );
    let c = run_until(spool.cmd().args(["check", "--json"]), None, DEADLINE);
    assert_eq!(c.code(), Some(0), "{}", c.describe());
    let checked: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(
        checked["unreferenced_packs"],
        serde_json::json!([]),
        "a pack no catalog names is left: {checked}"
    );
    assert_eq!(listed(&spool).len(), 2);

    // The advice names commands that work as written: a prune with a policy, then gc.
    for part in ["reel prune --keep-", "reel forget", "reel gc"] {
        assert!(
            r.stderr.contains(part),
            "the advice lacks {part:?}: {}",
            r.stderr
        );
    }
    run_ok_timed(
        spool.cmd().args(["prune", "--keep-last", "1"]),
        "prune as advised",
    );
    run_ok_timed(spool.cmd().arg("gc"), "gc as advised");
    let after = dir_bytes(&packs);
    assert!(
        after + (15 << 20) < before,
        "gc freed {} bytes, not the first day's 16 MiB",
        before.saturating_sub(after)
    );
    run_ok_timed(
        spool.cmd().args(dump3),
        "the dump again, with the space freed",
    );
    assert_check_passes(&spool, "after the full disk and the advice");
    report("disk-full-cleanup", &[("left_behind", 0), ("recovered", 1)]);
}

// =============================================================================================
// 3. Damage sweep
// =============================================================================================

/// A small volume (about 1 MB) so each flip's copy, check and restore are quick.
fn small_volume(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("r1.bin"), rng.bytes(300_000)).unwrap();
    fs::write(root.join("d/r2.bin"), rng.bytes(200_000)).unwrap();
    fs::write(root.join("d/e/text.txt"), rng.text(150_000)).unwrap();
    fs::write(root.join("small.txt"), b"small\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::hard_link(root.join("small.txt"), root.join("d/hard")).unwrap();
    std::os::unix::fs::symlink("../small.txt", root.join("d/link")).unwrap();
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(1 << 20).unwrap();
}

/// `n` offsets in `range`, spread evenly with a random jitter inside each slice.
fn spread(rng: &mut Rng, range: std::ops::Range<u64>, n: usize) -> Vec<u64> {
    let len = range.end.saturating_sub(range.start);
    if len == 0 || n == 0 {
        return Vec::new();
    }
    let step = (len / n as u64).max(1);
    (0..n as u64)
        .map(|i| range.start + (i * step + rng.below(step)).min(len - 1))
        .collect()
}

fn nonzero_mask(rng: &mut Rng) -> u8 {
    1 + rng.below(255) as u8
}

fn largest_pack(spool: &Path) -> PathBuf {
    let mut all = Vec::new();
    for d in fs::read_dir(spool.join("packs")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            all.push(f.unwrap().path());
        }
    }
    all.into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack")
}

/// A small volume (from `seed`), a new spool with its level 0 dump of 2026-11-01, and the
/// truth of that day; the volume is `work/vol`.
fn one_full_dump(seed: u64) -> (tempfile::TempDir, Spool, Truth) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    small_volume(&vol, seed);
    let spool = spool_with_full_dump(&vol);
    let mut truth = Truth::default();
    truth.record("v", "2026-11-01", &vol, work.path());
    (work, spool, truth)
}

#[test]
fn damage_sweep_packs() {
    let (work, spool, truth) = one_full_dump(11);
    let dump = listed(&spool).remove(0);
    let pack = largest_pack(spool.path());
    let rel = pack.strip_prefix(spool.path()).unwrap().to_path_buf();
    let stem = pack.file_stem().unwrap().to_string_lossy().into_owned();
    let bytes = fs::read(&pack).unwrap();
    let len = bytes.len() as u64;
    let mut f = [0u8; 8];
    f.copy_from_slice(&bytes[bytes.len() - 64..bytes.len() - 56]);
    let index_at = u64::from_le_bytes(f).min(len - 64);

    let n = flips();
    let mut rng = rng_for("damage-packs");
    let mut offsets = Vec::new();
    offsets.extend(spread(&mut rng, 0..16, n / 12)); // file header
    offsets.extend(spread(&mut rng, 16..72, n / 12)); // first blob header
    offsets.extend(spread(&mut rng, 72..index_at, n / 2)); // blobs
    offsets.extend(spread(&mut rng, index_at..len - 64, n / 6)); // index
    offsets.extend(spread(&mut rng, len - 64..len, n - offsets.len())); // footer

    let (mut check_named, mut restore_refused, mut restore_exact) = (0u64, 0u64, 0u64);
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    for off in &offsets {
        let copy = work.path().join("copy");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(spool.path(), &copy);
        flip_byte(&copy.join(&rel), *off, nonzero_mask(&mut rng));
        let sp = spool_at(&copy);
        let what = format!("pack {stem} flipped at {off} of {len}");
        let c = run_until(sp.cmd().args(["check", "--read-data"]), None, DEADLINE);
        c.assert_no_panic(&what);
        assert_eq!(c.code(), Some(1), "{what}: check\n{}", c.describe());
        assert!(
            c.stdout.contains(&stem) || c.stderr.contains(&stem),
            "{what}: check does not name the pack\n{}",
            c.describe()
        );
        check_named += 1;
        let target = scratch.join("r");
        let _ = fs::remove_dir_all(&target);
        let r = run_until(
            sp.cmd()
                .args(["restore", "v", "--dump", &dump.id.to_string(), "--to"])
                .arg(&target),
            None,
            DEADLINE,
        );
        r.assert_no_panic(&what);
        match r.code() {
            Some(0) => {
                assert_trees_equal(&truth.snaps[&("v".into(), "2026-11-01".into())], &target);
                restore_exact += 1;
            }
            Some(_) => {
                let names_it = r.stderr.contains(&stem)
                    || ["r1.bin", "r2.bin", "text.txt", "manifest", "pack"]
                        .iter()
                        .any(|f| r.stderr.contains(f));
                assert!(
                    names_it,
                    "{what}: restore's error names nothing\n{}",
                    r.describe()
                );
                restore_refused += 1;
            }
            None => panic!("{what}: restore died\n{}", r.describe()),
        }
    }
    report(
        "damage-packs",
        &[
            ("flips", offsets.len() as u64),
            ("check_detected", check_named),
            ("restore_refused", restore_refused),
            ("restore_exact", restore_exact),
        ],
    );
}

#[test]
fn damage_sweep_tape_image() {
    let (work, spool, truth) = one_full_dump(12);
    let img = work.path().join("tape.img");
    spool.run(["export", "--label", "flipme", "--to", img.to_str().unwrap()]);
    let want = listed(&spool);
    let len = fs::metadata(&img).unwrap().len();

    let n = flips();
    let mut rng = rng_for("damage-tape");
    let mut offsets = spread(&mut rng, 0..4096, n / 6); // TS_TAPE, CLRI, BITS headers
    offsets.extend(spread(&mut rng, 4096..len, n - offsets.len()));

    // What a killed export leaves: the image cut short (at any byte, or at a tape block).
    let cuts: Vec<u64> = spread(&mut rng, 0..len, n / 4)
        .into_iter()
        .chain((1..=n as u64 / 8).map(|i| (len / 10240 * i / (n as u64 / 8 + 1)) * 10240))
        .collect();

    let (mut detected, mut harmless) = (0u64, 0u64);
    let (mut cut_refused, mut cut_harmless) = (0u64, 0u64);
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let damages = offsets
        .iter()
        .map(|o| (Some(*o), None))
        .chain(cuts.iter().map(|c| (None, Some(*c))));
    for (flip, cut) in damages {
        let copy = work.path().join("copy.img");
        fs::copy(&img, &copy).unwrap();
        let what = match (flip, cut) {
            (Some(off), _) => {
                flip_byte(&copy, off, nonzero_mask(&mut rng));
                format!("tape image flipped at {off} of {len}")
            }
            (_, Some(c)) => {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&copy)
                    .unwrap()
                    .set_len(c)
                    .unwrap();
                format!("tape image cut to {c} of {len} bytes")
            }
            _ => unreachable!(),
        };
        let other = Spool::new();
        let v = run_until(other.cmd().arg("verify-tape").arg(&copy), None, DEADLINE);
        v.assert_no_panic(&what);
        let i = run_until(other.cmd().arg("import").arg(&copy), None, DEADLINE);
        i.assert_no_panic(&what);
        match (v.code(), i.code()) {
            (Some(1), Some(1)) => {
                let name = copy.to_string_lossy().into_owned();
                assert!(
                    v.stderr.contains(&name) && i.stderr.contains(&name),
                    "{what}: the errors do not name the image\nverify: {}\nimport: {}",
                    v.describe(),
                    i.describe()
                );
                assert!(
                    listed(&other).is_empty(),
                    "{what}: a refused import added dumps"
                );
                if cut.is_some() {
                    cut_refused += 1;
                } else {
                    detected += 1;
                }
            }
            (Some(0), Some(0)) => {
                let got = listed(&other);
                let strip = |v: &[Listed]| -> Vec<(String, String, u64)> {
                    v.iter()
                        .map(|d| (d.volume.clone(), d.time.clone(), d.level))
                        .collect()
                };
                assert_eq!(strip(&got), strip(&want), "{what}: imported dumps differ");
                for d in &got {
                    truth.assert_restores(&other, d, &scratch, &what);
                }
                if cut.is_some() {
                    cut_harmless += 1;
                } else {
                    harmless += 1;
                }
            }
            _ => panic!(
                "{what}: verify-tape and import disagree\nverify: {}\nimport: {}",
                v.describe(),
                i.describe()
            ),
        }
    }
    report(
        "damage-tape",
        &[
            ("flips", offsets.len() as u64),
            ("detected", detected),
            ("harmless", harmless),
            ("cuts", cuts.len() as u64),
            ("cut_refused", cut_refused),
            ("cut_harmless", cut_harmless),
        ],
    );
}

#[test]
fn damage_sweep_catalog() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    small_volume(&vol, 13);
    let snaps = work.path().join("snaps");
    fs::create_dir_all(&snaps).unwrap();
    let mut truth = Truth::default();
    truth.record("v", "2026-11-01", &vol, &snaps);
    let spool = spool_with_full_dump(&vol);
    fs::write(vol.join("day2.txt"), b"day two").unwrap();
    truth.record("v", "2026-11-02", &vol, &snaps);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    fs::write(vol.join("day3.txt"), b"day three").unwrap();
    truth.record("v", "2026-11-03", &vol, &snaps);
    let want = listed(&spool);
    let cat = spool.path().join("catalog.redb");
    let len = fs::metadata(&cat).unwrap().len();

    let n = flips();
    let mut rng = rng_for("damage-catalog");
    let offsets = spread(&mut rng, 0..len, n);
    let (mut all_ok, mut refused, mut wrong_listing) = (0u64, 0u64, 0u64);
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    for off in &offsets {
        let copy = work.path().join("copy");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(spool.path(), &copy);
        flip_byte(&copy.join("catalog.redb"), *off, nonzero_mask(&mut rng));
        let sp = spool_at(&copy);
        let what = format!("catalog flipped at {off} of {len}");
        let mut any_refused = false;
        let mut refuse = |r: &Ran, cmd: &str| {
            assert_eq!(r.signal(), None, "{what}: {cmd} died\n{}", r.describe());
            assert!(
                !r.stderr.trim().is_empty() || r.stdout.contains("PROBLEM"),
                "{what}: {cmd} failed without a message\n{}",
                r.describe()
            );
            any_refused = true;
        };
        // list
        let l = run_until(sp.cmd().args(["list", "--json"]), None, DEADLINE);
        l.assert_no_panic(&what);
        let mut listing = None;
        if l.code() == Some(0) {
            listing = Some(listed(&sp));
        } else {
            refuse(&l, "list");
        }
        // check
        let c = run_until(sp.cmd().args(["check", "--read-data"]), None, DEADLINE);
        c.assert_no_panic(&what);
        if c.code() != Some(0) {
            refuse(&c, "check");
        }
        // restore every dump the damaged catalog lists (or the known ids)
        let ds = listing.clone().unwrap_or_else(|| want.clone());
        for d in &ds {
            let target = scratch.join("r");
            let _ = fs::remove_dir_all(&target);
            let r = run_until(
                sp.cmd()
                    .args(["restore", "v", "--dump", &d.id.to_string(), "--to"])
                    .arg(&target),
                None,
                DEADLINE,
            );
            r.assert_no_panic(&what);
            if r.code() == Some(0) {
                // Restored: must be exactly the tree of the day the *intact* catalog gives
                // this id (a flipped day or id must not make a wrong tree look right).
                let orig = want.iter().find(|w| w.id == d.id).unwrap_or_else(|| {
                    panic!("{what}: restore of unknown dump {} succeeded", d.id)
                });
                let snap = &truth.snaps[&(orig.volume.clone(), orig.day.clone())];
                assert_trees_equal(snap, &target);
            } else {
                refuse(&r, "restore");
            }
        }
        // a write: the next dump
        let d = run_until(
            sp.cmd()
                .args(["dump", "v", "--level", "1", "--date", "2026-11-03"]),
            None,
            DEADLINE,
        );
        d.assert_no_panic(&what);
        if d.code() != Some(0) {
            refuse(&d, "dump");
        }
        if listing.as_ref().is_some_and(|l| l != &want) {
            wrong_listing += 1;
            println!("{what}: list shows {listing:?}");
        }
        if any_refused {
            refused += 1;
        } else {
            all_ok += 1;
        }
    }
    report(
        "damage-catalog",
        &[
            ("flips", offsets.len() as u64),
            ("refused_somewhere", refused),
            ("all_commands_correct", all_ok),
            ("listing_changed", wrong_listing),
        ],
    );
}

// =============================================================================================
// 4. Concurrency
// =============================================================================================

/// What one round of the race runs: a name, its arguments, and whether it may take dumps
/// out of the catalog. Add prune and gc here (they may refuse with the busy message too).
fn concurrent_commands(
    day: &str,
    restore_to: &Path,
    c_id: u64,
) -> Vec<(&'static str, Vec<String>, bool)> {
    vec![
        (
            "dump a",
            s(&["dump", "a", "--level", "0", "--date", day]),
            false,
        ),
        (
            "dump b",
            s(&["dump", "b", "--level", "1", "--date", day]),
            false,
        ),
        (
            "restore c",
            vec![
                "restore".into(),
                "c".into(),
                "--dump".into(),
                c_id.to_string(),
                "--to".into(),
                restore_to.to_string_lossy().into_owned(),
            ],
            false,
        ),
        ("list", s(&["list"]), false),
        ("check", s(&["check"]), false),
        ("prune", s(&["prune", "a", "--keep-last", "1"]), true),
        ("gc", s(&["gc"]), false),
    ]
}

#[test]
fn concurrent_commands_finish_or_refuse_and_never_hang() {
    let work = tempfile::tempdir().unwrap();
    let mut rng = rng_for("concurrency");
    let (a, b, c) = (
        work.path().join("a"),
        work.path().join("b"),
        work.path().join("c"),
    );
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    rich_tree(&c);
    let spool = Spool::new();
    for (name, p) in [("a", &a), ("b", &b), ("c", &c)] {
        spool.add_volume(name, p);
    }
    let snaps = work.path().join("snaps");
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&snaps).unwrap();
    fs::create_dir_all(&scratch).unwrap();
    let mut truth = Truth::default();
    truth.record("c", &date(1), &c, &snaps);
    spool.run(["dump", "c", "--level", "0", "--date", &date(1)]);
    let c_id = listed(&spool)[0].id;

    let rounds = runs(3);
    let (mut finished, mut busy) = (0u64, 0u64);
    let mut restored = BTreeSet::new();
    for round in 0..rounds {
        let day = date(2 + round as u32);
        fs::write(a.join(format!("a{round}.bin")), rng.bytes(24 << 20)).unwrap();
        fs::write(b.join(format!("b{round}.bin")), rng.bytes(8 << 20)).unwrap();
        if round >= 2 {
            // Bounded volumes, however many rounds the long run asks for.
            let _ = fs::remove_file(a.join(format!("a{}.bin", round - 2)));
            let _ = fs::remove_file(b.join(format!("b{}.bin", round - 2)));
        }
        truth.record("a", &day, &a, &snaps);
        truth.record("b", &day, &b, &snaps);
        let target = scratch.join(format!("c-{round}"));
        let cmds = concurrent_commands(&day, &target, c_id);
        let removes = cmds.iter().any(|c| c.2);
        let staggers: Vec<u64> = cmds.iter().map(|_| rng.below(30)).collect();
        let results: Vec<(&str, Ran)> = std::thread::scope(|sc| {
            let handles: Vec<_> = cmds
                .iter()
                .zip(&staggers)
                .map(|((name, args, _), ms)| {
                    let mut cmd = spool.cmd();
                    cmd.args(args);
                    let ms = *ms;
                    sc.spawn(move || {
                        std::thread::sleep(Duration::from_millis(ms));
                        (*name, run_until(&mut cmd, None, DEADLINE))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, r) in &results {
            let what = format!("round {round}: {name}");
            r.assert_no_panic(&what);
            match r.code() {
                Some(0) => finished += 1,
                Some(1) if r.stderr.contains("busy") && r.stderr.contains("lock") => busy += 1,
                _ => panic!(
                    "{what}: neither finished nor refused as busy\n{}",
                    r.describe()
                ),
            }
            if *name == "restore c" && r.code() == Some(0) {
                assert_trees_equal(&truth.snaps[&("c".into(), date(1))], &target);
            }
        }
        assert_check_passes(&spool, &format!("round {round}"));
        let now = listed(&spool);
        if !removes {
            assert!(
                now.iter().any(|d| d.id == c_id),
                "round {round}: dump of c gone"
            );
        }
        // New dumps restore exactly now; all of them once more at the end.
        for d in now.iter().filter(|d| restored.insert(d.id)) {
            truth.assert_restores(&spool, d, &scratch, &format!("round {round}"));
        }
        let _ = fs::remove_dir_all(&target);
    }
    for d in listed(&spool) {
        truth.assert_restores(&spool, &d, &scratch, "after the last round");
    }
    report(
        "concurrency",
        &[
            ("rounds", rounds as u64),
            ("finished", finished),
            ("refused_busy", busy),
        ],
    );
}
