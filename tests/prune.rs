//! `reel prune` end to end: a two-week history at mixed levels is pruned with a policy; the
//! removed set is exactly what the policy implies (computed here independently, from the
//! dates and levels alone), every kept dump still restores its day's tree exactly, `check
//! --read-data` passes, a dry run changes nothing, later dumps work, and a dump on tape says
//! which tape brings it back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use common::*;
use serde_json::Value;

const LEVELS: [u8; 14] = [0, 1, 2, 1, 3, 2, 1, 0, 1, 2, 1, 3, 2, 1];

fn date(day: usize) -> String {
    format!("2026-11-{day:02}")
}

/// Volume `v` with one dump per day on 2026-11-01..14 at `LEVELS`; `work/dayN` holds each
/// day's tree, on a spool of `kind`. Dump ids are 1..=14 in day order.
fn two_weeks_of(kind: Kind, work: &Path) -> Spool {
    let vol = work.join("vol");
    rich_tree(&vol);
    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    for (i, level) in LEVELS.iter().enumerate() {
        let day = i + 1;
        if day > 1 {
            mutate_day(&vol, day as u32);
        }
        snapshot(&vol, &work.join(format!("day{day}")));
        spool.run([
            "dump",
            "v",
            "--level",
            &level.to_string(),
            "--date",
            &date(day),
        ]);
    }
    spool
}

/// The chains `dump` makes: base = latest earlier dump with a lower level.
fn chains(levels: &[u8]) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    for (i, &l) in levels.iter().enumerate() {
        let base = (0..i).rev().find(|&j| levels[j] < l);
        out.push(match base {
            Some(b) => {
                let mut c = out[b].clone();
                c.push(b as u64 + 1);
                c
            }
            None => vec![],
        });
    }
    out
}

/// What `--keep-daily 2 --keep-weekly 3` keeps of the history, and why, worked out from
/// the calendar: by rule, the latest dump of the last 2 days and of the last 3 ISO weeks;
/// then the chains of those.
fn expected_kept() -> BTreeSet<u64> {
    let mut by_rule: BTreeSet<u64> = BTreeSet::new();
    by_rule.extend([13, 14]); // daily: 11-14 and 11-13
    let mut latest_of_week: BTreeMap<(i32, u32), u64> = BTreeMap::new();
    for day in 1..=14u32 {
        let w = NaiveDate::from_ymd_opt(2026, 11, day).unwrap().iso_week();
        latest_of_week.insert((w.year(), w.week()), u64::from(day));
    }
    // 11-01 is a Sunday: weeks 44 (day 1), 45 (days 2-8), 46 (days 9-14).
    assert_eq!(
        latest_of_week.values().copied().collect::<Vec<_>>(),
        [1, 8, 14]
    );
    by_rule.extend(latest_of_week.values().rev().take(3));
    let chains = chains(&LEVELS);
    let mut kept = by_rule.clone();
    for id in &by_rule {
        kept.extend(&chains[*id as usize - 1]);
    }
    kept
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect()
}

fn restore_equals(spool: &Spool, work: &Path, id: u64, day: usize) {
    let to = work.join(format!("restore-{id}"));
    restore_and_compare(spool, id, &work.join(format!("day{day}")), &to);
}

