//! Dump schedules through the `reel` command line: `schedule import` of a Coda dumplist (all or
//! nothing, errors by line number), `schedule show` (levels per local date, `--json`),
//! `volume add/set` with schedule, clone method and hook flags, and time zones.
//!
//! Why it is built this way: the day rule itself is unit-tested in src/schedule.rs; these tests
//! pin down what an admin sees: that an import either sets every schedule or changes not one
//! byte of reel.toml, that the JSON carries the documented fields, and that "which day is it" is
//! decided by the local calendar (`TZ`), never by UTC. For the last point the tests run the
//! binary under Pacific/Kiritimati (UTC+14) and Pacific/Pago_Pago (UTC-11): at any instant the
//! two are on different dates, and each must agree with `date +%F` under the same `TZ`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use reel::schedule::Schedule;
use serde_json::Value;

const EAST: &str = "Pacific/Kiritimati";
const WEST: &str = "Pacific/Pago_Pago";

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON: {e}\n{out}"))
}

/// `reel --spool DIR ARGS...` under time zone `tz`, which must succeed; returns stdout.
fn run_tz(spool: &Spool, tz: &str, args: &[&str]) -> String {
    run_ok(spool.cmd().env("TZ", tz).args(args))
}

/// A spool with volumes `home`, `src` and `plain` (all backing up the same directory).
fn three_volumes(dir: &Path) -> Spool {
    let spool = Spool::new();
    for v in ["home", "src", "plain"] {
        spool.add_volume(v, dir);
    }
    spool
}

/// `schedule show --json` rows by volume name.
fn show(spool: &Spool, tz: &str, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["schedule", "show", "--json"];
    a.extend_from_slice(args);
    json(&run_tz(spool, tz, &a))
        .as_array()
        .expect("an array")
        .clone()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["volume"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
}

fn levels(r: &Value) -> Vec<(String, u64)> {
    r["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            (
                d["date"].as_str().expect("date").to_string(),
                d["level"].as_u64().expect("level"),
            )
        })
        .collect()
}

#[test]
fn import_sets_schedules_seen_by_volume_list_and_schedule_show() {
    let work = tempfile::tempdir().unwrap();
    let spool = three_volumes(work.path());
    let list = work.path().join("dumplist");
    fs::write(
        &list,
        "# Coda dumplist: volume, schedule, comment\n\
         home  FIIIIII  user homes\n\
         \n\
         src   0325476  # the sources\n",
    )
    .unwrap();
    let out = spool.run(["schedule", "import", list.to_str().unwrap()]);
    assert!(out.contains("home") && out.contains("FIIIIII"), "{out}");
    assert!(out.contains("set 2 schedules"), "{out}");

    let vols = json(&spool.run(["volume", "list", "--json"]));
    let by = |n: &str| {
        vols.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{vols}"))
            .clone()
    };
    assert_eq!(by("home")["schedule"], "FIIIIII");
    assert_eq!(by("src")["schedule"], "0325476");
    assert_eq!(
        by("plain")["schedule"],
        Value::Null,
        "not in the file: kept"
    );
    assert_eq!(by("home")["clone"], "store");

    // 2026-11-22 is a Sunday: the first letter.
    let rows = show(&spool, "UTC", &["--date", "2026-11-22", "--days", "8"]);
    assert_eq!(rows.len(), 3);
    let dates: Vec<String> = (22..=29).map(|d| format!("2026-11-{d}")).collect();
    let home = levels(row(&rows, "home"));
    let src = levels(row(&rows, "src"));
    assert_eq!(
        home,
        dates
            .iter()
            .cloned()
            .zip([0, 1, 1, 1, 1, 1, 1, 0])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        src,
        dates
            .iter()
            .cloned()
            .zip([0, 3, 2, 5, 4, 7, 6, 0])
            .collect::<Vec<_>>()
    );
    assert_eq!(row(&rows, "src")["schedule"], "0325476");
    let plain = row(&rows, "plain");
    assert_eq!(plain["schedule"], Value::Null);
    assert_eq!(plain["days"], Value::Array(vec![]));

    // The text table: a column per day, and the volume without a schedule says so.
    let text = run_tz(&spool, "UTC", &["schedule", "show", "--date", "2026-11-22"]);
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("Sun 11-22") && header.contains("Sat 11-28"),
        "{text}"
    );
    let src_line = text.lines().find(|l| l.starts_with("src")).expect(&text);
    let cells: Vec<&str> = src_line.split_whitespace().collect();
    assert_eq!(
        cells,
        ["src", "0325476", "0", "3", "2", "5", "4", "7", "6"],
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("plain") && l.contains("no schedule")),
        "{text}"
    );
}

