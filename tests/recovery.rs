//! Integrity and recovery: `rebuild-catalog` from packs (and tapes), `check --repair`, and a
//! damaged catalog.redb giving a clear error instead of a panic.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;

/// Volume `v` with five dumps at levels 0,1,2,1,0 on 2026-11-01..05; returns the spool and
/// each dump's (id, snapshot of the tree it recorded).
fn history(work: &Path) -> (Spool, Vec<(u64, PathBuf)>) {
    history_of(Kind::Plain, work)
}

/// [`history`] on a spool of `kind`.
fn history_of(kind: Kind, work: &Path) -> (Spool, Vec<(u64, PathBuf)>) {
    let vol = work.join("vol");
    rich_tree(&vol);
    let spool = Spool::of(kind);
    spool.add_volume("v", &vol);
    let mut out = Vec::new();
    for (day, level) in [(1u32, 0u8), (2, 1), (3, 2), (4, 1), (5, 0)] {
        if day > 1 {
            mutate_day(&vol, day - 1);
        }
        let snap = work.join(format!("day{day}"));
        snapshot(&vol, &snap);
        spool.run([
            "dump",
            "v",
            "--level",
            &level.to_string(),
            "--date",
            &format!("2026-11-{day:02}"),
        ]);
        let id = spool.list_json().as_array().unwrap().last().unwrap()["id"]
            .as_u64()
            .unwrap();
        out.push((id, snap));
    }
    (spool, out)
}

/// The fields of `list --json` a rebuild must give back exactly.
fn identity(spool: &Spool) -> Vec<serde_json::Value> {
    spool
        .list_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d["id"], "volume": d["volume"], "time": d["time"], "level": d["level"],
                "base": d["base"], "chain": d["chain"], "manifest_chunks": d["manifest_chunks"],
            })
        })
        .collect()
}

fn catalog(spool: &Spool) -> PathBuf {
    spool.path().join("catalog.redb")
}

/// After a rebuild: every dump restores exactly, check reads everything clean, and a new
/// dump gets a fresh id and restores.
fn assert_whole(spool: &Spool, work: &Path, dumps: &[(u64, PathBuf)], tag: &str) {
    for (id, snap) in dumps {
        restore_and_compare(spool, *id, snap, &work.join(format!("{tag}-r{id}")));
    }
    let check = spool.run(["check", "--read-data"]);
    assert!(check.contains("no problems found"), "{check}");
    let max = dumps.iter().map(|d| d.0).max().unwrap();
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-20"]);
    let last = spool.last_dump();
    assert_eq!(last["id"].as_u64().unwrap(), max + 1, "{last}");
    restore_and_compare(
        spool,
        max + 1,
        &work.join("vol"),
        &work.join(format!("{tag}-new")),
    );
}

both_kinds!(a_deleted_catalog_is_rebuilt_from_the_packs);
fn a_deleted_catalog_is_rebuilt_from_the_packs(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let (spool, dumps) = history_of(kind, work.path());
    let before = identity(&spool);
    fs::remove_file(catalog(&spool)).unwrap();
    let (code, err) = spool.fail(["list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rebuild-catalog"), "{err}");
    let out = spool.run(["rebuild-catalog"]);
    assert!(out.contains("5 dumps restored"), "{out}");
    assert!(!spool.path().join("catalog.redb.rebuild").exists());
    assert_eq!(identity(&spool), before);
    assert_whole(&spool, work.path(), &dumps, "a");
}

