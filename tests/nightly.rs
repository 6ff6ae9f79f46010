//! The nightly cycle end to end: two weeks of scheduled nights restore exactly, failures stay
//! with their volume, the thaw hook always runs, a second run the same day does nothing,
//! clones (store and copy) read only what changed, and what cron mails has no colour codes.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn date(day: u32) -> String {
    format!("2026-11-{day:02}")
}

/// Level a schedule names for a date in November 2026 (2026-11-01 is a Sunday; the day index
/// of a 7-letter schedule is the weekday, Sunday first).
fn scheduled(schedule: &str, day: u32) -> u8 {
    let letter = schedule.as_bytes()[((day - 1) % 7) as usize];
    match letter {
        b'F' => 0,
        b'I' => 1,
        d => d - b'0',
    }
}

fn volume_report<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {report}"))
}

#[test]
fn two_weeks_of_scheduled_nights_restore_exactly() {
    let work = tempfile::tempdir().unwrap();
    let schedules = [("home", "FIIIIII"), ("proj", "0325476")];
    let spool = Spool::new();
    for (name, sched) in schedules {
        let vol = work.path().join(name);
        rich_tree(&vol);
        spool.add_volume(name, &vol);
        spool.run(["volume", "set", name, "--schedule", sched]);
    }
    std::thread::sleep(Duration::from_millis(1100));

    // (volume, night, dump id, level) as the nights go.
    let mut made: Vec<(String, u32, u64, u8)> = Vec::new();
    for day in 1..=14u32 {
        for (name, _) in schedules {
            let vol = work.path().join(name);
            if day > 1 {
                mutate_day(&vol, day);
            }
            snapshot(&vol, &work.path().join(format!("{name}-{day}")));
        }
        let (ok, report) = spool.nightly_json(&["--date", &date(day)]);
        assert!(ok, "night {day}: {report}");
        assert_eq!(report["totals"]["succeeded"], 2, "night {day}: {report}");
        for (name, sched) in schedules {
            let v = volume_report(&report, name);
            let want = scheduled(sched, day);
            assert_eq!(v["level"], want, "night {day} {name}: {v}");
            assert_eq!(v["status"], "succeeded");
            made.push((
                name.to_string(),
                day,
                v["dump_id"].as_u64().unwrap(),
                v["dump_level"].as_u64().unwrap() as u8,
            ));
        }
        // The users' yesterday view is the clone just taken.
        let small = spool.run(["cat", "home@backup", "small.txt"]);
        assert_eq!(
            small.as_bytes(),
            std::fs::read(work.path().join(format!("home-{day}/small.txt"))).unwrap()
        );
    }

    let list = spool.list_json();
    for (name, sched) in schedules {
        let dumps: Vec<&serde_json::Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["volume"] == name)
            .collect();
        assert_eq!(dumps.len(), 14, "{name}");
        for (i, d) in dumps.iter().enumerate() {
            let day = i as u32 + 1;
            assert!(d["time"].as_str().unwrap().starts_with(&date(day)), "{d}");
            // The base: the latest earlier dump of a lower level (none for a level 0).
            let level = scheduled(sched, day);
            let lower = dumps[..i]
                .iter()
                .rev()
                .find(|p| (p["level"].as_u64().unwrap() as u8) < level);
            let (want_level, want_base) = match lower {
                Some(p) => (level, p["id"].as_u64()),
                None => (0, None),
            };
            assert_eq!(d["level"], want_level, "{name} night {day}: {d}");
            assert_eq!(d["base"].as_u64(), want_base, "{name} night {day}: {d}");
        }
    }
    for (name, day, id, _) in &made {
        let to = work.path().join(format!("restore-{name}-{day}"));
        spool.run([
            "restore",
            name,
            "--dump",
            &id.to_string(),
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_trees_equal(&work.path().join(format!("{name}-{day}")), &to);
    }
    spool.run(["check", "--read-data"]);
}

#[test]
fn failures_stay_with_their_volume_and_thaw_always_runs() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    let marker = work.path().join("thawed");
    for name in ["good", "badfreeze", "gone", "badsnap", "idle"] {
        let vol = work.path().join(name);
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("f.txt"), name.repeat(100)).unwrap();
        spool.add_volume(name, &vol);
        if name != "idle" {
            spool.run(["volume", "set", name, "--schedule", "F"]);
        }
    }
    let thaw = format!("echo \"$REEL_VOLUME\" >> {}", marker.display());
    spool.run([
        "volume",
        "set",
        "badfreeze",
        "--freeze-cmd",
        "echo cannot quiesce the database >&2; exit 3",
        "--thaw-cmd",
        &thaw,
    ]);
    spool.run([
        "volume",
        "set",
        "badsnap",
        "--freeze-cmd",
        "true",
        "--thaw-cmd",
        &thaw,
        "--clone",
        "hook",
        "--snapshot-cmd",
        "echo no space for a snapshot >&2; exit 1",
    ]);
    std::fs::remove_dir_all(work.path().join("gone")).unwrap();

    let (ok, report) = spool.nightly_json(&["--date", &date(2)]);
    assert!(!ok, "a failed volume makes the exit status 1");
    assert_eq!(volume_report(&report, "good")["status"], "succeeded");
    for (name, phase, says) in [
        ("badfreeze", "clone", "cannot quiesce the database"),
        ("gone", "clone", "cannot be read"),
        ("badsnap", "clone", "no space for a snapshot"),
    ] {
        let v = volume_report(&report, name);
        assert_eq!(v["status"], "failed", "{v}");
        assert_eq!(v["phase"], phase, "{v}");
        assert_eq!(v["attempts"], 2, "the retry pass ran: {v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(says), "{name}: {err}");
        assert!(err.contains(name), "the error names the volume: {err}");
    }
    assert_eq!(report["unscheduled"], serde_json::json!(["idle"]));
    // The thaw hook ran after each try of both hooked volumes (two tries each).
    let thawed = std::fs::read_to_string(&marker).unwrap();
    let mut lines: Vec<&str> = thawed.lines().collect();
    lines.sort();
    assert_eq!(lines, ["badfreeze", "badfreeze", "badsnap", "badsnap"]);
    // The report was saved in logs/, as text and as JSON.
    let logs: Vec<String> = std::fs::read_dir(spool.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(logs.iter().any(|n| n.ends_with(".txt")), "{logs:?}");
    assert!(logs.iter().any(|n| n.ends_with(".json")), "{logs:?}");
    let txt = logs.iter().find(|n| n.ends_with(".txt")).unwrap();
    let text = std::fs::read_to_string(spool.path().join("logs").join(txt)).unwrap();
    assert!(
        text.contains("FAILED (3)") && text.contains("succeeded (1)"),
        "{text}"
    );
    assert!(
        text.contains("no schedule (not dumped by nightly): idle"),
        "{text}"
    );
}

#[test]
fn thaw_runs_after_sigterm_and_the_spool_stays_usable() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("a"), b"a").unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let frozen = work.path().join("frozen");
    let thawed = work.path().join("thawed");
    spool.run([
        "volume",
        "set",
        "v",
        "--freeze-cmd",
        &format!("touch {}", frozen.display()),
        "--thaw-cmd",
        &format!("echo thawed >> {}", thawed.display()),
        "--clone",
        "hook",
        "--snapshot-cmd",
        "sleep 60",
    ]);
    let child = spool
        .cmd()
        .args(["clone", "v"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !frozen.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the freeze hook never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "reel stopped the snapshot hook instead of waiting for it"
    );
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{out:?}");
    assert_eq!(std::fs::read_to_string(&thawed).unwrap(), "thawed\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted by signal 15"),
        "{out:?}"
    );
    // Nothing was recorded, and the spool takes the next clone.
    spool.run([
        "volume",
        "set",
        "v",
        "--snapshot-cmd",
        &format!("echo {}", vol.display()),
    ]);
    spool.run(["backup", "v", "--level", "0"]);
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);
}

