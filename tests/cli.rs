//! The `reel` command line as a user meets it: spool creation, volume management, dumping,
//! listing, browsing (`ls`, `cat`), restoring, time arguments, exit codes and error messages.
//!
//! Why it is built this way: tests/history.rs, tests/dedup.rs and tests/safety.rs prove the
//! data promises (fidelity, dedup, crash safety); this file pins down the interface around
//! them, which README.md and docs/CLI.md document: exit status 0/1/2, messages that name the
//! thing at fault and what to do, `--json` field names, and the `--at` rules. Every test builds
//! a small tree of its own (at most a few MB) and runs the real binary, with `TZ=UTC` so dates
//! mean the same instants on every machine.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `reel --spool DIR ARGS...` with `TZ=UTC`.
fn cmd<S: AsRef<std::ffi::OsStr>>(spool: &Spool, args: &[S]) -> Command {
    let mut c = spool.cmd();
    c.env("TZ", "UTC").args(args);
    c
}

/// Runs `reel --spool DIR ARGS...` (TZ=UTC), which must succeed; returns stdout.
fn ok<S: AsRef<std::ffi::OsStr>>(spool: &Spool, args: &[S]) -> String {
    run_ok(&mut cmd(spool, args))
}

/// Runs `reel --spool DIR ARGS...` (TZ=UTC), which must fail; returns (exit code, stderr).
fn fail<S: AsRef<std::ffi::OsStr>>(spool: &Spool, args: &[S]) -> (i32, String) {
    run_fail(&mut cmd(spool, args))
}

/// Runs `reel --spool DIR ARGS...` (TZ=UTC) which must succeed; returns stdout as raw bytes.
fn ok_bytes<S: AsRef<std::ffi::OsStr>>(spool: &Spool, args: &[S]) -> Vec<u8> {
    let mut c = cmd(spool, args);
    let out = c.output().expect("run reel");
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn write(p: &Path, data: &[u8]) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, data).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file name (relative, sorted) under `root`, with each file's bytes (dirs: None).
fn contents(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push((rel, None));
                walk(root, &p, out);
            } else if md.is_file() {
                out.push((rel, Some(fs::read(&p).unwrap())));
            } else {
                out.push((rel, None));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// A mtime with nanoseconds that tests can find again in `ls --json` (2023-11-14T22:13:20Z).
const HELLO_MTIME: (i64, i64) = (1_700_000_000, 123_456_789);
const SPARSE_SIZE: u64 = 3 << 20;
const SPARSE_DATA_AT: u64 = 1 << 20;

/// A small volume with every common kind of entry:
///
/// `hello.txt` (0644, mtime HELLO_MTIME), `bin.dat` (200 KiB random, 0600), `script.sh` (0755),
/// `sparse.img` (3 MiB, 64 KiB of data at 1 MiB, holes around), `dir/inner.txt`,
/// `dir/sub/deep.txt`, `other/x.txt`, `empty_dir/`, `link` -> `hello.txt`,
/// `dangling` -> `nowhere/at/all`, `hl_a` = `hl_b` (one inode).
fn small_volume(root: &Path) {
    let mut rng = Rng::new(0xC11);
    fs::create_dir_all(root).unwrap();
    write(&root.join("hello.txt"), b"hello, reel\n");
    chmod(&root.join("hello.txt"), 0o644);
    write(&root.join("bin.dat"), &rng.bytes(200 * 1024));
    chmod(&root.join("bin.dat"), 0o600);
    write(&root.join("script.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&root.join("script.sh"), 0o755);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(root.join("sparse.img")).unwrap();
        f.seek(SeekFrom::Start(SPARSE_DATA_AT)).unwrap();
        f.write_all(&rng.bytes(64 * 1024)).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
    }
    write(&root.join("dir/inner.txt"), &rng.text(5000));
    write(&root.join("dir/sub/deep.txt"), b"deep\n");
    write(&root.join("other/x.txt"), b"other x\n");
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("dangling")).unwrap();
    write(&root.join("hl_a"), &rng.text(3000));
    fs::hard_link(root.join("hl_a"), root.join("hl_b")).unwrap();
    set_mtime(&root.join("hello.txt"), HELLO_MTIME.0, HELLO_MTIME.1);
}

/// A spool with volume `v` (a `small_volume`) dumped once at level 0 on 2026-11-01.
fn dumped() -> (tempfile::TempDir, PathBuf, Spool) {
    dumped_of(Kind::Plain)
}

/// [`dumped`] on a spool of `kind`.
fn dumped_of(kind: Kind) -> (tempfile::TempDir, PathBuf, Spool) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    small_volume(&vol);
    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    ok(
        &spool,
        &["dump", "v", "--level", "0", "--date", "2026-11-01"],
    );
    (work, vol, spool)
}

/// The rows of `reel ls --json`, by path.
fn ls_json(spool: &Spool, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["ls"];
    a.extend_from_slice(args);
    a.push("--json");
    let v = json(&ok(spool, &a));
    v.as_array().expect("ls --json gives an array").clone()
}

fn row<'a>(rows: &'a [Value], path: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in ls --json: {rows:?}"))
}

// ---------------------------------------------------------------------------------------------
// reel init and spool discovery
// ---------------------------------------------------------------------------------------------

#[test]
fn init_creates_a_spool_and_refuses_an_existing_one() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new/spool");
    let out = run_ok(reel().arg("--spool").arg(&dir).arg("init"));
    assert!(out.contains(s(&dir)), "init does not name the spool: {out}");
    assert!(dir.is_dir());
    // It is usable: an empty volume list.
    let v = json(&run_ok(
        reel()
            .arg("--spool")
            .arg(&dir)
            .args(["volume", "list", "--json"]),
    ));
    assert_eq!(v, Value::Array(vec![]));

    let before = contents(&dir);
    let (code, err) = run_fail(reel().arg("--spool").arg(&dir).arg("init"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already a reel spool"), "{err}");
    assert!(err.contains(s(&dir)), "{err}");
    // An empty pre-existing directory is fine.
    let empty = tempfile::tempdir().unwrap();
    run_ok(reel().arg("--spool").arg(empty.path()).arg("init"));
    // The refused init changed nothing in the first spool (settings, catalog).
    let after = contents(&dir);
    let names = |c: &[(PathBuf, Option<Vec<u8>>)]| -> Vec<PathBuf> {
        c.iter().map(|(p, _)| p.clone()).collect()
    };
    assert_eq!(names(&before), names(&after));
}

#[test]
fn init_refuses_a_non_empty_foreign_folder_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("precious.txt"), b"do not touch\n");
    write(&dir.path().join("sub/notes.md"), b"# notes\n");
    let before = contents(dir.path());
    let (code, err) = run_fail(reel().arg("--spool").arg(dir.path()).arg("init"));
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    assert!(err.contains(s(dir.path())), "{err}");
    assert_eq!(
        contents(dir.path()),
        before,
        "a refused init changed the folder"
    );
}