/// Damage a file the four ways a disk or an admin can.
fn damage(path: &Path, kind: &str) {
    let mut bytes = fs::read(path).unwrap();
    let n = bytes.len();
    match kind {
        "truncated" => bytes.truncate(n / 2),
        "zeroed" => bytes[n / 4..3 * n / 4].fill(0),
        "garbage" => Rng::new(7).fill(&mut bytes),
        "empty" => bytes.clear(),
        _ => unreachable!(),
    }
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_catalog_gives_a_clear_error_and_is_rebuilt() {
    let work = tempfile::tempdir().unwrap();
    let (spool, dumps) = history(work.path());
    let before = identity(&spool);
    let good = fs::read(catalog(&spool)).unwrap();
    for kind in ["truncated", "zeroed", "garbage", "empty"] {
        fs::write(catalog(&spool), &good).unwrap();
        damage(&catalog(&spool), kind);
        let to = work.path().join(format!("{kind}-fail"));
        for args in [
            vec!["list"],
            vec!["dump", "v", "--level", "1", "--date", "2026-11-10"],
            vec!["check"],
            vec!["restore", "v", "--to", to.to_str().unwrap()],
        ] {
            let out = spool.cmd().args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{kind} {args:?}: {err}");
            assert!(!err.contains("panicked"), "{kind} {args:?}: {err}");
            assert!(
                err.contains("catalog.redb") && err.contains("reel rebuild-catalog"),
                "{kind} {args:?}: {err}"
            );
        }
        let out = spool.run(["rebuild-catalog"]);
        assert!(out.contains("the old catalog is kept as"), "{kind}: {out}");
        assert_eq!(identity(&spool), before, "{kind}");
        let mut restored: Vec<(u64, PathBuf)> = dumps.clone();
        restored.truncate(2);
        for (id, snap) in &restored {
            restore_and_compare(
                &spool,
                *id,
                snap,
                &work.path().join(format!("{kind}-r{id}")),
            );
        }
    }
    // The old files are kept for the admin to look at.
    let kept = fs::read_dir(spool.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("damaged-"))
        .count();
    assert_eq!(kept, 4);
    assert_whole(&spool, work.path(), &dumps, "b");
}

/// What prune does besides removing the rows: a forget record in a pack.
fn forget_dump(spool_dir: &Path, id: u64) {
    use reel::pack::BlobKind;
    use reel::record::ForgetRecord;
    use reel::spool::{Access, Spool};
    use reel::store::StoreWriter;
    let spool = Spool::open(spool_dir, Access::Write).unwrap();
    let d = spool.catalog.dump(id).unwrap().unwrap();
    let rec = ForgetRecord {
        version: 1,
        time_ns: reel::timefmt::now_ns(),
        dumps: vec![(d.id, d.volume.clone(), d.time_ns)],
    };
    let blob = rec.encode();
    let mut store = StoreWriter::new(&spool).unwrap();
    store
        .put_one(reel::ChunkId::of(&blob), &blob, BlobKind::Forget)
        .unwrap();
    store.finish(|w, _| w.forget_dumps([&d])).unwrap();
}

#[test]
fn a_forgotten_dump_stays_forgotten_after_a_rebuild() {
    let work = tempfile::tempdir().unwrap();
    let (spool, dumps) = history(work.path());
    // The last dump is a level 0 that nothing is based on: prune may take it.
    let (gone, _) = dumps[4];
    forget_dump(spool.path(), gone);
    let before = identity(&spool);
    assert_eq!(before.len(), 4);
    fs::remove_file(catalog(&spool)).unwrap();
    let out = spool.run(["rebuild-catalog", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["dumps_forgotten"], serde_json::json!([gone]), "{out}");
    assert_eq!(identity(&spool), before);
    // Its id is not handed out again.
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-21"]);
    let last = spool.last_dump();
    assert_eq!(last["id"].as_u64().unwrap(), gone + 1);
    for (id, snap) in &dumps[..4] {
        restore_and_compare(&spool, *id, snap, &work.path().join(format!("c-r{id}")));
    }
}

both_kinds!(repair_adopts_the_pack_of_a_killed_dump);
fn repair_adopts_the_pack_of_a_killed_dump(kind: Kind) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    snapshot(&vol, &work.path().join("day1"));
    let spool = spool_of_with_full_dump(kind, &vol);
    mutate_day(&vol, 1);
    let out = spool
        .cmd()
        .args(["dump", "v", "--level", "1", "--date", "2026-11-02"])
        .env("REEL_FAILPOINT", "pack-renamed")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let check = spool.run(["check"]);
    assert!(check.contains("is not named by the catalog"), "{check}");

    let out = spool.run(["check", "--repair", "--read-data"]);
    assert!(out.contains("adopted pack"), "{out}");
    assert!(out.contains("not turned into dumps"), "{out}");
    assert!(out.contains("no problems found"), "{out}");
    let check = spool.run(["check", "--read-data"]);
    assert!(!check.contains("not named by the catalog"), "{check}");
    assert!(check.contains("no problems found"), "{check}");
    // The killed dump did not become a dump; the committed one restores; dumps go on.
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);
    restore_and_compare(
        &spool,
        1,
        &work.path().join("day1"),
        &work.path().join("r1"),
    );
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    restore_and_compare(&spool, 2, &vol, &work.path().join("r2"));
    // A second repair finds nothing to do.
    let again = spool.run(["check", "--repair"]);
    assert!(again.contains("nothing to repair"), "{again}");
}

/// `n` MiB of incompressible files under `root/dir`, enough to fill a 32 MiB data-only pack.
fn big_files(root: &Path, dir: &str, seed: u64, mb: usize) {
    fs::create_dir_all(root.join(dir)).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..mb / 4 {
        fs::write(root.join(format!("{dir}/f{i:03}.bin")), rng.bytes(4 << 20)).unwrap();
    }
}

