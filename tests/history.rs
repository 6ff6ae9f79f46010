//! A week of dated dumps at mixed levels: every day's dump restores to exactly the tree of
//! that day (bytes and metadata), the bases follow the level rules, and unchanged files are not
//! read again.

mod common;

use std::path::Path;

use common::*;

const LEVELS: [u8; 7] = [0, 1, 2, 1, 3, 2, 1];
/// Base of each day's dump (dump ids start at 1): the latest earlier dump of a lower level.
const BASES: [Option<u64>; 7] = [None, Some(1), Some(2), Some(1), Some(4), Some(4), Some(1)];

fn day_date(day: usize) -> String {
    format!("2026-11-{:02}", day + 1)
}

both_kinds!(week_of_mixed_levels_restores_every_day_exactly);
fn week_of_mixed_levels_restores_every_day_exactly(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::of(kind);
    spool.add_volume("home", &vol);
    // Let the tree's mtimes fall into an earlier second than the first scan, so the stat cache
    // can be trusted from day 2 on (the same-second rule would otherwise re-read them).
    std::thread::sleep(std::time::Duration::from_millis(1100));

    for (day, level) in LEVELS.iter().enumerate() {
        if day > 0 {
            mutate_day(&vol, day as u32);
        }
        snapshot(&vol, &work.path().join(format!("day{day}")));
        let out = spool.run([
            "dump",
            "home",
            "--level",
            &level.to_string(),
            "--date",
            &day_date(day),
        ]);
        assert!(out.contains(&format!("at level {level}")), "{out}");
    }

    let list = spool.list_json();
    let dumps = list.as_array().unwrap();
    assert_eq!(dumps.len(), 7);
    for (day, d) in dumps.iter().enumerate() {
        assert_eq!(
            d["level"].as_u64().unwrap(),
            u64::from(LEVELS[day]),
            "day {day}"
        );
        assert_eq!(d["base"].as_u64(), BASES[day], "base of day {day}");
        assert!(
            d["time"].as_str().unwrap().starts_with(&day_date(day)),
            "{d}"
        );
        for field in [
            "id",
            "volume",
            "files",
            "logical_bytes",
            "stored_bytes",
            "owned_bytes",
        ] {
            assert!(!d[field].is_null(), "list --json lacks {field}");
        }
    }
    // Incrementals skip unchanged files (bin/random3m.bin, 3 MB, never changes; the files a day
    // changes are read that day and, by the same-second rule, the next).
    let logical = dumps[6]["logical_bytes"].as_u64().unwrap();
    let read = dumps[6]["read_bytes"].as_u64().unwrap();
    assert!(
        read + 3_000_000 <= logical,
        "day 7 read {read} of {logical} bytes: the stat cache is not used"
    );

    for day in 0..7 {
        spool.restore_equals(
            &["home", "--at", &day_date(day)],
            &work.path().join(format!("day{day}")),
            &work.path().join(format!("restore{day}")),
        );
    }
    // By id too, and a subtree.
    spool.restore_equals(
        &["home", "--dump", "3"],
        &work.path().join("day2"),
        &work.path().join("by-id"),
    );
    let sub = work.path().join("sub");
    spool.run([
        "restore",
        "home",
        "--at",
        &day_date(4),
        "--to",
        sub.to_str().unwrap(),
        "src/a",
    ]);
    assert_trees_equal(&work.path().join("day4/src/a"), &sub.join("src/a"));
    assert!(
        !sub.join("small.txt").exists(),
        "a subtree restore brought back other files"
    );

    spool.run(["check", "--read-data"]);
}

#[test]
fn level_without_lower_dump_becomes_level_zero() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), b"x").unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let out = spool.run(["dump", "v", "--level", "3", "--date", "2026-11-01"]);
    assert!(out.contains("level 0"), "{out}");
    assert!(out.contains("no dump below level 3"), "{out}");
    let d = &spool.list_json()[0];
    assert_eq!(d["level"], 0);
    assert_eq!(d["base"], serde_json::Value::Null);
    // A date not later than the latest dump is refused.
    let (code, err) = spool.fail(["dump", "v", "--level", "1", "--date", "2026-11-01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not later"), "{err}");
}

#[test]
fn reread_gives_the_same_dump_and_unchanged_files_are_not_read() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    spool.run([
        "dump",
        "v",
        "--level",
        "1",
        "--date",
        "2026-11-03",
        "--reread",
    ]);
    let list = spool.list_json();
    assert_eq!(
        list[1]["read_bytes"], 0,
        "an unchanged volume was read: {}",
        list[1]
    );
    assert!(list[2]["read_bytes"].as_u64().unwrap() > 0);
    let m1 = spool.run(["show", "2", "--json"]);
    let m2 = spool.run(["show", "3", "--json"]);
    let j1: serde_json::Value = serde_json::from_str(&m1).unwrap();
    let j2: serde_json::Value = serde_json::from_str(&m2).unwrap();
    assert_eq!(
        j1["manifest_chunks"], j2["manifest_chunks"],
        "--reread changed the manifest"
    );
    assert!(!j1["manifest_chunks"].as_array().unwrap().is_empty());
}