#[test]
fn init_without_a_spool_is_a_usage_error_naming_both_ways() {
    let (code, err) = run_fail(reel().arg("init"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--spool"), "{err}");
    assert!(err.contains("REEL_SPOOL"), "{err}");
    // The same for any command that needs a spool.
    let (code, err) = run_fail(reel().arg("list"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--spool") && err.contains("REEL_SPOOL"),
        "{err}"
    );
}

#[test]
fn reel_spool_environment_variable_works_in_place_of_the_option() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("spool");
    let vol = work.path().join("vol");
    write(&vol.join("a.txt"), b"a\n");
    run_ok(reel().env("REEL_SPOOL", &dir).arg("init"));
    assert!(dir.is_dir());
    run_ok(
        reel()
            .env("REEL_SPOOL", &dir)
            .args(["volume", "add", "v"])
            .arg(&vol),
    );
    run_ok(
        reel()
            .env("REEL_SPOOL", &dir)
            .env("TZ", "UTC")
            .args(["dump", "v", "--level", "0"]),
    );
    let list = json(&run_ok(
        reel().env("REEL_SPOOL", &dir).args(["list", "--json"]),
    ));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // --spool wins over the environment.
    let other = tempfile::tempdir().unwrap();
    let (_, err) = run_fail(
        reel()
            .env("REEL_SPOOL", &dir)
            .arg("--spool")
            .arg(other.path())
            .arg("list"),
    );
    assert!(err.contains(s(other.path())), "{err}");
}

#[test]
fn commands_on_a_directory_that_is_not_a_spool_name_it_and_reel_init() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("file.txt"), b"x");
    let missing = dir.path().join("does-not-exist");
    for target in [dir.path(), missing.as_path()] {
        for args in [
            vec!["list"],
            vec!["volume", "list"],
            vec!["volume", "add", "v", "/tmp"],
            vec!["dump", "v", "--level", "0"],
            vec!["ls", "v"],
            vec!["check"],
        ] {
            let (code, err) = run_fail(reel().arg("--spool").arg(target).args(&args));
            assert_ne!(code, 0);
            assert!(
                err.contains(s(target)),
                "{args:?}: the error does not name {}: {err}",
                target.display()
            );
            assert!(err.contains("reel"), "{err}");
            assert!(
                err.contains("init"),
                "{args:?}: the error does not suggest `reel init`: {err}"
            );
        }
    }
    // Nothing was created.
    assert!(!missing.exists(), "a command created the missing spool dir");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// reel volume
// ---------------------------------------------------------------------------------------------

#[test]
fn volume_list_json_has_name_path_dumps_latest() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    write(&a.join("f"), b"a");
    write(&b.join("f"), b"b");
    let spool = Spool::new();
    spool.add_volume("alpha", &a);
    spool.add_volume("beta", &b);
    ok(
        &spool,
        &["dump", "alpha", "--level", "0", "--date", "2026-11-01"],
    );
    ok(
        &spool,
        &[
            "dump",
            "alpha",
            "--level",
            "1",
            "--date",
            "2026-11-02T03:00:00Z",
        ],
    );
    let v = json(&ok(&spool, &["volume", "list", "--json"]));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let alpha = rows.iter().find(|r| r["name"] == "alpha").expect("alpha");
    let beta = rows.iter().find(|r| r["name"] == "beta").expect("beta");
    assert_eq!(alpha["path"], s(&fs::canonicalize(&a).unwrap()), "{alpha}");
    assert_eq!(beta["path"], s(&fs::canonicalize(&b).unwrap()), "{beta}");
    assert_eq!(alpha["dumps"], 2);
    assert_eq!(beta["dumps"], 0);
    assert_eq!(beta["latest"], Value::Null);
    let latest = alpha["latest"].as_str().expect("latest is a string");
    let t = chrono::DateTime::parse_from_rfc3339(latest)
        .unwrap_or_else(|e| panic!("latest {latest:?} is not RFC 3339: {e}"));
    assert_eq!(
        t.timestamp(),
        chrono::DateTime::parse_from_rfc3339("2026-11-02T03:00:00Z")
            .unwrap()
            .timestamp()
    );
    // The plain listing names both with their counts.
    let plain = ok(&spool, &["volume", "list"]);
    let line = plain
        .lines()
        .find(|l| l.starts_with("alpha"))
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(line.split_whitespace().any(|w| w == "2"), "{line}");
    assert!(plain.lines().any(|l| l.starts_with("beta")), "{plain}");
}

#[test]
fn volume_add_of_a_missing_path_or_a_file_is_refused_and_adds_nothing() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    let missing = work.path().join("no/such/dir");
    let (code, err) = fail(&spool, &["volume", "add", "v", s(&missing)]);
    assert_ne!(code, 0);
    assert!(err.contains(s(&missing)), "{err}");
    let file = work.path().join("plain.txt");
    write(&file, b"not a directory");
    let (code, err) = fail(&spool, &["volume", "add", "v", s(&file)]);
    assert_ne!(code, 0);
    assert!(err.contains(s(&file)), "{err}");
    assert!(err.contains("not a directory"), "{err}");
    let v = json(&ok(&spool, &["volume", "list", "--json"]));
    assert_eq!(v, Value::Array(vec![]), "a refused add left a volume");
}

#[test]
fn duplicate_and_bad_volume_names_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    spool.add_volume("home", work.path());
    let other = work.path().join("other");
    fs::create_dir(&other).unwrap();
    let (code, err) = fail(&spool, &["volume", "add", "home", s(&other)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("home") && err.contains("exists"), "{err}");
    for bad in ["../x", "", "a/b", ".hidden", "-dash"] {
        let (code, err) = fail(&spool, &["volume", "add", "--", bad, s(&other)]);
        assert_eq!(code, 2, "name {bad:?}: {err}");
        assert!(err.contains("name"), "name {bad:?}: {err}");
    }
    // Nothing but the first volume, whose path is unchanged.
    let v = json(&ok(&spool, &["volume", "list", "--json"]));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["name"], "home");
    assert_eq!(rows[0]["path"], s(&fs::canonicalize(work.path()).unwrap()));
    // Nothing was created outside the spool by the `../x` attempt.
    assert!(!spool.path().parent().unwrap().join("x").exists());
}