/// The pack files of at least 32 MiB: sealed full, so they hold file data only.
fn full_packs(spool: &Spool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(spool.path().join("packs")).unwrap().flatten() {
        for f in fs::read_dir(sub.path()).unwrap().flatten() {
            if f.metadata().unwrap().len() >= 32 << 20 {
                out.push(f.path());
            }
        }
    }
    out
}

#[test]
fn repair_drops_a_lost_pack_and_names_the_dumps_and_tapes_that_heal_them() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("small.txt"), b"small").unwrap();
    big_files(&vol, "a", 1, 40);
    snapshot(&vol, &work.path().join("day1"));
    let spool = spool_with_full_dump(&vol);
    let tapes = work.path().join("tapes");
    fs::create_dir(&tapes).unwrap();
    let img = tapes.join("t1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "T1"]);
    let first = full_packs(&spool);
    assert_eq!(first.len(), 1, "{first:?}");
    big_files(&vol, "b", 2, 40);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let both = full_packs(&spool);
    assert_eq!(both.len(), 2, "{both:?}");
    for p in &both {
        fs::remove_file(p).unwrap();
    }
    let (code, _) = spool.fail(["check"]);
    assert_eq!(code, 1);

    let out = spool
        .cmd()
        .args(["check", "--repair", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["dropped"].as_array().unwrap().len(), 2, "{r}");
    let inc = r["incomplete"].as_array().unwrap();
    assert_eq!(inc.len(), 2, "{r}");
    // Dump 1 lost only data that tape T1 holds; dump 2 also data on no tape.
    assert_eq!(inc[0]["id"], 1);
    assert_eq!(inc[0]["tapes"], serde_json::json!(["T1"]));
    assert_eq!(inc[0]["on_no_tape"], 0);
    assert_eq!(inc[1]["id"], 2);
    assert_eq!(inc[1]["tapes"], serde_json::json!(["T1"]));
    assert!(inc[1]["on_no_tape"].as_u64().unwrap() > 0);
    // Check no longer trips over missing packs; only dump 2's chunks on no tape remain.
    let problems = r["check"]["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p["dump"] == 2 && p["pack"].is_null()),
        "{problems:?}"
    );
    let human = spool.cmd().args(["check", "--repair"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("nothing to repair"), "{human}");

    // Dump 1 restores exactly from the spool and its tape.
    spool.restore_equals(
        &["v", "--dump", "1", "--tapes", tapes.to_str().unwrap()],
        &work.path().join("day1"),
        &work.path().join("r1"),
    );
    // A new full reads again the files whose chunks went missing, and restores exactly.
    let out = spool.run(["dump", "v", "--level", "0", "--date", "2026-11-03"]);
    assert!(!out.is_empty());
    restore_and_compare(&spool, 3, &vol, &work.path().join("r3"));
}

#[test]
fn rebuild_from_tapes_after_a_purge_restores_exactly() {
    let work = tempfile::tempdir().unwrap();
    let spool = replaced_file_days(work.path());
    let vol = work.path().join("vol");
    let tapes = work.path().join("tapes");
    fs::create_dir(&tapes).unwrap();
    let img = tapes.join("w1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    fs::write(tapes.join("notes.txt"), b"not a tape").unwrap();
    spool.run(["purge", "--exported"]);
    let before = identity(&spool);
    fs::remove_file(catalog(&spool)).unwrap();

    // Without the tapes the purged data (the 2nd's) is on no known tape: that dump is
    // incomplete.
    let out = spool.cmd().arg("rebuild-catalog").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("INCOMPLETE: dump 2"), "{text}");
    fs::remove_file(catalog(&spool)).unwrap();

    let out = spool
        .cmd()
        .args(["rebuild-catalog", "--from-tapes"])
        .arg(&tapes)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tape W1 recorded"), "{text}");
    assert!(text.contains("notes.txt"), "{text}");
    assert!(!text.contains("INCOMPLETE"), "{text}");
    assert_eq!(identity(&spool), before);
    let tapes_out = spool.run(["tapes"]);
    assert!(tapes_out.contains("W1"), "{tapes_out}");
    spool.run(["check"]);
    spool.restore_days_equal(
        work.path(),
        "f",
        &["--tapes", tapes.to_str().unwrap()],
        &[1, 2, 3],
    );
    // Dumps go on.
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-04"]);
    restore_and_compare(&spool, 4, &vol, &work.path().join("f4"));

    // A spool whose packs never held these dumps gets them from the tape (the import path).
    let other = Spool::new();
    let out = other
        .cmd()
        .args(["rebuild-catalog", "--from-tapes"])
        .arg(&tapes)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tape W1: imported 3 dumps"), "{text}");
    assert_eq!(identity(&other).len(), 3);
    other.restore_days_equal(work.path(), "o", &[], &[1, 2, 3]);
    other.run(["check", "--read-data"]);
}