#[test]
fn a_dumplist_with_a_bad_line_changes_nothing_and_names_the_line() {
    let work = tempfile::tempdir().unwrap();
    let spool = three_volumes(work.path());
    spool.run(["volume", "set", "plain", "--schedule", "F"]);
    let settings = spool.path().join("reel.toml");
    let before = fs::read(&settings).unwrap();

    let list = work.path().join("dumplist");
    fs::write(&list, "home FIIIIII\nsrc 0325476\nplain FIIXIII\n").unwrap();
    let (code, err) = spool.fail(["schedule", "import", list.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("'X'") && err.contains("position 4"), "{err}");
    assert!(err.contains(list.to_str().unwrap()), "{err}");
    assert!(
        !err.contains("line 1") && !err.contains("line 2"),
        "good lines are not errors: {err}"
    );
    assert_eq!(fs::read(&settings).unwrap(), before, "reel.toml changed");

    // A volume that is not in the spool, and a second bad line: both named, nothing changed.
    fs::write(&list, "home FIIIIII\nghost F\nsrc\n").unwrap();
    let (code, err) = spool.fail(["schedule", "import", list.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2") && err.contains("ghost"), "{err}");
    assert!(
        err.contains("line 3") && err.contains("no schedule"),
        "{err}"
    );
    assert_eq!(fs::read(&settings).unwrap(), before, "reel.toml changed");

    // A missing file is a plain failure naming it.
    let gone = work.path().join("no-such-list");
    let (code, err) = spool.fail(["schedule", "import", gone.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-list"), "{err}");
    assert_eq!(fs::read(&settings).unwrap(), before, "reel.toml changed");
}

#[test]
fn volume_set_round_trips_every_flag() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    spool.run([
        "volume",
        "add",
        "v",
        work.path().to_str().unwrap(),
        "--schedule",
        "fiiiiii",
        "--clone",
        "copy",
        "--freeze-cmd",
        "sync",
    ]);
    let get = || {
        let vols = json(&spool.run(["volume", "list", "--json"]));
        vols.as_array().unwrap()[0].clone()
    };
    let v = get();
    assert_eq!(v["schedule"], "FIIIIII", "stored canonical: {v}");
    assert_eq!(v["clone"], "copy");
    assert_eq!(v["freeze_cmd"], "sync");
    assert_eq!(v["thaw_cmd"], Value::Null);
    assert_eq!(v["hook_timeout"], 300, "the default: {v}");

    spool.run([
        "volume",
        "set",
        "v",
        "--schedule",
        "0325476",
        "--clone",
        "hook",
        "--freeze-cmd",
        "fsfreeze -f /srv",
        "--thaw-cmd",
        "fsfreeze -u /srv",
        "--snapshot-cmd",
        "snap make",
        "--release-cmd",
        "snap drop \"$REEL_SNAPSHOT\"",
        "--hook-timeout",
        "42",
    ]);
    let v = get();
    assert_eq!(v["schedule"], "0325476");
    assert_eq!(v["clone"], "hook");
    assert_eq!(v["freeze_cmd"], "fsfreeze -f /srv");
    assert_eq!(v["thaw_cmd"], "fsfreeze -u /srv");
    assert_eq!(v["snapshot_cmd"], "snap make");
    assert_eq!(v["release_cmd"], "snap drop \"$REEL_SNAPSHOT\"");
    assert_eq!(v["hook_timeout"], 42);

    // The hook method may not lose its snapshot command; the refusal changes nothing.
    let settings = spool.path().join("reel.toml");
    let before = fs::read(&settings).unwrap();
    let (code, err) = spool.fail(["volume", "set", "v", "--snapshot-cmd", ""]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--snapshot-cmd"), "{err}");
    let (code, err) = spool.fail(["volume", "set", "v", "--schedule", "FIQ"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'Q'") && err.contains("position 3"), "{err}");
    let (code, err) = spool.fail(["volume", "set", "v", "--clone", "zfs"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("zfs") && err.contains("reflink"), "{err}");
    assert_eq!(fs::read(&settings).unwrap(), before, "reel.toml changed");

    // Empty strings clear hooks; --no-schedule clears the schedule; other settings stay.
    spool.run([
        "volume",
        "set",
        "v",
        "--no-schedule",
        "--clone",
        "store",
        "--snapshot-cmd",
        "",
        "--release-cmd",
        "",
        "--thaw-cmd",
        "",
    ]);
    let v = get();
    assert_eq!(v["schedule"], Value::Null);
    assert_eq!(v["clone"], "store");
    assert_eq!(v["snapshot_cmd"], Value::Null);
    assert_eq!(v["release_cmd"], Value::Null);
    assert_eq!(v["thaw_cmd"], Value::Null);
    assert_eq!(v["freeze_cmd"], "fsfreeze -f /srv");
    assert_eq!(v["hook_timeout"], 42);
    let text = fs::read_to_string(&settings).unwrap();
    assert!(
        !text.contains("schedule") && !text.contains("snapshot_cmd"),
        "{text}"
    );

    // add with --clone hook and no snapshot command adds nothing.
    let (code, err) = spool.fail([
        "volume",
        "add",
        "w",
        work.path().to_str().unwrap(),
        "--clone",
        "hook",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--snapshot-cmd"), "{err}");
    assert_eq!(
        json(&spool.run(["volume", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // An unknown volume is named.
    let (code, err) = spool.fail(["volume", "set", "nope", "--schedule", "F"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn a_given_date_is_a_local_date_in_every_time_zone() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    spool.add_volume("v", work.path());
    spool.run(["volume", "set", "v", "--schedule", "0325476"]);
    let east = show(&spool, EAST, &["--date", "2026-11-22", "--days", "3"]);
    let west = show(&spool, WEST, &["--date", "2026-11-22", "--days", "3"]);
    let want = vec![
        ("2026-11-22".to_string(), 0),
        ("2026-11-23".to_string(), 3),
        ("2026-11-24".to_string(), 2),
    ];
    assert_eq!(levels(row(&east, "v")), want);
    assert_eq!(levels(row(&west, "v")), want);
}

/// `date +%F` under `tz`.
fn date_in(tz: &str) -> String {
    let out = Command::new("date")
        .arg("+%F")
        .env("TZ", tz)
        .output()
        .expect("run date");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn today_is_the_local_date() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    spool.add_volume("v", work.path());
    // A 14-day cycle, so that the two zones' dates (always one or two days apart) differ in
    // level too.
    let letters = "F123456I234567";
    spool.run(["volume", "set", "v", "--schedule", letters]);
    let sched = Schedule::parse(letters).unwrap();
    let mut seen = Vec::new();
    for tz in [EAST, WEST] {
        // A local midnight may pass while the test runs: accept the date before or after.
        let before = date_in(tz);
        let rows = show(&spool, tz, &["--days", "1"]);
        let after = date_in(tz);
        let days = levels(row(&rows, "v"));
        assert_eq!(days.len(), 1, "{rows:?}");
        let (date, level) = &days[0];
        assert!(
            *date == before || *date == after,
            "TZ={tz}: reel says today is {date}, date(1) says {before}/{after}"
        );
        let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        assert_eq!(u64::from(sched.level_on(d)), *level, "TZ={tz} {date}");
        seen.push(date.clone());
    }
    // UTC+14 and UTC-11 are 25 hours apart: never the same date.
    assert_ne!(seen[0], seen[1], "the zones must see different dates");
}

#[test]
fn show_refuses_bad_arguments() {
    let spool = Spool::new();
    let (code, err) = spool.fail(["schedule", "show", "--days", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--days"), "{err}");
    let (code, err) = spool.fail(["schedule", "show", "--date", "someday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("someday"), "{err}");
    // An empty spool shows an empty array.
    assert_eq!(
        json(&spool.run(["schedule", "show", "--json"])),
        Value::Array(vec![])
    );
}