#[test]
fn a_second_nightly_the_same_day_is_a_no_op() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["volume", "set", "v", "--schedule", "FIIIIII"]);
    let (ok, first) = spool.nightly_json(&["--date", &date(3)]);
    assert!(ok, "{first}");
    let (ok, again) = spool.nightly_json(&["--date", &date(3)]);
    assert!(ok, "{again}");
    let v = volume_report(&again, "v");
    assert_eq!(v["status"], "skipped", "{v}");
    assert!(
        v["phase"].as_str().unwrap().contains("already dumped"),
        "{v}"
    );
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);
    let (ok, forced) = spool.nightly_json(&["--date", &date(3), "--force"]);
    assert!(ok, "{forced}");
    assert_eq!(volume_report(&forced, "v")["status"], "succeeded");
    assert_eq!(spool.list_json().as_array().unwrap().len(), 2);
}

/// Bytes the clone read, from `reel clone`'s summary line.
fn clone_read(out: &str) -> String {
    out.lines()
        .find(|l| l.contains(" read, "))
        .and_then(|l| l.split(" logical, ").nth(1))
        .and_then(|r| r.split(" read").next())
        .unwrap_or_else(|| panic!("no read figure in {out}"))
        .to_string()
}

#[test]
fn a_store_clone_of_an_unchanged_volume_reads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    std::thread::sleep(Duration::from_millis(1100));
    let first = spool.run(["clone", "v", "--date", &date(1)]);
    assert_ne!(clone_read(&first), "0 B", "{first}");
    spool.run(["dump", "v", "--level", "0"]);
    let second = spool.run(["clone", "v", "--date", &date(2)]);
    assert_eq!(clone_read(&second), "0 B", "{second}");
    assert!(second.contains("frozen for"), "{second}");
    // The clone of the unchanged volume differs in nothing from the dump before it.
    let diff: serde_json::Value =
        serde_json::from_str(&spool.run(["diff", "v", &date(1), "backup", "--json"])).unwrap();
    assert_eq!(diff["changes"], serde_json::json!([]), "{diff}");
    // A clone not dumped yet is what `dump` takes, and what NAME@backup shows.
    mutate_day(&vol, 1);
    let ls = spool.run(["ls", "v@backup", "--json"]);
    assert!(!ls.contains("daily/d1"), "the clone predates the change");
    let out = spool.run(["dump", "v", "--level", "1"]);
    assert!(out.contains("from         its store clone"), "{out}");
    let list = spool.list_json();
    assert!(list[1]["time"].as_str().unwrap().starts_with(&date(2)));
    // With no new clone, the next dump reads the live volume again.
    let out = spool.run(["dump", "v", "--level", "1", "--date", &date(3)]);
    assert!(!out.contains("from "), "{out}");
}

