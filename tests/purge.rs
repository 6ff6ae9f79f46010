//! `reel purge --exported` beside readers and crashes: the packs it takes out of the catalog are
//! deleted only while no reader (restore, cat, mount, export-plain) holds the readers lock, as
//! gc's are; packs left waiting, or left by a crash after the commit, are deleted by the next
//! purge or gc.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use common::*;

fn pack_files(spool: &Spool) -> Vec<String> {
    let mut out = Vec::new();
    for sub in fs::read_dir(spool.path().join("packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn n(v: &serde_json::Value, k: &str) -> i64 {
    v[k].as_i64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

/// `check --read-data --json`, which must find no problem and no pack the catalog does not
/// name (doomed files are not unreferenced: they are counted as `doomed_packs`).
fn check_clean(spool: &Spool) -> serde_json::Value {
    let c = json(&spool.run(["check", "--read-data", "--json"]));
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    c
}

/// Three days whose big/x.bin is replaced each day, all exported to one tape: a purge removes
/// the pack of the 2nd day's x.bin, which nothing current references.
fn exported_days(work: &Path) -> Spool {
    let spool = replaced_file_days(work);
    fs::create_dir(work.join("tapes")).unwrap();
    let img = work.join("tapes/w1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    spool
}

#[test]
fn a_reader_keeps_the_packs_it_can_see_through_a_purge() {
    let work = tempfile::tempdir().unwrap();
    let spool = exported_days(work.path());
    let expected = fs::read(work.path().join("day2/big/x.bin")).unwrap();
    // A real reader: `reel cat` of the 2nd day's x.bin (2 MiB) into a pipe nobody reads past
    // its first bytes, so it stays in, holding the readers lock and its view of the catalog.
    let mut cat = spool
        .cmd()
        .args(["cat", "v", "--at", "2026-11-02", "big/x.bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    let mut got = vec![0u8; 8192];
    out.read_exact(&mut got).unwrap();

    let before = pack_files(&spool);
    let text = spool.run(["purge", "--exported"]);
    assert!(text.contains("removed 1 packs"), "{text}");
    assert!(
        text.contains("deletion deferred: 1 pack files")
            && text.contains("wait for readers (restore/cat/mount/export-plain) to finish"),
        "{text}"
    );
    let during = pack_files(&spool);
    for p in &before {
        assert!(
            during.contains(p),
            "pack {p} was deleted under a reader: {text}"
        );
    }
    // The reader reads its file to the end, exactly.
    out.read_to_end(&mut got).unwrap();
    let status = cat.wait().unwrap();
    let mut err = String::new();
    cat.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "cat failed beside the purge: {err}");
    assert!(got == expected, "cat read other bytes beside the purge");
    let c = check_clean(&spool);
    assert_eq!(n(&c, "doomed_packs"), 1, "{c}");

    // With the reader gone, the next purge deletes the waiting pack and nothing else.
    let again = spool.run(["purge", "--exported"]);
    assert!(again.contains("removed 0 packs"), "{again}");
    assert!(again.contains("deleted 1 pack files"), "{again}");
    assert!(!again.contains("deferred"), "{again}");
    let after = pack_files(&spool);
    assert_eq!(after.len(), during.len() - 1, "{during:?} -> {after:?}");
    assert!(after.iter().all(|p| during.contains(p)));
    let c = check_clean(&spool);
    assert_eq!(n(&c, "doomed_packs"), 0, "{c}");
    assert_eq!(n(&c, "packs") as usize, after.len(), "{c}");
    // The purged day restores from its tape; the others from the spool.
    spool.restore_days_equal(
        work.path(),
        "after",
        &["--tapes", work.path().join("tapes").to_str().unwrap()],
        &[1, 2, 3],
    );
}

/// `purge --exported`, killed at the failpoint `fp`.
fn purge_killed_at(spool: &Spool, fp: &str) {
    let out = spool
        .cmd()
        .args(["purge", "--exported"])
        .env("REEL_FAILPOINT", fp)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "purge was not killed at {fp}: {out:?}"
    );
}

#[test]
fn a_purge_killed_after_its_commit_leaves_doomed_packs_the_next_gc_deletes() {
    let work = tempfile::tempdir().unwrap();
    let spool = exported_days(work.path());
    let before = pack_files(&spool);
    purge_killed_at(&spool, "purge-committed");
    // The pack is out of the catalog and doomed, not an unreferenced file.
    let c = check_clean(&spool);
    assert_eq!(n(&c, "doomed_packs"), 1, "{c}");
    assert_eq!(
        pack_files(&spool).len(),
        before.len() + 1,
        "the new pack is in"
    );
    // A dry run of either command says what waits and changes nothing.
    let dry = spool.run(["purge", "--exported", "--dry-run"]);
    assert!(dry.contains("1 pack files"), "{dry}");
    let r = json(&spool.run(["gc", "--json"]));
    assert_eq!(n(&r, "doomed_deleted"), 1, "{r}");
    assert_eq!(n(&r, "doomed_waiting"), 0, "{r}");
    assert!(n(&r, "bytes_freed") > 1_900_000, "{r}");
    let c = check_clean(&spool);
    assert_eq!(n(&c, "doomed_packs"), 0, "{c}");
    assert_eq!(n(&c, "packs") as usize, pack_files(&spool).len(), "{c}");
    spool.restore_days_equal(
        work.path(),
        "crash",
        &["--tapes", work.path().join("tapes").to_str().unwrap()],
        &[1, 2, 3],
    );

    // Killed after deleting the file, before forgetting its `doomed` row: the next purge
    // forgets it.
    let work2 = tempfile::tempdir().unwrap();
    let spool = exported_days(work2.path());
    purge_killed_at(&spool, "gc-deleting");
    let c = check_clean(&spool);
    assert_eq!(n(&c, "doomed_packs"), 0, "the file is gone: {c}");
    let dry = spool.run(["purge", "--exported", "--dry-run"]);
    assert!(dry.contains("would delete 1 pack files"), "{dry}");
    let again = spool.run(["purge", "--exported"]);
    assert!(!again.contains("deferred"), "{again}");
    let dry = spool.run(["purge", "--exported", "--dry-run"]);
    assert!(!dry.contains("pack files"), "{dry}");
    let c = check_clean(&spool);
    assert_eq!(n(&c, "doomed_packs"), 0, "{c}");
    assert_eq!(n(&c, "packs") as usize, pack_files(&spool).len(), "{c}");
}