both_kinds!(prune_keeps_what_the_policy_and_the_chains_need_and_every_kept_dump_restores);
fn prune_keeps_what_the_policy_and_the_chains_need_and_every_kept_dump_restores(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let spool = two_weeks_of(kind, w);
    let listed = spool.list_json();
    assert_eq!(ids(&listed), (1..=14).collect::<Vec<_>>());
    // The chains the test expects are the ones reel recorded.
    for (i, c) in chains(&LEVELS).iter().enumerate() {
        let mut full = c.clone();
        full.push(i as u64 + 1);
        let got: Vec<u64> = listed[i]["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(got, full, "chain of dump {}", i + 1);
    }
    let kept = expected_kept();
    assert_eq!(kept, BTreeSet::from([1, 8, 11, 13, 14]));
    let removed: Vec<u64> = (1..=14).filter(|i| !kept.contains(i)).collect();

    // A dry run reports exactly that and changes nothing.
    let policy = ["--keep-daily", "2", "--keep-weekly", "3"];
    let dry = json(
        &spool.run(
            ["prune", "--dry-run", "--json"]
                .iter()
                .chain(policy.iter())
                .copied(),
        ),
    );
    assert_eq!(dry["dry_run"], true);
    let vols = dry["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0]["volume"], "v");
    assert_eq!(
        ids(&vols[0]["kept"]),
        kept.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(ids(&vols[0]["removed"]), removed);
    assert_eq!(spool.list_json(), listed, "a dry run changed the catalog");
    let text = spool.run([
        "prune",
        "--dry-run",
        "v",
        "--keep-daily",
        "2",
        "--keep-weekly",
        "3",
    ]);
    assert!(text.contains("would remove 9 dumps"), "{text}");
    assert!(text.contains("dry run: nothing was changed"), "{text}");
    assert_eq!(spool.list_json(), listed);

    // The JSON shape and the reasons.
    let kept_json = vols[0]["kept"].as_array().unwrap();
    for k in kept_json {
        assert!(k["time"].as_str().unwrap().starts_with("2026-11-"), "{k}");
        assert!(k["level"].is_u64());
        assert!(!k["reasons"].as_array().unwrap().is_empty());
    }
    let reasons = |id: u64| -> Vec<String> {
        kept_json.iter().find(|k| k["id"] == id).unwrap()["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        reasons(14),
        [
            "latest dump of the volume",
            "daily 2026-11-14",
            "weekly 2026-W46"
        ]
    );
    assert_eq!(reasons(11), ["chain of dump 13"]);
    assert_eq!(
        reasons(8),
        [
            "weekly 2026-W45",
            "chain of dump 11",
            "chain of dump 13",
            "chain of dump 14"
        ]
    );
    assert_eq!(reasons(1), ["weekly 2026-W44"]);
    let mut owned_sum = 0;
    for r in vols[0]["removed"].as_array().unwrap() {
        assert_eq!(r["on_tapes"], serde_json::json!([]));
        assert_eq!(r["restorable_from_tapes"], false);
        assert!(r["time"].is_string() && r["level"].is_u64());
        let id = r["id"].as_u64().unwrap();
        assert_eq!(r["level"], LEVELS[id as usize - 1]);
        owned_sum += r["owned_bytes"].as_u64().unwrap();
    }
    assert_eq!(dry["removed_owned_bytes"].as_u64().unwrap(), owned_sum);
    assert!(owned_sum > 0);

    // The real run removes exactly that.
    let out = spool.run(["prune", "v"].iter().chain(policy.iter()).copied());
    assert!(
        out.contains("removed 9 dumps; `reel gc` will free"),
        "{out}"
    );
    assert!(out.contains("gone once `reel gc` runs"), "{out}");
    assert!(out.contains("chain of dump 13"), "{out}");
    let after = spool.list_json();
    assert_eq!(ids(&after), kept.iter().copied().collect::<Vec<_>>());
    for d in after.as_array().unwrap() {
        let id = d["id"].as_u64().unwrap();
        let before = &listed[id as usize - 1];
        assert_eq!(d, before, "a kept dump's record changed");
    }
    for id in &kept {
        restore_equals(&spool, w, *id, *id as usize);
    }
    // Restoring a day whose dump is gone gives the dump current then.
    spool.restore_equals(
        &["v", "--at", &date(10)],
        &w.join("day8"),
        &w.join("at-day10"),
    );
    spool.run(["check", "--read-data"]);

    // Pruning again with the same policy has nothing to do.
    let again = spool.run(["prune", "--keep-daily", "2", "--keep-weekly", "3"]);
    assert!(again.contains("nothing to remove"), "{again}");

    // Later dumps work on top of what was kept: the level 1 is based on the level 0 of day 8.
    let vol = w.join("vol");
    mutate_day(&vol, 15);
    snapshot(&vol, &w.join("day15"));
    spool.run(["dump", "v", "--level", "2", "--date", &date(15)]);
    mutate_day(&vol, 16);
    snapshot(&vol, &w.join("day16"));
    spool.run(["dump", "v", "--level", "1", "--date", &date(16)]);
    let last = spool.list_json();
    let n = last.as_array().unwrap().len();
    assert_eq!(last[n - 2]["chain"], serde_json::json!([8, 14, 15]));
    assert_eq!(last[n - 1]["chain"], serde_json::json!([8, 16]));
    restore_equals(&spool, w, 15, 15);
    restore_equals(&spool, w, 16, 16);
    spool.run(["check", "--read-data"]);
}

#[test]
fn prune_without_a_policy_or_with_an_unknown_volume_is_a_usage_error() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    let listed = spool.list_json();
    for args in [
        vec!["prune"],
        vec!["prune", "v"],
        vec!["prune", "--dry-run", "--json"],
    ] {
        let (code, err) = spool.fail(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        for opt in [
            "--keep-last",
            "--keep-daily",
            "--keep-weekly",
            "--keep-monthly",
            "--keep-within",
        ] {
            assert!(err.contains(opt), "{args:?} does not name {opt}: {err}");
        }
    }
    let (code, err) = spool.fail(["prune", "nosuch", "--keep-last", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nosuch"), "{err}");
    let (code, err) = spool.fail(["prune", "--keep-within", "7x"]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = spool.fail(["prune", "--keep-last", "0"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(spool.list_json(), listed);
    // With one dump, any policy keeps it (it is the latest).
    let out = json(&spool.run(["prune", "--keep-within", "1h", "--json"]));
    assert_eq!(out["volumes"][0]["removed"], serde_json::json!([]));
    assert_eq!(
        out["volumes"][0]["kept"][0]["reasons"][0],
        "latest dump of the volume"
    );
    assert_eq!(out["removed_owned_bytes"], 0);
    assert_eq!(out["dry_run"], false);
}

#[test]
fn a_pruned_dump_on_tape_names_its_tape_and_comes_back_with_import() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let vol = w.join("vol");
    rich_tree(&vol);
    snapshot(&vol, &w.join("day1"));
    let spool = spool_with_full_dump(&vol);
    mutate_day(&vol, 2);
    snapshot(&vol, &w.join("day2"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let img = w.join("t1.tape");
    spool.run([
        "export",
        "--to",
        img.to_str().unwrap(),
        "--label",
        "TAPE-ONE",
    ]);
    mutate_day(&vol, 3);
    snapshot(&vol, &w.join("day3"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-03"]);

    let dry = json(&spool.run(["prune", "--keep-last", "1", "--dry-run", "--json"]));
    let removed = &dry["volumes"][0]["removed"];
    assert_eq!(ids(removed), [2]);
    assert_eq!(removed[0]["on_tapes"], serde_json::json!(["TAPE-ONE"]));
    assert_eq!(removed[0]["restorable_from_tapes"], true);
    let out = spool.run(["prune", "--keep-last", "1"]);
    assert!(out.contains("TAPE-ONE"), "{out}");
    assert!(
        out.contains("`reel import` those tapes to restore it"),
        "{out}"
    );
    assert_eq!(ids(&spool.list_json()), [1, 3]);
    // The media catalog is untouched: the tape still lists the dump.
    let tapes = json(&spool.run(["tapes", "--json"]));
    assert!(tapes.to_string().contains("TAPE-ONE"), "{tapes}");
    spool.run(["check", "--read-data"]);
    restore_equals(&spool, w, 3, 3);
    restore_equals(&spool, w, 1, 1);

    // What the output promised: importing the tape brings day 2 back.
    spool.run(["import", img.to_str().unwrap()]);
    spool.restore_equals(
        &["v", "--at", "2026-11-02"],
        &w.join("day2"),
        &w.join("day2-again"),
    );
    spool.run(["check", "--read-data"]);
}

#[test]
fn a_prune_killed_before_or_after_its_commit_leaves_a_consistent_spool() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let vol = w.join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    for day in 2..=4u32 {
        mutate_day(&vol, day);
        spool.run(["dump", "v", "--level", "1", "--date", &date(day as usize)]);
    }
    snapshot(&vol, &w.join("day4"));
    let listed = spool.list_json();
    let killed = |point: &str| {
        let out = spool
            .cmd()
            .env("REEL_FAILPOINT", point)
            .args(["prune", "--keep-last", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None, "{point}: not killed: {out:?}");
    };
    // Killed with the forget pack durable but not committed: every dump is still there.
    killed("prune-forget-written");
    assert_eq!(spool.list_json(), listed);
    spool.run(["check", "--read-data"]);
    // Killed right after the commit: the dumps are gone, the rest is whole.
    killed("prune-committed");
    assert_eq!(ids(&spool.list_json()), [1, 4]);
    spool.run(["check", "--read-data"]);
    restore_equals(&spool, w, 4, 4);
    let again = spool.run(["prune", "--keep-last", "1"]);
    assert!(again.contains("nothing to remove"), "{again}");
}

#[test]
fn a_far_future_date_is_refused_unless_forced_and_forget_undoes_it() {
    let now = reel::timefmt::now_ns();
    let hour = 3_600_000_000_000i64;
    assert!(reel::dump::check_not_ahead(now + 23 * hour, now).is_ok());
    assert!(reel::dump::check_not_ahead(now + 25 * hour, now).is_err());

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let vol = w.join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    spool.run(["volume", "set", "v", "--schedule", "FIIIIII"]);
    let listed = spool.list_json();

    // Every command that takes a dump or clone date refuses one far ahead, and says how.
    for args in [
        vec!["dump", "v", "--level", "1", "--date", "2200-01-01"],
        vec!["clone", "v", "--date", "2200-01-01"],
        vec!["backup", "v", "--level", "1", "--date", "2200-01-01"],
        vec!["nightly", "--date", "2200-01-01"],
    ] {
        let (code, err) = spool.fail(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        for part in [
            "2200-01-01",
            "more than a day ahead of the clock",
            "--force-date",
        ] {
            assert!(err.contains(part), "{args:?} does not say {part:?}: {err}");
        }
        assert_eq!(spool.list_json(), listed, "{args:?} changed the catalog");
    }

    // Forced, it is taken: a dump dated 2200 that owns the day's changes.
    mutate_day(&vol, 2);
    spool.run([
        "dump",
        "v",
        "--level",
        "1",
        "--date",
        "2200-01-01",
        "--force-date",
    ]);
    assert_eq!(ids(&spool.list_json()), [1, 2]);

    // Now no dump of the present can follow it, by hand or at night, and the error says why.
    let (code, err) = spool.fail(["dump", "v", "--level", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not later than the latest dump of volume v (dump 2"),
        "{err}"
    );
    assert!(err.contains("`reel forget 2`"), "{err}");
    let (ok, report) = spool.nightly_json(&[]);
    assert!(!ok, "{report}");
    assert_eq!(report["volumes"][0]["status"], "failed", "{report}");
    assert!(
        report["volumes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("`reel forget 2`"),
        "{report}"
    );
    assert_eq!(ids(&spool.list_json()), [1, 2]);

    // Forgetting dump 1 alone would break dump 2's chain: refused, naming both.
    let (code, err) = spool.fail(["forget", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dump 2 of volume v"), "{err}");
    assert!(err.contains("`reel forget 1 2`"), "{err}");
    let (code, err) = spool.fail(["forget", "9"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no dump 9"), "{err}");
    let dry = spool.run(["forget", "2", "--dry-run"]);
    assert!(dry.contains("would forget dump 2 of volume v"), "{dry}");
    assert_eq!(ids(&spool.list_json()), [1, 2]);

    let out = json(&spool.run(["forget", "2", "--json"]));
    assert_eq!(ids(&out["removed"]), [2]);
    assert_eq!(out["removed"][0]["volume"], "v");
    assert!(
        out["removed"][0]["time"]
            .as_str()
            .unwrap()
            .starts_with("2200-01-01")
    );
    assert!(out["removed_owned_bytes"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["latest"][0]["volume"], "v");
    assert_eq!(out["latest"][0]["id"], 1);
    assert_eq!(out["dry_run"], false);
    assert_eq!(ids(&spool.list_json()), [1]);
    spool.run(["check", "--read-data"]);
    // What it said: `reel gc` gives the space back.
    let gc = json(&spool.run(["gc", "--json"]));
    assert!(gc["bytes_freed"].as_i64().unwrap() > 0, "{gc}");

    // The night and the next dump by hand work again, and restore the tree.
    let (ok, report) = spool.nightly_json(&[]);
    assert!(ok, "{report}");
    assert_eq!(report["volumes"][0]["status"], "succeeded", "{report}");
    mutate_day(&vol, 3);
    snapshot(&vol, &w.join("now"));
    spool.run(["dump", "v", "--level", "1"]);
    let last = spool.last_dump();
    restore_and_compare(
        &spool,
        last["id"].as_u64().unwrap(),
        &w.join("now"),
        &w.join("restored"),
    );
    spool.run(["check", "--read-data"]);
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn gc_bytes_freed(spool: &Spool) -> i64 {
    let r = json(&spool.run(["gc", "--json"]));
    r["bytes_freed"].as_i64().unwrap()
}

/// `|a - b| <= 10%` of the larger.
fn within_10_percent(announced: u64, freed: i64) -> bool {
    let (a, f) = (announced as i64, freed);
    (a - f).abs() * 10 <= a.max(f)
}

/// Volume `v` with data shared by every day (the rich tree and files never changed) and data
/// unique to days (random and text files replaced or deleted), dumped on four days at levels
/// 0, 1, 0, 1; returns the spool.
fn shared_and_unique(work: &Path) -> Spool {
    let vol = work.join("vol");
    rich_tree(&vol);
    let mut rng = Rng::new(29);
    write(&vol.join("shared/big.bin"), &rng.bytes(3 << 20));
    for i in 0..8 {
        write(&vol.join(format!("data/r{i}.bin")), &rng.bytes(200 << 10));
        write(&vol.join(format!("data/t{i}.txt")), &rng.text(150 << 10));
    }
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    for (day, level) in ["0", "1", "0", "1"].iter().enumerate() {
        let day = day as u32 + 1;
        if day > 1 {
            mutate_day(&vol, day);
            for i in 0..8 {
                if (i + day).is_multiple_of(3) {
                    let _ = std::fs::remove_file(vol.join(format!("data/r{i}.bin")));
                } else if (i + day) % 3 == 1 {
                    write(&vol.join(format!("data/r{i}.bin")), &rng.bytes(200 << 10));
                    write(&vol.join(format!("data/t{i}.txt")), &rng.text(150 << 10));
                }
            }
        }
        spool.run(["dump", "v", "--level", level, "--date", &date(day as usize)]);
    }
    spool
}

#[test]
fn prune_announces_what_gc_then_frees() {
    let work = tempfile::tempdir().unwrap();
    let spool = shared_and_unique(work.path());
    let dry = json(&spool.run(["prune", "--keep-last", "1", "--dry-run", "--json"]));
    assert_eq!(ids(&dry["volumes"][0]["removed"]), [1, 2]);
    assert_eq!(dry["gc_frees_basis"], "gc plan", "{dry}");
    let announced = dry["gc_frees_bytes"].as_u64().unwrap();
    let text = spool.run(["prune", "--keep-last", "1", "--dry-run"]);
    assert!(
        text.contains(&format!(
            "would remove 2 dumps; `reel gc` would then free {}",
            reel::timefmt::format_bytes(announced)
        )),
        "{text}"
    );
    let real = json(&spool.run(["prune", "--keep-last", "1", "--json"]));
    assert_eq!(real["gc_frees_bytes"], dry["gc_frees_bytes"], "{real}");
    let freed = gc_bytes_freed(&spool);
    assert!(freed > 1 << 20, "gc freed {freed}");
    assert!(
        within_10_percent(announced, freed),
        "prune announced {announced} bytes, gc freed {freed} (the removed dumps own {})",
        dry["removed_owned_bytes"]
    );
    spool.run(["check", "--read-data"]);

    // The same through `reel forget`.
    let work = tempfile::tempdir().unwrap();
    let spool = shared_and_unique(work.path());
    let out = json(&spool.run(["forget", "1", "2", "--json"]));
    assert_eq!(out["gc_frees_basis"], "gc plan", "{out}");
    let announced = out["gc_frees_bytes"].as_u64().unwrap();
    let freed = gc_bytes_freed(&spool);
    assert!(
        within_10_percent(announced, freed),
        "forget announced {announced} bytes, gc freed {freed}"
    );
}

#[test]
fn prune_announces_nothing_to_free_when_kept_dumps_reference_every_chunk() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    // A second level 0 of the same tree: it references every chunk the first one owns.
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-02"]);
    let dry = json(&spool.run(["prune", "--keep-last", "1", "--dry-run", "--json"]));
    assert_eq!(ids(&dry["volumes"][0]["removed"]), [1]);
    assert!(dry["removed_owned_bytes"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(dry["gc_frees_bytes"], 0, "{dry}");
    assert_eq!(dry["gc_frees_basis"], "gc plan", "{dry}");
    let text = spool.run(["prune", "--keep-last", "1"]);
    assert!(
        text.contains("removed 1 dumps; `reel gc` will free 0 B"),
        "{text}"
    );
    assert_eq!(gc_bytes_freed(&spool), 0);
    // Nothing removed: nothing planned.
    let again = json(&spool.run(["prune", "--keep-last", "1", "--json"]));
    assert_eq!(again["gc_frees_basis"], "nothing removed", "{again}");
    assert_eq!(again["gc_frees_bytes"], 0, "{again}");
}