#[test]
fn copy_clones_dump_exactly_and_reuse_unchanged_files() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["volume", "set", "v", "--clone", "copy"]);
    std::thread::sleep(Duration::from_millis(1100));
    snapshot(&vol, &work.path().join("day1"));
    spool.run(["backup", "v", "--level", "0", "--date", &date(1)]);
    // Unchanged: the copy's dump takes every file from the stat cache (the stat map gives it
    // the volume's inodes and ctimes, not the copy's).
    snapshot(&vol, &work.path().join("day2"));
    spool.run(["backup", "v", "--level", "1", "--date", &date(2)]);
    mutate_day(&vol, 3);
    snapshot(&vol, &work.path().join("day3"));
    spool.run(["backup", "v", "--level", "1", "--date", &date(3)]);
    let list = spool.list_json();
    assert_eq!(list[1]["read_bytes"], 0, "{}", list[1]);
    assert!(list[2]["read_bytes"].as_u64().unwrap() > 0, "{}", list[2]);
    for day in 1..=3u64 {
        let to = work.path().join(format!("r{day}"));
        spool.run([
            "restore",
            "v",
            "--dump",
            &day.to_string(),
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_trees_equal(&work.path().join(format!("day{day}")), &to);
    }
    // Only the latest clone's directory is kept.
    let clones: Vec<_> = std::fs::read_dir(spool.path().join("clones/v"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(clones.len(), 2, "one tree and its stat map: {clones:?}");
}

#[test]
fn the_freeze_lock_waits_for_writers_and_names_itself() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("a"), b"a").unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["volume", "set", "v", "--hook-timeout", "1"]);
    let lock = spool.path().join("locks/v.freeze");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // A cooperating writer holds the lock shared for longer than the timeout.
    let mut writer = std::process::Command::new("flock")
        .arg("-s")
        .arg(&lock)
        .args(["sleep", "5"])
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = spool.fail(["clone", "v"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("v.freeze"), "{err}");
    // flock's child (sleep) holds the lock too: end the whole group.
    unsafe { libc::kill(-(writer.id() as i32), libc::SIGKILL) };
    writer.wait().unwrap();
    spool.run(["clone", "v"]);
}

#[test]
fn reflink_where_unsupported_suggests_copy() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("a"), b"some data").unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["volume", "set", "v", "--clone", "reflink"]);
    let out = spool.cmd().args(["clone", "v"]).output().unwrap();
    if out.status.success() {
        // A filesystem with reflinks (btrfs, xfs): the clone must then hold the data.
        spool.run(["dump", "v", "--level", "0"]);
        assert_eq!(spool.run(["cat", "v", "a"]), "some data");
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--clone copy"), "{err}");
        assert!(
            !spool.path().join("clones/v").exists()
                || std::fs::read_dir(spool.path().join("clones/v"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }
}

#[test]
fn hook_clones_dump_the_snapshot_and_release_the_one_they_replace() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let snaps = work.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let released = work.path().join("released");
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    // A stand-in for an LVM/btrfs/ZFS snapshot: an exact copy, named by the time it was taken.
    let snapshot_cmd = format!(
        "d={}/$(date +%s%N); cp -a \"$REEL_PATH\" \"$d\" && echo \"$d\"",
        snaps.display()
    );
    let release_cmd = format!(
        "echo \"$REEL_SNAPSHOT\" >> {} && rm -rf \"$REEL_SNAPSHOT\"",
        released.display()
    );
    spool.run([
        "volume",
        "set",
        "v",
        "--clone",
        "hook",
        "--snapshot-cmd",
        &snapshot_cmd,
        "--release-cmd",
        &release_cmd,
    ]);
    snapshot(&vol, &work.path().join("day1"));
    spool.run(["backup", "v", "--level", "0", "--date", &date(1)]);
    let first: Vec<_> = std::fs::read_dir(&snaps).unwrap().collect();
    assert_eq!(first.len(), 1);
    mutate_day(&vol, 2);
    snapshot(&vol, &work.path().join("day2"));
    spool.run(["backup", "v", "--level", "1", "--date", &date(2)]);
    // The first snapshot was released once the second was recorded; the second stays as the
    // users' yesterday view.
    let released = std::fs::read_to_string(&released).unwrap();
    assert_eq!(released.lines().count(), 1, "{released}");
    assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 1);
    for day in 1..=2u64 {
        let to = work.path().join(format!("r{day}"));
        spool.run([
            "restore",
            "v",
            "--dump",
            &day.to_string(),
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_trees_equal(&work.path().join(format!("day{day}")), &to);
    }
}

/// The thaw hook runs once after a freeze hook that succeeded, and also after one that failed
/// (it may have frozen part way), told which by `REEL_FREEZE`; a failed freeze fails the
/// backup with an error naming the hook and its exit status, and records nothing.
#[test]
fn thaw_runs_once_after_a_freeze_and_after_a_failed_one_knowing_which() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("a"), b"a").unwrap();
    let log = work.path().join("hooks.log");
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let thaw = format!("echo \"THAW $REEL_FREEZE\" >> {}", log.display());
    spool.run([
        "volume",
        "set",
        "v",
        "--freeze-cmd",
        &format!("echo FREEZE >> {}", log.display()),
        "--thaw-cmd",
        &thaw,
    ]);
    spool.run(["backup", "v", "--level", "0"]);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "FREEZE\nTHAW ok\n");
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);

    std::fs::remove_file(&log).unwrap();
    spool.run([
        "volume",
        "set",
        "v",
        "--freeze-cmd",
        &format!("echo FREEZE >> {}; exit 4", log.display()),
    ]);
    let (code, err) = spool.fail(["backup", "v", "--level", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("volume v: freeze hook") && err.contains("exit status 4"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "FREEZE\nTHAW failed\n"
    );
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);
}

