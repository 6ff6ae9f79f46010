//! `reel gc`: what it frees, what it must keep, and how it behaves beside readers and crashes.
//!
//! `reel prune` is built separately, so these tests make garbage the way prune will: they take
//! dumps out of the catalog (their `dumps`, `volume_dumps` and `owned` rows) through the
//! library, then run the real binary.

mod common;

use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::*;
use reel::spool::Access;

/// Take dumps out of the catalog as `prune` would (without its Forget record).
fn forget_dumps(spool: &Spool, ids: &[u64]) {
    let s = spool.open_lib(Access::Write);
    let w = s.catalog.writer().expect("write txn");
    let recs: Vec<_> = {
        let r = s.catalog.reader().expect("read txn");
        ids.iter()
            .map(|&id| r.dump(id).unwrap().expect("dump exists"))
            .collect()
    };
    w.forget_dumps(&recs).unwrap();
    w.commit().unwrap();
}

fn gc_json(spool: &Spool, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["gc", "--json"];
    a.extend_from_slice(args);
    let out = spool.run(&a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("gc --json: {e}\n{out}"))
}

fn check_json(spool: &Spool) -> serde_json::Value {
    let out = spool.run(["check", "--read-data", "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn n(v: &serde_json::Value, k: &str) -> i64 {
    v[k].as_i64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

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

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// A volume of a few MiB whose days replace some files: dumps 1..=4 (levels 0, 1, 0, 1) with
/// snapshots of each day under `work/sN`.
fn history(work: &Path) -> (Spool, std::path::PathBuf) {
    history_of(Kind::Plain, work)
}

/// [`history`] on a spool of `kind`.
fn history_of(kind: Kind, work: &Path) -> (Spool, std::path::PathBuf) {
    let vol = work.join("vol");
    rich_tree(&vol);
    let mut rng = Rng::new(7);
    for i in 0..8 {
        write(&vol.join(format!("data/r{i}.bin")), &rng.bytes(200 << 10));
        write(&vol.join(format!("data/t{i}.txt")), &rng.text(150 << 10));
    }
    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    let levels = ["0", "1", "0", "1"];
    for (day, level) in levels.iter().enumerate() {
        let day = day as u32 + 1;
        if day > 1 {
            mutate_day(&vol, day);
            for i in 0..8 {
                if (i + day).is_multiple_of(3) {
                    let _ = fs::remove_file(vol.join(format!("data/r{i}.bin")));
                } else if (i + day) % 3 == 1 {
                    write(&vol.join(format!("data/r{i}.bin")), &rng.bytes(200 << 10));
                    write(&vol.join(format!("data/t{i}.txt")), &rng.text(150 << 10));
                }
            }
        }
        spool.run([
            "dump",
            "v",
            "--level",
            level,
            "--date",
            &format!("2026-11-{day:02}"),
        ]);
        snapshot(&vol, &work.join(format!("s{day}")));
    }
    (spool, vol)
}

both_kinds!(gc_frees_forgotten_dumps_and_keeps_the_rest_exact);
fn gc_frees_forgotten_dumps_and_keeps_the_rest_exact(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let (spool, vol) = history_of(kind, work.path());
    forget_dumps(&spool, &[1, 2]);
    let r = gc_json(&spool, &[]);
    assert!(n(&r, "bytes_freed") > 0, "{r}");
    assert!(n(&r, "chunks_removed") > 0, "{r}");
    assert!(
        n(&r, "packs_deleted") + n(&r, "packs_rewritten") >= 1,
        "{r}"
    );
    assert!(n(&r, "packs_deleted") + n(&r, "packs_rewritten") <= n(&r, "packs_before"));
    assert_eq!(n(&r, "doomed_waiting"), 0, "{r}");
    for id in [3, 4] {
        restore_and_compare(
            &spool,
            id,
            &work.path().join(format!("s{id}")),
            &work.path().join(format!("r{id}")),
        );
    }
    let c = check_json(&spool);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    // Forgotten dumps really are gone from the spool: their old packs' files too.
    let files = pack_files(&spool);
    assert_eq!(files.len() as i64, n(&c, "packs"), "{files:?}");

    // A new dump works, and a second gc finds nothing to do.
    mutate_day(&vol, 5);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-05"]);
    snapshot(&vol, &work.path().join("s5"));
    let r2 = gc_json(&spool, &[]);
    assert_eq!(n(&r2, "packs_deleted"), 0, "{r2}");
    assert_eq!(n(&r2, "packs_rewritten"), 0, "{r2}");
    assert_eq!(n(&r2, "bytes_freed"), 0, "{r2}");
    restore_and_compare(&spool, 5, &work.path().join("s5"), &work.path().join("r5"));
    // The human output says the same.
    let out = spool.run(["gc"]);
    assert!(out.contains("0 of "), "{out}");
}

both_kinds!(partly_live_frames_are_rebuilt_and_restore_stays_exact);
fn partly_live_frames_are_rebuilt_and_restore_stays_exact(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let mut rng = Rng::new(11);
    // Both files' chunks go into the same frames (one batch, frames of up to 1 MiB).
    write(&vol.join("keep.txt"), &rng.text(300 << 10));
    write(&vol.join("drop.txt"), &rng.text(300 << 10));
    let spool = spool_of_with_full_dump(kind, &vol);
    fs::remove_file(vol.join("drop.txt")).unwrap();
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-02"]);
    let s2 = work.path().join("s2");
    snapshot(&vol, &s2);
    forget_dumps(&spool, &[1]);
    let r = gc_json(&spool, &["--max-unused", "0"]);
    assert!(n(&r, "packs_rewritten") >= 1, "{r}");
    assert!(n(&r, "packs_written") >= 1, "{r}");
    assert!(n(&r, "chunks_moved") > 0, "{r}");
    assert!(n(&r, "chunks_removed") > 0, "{r}");
    // Dropping 300 KiB of text frees more than its compressed size would be as an estimate.
    assert!(n(&r, "bytes_freed") > 10_000, "{r}");
    restore_and_compare(&spool, 2, &s2, &work.path().join("r2"));
    let c = check_json(&spool);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    // Rebuilt frames are exact: even with max-unused 0, a second gc has nothing to rewrite.
    let r2 = gc_json(&spool, &["--max-unused", "0"]);
    assert_eq!(n(&r2, "packs_rewritten"), 0, "{r2}");
    assert_eq!(n(&r2, "packs_deleted"), 0, "{r2}");
    // `reel cat` reads the moved chunks too.
    let cat = spool.run(["cat", "v", "keep.txt"]);
    assert_eq!(cat.as_bytes(), fs::read(s2.join("keep.txt")).unwrap());
}

#[test]
fn a_reader_keeps_doomed_packs_until_the_next_gc() {
    let work = tempfile::tempdir().unwrap();
    let (spool, _vol) = history(work.path());
    forget_dumps(&spool, &[1, 2, 3]);
    let lock_path = spool.path().join("locks").join("readers");
    fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let reader = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap();
    reader.lock_shared().unwrap();
    let before = pack_files(&spool);
    let r = gc_json(&spool, &[]);
    let waiting = n(&r, "doomed_waiting");
    assert!(waiting > 0, "{r}");
    assert!(n(&r, "doomed_waiting_bytes") > 0, "{r}");
    // Nothing was deleted while the reader is in.
    let during = pack_files(&spool);
    assert!(
        before.iter().all(|p| during.contains(p)),
        "a pack file vanished"
    );
    let human = spool.run(["gc"]);
    assert!(
        human.contains("wait for readers (restore/cat/mount) to finish; run `reel gc` again"),
        "{human}"
    );
    let c = check_json(&spool);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    assert_eq!(n(&c, "doomed_packs"), waiting, "{c}");
    // The reader still restores (shared with our shared lock).
    restore_and_compare(&spool, 4, &work.path().join("s4"), &work.path().join("r4"));
    drop(reader);
    let r2 = gc_json(&spool, &[]);
    assert_eq!(n(&r2, "doomed_deleted"), waiting, "{r2}");
    assert_eq!(n(&r2, "doomed_waiting"), 0, "{r2}");
    assert!(n(&r2, "bytes_freed") > 0, "{r2}");
    let c = check_json(&spool);
    assert_eq!(n(&c, "doomed_packs"), 0, "{c}");
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    assert_eq!(pack_files(&spool).len() as i64, n(&c, "packs"));
}

#[test]
fn gc_killed_at_each_step_leaves_a_sound_spool() {
    for point in ["gc-packs-written", "gc-committed", "gc-deleting"] {
        let work = tempfile::tempdir().unwrap();
        let (spool, _vol) = history(work.path());
        forget_dumps(&spool, &[1, 2]);
        let out = spool
            .cmd()
            .args(["gc", "--max-unused", "0"])
            .env("REEL_FAILPOINT", point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: gc was not killed: {out:?}"
        );
        let check = spool.run(["check", "--read-data"]);
        assert!(check.contains("no problems found"), "{point}: {check}");
        for id in [3, 4] {
            restore_and_compare(
                &spool,
                id,
                &work.path().join(format!("s{id}")),
                &work.path().join(format!("r{id}-{point}")),
            );
        }
        let r = gc_json(&spool, &["--max-unused", "0"]);
        assert_eq!(n(&r, "doomed_waiting"), 0, "{point}: {r}");
        let c = check_json(&spool);
        assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{point}: {c}");
        assert_eq!(n(&c, "doomed_packs"), 0, "{point}: {c}");
        // The interrupted run's new packs are rewritten to the same bytes, hence named again.
        assert_eq!(
            c["unreferenced_packs"].as_array().unwrap().len(),
            0,
            "{point}: {c}"
        );
        for id in [3, 4] {
            restore_and_compare(
                &spool,
                id,
                &work.path().join(format!("s{id}")),
                &work.path().join(format!("r{id}-{point}-after")),
            );
        }
        let r2 = gc_json(&spool, &["--max-unused", "0"]);
        assert_eq!(
            n(&r2, "packs_deleted") + n(&r2, "packs_rewritten"),
            0,
            "{point}: {r2}"
        );
    }
}

#[test]
fn dry_run_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (spool, _vol) = history(work.path());
    forget_dumps(&spool, &[1, 2]);
    let packs = pack_files(&spool);
    let list = spool.list_json();
    let dry = gc_json(&spool, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(
        n(&dry, "packs_deleted") + n(&dry, "packs_rewritten") > 0,
        "{dry}"
    );
    assert!(n(&dry, "bytes_freed") > 0, "{dry}");
    assert_eq!(pack_files(&spool), packs);
    assert_eq!(spool.list_json(), list);
    let human = spool.run(["gc", "--dry-run"]);
    assert!(human.contains("would be"), "{human}");
    // The real run does what the dry run said.
    let real = gc_json(&spool, &[]);
    for k in [
        "packs_deleted",
        "packs_rewritten",
        "chunks_removed",
        "chunks_on_tape",
    ] {
        assert_eq!(n(&real, k), n(&dry, k), "{k}: dry {dry} real {real}");
    }
}

#[test]
fn gc_keeps_the_chunks_of_a_pending_store_clone() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let mut rng = Rng::new(3);
    write(&vol.join("data/a.bin"), &rng.bytes(300 << 10));
    let spool = spool_with_full_dump(&vol);
    mutate_day(&vol, 2);
    write(&vol.join("data/b.bin"), &rng.bytes(300 << 10));
    spool.run(["clone", "v", "--date", "2026-11-02"]);
    let s2 = work.path().join("s2");
    snapshot(&vol, &s2);
    // The volume changes after the clone: the dump must still be the clone's.
    mutate_day(&vol, 3);
    forget_dumps(&spool, &[1]);
    let r = gc_json(&spool, &["--max-unused", "0"]);
    assert!(n(&r, "live_refs") > 0, "{r}");
    // Dump 1's record and manifest went; the clone's chunks stayed.
    assert!(n(&r, "chunks_removed") > 0, "{r}");
    let out = spool.run(["dump", "v", "--level", "0"]);
    assert!(
        out.contains("clone"),
        "the dump did not use the clone: {out}"
    );
    let list = spool.list_json();
    let id = list[0]["id"].as_u64().unwrap();
    restore_and_compare(&spool, id, &s2, &work.path().join("r2"));
    let c = check_json(&spool);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
}