#[test]
fn volume_remove_is_refused_while_it_has_dumps_and_force_keeps_them_listed() {
    let (_work, _vol, spool) = dumped();
    let (code, err) = fail(&spool, &["volume", "remove", "v"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(err.contains("\"v\"") || err.contains("volume v"), "{err}");
    // It says what removing does, and does not claim the dumps become unreachable.
    assert!(
        err.contains("stay in the catalog") && !err.contains("only while"),
        "{err}"
    );
    assert_eq!(
        json(&ok(&spool, &["volume", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1,
        "a refused remove removed the volume"
    );
    let removed = ok(&spool, &["volume", "remove", "v", "--force"]);
    assert!(removed.contains("its 1 dump stays"), "{removed}");
    assert_eq!(
        json(&ok(&spool, &["volume", "list", "--json"])),
        Value::Array(vec![])
    );
    let list = json(&ok(&spool, &["list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["volume"], "v");
    let plain = ok(&spool, &["list"]);
    assert!(plain.lines().count() >= 2, "{plain}");
    // The dumps stay browsable.
    assert_eq!(ok(&spool, &["cat", "v", "hello.txt"]), "hello, reel\n");
    // A volume without dumps goes without --force; an unknown one is an error naming it.
    let empty = tempfile::tempdir().unwrap();
    spool.add_volume("w", empty.path());
    ok(&spool, &["volume", "remove", "w"]);
    let (code, err) = fail(&spool, &["volume", "remove", "nosuch"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nosuch"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// reel dump
// ---------------------------------------------------------------------------------------------

#[test]
fn dump_of_an_unknown_volume_or_a_bad_level_is_a_usage_error() {
    let spool = Spool::new();
    let (code, err) = fail(&spool, &["dump", "nosuch", "--level", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nosuch"), "{err}");
    let work = tempfile::tempdir().unwrap();
    spool.add_volume("v", work.path());
    for bad in ["10", "-1", "x"] {
        let (code, err) = fail(&spool, &["dump", "v", "--level", bad]);
        assert_eq!(code, 2, "level {bad}: {err}");
        assert!(err.contains("level"), "level {bad}: {err}");
    }
    let (code, err) = fail(&spool, &["dump", "v"]);
    assert_eq!(code, 2, "missing --level: {err}");
    assert_eq!(json(&ok(&spool, &["list", "--json"])), Value::Array(vec![]));
}

#[test]
fn dump_of_a_vanished_volume_path_fails_commits_nothing_and_recovers() {
    let (work, vol, spool) = dumped();
    let list_before = ok(&spool, &["list", "--json"]);
    let moved = work.path().join("moved-away");
    fs::rename(&vol, &moved).unwrap();
    let (code, err) = fail(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    // The exit status (1, a failure, not 2, bad usage) is pinned by the next test.
    assert_ne!(code, 0, "{err}");
    let canon_parent = fs::canonicalize(work.path()).unwrap();
    let canon_vol = canon_parent.join("vol");
    assert!(
        err.contains(s(&canon_vol)) || err.contains(s(&vol)),
        "the error does not name the volume path {}: {err}",
        vol.display()
    );
    assert_eq!(
        ok(&spool, &["list", "--json"]),
        list_before,
        "a failed dump changed the list"
    );
    ok(&spool, &["check"]);
    // Back in place, the same date works (the failed dump did not take it).
    fs::rename(&moved, &vol).unwrap();
    write(&vol.join("new.txt"), b"after the outage\n");
    let out = ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    assert!(out.contains("level 1"), "{out}");
    let list = json(&ok(&spool, &["list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["base"], list[0]["id"]);
    assert_eq!(ok(&spool, &["cat", "v", "new.txt"]), "after the outage\n");
    ok(&spool, &["check", "--read-data"]);
}

#[test]
fn dump_of_a_vanished_volume_path_exits_one() {
    let (work, vol, spool) = dumped();
    fs::rename(&vol, work.path().join("elsewhere")).unwrap();
    let (code, err) = fail(&spool, &["dump", "v", "--level", "1"]);
    assert_eq!(
        code, 1,
        "README: exit 1 for a failure, 2 for bad usage; the command was right: {err}"
    );
    assert!(err.contains(s(&vol)), "{err}");
}

#[test]
fn a_dump_on_a_pipe_prints_no_progress_and_nothing_on_stderr() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    small_volume(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let out = cmd(&spool, &["dump", "v", "--level", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "stderr of a successful dump on a pipe: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.contains(&0x1b) && !out.stdout.contains(&b'\r'),
        "escape codes on a pipe: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The summary the README promises.
    for word in [
        "files",
        "logical",
        "new chunks",
        "added",
        "dedup ",
        "compression ",
        "time",
    ] {
        assert!(stdout.contains(word), "summary lacks {word:?}: {stdout}");
    }
    // Restore and check on a pipe: the same.
    let target = work.path().join("r");
    for args in [
        vec!["restore", "v", "--to", s(&target)],
        vec!["check", "--read-data"],
    ] {
        let out = cmd(&spool, &args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.contains(&0x1b), "{args:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// reel list, reel show
// ---------------------------------------------------------------------------------------------

#[test]
fn list_has_a_header_and_a_row_per_dump_and_filters_by_volume() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    write(&a.join("f"), b"a");
    write(&b.join("f"), b"b");
    let spool = Spool::new();
    spool.add_volume("alpha", &a);
    spool.add_volume("beta", &b);
    for (vol, level, date) in [
        ("alpha", "0", "2026-11-01"),
        ("beta", "0", "2026-11-01"),
        ("alpha", "1", "2026-11-02"),
    ] {
        ok(&spool, &["dump", vol, "--level", level, "--date", date]);
    }
    let plain = ok(&spool, &["list"]);
    let lines: Vec<&str> = plain.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "header plus three rows:\n{plain}");
    let header = lines[0].to_lowercase();
    for col in ["id", "volume", "level"] {
        assert!(header.contains(col), "header lacks {col}: {}", lines[0]);
    }
    // One row per dump (the order across volumes is not promised; within one, by time).
    let row_of = |id: &str| -> Vec<&str> {
        let rows: Vec<&str> = lines[1..]
            .iter()
            .copied()
            .filter(|l| l.split_whitespace().next() == Some(id))
            .collect();
        assert_eq!(rows.len(), 1, "dump {id}: {rows:?}\n{plain}");
        rows[0].split_whitespace().collect()
    };
    let (r1, r2, r3) = (row_of("1"), row_of("2"), row_of("3"));
    assert!(
        r1.contains(&"alpha") && r1.contains(&"2026-11-01"),
        "{r1:?}"
    );
    assert!(r2.contains(&"beta") && r2.contains(&"2026-11-01"), "{r2:?}");
    assert!(
        r3.contains(&"alpha") && r3.contains(&"2026-11-02"),
        "{r3:?}"
    );
    let pos = |id: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(id))
    };
    assert!(
        pos("1") < pos("3"),
        "alpha's dumps out of time order:\n{plain}"
    );

    let only = ok(&spool, &["list", "alpha"]);
    let rows: Vec<&str> = only.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 2, "{only}");
    assert!(rows.iter().all(|r| r.contains("alpha")), "{only}");
    let j = json(&ok(&spool, &["list", "beta", "--json"]));
    assert_eq!(j.as_array().unwrap().len(), 1);
    assert_eq!(j[0]["volume"], "beta");
    assert_eq!(j[0]["id"], 2);
    // An unknown volume is an error, not an empty list.
    let (code, err) = fail(&spool, &["list", "gamma"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gamma"), "{err}");
}

#[test]
fn show_prints_volume_time_level_and_chain_and_a_missing_id_is_a_usage_error() {
    let (work, vol, spool) = dumped();
    write(&vol.join("day2.txt"), b"2");
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    write(&vol.join("day3.txt"), b"3");
    ok(
        &spool,
        &["dump", "v", "--level", "2", "--date", "2026-11-03"],
    );
    let out = ok(&spool, &["show", "3"]);
    let field = |name: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("show lacks {name}:\n{out}"))
            .to_string()
    };
    assert!(field("volume").contains(" v"), "{out}");
    assert!(field("time").contains("2026-11-03"), "{out}");
    assert!(field("level").contains('2'), "{out}");
    let chain = field("chain");
    let ids: Vec<&str> = chain
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(ids, ["1", "2", "3"], "chain: {chain}");
    assert!(
        field("source").contains(s(&fs::canonicalize(work.path()).unwrap())),
        "{out}"
    );
    let j = json(&ok(&spool, &["show", "3", "--json"]));
    assert_eq!(j["id"], 3);
    assert_eq!(j["volume"], "v");
    assert_eq!(j["level"], 2);
    assert_eq!(j["base"], 2);
    assert_eq!(j["chain"], serde_json::json!([1, 2, 3]));
    assert!(j["time"].as_str().unwrap().starts_with("2026-11-03"), "{j}");

    let (code, err) = fail(&spool, &["show", "99"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("99"), "{err}");
    let (code, _) = fail(&spool, &["show", "abc"]);
    assert_eq!(code, 2);
}

// ---------------------------------------------------------------------------------------------
// reel ls
// ---------------------------------------------------------------------------------------------

#[test]
fn ls_lists_every_path_with_its_mode_and_links() {
    let (_work, _vol, spool) = dumped();
    let out = ok(&spool, &["ls", "v"]);
    let line = |suffix: &str| -> &str {
        out.lines()
            .find(|l| l.ends_with(suffix))
            .unwrap_or_else(|| panic!("no line ending in {suffix:?}:\n{out}"))
    };
    assert!(line("hello.txt").starts_with("-rw-r--r--"), "{out}");
    assert!(line("bin.dat").starts_with("-rw-------"), "{out}");
    assert!(line("script.sh").starts_with("-rwxr-xr-x"), "{out}");
    assert!(line("dir/sub").starts_with('d'), "{out}");
    assert!(line("empty_dir").starts_with('d'), "{out}");
    assert!(line("link -> hello.txt").starts_with('l'), "{out}");
    assert!(line("dangling -> nowhere/at/all").starts_with('l'), "{out}");
    assert!(line("bin.dat").contains(&(200 * 1024).to_string()), "{out}");
    let hl = out
        .lines()
        .find(|l| l.contains("hl_b") || l.contains("hl_a"))
        .unwrap();
    assert!(hl.contains("hl_"), "{out}");
    assert!(
        out.contains("link to hl_a") || out.contains("link to hl_b"),
        "hard link not shown as a link:\n{out}"
    );
    // Every name of the volume, each once.
    for name in [
        "hello.txt",
        "bin.dat",
        "script.sh",
        "sparse.img",
        "dir/inner.txt",
        "dir/sub/deep.txt",
        "other/x.txt",
        "hl_a",
        "hl_b",
    ] {
        // Fields: mode uid gid size date time path [-> target | link to name].
        let n = out
            .lines()
            .filter(|l| l.split_whitespace().nth(6) == Some(name))
            .count();
        assert_eq!(n, 1, "{name} listed {n} times:\n{out}");
    }
}

#[test]
fn ls_of_a_path_lists_only_that_subtree() {
    let (_work, _vol, spool) = dumped();
    let out = ok(&spool, &["ls", "v", "dir"]);
    let paths: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["dir", "dir/inner.txt", "dir/sub", "dir/sub/deep.txt"],
        "{out}"
    );
    let rows = ls_json(&spool, &["v", "dir/sub"]);
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["dir/sub", "dir/sub/deep.txt"]);
    // A file gives itself; a leading slash or ./ means the same path.
    let rows = ls_json(&spool, &["v", "/dir/inner.txt"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["path"], "dir/inner.txt");
    // "di" is a prefix of "dir", not a parent of it.
    let (code, err) = fail(&spool, &["ls", "v", "di"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("di"), "{err}");
    let (code, err) = fail(&spool, &["ls", "v", "no/such/path"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no/such/path"), "{err}");
}

#[test]
fn ls_json_gives_path_type_mode_size_mtime_target() {
    let (_work, vol, spool) = dumped();
    let rows = ls_json(&spool, &["v"]);
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths[0], "/", "the root comes first: {paths:?}");
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| {
        let k = |p: &str| -> Vec<Vec<u8>> {
            p.split('/')
                .filter(|c| !c.is_empty())
                .map(|c| c.as_bytes().to_vec())
                .collect()
        };
        k(a).cmp(&k(b))
    });
    assert_eq!(paths, sorted, "not in depth-first path order");
    for r in &rows {
        for f in [
            "path", "type", "mode", "uid", "gid", "size", "mtime", "target",
        ] {
            assert!(r.get(f).is_some(), "{f} missing in {r}");
        }
    }
    let hello = row(&rows, "hello.txt");
    assert_eq!(hello["type"], "file");
    assert_eq!(hello["mode"], "0644");
    assert_eq!(hello["size"], 12);
    assert_eq!(hello["target"], Value::Null);
    let t = chrono::DateTime::parse_from_rfc3339(hello["mtime"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("mtime {}: {e}", hello["mtime"]));
    assert_eq!(
        (t.timestamp(), i64::from(t.timestamp_subsec_nanos())),
        HELLO_MTIME,
        "mtime to the nanosecond: {}",
        hello["mtime"]
    );
    assert_eq!(row(&rows, "script.sh")["mode"], "0755");
    assert_eq!(row(&rows, "bin.dat")["mode"], "0600");
    assert_eq!(row(&rows, "sparse.img")["size"], SPARSE_SIZE);
    assert_eq!(row(&rows, "dir")["type"], "dir");
    assert_eq!(row(&rows, "empty_dir")["type"], "dir");
    let link = row(&rows, "link");
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "hello.txt");
    assert_eq!(row(&rows, "dangling")["target"], "nowhere/at/all");
    // One of the two names is the file, the other a hard link naming it.
    let (a, b) = (row(&rows, "hl_a"), row(&rows, "hl_b"));
    let (file, hard, hard_name) = if a["type"] == "hardlink" {
        (b, a, "hl_b")
    } else {
        (a, b, "hl_a")
    };
    assert_eq!(file["type"], "file", "{file}");
    assert_eq!(hard["type"], "hardlink", "{hard}");
    assert_eq!(hard["target"], hard_name);
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&vol).unwrap());
    assert_eq!(row(&rows, "/")["uid"], uid);
}

// ---------------------------------------------------------------------------------------------
// --at: dated dumps, RFC 3339, bad times
// ---------------------------------------------------------------------------------------------

both_kinds!(at_picks_the_dump_of_the_right_day_for_ls_cat_and_restore);
fn at_picks_the_dump_of_the_right_day_for_ls_cat_and_restore(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    write(&vol.join("notes.txt"), b"monday\n");
    write(&vol.join("gone.txt"), b"only on monday\n");
    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    ok(
        &spool,
        &["dump", "v", "--level", "0", "--date", "2026-11-02"],
    );
    write(&vol.join("notes.txt"), b"tuesday, longer\n");
    fs::remove_file(vol.join("gone.txt")).unwrap();
    write(&vol.join("new.txt"), b"new on tuesday\n");
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-03"],
    );

    let cat = |at: &str| ok(&spool, &["cat", "v", "--at", at, "notes.txt"]);
    // A date means the end of that day.
    assert_eq!(cat("2026-11-02"), "monday\n");
    assert_eq!(cat("2026-11-03"), "tuesday, longer\n");
    assert_eq!(cat("2026-12-25"), "tuesday, longer\n");
    // RFC 3339, with Z and with an offset.
    assert_eq!(cat("2026-11-02T12:00:00Z"), "monday\n");
    assert_eq!(cat("2026-11-02T23:59:59Z"), "monday\n");
    assert_eq!(cat("2026-11-03T00:00:00Z"), "tuesday, longer\n");
    assert_eq!(cat("2026-11-03T00:30:00+01:00"), "monday\n");
    assert_eq!(cat("2026-11-03T02:00:00+01:00"), "tuesday, longer\n");
    // No --at: the latest.
    assert_eq!(ok(&spool, &["cat", "v", "notes.txt"]), "tuesday, longer\n");
    // --dump picks by id; it cannot be combined with --at, and must be of the volume.
    assert_eq!(
        ok(&spool, &["cat", "v", "--dump", "1", "notes.txt"]),
        "monday\n"
    );
    let (code, err) = fail(
        &spool,
        &["cat", "v", "--dump", "1", "--at", "2026-11-03", "notes.txt"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, err) = fail(&spool, &["cat", "v", "--dump", "7", "notes.txt"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains('7'), "{err}");

    let names = |at: &str| -> Vec<String> {
        ls_json(&spool, &["v", "--at", at])
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("2026-11-02"), ["/", "gone.txt", "notes.txt"]);
    assert_eq!(names("2026-11-03"), ["/", "new.txt", "notes.txt"]);
    let (code, err) = fail(&spool, &["cat", "v", "--at", "2026-11-03", "gone.txt"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gone.txt"), "{err}");

    // Restore by date.
    let r = work.path().join("r");
    ok(
        &spool,
        &[
            "restore",
            "v",
            "--at",
            "2026-11-02T18:00:00Z",
            "--to",
            s(&r),
        ],
    );
    assert_eq!(fs::read(r.join("notes.txt")).unwrap(), b"monday\n");
    assert!(r.join("gone.txt").exists() && !r.join("new.txt").exists());

    // Before the first dump: an error naming the volume, for every reader.
    for args in [
        vec!["ls", "v", "--at", "2026-11-01"],
        vec!["cat", "v", "--at", "2026-11-01", "notes.txt"],
        vec!["cat", "v", "--at", "2026-11-01T23:59:59Z", "notes.txt"],
        vec![
            "restore",
            "v",
            "--at",
            "2026-11-01",
            "--to",
            "/nonexistent/x",
        ],
    ] {
        let (code, err) = fail(&spool, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("no dump"), "{args:?}: {err}");
        assert!(err.contains("volume v"), "{args:?}: {err}");
    }
    assert!(!Path::new("/nonexistent/x").exists());
}

#[test]
fn date_option_takes_rfc3339_and_a_bad_time_shows_the_accepted_forms() {
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("f"), b"f");
    let spool = Spool::new();
    spool.add_volume("v", work.path());
    ok(
        &spool,
        &[
            "dump",
            "v",
            "--level",
            "0",
            "--date",
            "2026-11-02T12:00:00Z",
        ],
    );
    let j = json(&ok(&spool, &["list", "--json"]));
    let t = chrono::DateTime::parse_from_rfc3339(j[0]["time"].as_str().unwrap()).unwrap();
    assert_eq!(
        t.timestamp(),
        chrono::DateTime::parse_from_rfc3339("2026-11-02T12:00:00Z")
            .unwrap()
            .timestamp()
    );
    // A time 1 s earlier is not later than the latest dump; after it, fine.
    let (code, err) = fail(
        &spool,
        &[
            "dump",
            "v",
            "--level",
            "1",
            "--date",
            "2026-11-02T11:59:59Z",
        ],
    );
    assert_eq!(code, 2, "{err}");
    ok(
        &spool,
        &[
            "dump",
            "v",
            "--level",
            "1",
            "--date",
            "2026-11-02T12:00:01Z",
        ],
    );

    for bad in [
        "yesterday",
        "2026-13-01",
        "2026-11-31",
        "02/11/2026",
        "2026-11-02T25:00:00Z",
        "",
    ] {
        for args in [
            vec!["ls", "v", "--at", bad],
            vec!["cat", "v", "--at", bad, "f"],
            vec!["dump", "v", "--level", "1", "--date", bad],
            vec!["restore", "v", "--at", bad, "--to", "/nonexistent/y"],
            vec!["merge", "v", "--at", bad],
        ] {
            let (code, err) = fail(&spool, &args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains("RFC 3339"), "{args:?}: {err}");
            assert!(
                err.contains("2026-11-20"),
                "{args:?}: no example date: {err}"
            );
        }
    }
    assert_eq!(
        json(&ok(&spool, &["list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// reel cat
// ---------------------------------------------------------------------------------------------

both_kinds!(cat_writes_the_exact_bytes_of_binary_sparse_and_hard_linked_files);
fn cat_writes_the_exact_bytes_of_binary_sparse_and_hard_linked_files(kind: Kind) {
    let (_work, vol, spool) = dumped_of(kind);
    for name in [
        "bin.dat",
        "sparse.img",
        "hl_a",
        "hl_b",
        "hello.txt",
        "dir/inner.txt",
    ] {
        let got = ok_bytes(&spool, &["cat", "v", name]);
        let want = fs::read(vol.join(name)).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: length");
        assert!(got == want, "{name}: bytes differ");
    }
    let sparse = ok_bytes(&spool, &["cat", "v", "sparse.img"]);
    assert_eq!(sparse.len() as u64, SPARSE_SIZE);
    assert!(sparse[..SPARSE_DATA_AT as usize].iter().all(|b| *b == 0));
    assert!(
        sparse[(SPARSE_DATA_AT + 64 * 1024) as usize..]
            .iter()
            .all(|b| *b == 0)
    );
    // An empty file gives zero bytes.
    write(&vol.join("empty"), b"");
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    assert!(ok_bytes(&spool, &["cat", "v", "empty"]).is_empty());
}

#[test]
fn cat_of_a_directory_a_symlink_or_a_missing_path_is_an_error() {
    let (_work, _vol, spool) = dumped();
    for path in ["dir", "empty_dir", "/"] {
        let (code, err) = fail(&spool, &["cat", "v", path]);
        assert_eq!(code, 2, "{path}: {err}");
        assert!(err.contains("not a regular file"), "{path}: {err}");
    }
    let (code, err) = fail(&spool, &["cat", "v", "link"]);
    assert_ne!(code, 0, "{err}");
    let (code, err) = fail(&spool, &["cat", "v", "dir/missing.txt"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dir/missing.txt"), "{err}");
    let (code, err) = fail(&spool, &["cat", "nosuch", "hello.txt"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nosuch"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// reel restore
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_refuses_a_non_empty_target_unless_overwrite() {
    let (work, vol, spool) = dumped();
    let target = work.path().join("target");
    write(&target.join("hello.txt"), b"stale content that is longer\n");
    write(&target.join("mine.txt"), b"not from the dump\n");
    let before = contents(&target);
    let (code, err) = fail(&spool, &["restore", "v", "--to", s(&target)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(s(&target)), "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(contents(&target), before, "a refused restore wrote");

    ok(&spool, &["restore", "v", "--to", s(&target), "--overwrite"]);
    assert_eq!(
        fs::read(target.join("hello.txt")).unwrap(),
        b"hello, reel\n",
        "an existing file was not overwritten (or kept a stale tail)"
    );
    assert_eq!(
        fs::read(target.join("bin.dat")).unwrap(),
        fs::read(vol.join("bin.dat")).unwrap()
    );
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("hello.txt")
    );
    assert_eq!(
        fs::read(target.join("mine.txt")).unwrap(),
        b"not from the dump\n",
        "--overwrite removed a file the dump does not hold"
    );
    // Another --overwrite restore over a full copy (symlinks and hard links already there)
    // gives the dumped tree exactly, the root's metadata included.
    fs::remove_file(target.join("mine.txt")).unwrap();
    ok(&spool, &["restore", "v", "--to", s(&target), "--overwrite"]);
    assert_trees_equal(&vol, &target);
}

both_kinds!(restore_of_several_paths_restores_just_those_subtrees);
fn restore_of_several_paths_restores_just_those_subtrees(kind: Kind) {
    let (work, vol, spool) = dumped_of(kind);
    let target = work.path().join("t");
    ok(
        &spool,
        &[
            "restore",
            "v",
            "--to",
            s(&target),
            "dir/sub",
            "hello.txt",
            "other",
        ],
    );
    let got: Vec<PathBuf> = contents(&target).into_iter().map(|(p, _)| p).collect();
    let want: Vec<PathBuf> = [
        "dir",
        "dir/sub",
        "dir/sub/deep.txt",
        "hello.txt",
        "other",
        "other/x.txt",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        fs::read(target.join("hello.txt")).unwrap(),
        b"hello, reel\n"
    );
    assert_trees_equal(&vol.join("dir/sub"), &target.join("dir/sub"));
    assert_trees_equal(&vol.join("other"), &target.join("other"));
}

#[test]
fn restore_of_a_path_not_in_the_dump_is_an_error() {
    let (work, _vol, spool) = dumped();
    let target = work.path().join("t");
    let (code, err) = fail(&spool, &["restore", "v", "--to", s(&target), "no/such"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no/such"), "{err}");
    // Nothing restored (an empty or absent target).
    assert!(
        !target.exists() || fs::read_dir(&target).unwrap().next().is_none(),
        "a failed restore wrote into {}",
        target.display()
    );
    // One good path and one bad: still an error, naming the bad one.
    let (code, err) = fail(
        &spool,
        &[
            "restore",
            "v",
            "--to",
            s(&target),
            "hello.txt",
            "missing.txt",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("missing.txt"), "{err}");
    // A restore with no --to is a usage error.
    let (code, _) = fail(&spool, &["restore", "v"]);
    assert_eq!(code, 2);
}

/// A restore naming a path the dump does not hold fails before it writes anything: the
/// corrected command is not refused for a non-empty target.
#[test]
fn a_restore_of_a_missing_path_writes_nothing_and_the_retry_succeeds() {
    let (work, vol, spool) = dumped();
    let target = work.path().join("r9");
    for paths in [
        vec!["dir/sub/nothere.txt"],
        vec!["hello.txt", "dir/sub/nothere.txt"],
    ] {
        let mut args = vec!["restore", "v", "--to", s(&target)];
        args.extend(paths);
        let (code, err) = fail(&spool, &args);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("dir/sub/nothere.txt") && err.contains("not in dump 1"),
            "{err}"
        );
        assert!(
            !target.exists(),
            "the failed restore left {:?}",
            contents(&target)
        );
    }
    ok(
        &spool,
        &["restore", "v", "--to", s(&target), "dir/sub/deep.txt"],
    );
    assert_trees_equal(&vol.join("dir/sub"), &target.join("dir/sub"));

    // An empty target that was there before stays there, empty.
    let mine = work.path().join("mine");
    fs::create_dir(&mine).unwrap();
    let (code, err) = fail(
        &spool,
        &["restore", "v", "--to", s(&mine), "dir/sub/nothere.txt"],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(contents(&mine), vec![], "the failed restore wrote into it");
}

/// The commands `reel --help` lists (its "Commands:" section), `help` aside.
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// `reel completion bash` is a script bash accepts and that completes reel's commands;
/// fish's names them too; an unknown shell is a usage error.
#[test]
fn completion_scripts_complete_every_command() {
    let commands = listed_commands(&run_ok(reel().arg("--help")));
    assert!(commands.len() > 20 && commands.contains(&"export-plain".to_string()));
    let tmp = tempfile::tempdir().unwrap();
    let bash = run_ok(reel().args(["completion", "bash"]));
    let script = tmp.path().join("reel.bash");
    write(&script, bash.as_bytes());
    // Loaded into bash, the function completes `reel re` to the commands starting with "re".
    let probe = format!(
        "source {}; COMP_WORDS=(reel re); COMP_CWORD=1; COMP_LINE='reel re'; COMP_POINT=7; \
         _reel reel re reel; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        s(&script)
    );
    let out = run_ok(Command::new("bash").args(["--norc", "-c", &probe]));
    let offered: Vec<&str> = out.lines().collect();
    for c in commands.iter().filter(|c| c.starts_with("re")) {
        assert!(offered.contains(&c.as_str()), "{c} not offered: {out}");
    }
    assert!(offered.iter().all(|o| o.starts_with("re")), "{out}");
    let fish = run_ok(reel().args(["completion", "fish"]));
    for c in &commands {
        assert!(
            fish.contains(&format!("-a \"{c}\"")),
            "fish script lacks {c}"
        );
    }
    let out = reel().args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `reel man DIR` writes a page for reel and for every command and subcommand, each a roff
/// page that names its command and documents its options.
#[test]
fn man_pages_cover_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    run_ok(reel().arg("man").arg(&dir));
    let top = fs::read_to_string(dir.join("reel.1")).unwrap();
    assert!(
        top.starts_with(".ie") || top.contains(".TH reel 1"),
        "{top}"
    );
    for c in listed_commands(&run_ok(reel().arg("--help"))) {
        let page = fs::read_to_string(dir.join(format!("reel-{c}.1")))
            .unwrap_or_else(|e| panic!("no page for {c}: {e}"));
        assert!(
            page.contains(&format!(".TH reel-{c} 1")),
            "reel-{c}.1: {page}"
        );
    }
    let restore = fs::read_to_string(dir.join("reel-restore.1")).unwrap();
    assert!(restore.contains("\\-\\-to"), "{restore}");
    // Nested commands get pages of their own.
    let add = fs::read_to_string(dir.join("reel-volume-add.1")).unwrap();
    assert!(add.contains(".TH reel-volume-add 1"));
}

/// `restore --dry-run` lists the dump's chain level 0 first, as the docs say, and writes
/// nothing.
#[test]
fn restore_dry_run_lists_the_chain_level_0_first() {
    let (_work, vol, spool) = dumped();
    write(&vol.join("hello.txt"), b"changed once\n");
    ok(&spool, &["dump", "v", "--level", "1"]);
    write(&vol.join("hello.txt"), b"changed twice\n");
    ok(&spool, &["dump", "v", "--level", "2"]);
    let target = spool.path().parent().unwrap().join("not-made");
    let plan = ok(&spool, &["restore", "v", "--to", s(&target), "--dry-run"]);
    let levels: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("chain: dump"))
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(levels, ["0", "1", "2"], "{plan}");
    assert!(!target.exists());
}

/// A dump of an empty volume reports no ratio or rate it does not have.
#[test]
fn an_empty_volume_reports_no_ratio_or_rate() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("empty");
    fs::create_dir(&vol).unwrap();
    let spool = Spool::new();
    spool.add_volume("e", &vol);
    // An empty root is what an unmounted volume looks like: dumped only on purpose.
    let out = ok(&spool, &["dump", "e", "--level", "0", "--allow-shrink"]);
    assert!(out.contains("ratios       - (no file data)"), "{out}");
    assert!(!out.contains("0.0x") && !out.contains("B/s"), "{out}");
}

/// `NAME@latest` reads the latest dump, as `NAME` alone, in `cat`, `ls` and `restore`.
#[test]
fn name_at_latest_is_the_latest_dump() {
    let (work, vol, spool) = dumped();
    write(&vol.join("hello.txt"), b"the second day\n");
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    assert_eq!(
        ok(&spool, &["cat", "v@latest", "hello.txt"]),
        "the second day\n"
    );
    assert_eq!(
        ok(&spool, &["cat", "v@2026-11-01", "hello.txt"]),
        "hello, reel\n"
    );
    assert_eq!(ls_json(&spool, &["v@latest"]), ls_json(&spool, &["v"]));
    let target = work.path().join("latest-restore");
    ok(&spool, &["restore", "v@latest", "--to", s(&target)]);
    assert_eq!(
        fs::read_to_string(target.join("hello.txt")).unwrap(),
        "the second day\n"
    );
    let (code, err) = fail(
        &spool,
        &["cat", "v@latest", "hello.txt", "--at", "2026-11-01"],
    );
    assert_eq!(code, 2, "{err}");
}

/// `export`'s table of the dumps it wrote has its rows aligned under its header.
#[test]
fn export_table_columns_line_up() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    // A dump at the clock's time, to the nanosecond.
    spool.run(["dump", "v", "--level", "1"]);
    let img = work.path().join("tape.img");
    let out = spool.run(["export", "--to", img.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("dump") && l.contains("whole-file"))
        .unwrap_or_else(|| panic!("no table header: {out}"));
    let level_end = lines[header].find("level").unwrap() + "level".len();
    for (row, level) in lines[header + 1..header + 3].iter().zip(["0", "1"]) {
        assert_eq!(
            lines[header].len(),
            row.len(),
            "header and row differ in width:\n{}\n{row}",
            lines[header]
        );
        assert_eq!(&row[level_end - 1..level_end], level, "{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// Excludes: patterns, cache directories, nodump; glob paths in ls, cat and restore
// ---------------------------------------------------------------------------------------------

/// The paths `reel ls ARGS` lists, in order.
fn ls_paths(spool: &Spool, args: &[&str]) -> Vec<String> {
    ls_json(spool, args)
        .iter()
        .map(|r| r["path"].as_str().expect("a path").to_string())
        .collect()
}

/// Asserts which of `paths` the listing holds (`true`) and which it does not.
fn assert_listed(listed: &[String], expect: &[(&str, bool)], what: &str) {
    for (p, there) in expect {
        assert_eq!(
            listed.iter().any(|l| l == p),
            *there,
            "{what}: {p} should {}be listed; listed: {listed:?}",
            if *there { "" } else { "not " }
        );
    }
}

#[test]
fn excludes_leave_entries_out_and_a_change_takes_effect_at_the_next_dump() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    write(&vol.join("alice/docs/a.txt"), b"a\n");
    write(&vol.join("alice/main.o"), b"object\n");
    write(&vol.join("alice/keep.o"), b"kept object\n");
    write(&vol.join("alice/build/out.bin"), b"built\n");
    // `tmp/` is for directories only: the file alice/tmp stays, the directory bob/tmp goes.
    write(&vol.join("alice/tmp"), b"a file named tmp\n");
    write(&vol.join("bob/tmp/scratch"), b"scratch\n");
    write(&vol.join("bob/notes"), b"notes\n");
    let spool = Spool::new();
    ok(
        &spool,
        &[
            "volume",
            "add",
            "v",
            s(&vol),
            "--exclude",
            "/alice/build",
            "--exclude",
            "*.o",
            "--exclude",
            "!keep.o",
            "--exclude",
            "tmp/",
        ],
    );
    let toml = fs::read_to_string(spool.path().join("reel.toml")).unwrap();
    assert!(toml.contains("!keep.o"), "{toml}");
    ok(
        &spool,
        &["dump", "v", "--level", "0", "--date", "2026-11-01"],
    );
    let day1 = ls_paths(&spool, &["v"]);
    assert_listed(
        &day1,
        &[
            ("alice/docs/a.txt", true),
            ("alice/main.o", false),
            ("alice/keep.o", true),
            ("alice/build", false),
            ("alice/build/out.bin", false),
            ("alice/tmp", true),
            ("bob/tmp", false),
            ("bob/tmp/scratch", false),
            ("bob/notes", true),
        ],
        "day 1",
    );
    let r1 = work.path().join("r1");
    ok(&spool, &["restore", "v", "--to", s(&r1)]);
    assert!(!r1.join("alice/main.o").exists() && !r1.join("alice/build").exists());
    assert!(!r1.join("bob/tmp").exists());
    assert_eq!(fs::read(r1.join("alice/keep.o")).unwrap(), b"kept object\n");
    assert_eq!(
        fs::read(r1.join("alice/tmp")).unwrap(),
        b"a file named tmp\n"
    );

    // Add an exclude: the next dump (a level 1) leaves bob out, and restores without it; the
    // day before keeps it.
    ok(&spool, &["volume", "set", "v", "--exclude", "bob/"]);
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    let day2 = ls_paths(&spool, &["v", "--at", "2026-11-02"]);
    assert_listed(
        &day2,
        &[("bob", false), ("bob/notes", false), ("alice/keep.o", true)],
        "day 2",
    );
    assert_listed(
        &ls_paths(&spool, &["v", "--at", "2026-11-01"]),
        &[("bob/notes", true)],
        "day 1 again",
    );
    let r2 = work.path().join("r2");
    ok(
        &spool,
        &["restore", "v", "--at", "2026-11-02", "--to", s(&r2)],
    );
    assert!(!r2.join("bob").exists());
    assert_eq!(fs::read(r2.join("alice/docs/a.txt")).unwrap(), b"a\n");

    // Remove one: what it left out comes back at the next dump.
    ok(
        &spool,
        &["volume", "set", "v", "--no-exclude", "/alice/build"],
    );
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-03"],
    );
    let day3 = ls_paths(&spool, &["v", "--at", "2026-11-03"]);
    assert_listed(
        &day3,
        &[("alice/build/out.bin", true), ("bob", false)],
        "day 3",
    );
    let list = json(&ok(&spool, &["volume", "list", "--json"]));
    assert_eq!(
        list[0]["exclude"],
        serde_json::json!(["*.o", "!keep.o", "tmp/", "bob/"])
    );
    assert_eq!(list[0]["honor_nodump"], true);

    // Clearing them all brings everything back.
    ok(&spool, &["volume", "set", "v", "--clear-excludes"]);
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-04"],
    );
    let day4 = ls_paths(&spool, &["v", "--at", "2026-11-04"]);
    assert_listed(
        &day4,
        &[("alice/main.o", true), ("bob/tmp/scratch", true)],
        "day 4",
    );
}

#[test]
fn bad_exclude_flags_are_refused_naming_the_pattern_and_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    write(&vol.join("f"), b"f");
    let spool = Spool::new();
    ok(
        &spool,
        &["volume", "add", "v", s(&vol), "--exclude", "*.tmp"],
    );
    let before = fs::read_to_string(spool.path().join("reel.toml")).unwrap();
    let (code, err) = fail(&spool, &["volume", "set", "v", "--no-exclude", "*.o"]);
    assert_eq!(code, 2);
    assert!(err.contains("\"*.o\"") && err.contains("*.tmp"), "{err}");
    let (code, err) = fail(&spool, &["volume", "set", "v", "--exclude", "a{b"]);
    assert_eq!(code, 2);
    assert!(err.contains("a{b"), "{err}");
    let (code, err) = fail(&spool, &["volume", "set", "v", "--exclude", "#notes"]);
    assert_eq!(code, 2);
    assert!(err.contains("comment") && err.contains("\\#notes"), "{err}");
    let (code, _) = fail(&spool, &["volume", "add", "w", s(&vol), "--exclude", ""]);
    assert_eq!(code, 2);
    assert_eq!(
        fs::read_to_string(spool.path().join("reel.toml")).unwrap(),
        before,
        "a refused flag changed reel.toml"
    );
}

#[test]
fn exclude_caches_keeps_the_tag_of_a_valid_cachedir_and_drops_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let sig = b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache directory tag\n";
    write(&vol.join("cache/CACHEDIR.TAG"), sig);
    write(&vol.join("cache/blob"), b"cached bytes");
    write(&vol.join("cache/sub/more"), b"more cached bytes");
    // One byte of the signature wrong: not a cache directory.
    write(
        &vol.join("fake/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc56\n",
    );
    write(&vol.join("fake/data"), b"real data");
    // A signature cut short is no tag either.
    write(&vol.join("short/CACHEDIR.TAG"), b"Signature: 8a477f");
    write(&vol.join("short/data"), b"real data");
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    ok(
        &spool,
        &["dump", "v", "--level", "0", "--date", "2026-11-01"],
    );
    assert_listed(
        &ls_paths(&spool, &["v"]),
        &[("cache/blob", true)],
        "before --exclude-caches",
    );

    ok(&spool, &["volume", "set", "v", "--exclude-caches"]);
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    let listed = ls_paths(&spool, &["v"]);
    assert_listed(
        &listed,
        &[
            ("cache", true),
            ("cache/CACHEDIR.TAG", true),
            ("cache/blob", false),
            ("cache/sub", false),
            ("cache/sub/more", false),
            ("fake/CACHEDIR.TAG", true),
            ("fake/data", true),
            ("short/data", true),
        ],
        "with --exclude-caches",
    );
    let r = work.path().join("r");
    ok(&spool, &["restore", "v", "--to", s(&r)]);
    assert_eq!(fs::read(r.join("cache/CACHEDIR.TAG")).unwrap(), sig);
    assert!(!r.join("cache/blob").exists());
    assert_eq!(fs::read(r.join("fake/data")).unwrap(), b"real data");

    ok(&spool, &["volume", "set", "v", "--no-exclude-caches"]);
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-03"],
    );
    assert_listed(
        &ls_paths(&spool, &["v"]),
        &[("cache/sub/more", true)],
        "after --no-exclude-caches",
    );
}

/// `chattr +d PATH`; false where the filesystem has no such flag (tmpfs).
fn chattr_nodump(p: &Path) -> bool {
    Command::new("chattr")
        .arg("+d")
        .arg(p)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn files_flagged_nodump_are_left_out_unless_the_volume_ignores_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    write(&vol.join("keep"), b"keep");
    write(&vol.join("huge.iso"), b"not worth a backup");
    write(&vol.join("scratch/inner"), b"inner");
    if !chattr_nodump(&vol.join("huge.iso")) || !chattr_nodump(&vol.join("scratch")) {
        println!(
            "skipped: chattr +d does not work under {} (the filesystem has no nodump flag)",
            work.path().display()
        );
        return;
    }
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    ok(
        &spool,
        &["dump", "v", "--level", "0", "--date", "2026-11-01"],
    );
    assert_listed(
        &ls_paths(&spool, &["v"]),
        &[
            ("keep", true),
            ("huge.iso", false),
            ("scratch", false),
            ("scratch/inner", false),
        ],
        "nodump honoured",
    );
    let r = work.path().join("r");
    ok(&spool, &["restore", "v", "--to", s(&r)]);
    assert!(!r.join("huge.iso").exists() && !r.join("scratch").exists());

    ok(&spool, &["volume", "set", "v", "--ignore-nodump"]);
    ok(
        &spool,
        &["dump", "v", "--level", "1", "--date", "2026-11-02"],
    );
    assert_listed(
        &ls_paths(&spool, &["v"]),
        &[("huge.iso", true), ("scratch/inner", true)],
        "nodump ignored",
    );
    ok(&spool, &["volume", "set", "v", "--honor-nodump"]);
    // A `copy` clone honours the flag while it is still on the volume (the copy loses it).
    ok(&spool, &["volume", "set", "v", "--clone", "copy"]);
    // Two of the three files are left out again: the shrink guard must be told it is meant.
    ok(
        &spool,
        &[
            "backup",
            "v",
            "--level",
            "1",
            "--date",
            "2026-11-03",
            "--allow-shrink",
        ],
    );
    assert_listed(
        &ls_paths(&spool, &["v"]),
        &[("keep", true), ("huge.iso", false)],
        "copy clone",
    );
}

/// A volume for the glob tests, dumped once.
fn globbed() -> (tempfile::TempDir, Spool) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    write(&vol.join("alice/docs/a.txt"), b"A\n");
    write(&vol.join("alice/docs/b.txt"), b"B\n");
    write(&vol.join("alice/docs/c.md"), b"C\n");
    write(&vol.join("alice/docs/sub/d.txt"), b"D\n");
    write(&vol.join("bob/docs/e.txt"), b"E\n");
    write(&vol.join("lit[1]"), b"a name with brackets\n");
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    ok(
        &spool,
        &["dump", "v", "--level", "0", "--date", "2026-11-01"],
    );
    (work, spool)
}

#[test]
fn ls_and_cat_take_glob_patterns() {
    let (_work, spool) = globbed();
    assert_eq!(
        ls_paths(&spool, &["v", "alice/docs/*.txt"]),
        vec!["alice/docs/a.txt", "alice/docs/b.txt"]
    );
    assert_eq!(
        ls_paths(&spool, &["v", "**/*.txt"]),
        vec![
            "alice/docs/a.txt",
            "alice/docs/b.txt",
            "alice/docs/sub/d.txt",
            "bob/docs/e.txt"
        ]
    );
    // A matched directory is listed with what it holds, as `ls PATH` lists a subtree.
    assert_eq!(
        ls_paths(&spool, &["v", "*/docs/sub"]),
        vec!["alice/docs/sub", "alice/docs/sub/d.txt"]
    );
    assert_eq!(
        ok_bytes(&spool, &["cat", "v", "alice/docs/*.txt"]),
        b"A\nB\n"
    );
    assert_eq!(
        ok_bytes(&spool, &["cat", "v", "{bob,alice}/docs/[ab].txt"]),
        b"A\nB\n"
    );
    // No glob character in `lit[1]`? It has one: `[1]` is a class, and the escaped form names
    // the file; a plain path keeps its exact meaning.
    assert_eq!(
        ok_bytes(&spool, &["cat", "v", "lit\\[1\\]"]),
        b"a name with brackets\n"
    );
    assert_eq!(ok_bytes(&spool, &["cat", "v", "alice/docs/c.md"]), b"C\n");
    for args in [&["ls", "v", "nothing/*"][..], &["cat", "v", "nothing/*"]] {
        let (code, err) = fail(&spool, args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("nothing/*"), "{args:?}: {err}");
    }
    let (code, err) = fail(&spool, &["ls", "v", "alice/[z"]);
    assert_eq!(code, 2);
    assert!(err.contains("alice/[z"), "{err}");
}

#[test]
fn restore_takes_glob_patterns_and_refuses_one_that_matches_nothing_before_writing() {
    let (work, spool) = globbed();
    let r = work.path().join("r");
    ok(
        &spool,
        &[
            "restore",
            "v",
            "--to",
            s(&r),
            "alice/docs/*.txt",
            "bob/docs",
        ],
    );
    let got: Vec<PathBuf> = contents(&r)
        .into_iter()
        .filter(|(_, data)| data.is_some())
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        got,
        vec![
            PathBuf::from("alice/docs/a.txt"),
            PathBuf::from("alice/docs/b.txt"),
            PathBuf::from("bob/docs/e.txt")
        ]
    );
    let r2 = work.path().join("r2");
    let (code, err) = fail(
        &spool,
        &["restore", "v", "--to", s(&r2), "alice/docs/a.txt", "zz*"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("zz*"), "{err}");
    assert!(!r2.exists(), "a refused restore made its target");
    let (code, err) = fail(
        &spool,
        &["restore", "v", "--dry-run", "--to", s(&r2), "zz*"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("zz*"), "{err}");
}

/// `-v` logs what restore, list and check are doing, `-vv` also their choices and times.
#[test]
fn verbose_flags_log_restore_list_and_check() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    let stderr = |args: &[&str]| {
        let out = spool.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let target = work.path().join("r");
    let restore = stderr(&["-v", "restore", "v", "--to", s(&target)]);
    assert!(restore.contains("restoring"), "{restore}");
    let restore = stderr(&["-vv", "restore", "v", "--to", s(&work.path().join("r2"))]);
    assert!(
        restore.contains("restore: dump 1 of volume v, level 0") && restore.contains("chunks read"),
        "{restore}"
    );
    let list = stderr(&["-vv", "list"]);
    assert!(list.contains("1 dumps read from the catalog"), "{list}");
    let check = stderr(&["-v", "check"]);
    assert!(check.contains("checking packs"), "{check}");
    let check = stderr(&["-vv", "check"]);
    assert!(check.contains("checking dumps: "), "{check}");
}