both_kinds!(merge_records_a_synthetic_full_that_restores);
fn merge_records_a_synthetic_full_that_restores(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_of_with_full_dump(kind, &vol);
    mutate_day(&vol, 1);
    snapshot(&vol, &work.path().join("day1"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let before = dir_size(spool.path());
    let out = spool.run(["merge", "v", "--at", "2026-11-02"]);
    assert!(out.contains("merged from dump 2"), "{out}");
    let after = dir_size(spool.path());
    assert!(
        after < before + (1 << 20),
        "merge copied data: {before} -> {after}"
    );
    let list = spool.list_json();
    let m = &list[2];
    assert_eq!(m["level"], 0);
    assert_eq!(m["base"], serde_json::Value::Null);
    assert_eq!(m["merged_from"], 2);
    spool.restore_equals(
        &["v", "--dump", "3"],
        &work.path().join("day1"),
        &work.path().join("r"),
    );
    // The next level 1 is based on the synthetic full.
    mutate_day(&vol, 2);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-03"]);
    assert_eq!(spool.list_json()[3]["base"], 3);
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        n += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    n
}

both_kinds!(several_large_files_in_a_row_restore_exactly_at_levels_0_and_1);
/// Large files (over 4 MiB) stream through their own reader threads, each started while the
/// one before is stored, some from the window before. Several of them in a row, sparse ones
/// among them (a small one first, which is not read ahead), a copy of another and small files in between, must restore exactly, dedup the
/// copy, and survive an incremental that changes, removes and adds large files.
fn several_large_files_in_a_row_restore_exactly_at_levels_0_and_1(kind: Kind) {
    use std::io::{Seek, SeekFrom, Write};
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let mut rng = Rng::new(7);
    std::fs::create_dir_all(vol.join("big")).unwrap();
    // A small sparse file goes the large files' way, but is not read ahead.
    let mut f = std::fs::File::create(vol.join("big/0.sparse")).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(&rng.text(100_000)).unwrap();
    f.set_len(3 << 20).unwrap();
    drop(f);
    let random = rng.bytes(9 << 20);
    std::fs::write(vol.join("big/a.bin"), &random).unwrap();
    std::fs::write(vol.join("big/b.txt"), rng.text(13 << 20)).unwrap();
    std::fs::write(vol.join("big/c.small"), rng.text(3000)).unwrap();
    std::fs::write(vol.join("big/d.copy"), &random).unwrap();
    // Sparse: a leading hole, data, a hole in the middle, data, a trailing hole.
    let mut f = std::fs::File::create(vol.join("big/e.img")).unwrap();
    f.seek(SeekFrom::Start(2 << 20)).unwrap();
    f.write_all(&rng.bytes(3 << 20)).unwrap();
    f.seek(SeekFrom::Start(8 << 20)).unwrap();
    f.write_all(&rng.text(1 << 20)).unwrap();
    f.set_len(12 << 20).unwrap();
    drop(f);
    for i in 0..40 {
        std::fs::write(vol.join(format!("big/f{i:02}.small")), rng.text(20_000)).unwrap();
    }
    std::fs::write(vol.join("big/g.bin"), rng.bytes(6 << 20)).unwrap();
    std::fs::write(vol.join("z.txt"), rng.text(5 << 20)).unwrap();

    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let day0 = work.path().join("day0");
    snapshot(&vol, &day0);
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    let full = spool.last_dump();
    let logical = full["logical_bytes"].as_u64().unwrap();
    let stored = full["stored_bytes"].as_u64().unwrap();
    assert!(
        stored < logical - (8 << 20),
        "the copy of a.bin was stored again: {stored} bytes stored of {logical}"
    );

    // Day 1: a large file changes in place, one goes, one comes, the sparse one grows.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(vol.join("big/b.txt"))
        .unwrap();
    f.seek(SeekFrom::Start(7 << 20)).unwrap();
    f.write_all(&rng.text(100_000)).unwrap();
    drop(f);
    std::fs::remove_file(vol.join("big/d.copy")).unwrap();
    std::fs::write(vol.join("big/h.new"), rng.bytes(5 << 20)).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(vol.join("big/e.img"))
        .unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let day1 = work.path().join("day1");
    snapshot(&vol, &day1);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let incr = spool.last_dump();
    assert!(
        incr["stored_bytes"].as_u64().unwrap() < (7 << 20),
        "the incremental stored more than what changed: {incr}"
    );

    restore_and_compare(&spool, 1, &day0, &work.path().join("r0"));
    restore_and_compare(&spool, 2, &day1, &work.path().join("r1"));
    spool.run(["check", "--read-data"]);
}

both_kinds!(a_tree_of_many_directories_restores_exactly_with_files_created_concurrently);
/// Many small files over many directories, with empty files, symlinks (one dangling), FIFOs and
/// hard links among them: a restore creates a window's files from several threads (a
/// directory's run each) and the other nodes after them. The tree must come back exact.
fn a_tree_of_many_directories_restores_exactly_with_files_created_concurrently(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let mut rng = Rng::new(11);
    for d in 0..24 {
        let dir = vol.join(format!("d{d:02}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in 0..20 {
            let len = rng.below(30_000) as usize;
            std::fs::write(dir.join(format!("f{f:02}")), rng.text(len)).unwrap();
        }
        std::fs::write(dir.join("sub/inner"), rng.text(500)).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink(format!("f{:02}", d % 20), dir.join("link")).unwrap();
        std::os::unix::fs::symlink("../nowhere", dir.join("dangling")).unwrap();
        if d % 4 == 0 {
            mkfifo(&dir.join("pipe"), 0o640);
            std::fs::hard_link(dir.join("f00"), dir.join("hard")).unwrap();
        }
    }
    let spool = spool_of_with_full_dump(kind, &vol);
    let out = work.path().join("out");
    spool.run(["restore", "v", "--to", out.to_str().unwrap()]);
    let diffs = tree_differences(&vol, &out);
    assert!(diffs.is_empty(), "{diffs:#?}");
}