/// Warnings and errors written to a file (a log, cron's mail) carry no colour codes; on a
/// terminal they are coloured unless `NO_COLOR` is set to a non-empty value.
#[test]
fn no_colour_codes_in_log_files_nor_with_no_color() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("gone");
    std::fs::create_dir_all(&vol).unwrap();
    let spool = Spool::new();
    spool.add_volume("gone", &vol);
    spool.run(["volume", "set", "gone", "--schedule", "F"]);
    std::fs::remove_dir(&vol).unwrap();

    // stderr to a file, as `reel -q nightly >log 2>&1` from cron.
    let log = work.path().join("nightly.log");
    let status = spool
        .cmd()
        .args(["-q", "nightly"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read(&log).unwrap();
    let shown = String::from_utf8_lossy(&text);
    assert!(
        shown.contains("WARN") && shown.contains("volume gone"),
        "no warning was logged: {shown}"
    );
    assert!(!text.contains(&0x1b), "colour codes in the log: {shown:?}");
    // A usage error (clap's) in a file: the same.
    let status = spool
        .cmd()
        .args(["dump", "gone", "--level", "12"])
        .env_remove("NO_COLOR")
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let text = std::fs::read(&log).unwrap();
    assert!(!text.is_empty() && !text.contains(&0x1b), "{text:?}");

    // On a terminal (script(1) gives reel one): colour, unless NO_COLOR is set non-empty.
    let on_terminal = |no_color: Option<&str>| -> Option<Vec<u8>> {
        let line = format!(
            "'{}' --spool '{}' -q nightly",
            env!("CARGO_BIN_EXE_reel"),
            spool.path().display()
        );
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env_remove("REEL_SPOOL")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().ok()?;
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(shown.contains("WARN"), "{shown}");
        Some(out.stdout)
    };
    let Some(coloured) = on_terminal(None) else {
        println!("skipped the terminal part: no script(1) here");
        return;
    };
    assert!(coloured.contains(&0x1b), "no colour on a terminal");
    assert!(on_terminal(Some("")).unwrap().contains(&0x1b));
    let plain = on_terminal(Some("1")).unwrap();
    assert!(
        !plain.contains(&0x1b),
        "colour despite NO_COLOR=1: {:?}",
        String::from_utf8_lossy(&plain)
    );
}

/// A failure that a second try cannot mend (a usage error: the volume's latest dump is dated
/// after tonight) is not retried, and is told once, naming the volume once.
#[test]
fn a_permanent_failure_is_not_retried_and_is_told_once() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("proj");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), b"data").unwrap();
    let spool = Spool::new();
    spool.add_volume("proj", &vol);
    spool.run(["volume", "set", "proj", "--schedule", "F"]);
    spool.run([
        "dump",
        "proj",
        "--level",
        "0",
        "--date",
        "2099-01-01",
        "--force-date",
    ]);
    let out = spool
        .cmd()
        .args(["-q", "nightly", "--json"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = volume_report(&report, "proj");
    assert_eq!(v["attempts"], 1, "{report}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("not later than the latest dump"), "{error}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("not later than the latest dump").count(),
        1,
        "told more than once: {stderr}"
    );
    assert!(
        !stderr.contains("clone: volume proj:") && !stderr.contains("dump: volume proj:"),
        "the volume is named twice: {stderr}"
    );
}

/// `n` files of 4 KiB in `vol`.
fn numbered_files(vol: &std::path::Path, n: usize, seed: u64) {
    std::fs::create_dir_all(vol).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..n {
        std::fs::write(vol.join(format!("f{i:02}")), rng.bytes(4096)).unwrap();
    }
}

/// An emptied volume and a mostly deleted one (a `store` clone, refused at its clone, and a
/// `copy` clone, refused at its dump) fail their night with the shrink guard's message, once
/// (a second try would find the same tree), while the other volumes go on; the users'
/// yesterday view keeps the last good clone; `--allow-shrink` dumps them.
#[test]
fn a_shrunk_volume_fails_its_night_alone_and_is_not_retried() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    let names = ["good", "emptied", "shrunk", "copyshrunk"];
    for name in names {
        let vol = work.path().join(name);
        numbered_files(&vol, 10, name.len() as u64);
        spool.add_volume(name, &vol);
        spool.run(["volume", "set", name, "--schedule", "FIIIIII"]);
    }
    spool.run(["volume", "set", "copyshrunk", "--clone", "copy"]);
    // "good" as a volume added before reel recorded filesystems: its night records it.
    let toml = spool.path().join("reel.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let start = text.find("[volumes.good.filesystem]").expect(&text);
    let end = start + text[start..].find("\n\n").unwrap() + 2;
    std::fs::write(&toml, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let (ok, report) = spool.nightly_json(&["--date", &date(1)]);
    assert!(ok, "{report}");
    let notes = volume_report(&report, "good")["notes"].to_string();
    assert!(
        notes.contains("recorded the filesystem of its root"),
        "{notes}"
    );
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("[volumes.good.filesystem]"), "{text}");

    let vol = |name: &str| work.path().join(name);
    for i in 0..10 {
        std::fs::remove_file(vol("emptied").join(format!("f{i:02}"))).unwrap();
    }
    for name in ["shrunk", "copyshrunk"] {
        for i in 0..6 {
            std::fs::remove_file(vol(name).join(format!("f{i:02}"))).unwrap();
        }
    }
    std::fs::write(vol("good").join("new"), b"a new file").unwrap();
    let (ok, report) = spool.nightly_json(&["--date", &date(2)]);
    assert!(!ok, "a refused volume makes the night fail: {report}");
    assert_eq!(volume_report(&report, "good")["status"], "succeeded");
    assert_eq!(volume_report(&report, "good")["files"], 11);
    for (name, phase, says) in [
        ("emptied", "clone", "is empty"),
        ("shrunk", "clone", "40% of the files"),
        ("copyshrunk", "dump", "40% of the files"),
    ] {
        let v = volume_report(&report, name);
        assert_eq!(v["status"], "failed", "{v}");
        assert_eq!(v["phase"], phase, "{v}");
        assert_eq!(v["attempts"], 1, "not retried: {v}");
        let err = v["error"].as_str().unwrap();
        assert!(
            err.contains(says) && err.contains(&format!("volume {name}")),
            "{name}: {err}"
        );
    }
    // Only the good volume got a dump of the 2nd; the store clone of the shrunk volume was not
    // recorded, so its users still see the 1st's tree.
    let days: Vec<(String, String)> = spool
        .list_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let v = d["volume"].as_str().unwrap().to_string();
            (v, d["time"].as_str().unwrap()[..10].to_string())
        })
        .collect();
    assert_eq!(
        days.iter().filter(|(_, t)| *t == date(2)).count(),
        1,
        "{days:?}"
    );
    let listed = spool.run(["ls", "shrunk@backup"]);
    assert!(listed.contains("f00") && listed.contains("f05"), "{listed}");

    let (ok, report) = spool.nightly_json(&["--date", &date(3), "--allow-shrink"]);
    assert!(ok, "{report}");
    assert_eq!(volume_report(&report, "emptied")["files"], 0);
    assert_eq!(volume_report(&report, "shrunk")["files"], 4);
    assert_eq!(volume_report(&report, "copyshrunk")["files"], 4);
}

/// `nightly` removes its own saved reports older than keep_reports_days (by the time in their
/// names), keeps the recent ones and tonight's, never touches other files in logs/, and keeps
/// everything with 0.
#[test]
fn nightly_removes_its_old_reports_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("v");
    numbered_files(&vol, 2, 7);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["volume", "set", "v", "--schedule", "F"]);
    let toml = spool.path().join("reel.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let ten = text.replace("keep_reports_days = 60", "keep_reports_days = 10");
    assert_ne!(
        ten, text,
        "reel.toml has no default keep_reports_days:\n{text}"
    );
    std::fs::write(&toml, &ten).unwrap();

    let logs = spool.path().join("logs");
    let now = chrono::Local::now().naive_local();
    let stamp = |days: i64| {
        (now - chrono::Duration::days(days))
            .format("%Y%m%dT%H%M%S")
            .to_string()
    };
    let old = [
        format!("nightly-2026-01-01-{}.txt", stamp(11)),
        format!("nightly-2026-01-01-{}.json", stamp(11)),
        format!("nightly-2025-06-30-{}.json", stamp(400)),
    ];
    let recent = [
        format!("nightly-2026-01-09-{}.txt", stamp(9)),
        format!("nightly-2026-01-09-{}.json", stamp(9)),
    ];
    let others = [
        "notes.txt".to_string(),
        "nightly-old.txt".to_string(),
        format!("nightly-2026-01-01-{}.log", stamp(30)),
        format!("nightly-2026-01-01-{}.txt.bak", stamp(30)),
        format!("dump-{}.json", stamp(30)),
    ];
    for name in old.iter().chain(&recent).chain(&others) {
        std::fs::write(logs.join(name), b"{}").unwrap();
    }

    let out = spool.run(["nightly"]);
    assert!(
        out.contains("removed 3 saved report file(s) older than 10 days"),
        "{out}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &old {
        assert!(!left.contains(name), "{name} was kept: {left:?}");
    }
    for name in recent.iter().chain(&others) {
        assert!(left.contains(name), "{name} was removed: {left:?}");
    }
    // Tonight's report is there, as text and JSON.
    left.retain(|n| !recent.contains(n) && !others.contains(n));
    assert_eq!(left.len(), 2, "{left:?}");

    // 0 keeps every report.
    std::fs::write(
        &toml,
        ten.replace("keep_reports_days = 10", "keep_reports_days = 0"),
    )
    .unwrap();
    let ancient = format!("nightly-2020-01-01-{}.txt", stamp(2000));
    std::fs::write(logs.join(&ancient), b"").unwrap();
    let out = spool.run(["nightly", "--force"]);
    assert!(!out.contains("removed"), "{out}");
    assert!(logs.join(&ancient).exists());
}

/// The systemd units in tools/systemd/ pass `systemd-analyze verify` (where it is installed)
/// as an instance for a spool, with reel's binary and man pages where the units expect them,
/// and run `reel nightly` for the instance's spool with a persistent, randomized timer.
#[test]
fn the_systemd_units_verify() {
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd");
    let service = std::fs::read_to_string(units.join("reel-nightly@.service")).unwrap();
    let timer = std::fs::read_to_string(units.join("reel-nightly@.timer")).unwrap();
    assert!(
        service.contains("ExecStart=/usr/local/sbin/reel --spool %f -q nightly"),
        "{service}"
    );
    assert!(service.contains("RequiresMountsFor=%f"), "{service}");
    assert!(timer.contains("Persistent=true"), "{timer}");
    assert!(timer.contains("RandomizedDelaySec="), "{timer}");
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let man = work.path().join("man");
    std::fs::create_dir_all(man.join("man1")).unwrap();
    run_ok(reel().arg("man").arg(man.join("man1")));
    let exe = env!("CARGO_BIN_EXE_reel");
    let instance = work.path().join("reel-nightly@backup-spool.service");
    std::fs::write(&instance, service.replace("/usr/local/sbin/reel", exe)).unwrap();
    let timer_instance = work.path().join("reel-nightly@backup-spool.timer");
    std::fs::write(&timer_instance, &timer).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .arg(&timer_instance)
        .env("MANPATH", &man)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
