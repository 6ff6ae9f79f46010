//! Crash safety, locking, damage detection and path safety.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A volume with enough incompressible data for several 32 MiB packs.
fn big_volume(root: &Path, seed: u64, mb: usize) {
    fs::create_dir_all(root.join("data")).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..mb / 4 {
        fs::write(root.join(format!("data/f{i:03}.bin")), rng.bytes(4 << 20)).unwrap();
    }
    fs::write(root.join("small.txt"), format!("seed {seed}")).unwrap();
}

#[test]
fn killed_dump_leaves_a_spool_that_checks_restores_and_dumps_again() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    big_volume(&vol, 1, 40);
    let spool = spool_with_full_dump(&vol);
    spool.checkpoint_every_pack();
    let day1 = work.path().join("day1");
    snapshot(&vol, &day1);
    // New data for the dumps we kill: about 80 MiB, so several packs are sealed (and, with a
    // checkpoint after every pack, committed) on the way.
    big_volume(&vol.join("new"), 2, 80);

    // Ordered so that each point is still reached: kills after a pack commit leave that pack's
    // chunks in the spool, and later dumps deduplicate against them. A blob is a frame of up
    // to 4 MiB here, so 8 of them fill a 32 MiB pack: the first kill is mid-pack.
    let points = [
        "chunk-appended:4",
        "pack-renamed:1",
        "pack-committed:1",
        "pack-renamed:2",
        "chunk-appended:3",
        "before-record-commit:1",
    ];
    let mut date = 2;
    for point in points {
        let out = spool
            .cmd()
            .args([
                "dump",
                "v",
                "--level",
                "1",
                "--date",
                &format!("2026-11-{date:02}"),
            ])
            .env("REEL_FAILPOINT", point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: dump was not killed: {out:?}"
        );
        // The spool opens, checks clean, and holds exactly the committed dumps.
        let check = spool.run(["check", "--read-data"]);
        assert!(check.contains("no problems found"), "{point}: {check}");
        assert_eq!(
            spool.list_json().as_array().unwrap().len(),
            1,
            "{point}: an uncommitted dump is listed"
        );
        restore_and_compare(&spool, 1, &day1, &work.path().join(format!("r-{date}")));
        date += 1;
    }
    // A dump killed after its record committed is complete.
    let out = spool
        .cmd()
        .args([
            "dump",
            "v",
            "--level",
            "1",
            "--date",
            &format!("2026-11-{date:02}"),
        ])
        .env("REEL_FAILPOINT", "record-committed")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    date += 1;
    let day_n = work.path().join("dayn");
    snapshot(&vol, &day_n);
    assert_eq!(spool.list_json().as_array().unwrap().len(), 2);
    restore_and_compare(&spool, 2, &day_n, &work.path().join("r-committed"));
    // And a new dump succeeds and restores.
    fs::write(vol.join("after.txt"), b"after the crashes").unwrap();
    let last = work.path().join("last");
    snapshot(&vol, &last);
    spool.run([
        "dump",
        "v",
        "--level",
        "1",
        "--date",
        &format!("2026-11-{date:02}"),
    ]);
    restore_and_compare(&spool, 3, &last, &work.path().join("r-last"));
    let check = spool.run(["check", "--read-data"]);
    assert!(check.contains("no problems found"), "{check}");
}

/// Catalog commits come at checkpoints (`checkpoint_mb`, 256 MiB of packs by default), not
/// after every pack; what a killed dump committed is exactly its last checkpoint.
#[test]
fn dump_commits_at_checkpoints_not_after_every_pack() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    big_volume(&vol, 5, 72); // three 32 MiB packs
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let dump = |spool: &Spool| {
        spool
            .cmd()
            .args(["dump", "v", "--level", "0"])
            .env("REEL_FAILPOINT", "pack-committed:1")
            .output()
            .unwrap()
    };
    // Default: no commit before the dump's own, so the failpoint is never passed.
    let out = dump(&spool);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);

    // A commit after every pack: the dump dies after its first pack's commit, which holds that
    // pack and nothing else.
    let other = Spool::new();
    other.checkpoint_every_pack();
    other.add_volume("v", &vol);
    let out = dump(&other);
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let check = other.run(["check", "--read-data", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(report["packs"], 1, "{check}");
    assert!(other.list_json().as_array().unwrap().is_empty());
    // The default spool's one commit named all three packs.
    let check = spool.run(["check", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(report["packs"], 3, "{check}");
}

#[test]
fn dump_killed_at_random_moments_never_damages_the_spool() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    big_volume(&vol, 3, 24);
    let spool = spool_with_full_dump(&vol);
    let day1 = work.path().join("day1");
    snapshot(&vol, &day1);
    big_volume(&vol.join("more"), 4, 64);
    let mut rng = Rng::new(42);
    for round in 0..6 {
        let mut child = spool
            .cmd()
            .args([
                "dump",
                "v",
                "--level",
                "1",
                "--date",
                &format!("2026-11-{:02}", round + 2),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(5, 400)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let check = spool.run(["check"]);
        assert!(
            check.contains("no problems found"),
            "round {round} ({status:?}): {check}"
        );
        if status.success() {
            break; // it finished before we could kill it
        }
    }
    restore_and_compare(&spool, 1, &day1, &work.path().join("r1"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-20"]);
    let check = spool.run(["check", "--read-data"]);
    assert!(check.contains("no problems found"), "{check}");
}

#[test]
fn a_second_writer_gets_a_clear_error_naming_the_lock() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("f"), b"x").unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    // Hold the writer's lock the way another reel would.
    let held = reel::spool::Spool::open(spool.path(), reel::spool::Access::Write).unwrap();
    let started = Instant::now();
    let (code, err) = spool.fail(["dump", "v", "--level", "0"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second writer waited"
    );
    assert_eq!(code, 1);
    assert!(err.contains("busy") && err.contains("lock"), "{err}");
    // Readers are not blocked by a writer.
    spool.run(["list"]);
    drop(held);
    spool.run(["dump", "v", "--level", "0"]);
}

fn packs(spool: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(spool.join("packs")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_and_restore_refuses_to_write_wrong_bytes() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("only.bin"), Rng::new(9).bytes(3 << 20)).unwrap();
    let spool = spool_with_full_dump(&vol);
    let before = spool.run(["check", "--read-data"]);
    assert!(before.contains("no problems found"), "{before}");
    // The data pack is the largest; flip a byte in its middle (inside a chunk's bytes).
    let pack = packs(spool.path())
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();

    let out = spool.cmd().args(["check", "--read-data"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(pack_name),
        "check does not name the pack: {text}"
    );
    assert!(
        text.contains("dump 1"),
        "check does not name the dump: {text}"
    );
    assert!(
        text.contains("only.bin"),
        "check does not name the file: {text}"
    );

    // A target that exists already keeps what the failed restore wrote, to be looked at.
    let target = work.path().join("r");
    fs::create_dir(&target).unwrap();
    let (code, err) = spool.fail(["restore", "v", "--to", target.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("only.bin"),
        "restore error does not name the file: {err}"
    );
    // Whatever was written holds no wrong bytes: each byte is the original or still unwritten
    // (zero). The data is random, so a damaged chunk written out would show as thousands.
    let original = fs::read(vol.join("only.bin")).unwrap();
    if let Ok(got) = fs::read(target.join("only.bin")) {
        let wrong = original
            .iter()
            .zip(&got)
            .filter(|(a, b)| a != b && **b != 0)
            .count();
        assert_eq!(wrong, 0, "restore wrote {wrong} wrong bytes");
    }
}

/// A restore that fails part way removes the target it made, and the directories it made above
/// it, through handles (the symlink it restored is removed, not followed); what was there
/// before stays.
#[test]
fn a_failed_restore_removes_the_target_it_made_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(vol.join("sub/deeper")).unwrap();
    fs::write(vol.join("only.bin"), Rng::new(11).bytes(3 << 20)).unwrap();
    fs::write(vol.join("sub/deeper/x.txt"), b"x").unwrap();
    let outside = work.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep.txt"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, vol.join("sub/out")).unwrap();
    let spool = spool_with_full_dump(&vol);
    // Damage the data pack: the restore makes the directories and the symlink, then stops at
    // only.bin's chunks.
    let pack = packs(spool.path())
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mid = fs::metadata(&pack).unwrap().len() / 2;
    common::faults::flip_byte(&pack, mid, 0x40);

    let restore_fails = |target: &Path| {
        let (code, err) = run_fail(spool.cmd().args(["restore", "v", "--to"]).arg(target));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("only.bin"), "{err}");
    };
    // A target made with two directories above it: all three go.
    let new = work.path().join("new");
    restore_fails(&new.join("deeper/r"));
    assert!(!new.exists(), "the failed restore left {}", new.display());
    // A target made in a directory that was there: the target goes, the directory stays.
    let parent = work.path().join("parent");
    fs::create_dir(&parent).unwrap();
    fs::write(parent.join("sibling.txt"), b"mine").unwrap();
    restore_fails(&parent.join("r"));
    assert!(!parent.join("r").exists());
    assert_eq!(fs::read(parent.join("sibling.txt")).unwrap(), b"mine");
    // A target that was there stays.
    let mine = work.path().join("mine");
    fs::create_dir(&mine).unwrap();
    restore_fails(&mine);
    assert!(mine.is_dir());
    // The removal followed no symlink.
    assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn restore_never_writes_through_a_symlink_outside_the_target() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(vol.join("sub")).unwrap();
    fs::write(vol.join("sub/a.txt"), b"inside").unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["dump", "v", "--level", "0"]);
    // The target already holds `sub` as a symlink to a directory outside it.
    let outside = work.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = work.path().join("t");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("sub")).unwrap();
    let _ = spool
        .cmd()
        .args([
            "restore",
            "v",
            "--to",
            target.to_str().unwrap(),
            "--overwrite",
        ])
        .output()
        .unwrap();
    assert!(
        !outside.join("a.txt").exists(),
        "restore wrote outside --to through a symlink"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn a_file_changing_while_read_is_reread_or_reported_never_stored_torn() {
    // Read in segments on a thread of its own (large files).
    file_changing_while_read_is_never_stored_torn(24 << 20);
}

#[test]
fn a_small_file_changing_while_read_is_reread_or_reported_never_stored_torn() {
    // Read whole, in a window of small files (`read_up_to`, at most the size stat gave).
    file_changing_while_read_is_never_stored_torn(1 << 20);
}

/// A writer flips the whole of a `SIZE`-byte file between two patterns while the dump reads it:
/// the dump stores one pattern, or names the file in a warning.
fn file_changing_while_read_is_never_stored_torn(size: usize) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    let hot = vol.join("hot.bin");
    let size_mib = size >> 20;
    fs::write(&hot, vec![b'A'; size]).unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    // A writer flips the whole file between two patterns, in place, while the dump reads it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let hot = hot.clone();
        std::thread::spawn(move || {
            use std::io::{Seek, Write};
            let mut f = fs::OpenOptions::new().write(true).open(&hot).unwrap();
            let mut flip = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let byte = if flip { b'B' } else { b'A' };
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                for _ in 0..size_mib {
                    f.write_all(&vec![byte; 1 << 20]).unwrap();
                }
                flip = !flip;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let out = spool.run(["dump", "v", "--level", "0"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let data = spool
        .cmd()
        .args(["cat", "v", "hot.bin"])
        .output()
        .unwrap()
        .stdout;
    let uniform = data.len() == size && data.iter().all(|&b| b == data[0]);
    let warned = out.contains("hot.bin") && out.contains("changed while being read");
    assert!(
        uniform || warned,
        "a torn file was stored without a word:\n{out}"
    );
}

/// A restore whose target fills up names the target, not the spool: the spool's advice to
/// prune and gc backups would have an admin delete the very dumps they are restoring from.
#[test]
fn restore_onto_a_full_target_speaks_of_the_target() {
    let work = tempfile::tempdir().unwrap();
    let Some(mnt) = common::faults::TmpfsMount::new(&work.path().join("small"), 8) else {
        println!("skipped: needs root to mount a small tmpfs as the target");
        return;
    };
    let vol = work.path().join("vol");
    big_volume(&vol, 7, 16);
    let spool = spool_with_full_dump(&vol);
    let target = mnt.dir.join("r");
    let (code, err) = run_fail(spool.cmd().args(["restore", "v", "--to"]).arg(&target));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("restore target") && err.contains("full") && err.contains("free space there"),
        "{err}"
    );
    assert!(
        !err.contains("reel gc") && !err.contains("reel prune"),
        "{err}"
    );
    // The spool is untouched: the same dump restores elsewhere.
    restore_and_compare(&spool, 1, &vol, &work.path().join("elsewhere"));
}

// ---------------------------------------------------------------------------------------------
// The shrink guard: an unmounted, emptied or mostly deleted volume is not a successful dump
// ---------------------------------------------------------------------------------------------

/// `n` files `f00`..., of 4 KiB of random bytes each, in `vol`.
fn numbered_files(vol: &Path, n: usize, seed: u64) {
    fs::create_dir_all(vol).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..n {
        fs::write(vol.join(format!("f{i:02}")), rng.bytes(4096)).unwrap();
    }
}

/// Every file under the spool with its size, but the writer's lock, the catalog (compared by
/// what `list` and `check` read) and the freeze locks (made once by a volume's first freeze,
/// and kept): a refused dump must leave it as it was (no pack, no staging file, no clone).
fn spool_files(spool: &Path) -> Vec<(String, u64)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, u64)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel == "locks" {
                continue;
            }
            if md.is_dir() {
                out.push((format!("{rel}/"), 0));
                walk(&p, base, out);
            } else if rel != "lock" && rel != "catalog.redb" {
                out.push((rel, md.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(spool, spool, &mut out);
    out.sort();
    out
}

/// The spool's catalog as `list --json` and `check` see it, and its files.
fn spool_state(spool: &Spool) -> (serde_json::Value, Vec<(String, u64)>) {
    spool.run(["check"]);
    (spool.list_json(), spool_files(spool.path()))
}

#[test]
fn an_emptied_volume_is_refused_until_allowed_and_leaves_the_spool_as_it_was() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    numbered_files(&vol, 10, 1);
    let spool = spool_with_full_dump(&vol);
    for f in fs::read_dir(&vol).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let before = spool_state(&spool);
    for args in [
        vec!["dump", "v", "--level", "1", "--date", "2026-11-02"],
        vec!["backup", "v", "--level", "1", "--date", "2026-11-02"],
        vec!["clone", "v", "--date", "2026-11-02"],
    ] {
        let (code, err) = spool.fail(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("volume v") && err.contains(&vol.display().to_string()),
            "the error names the volume and its root: {err}"
        );
        assert!(
            err.contains("is empty") && err.contains("--allow-shrink"),
            "{err}"
        );
        assert_eq!(spool_state(&spool), before, "{args:?} changed the spool");
    }
    // The admin knows: the empty tree dumps.
    let out = spool.run([
        "dump",
        "v",
        "--level",
        "1",
        "--date",
        "2026-11-02",
        "--allow-shrink",
    ]);
    assert!(out.contains("files        0 "), "{out}");
    assert_eq!(spool.last_dump()["files"], 0);
}

#[test]
fn a_volume_shrunk_under_its_share_is_refused_and_one_above_it_dumps() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    numbered_files(&vol, 10, 2);
    let spool = spool_with_full_dump(&vol);
    let keep = work.path().join("keep");
    snapshot(&vol, &keep);

    // 60% of the files (and of the bytes) deleted: refused, by `dump` and by `backup`, with
    // the figures, and nothing is committed.
    for i in 0..6 {
        fs::remove_file(vol.join(format!("f{i:02}"))).unwrap();
    }
    let before = spool_state(&spool);
    for cmd in ["dump", "backup"] {
        let (code, err) = spool.fail([cmd, "v", "--level", "1", "--date", "2026-11-02"]);
        assert_eq!(code, 1, "{cmd}: {err}");
        for says in [
            "volume v",
            "4 files",
            "40% of the files",
            "40% of the bytes",
            "previous dump 1",
            "10 files",
            "50%",
            "Nothing was committed",
            "--allow-shrink",
        ] {
            assert!(err.contains(says), "{cmd}: no {says:?} in: {err}");
        }
        assert_eq!(
            spool_state(&spool),
            before,
            "the refused {cmd} changed the spool"
        );
    }

    // 40% deleted: a level 1 of the remaining 6 files, none of them changed, dumps. Its file
    // count is the whole tree's, not the changed files'.
    fs::copy(keep.join("f00"), vol.join("f00")).unwrap();
    fs::copy(keep.join("f01"), vol.join("f01")).unwrap();
    let out = spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    assert!(out.contains("files        6 "), "{out}");

    // The share is the spool's min_share_percent, and a volume's own overrides it.
    let toml = spool.path().join("reel.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        text.replace("min_share_percent = 50", "min_share_percent = 90"),
    )
    .unwrap();
    fs::remove_file(vol.join("f09")).unwrap(); // 5 of 6: 83%
    let (_, err) = spool.fail(["dump", "v", "--level", "1", "--date", "2026-11-03"]);
    assert!(
        err.contains("83% of the files") && err.contains("90%"),
        "{err}"
    );
    let text = fs::read_to_string(&toml).unwrap();
    let own = text.replace("[volumes.v]\n", "[volumes.v]\nmin_share_percent = 80\n");
    assert_ne!(own, text);
    fs::write(&toml, own).unwrap();
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-03"]);

    // --allow-shrink dumps a tree of one file out of five, and restores it.
    for i in 1..10 {
        let _ = fs::remove_file(vol.join(format!("f{i:02}")));
    }
    let (_, err) = spool.fail(["backup", "v", "--level", "1", "--date", "2026-11-04"]);
    assert!(err.contains("1 files"), "{err}");
    spool.run([
        "backup",
        "v",
        "--level",
        "1",
        "--date",
        "2026-11-04",
        "--allow-shrink",
    ]);
    let dump = spool.last_dump();
    assert_eq!(dump["files"], 1, "{dump}");
    restore_and_compare(
        &spool,
        dump["id"].as_u64().unwrap(),
        &vol,
        &work.path().join("r"),
    );
}

#[test]
fn the_first_dump_of_a_small_volume_is_not_refused_but_an_empty_one_is() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    let small = work.path().join("small");
    numbered_files(&small, 1, 3);
    spool.add_volume("small", &small);
    spool.run(["dump", "small", "--level", "0"]);

    let empty = work.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = spool.run(["volume", "add", "empty", empty.to_str().unwrap()]);
    assert!(
        out.contains("is empty"),
        "volume add warns of an empty root: {out}"
    );
    let (code, err) = spool.fail(["dump", "empty", "--level", "0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("volume empty") && err.contains("is empty"),
        "{err}"
    );
    spool.run(["dump", "empty", "--level", "0", "--allow-shrink"]);
    assert_eq!(spool.list_json().as_array().unwrap().len(), 2);
}

/// A volume added before reel recorded filesystems (no `filesystem` in its reel.toml section)
/// records its root's at its next successful dump, and is guarded from then on.
#[test]
fn a_volume_without_a_recorded_filesystem_records_it_at_its_next_dump() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    numbered_files(&vol, 4, 4);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let toml = spool.path().join("reel.toml");
    let text = fs::read_to_string(&toml).unwrap();
    let start = text.find("[volumes.v.filesystem]").expect(&text);
    let end = text[start..].find("mount_root").unwrap() + start;
    let end = text[end..].find('\n').unwrap() + end + 1;
    fs::write(&toml, format!("{}{}", &text[..start], &text[end..])).unwrap();
    assert!(!fs::read_to_string(&toml).unwrap().contains("filesystem"));

    let out = spool.run(["dump", "v", "--level", "0"]);
    assert!(
        out.contains("recorded     the filesystem of its root"),
        "{out}"
    );
    let text = fs::read_to_string(&toml).unwrap();
    assert!(text.contains("[volumes.v.filesystem]"), "{text}");
    let out = spool.run(["dump", "v", "--level", "1"]);
    assert!(!out.contains("recorded"), "recorded once: {out}");
}

/// An ext4 filesystem in an image file, loop-mounted at `dir` (created), unmounted when
/// dropped. None (after saying why) when the test cannot mount one.
struct Ext4Mount {
    dir: PathBuf,
}

impl Ext4Mount {
    fn new(image: &Path, dir: &Path) -> Option<Ext4Mount> {
        if !is_root() {
            println!("skipped: needs root to mount a loop filesystem");
            return None;
        }
        fs::write(image, b"").unwrap();
        fs::File::options()
            .write(true)
            .open(image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .status()
            .is_ok_and(|s| s.success());
        fs::create_dir_all(dir).unwrap();
        let mounted = made
            && std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            println!("skipped: cannot make and loop-mount an ext4 filesystem here");
            return None;
        }
        Some(Ext4Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// The volume is an ext4 filesystem mounted at its path. When it is not mounted and the same
/// files sit in the mount point on the filesystem below (so neither the empty check nor the
/// share check would see it), or another ext4 filesystem with the same files is mounted in
/// its place, the dump is refused for its filesystem; `--allow-shrink` dumps it, and
/// `volume set --record-fs` makes the new filesystem the volume's.
#[test]
fn a_root_on_another_filesystem_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let seeded = work.path().join("files");
    numbered_files(&seeded, 8, 5);
    let Some(first) = Ext4Mount::new(&work.path().join("a.img"), &vol) else {
        return;
    };
    copy_files(&seeded, &vol);
    let spool = Spool::new();
    let out = spool.run(["volume", "add", "v", vol.to_str().unwrap()]);
    assert!(
        out.contains("root on ext2/ext3/ext4") && out.contains("the root of a mount"),
        "{out}"
    );
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    drop(first);

    // Not mounted: the mount point holds the same files, on the filesystem below.
    copy_files(&seeded, &vol);
    let refused = |what: &str| {
        let before = spool_state(&spool);
        for cmd in ["dump", "backup"] {
            let (code, err) = spool.fail([cmd, "v", "--level", "1", "--date", "2026-11-02"]);
            assert_eq!(code, 1, "{what}, {cmd}: {err}");
            for says in [
                "volume v",
                "another filesystem",
                "recorded:",
                "mounted",
                "--record-fs",
            ] {
                assert!(err.contains(says), "{what}, {cmd}: no {says:?} in: {err}");
            }
            assert_eq!(
                spool_state(&spool),
                before,
                "{what}: {cmd} changed the spool"
            );
        }
    };
    refused("not mounted");
    for f in fs::read_dir(&vol).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }

    // Another ext4 filesystem with the same files in its place.
    let Some(_second) = Ext4Mount::new(&work.path().join("b.img"), &vol) else {
        return;
    };
    copy_files(&seeded, &vol);
    refused("another ext4 mounted");
    spool.run([
        "dump",
        "v",
        "--level",
        "1",
        "--date",
        "2026-11-02",
        "--allow-shrink",
    ]);
    // Allowed once, not recorded: the next dump is refused again until --record-fs.
    let (_, err) = spool.fail(["dump", "v", "--level", "1", "--date", "2026-11-03"]);
    assert!(err.contains("another filesystem"), "{err}");
    let out = spool.run(["volume", "set", "v", "--record-fs"]);
    assert!(out.contains("root on ext2/ext3/ext4"), "{out}");
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-03"]);
}

/// A plain directory as the volume, then a tmpfs mounted over it with the same files: another
/// type of filesystem, and a mount root where there was none.
#[test]
fn a_filesystem_mounted_over_the_root_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    numbered_files(&vol, 8, 6);
    let saved = work.path().join("saved");
    snapshot(&vol, &saved);
    let spool = spool_with_full_dump(&vol);
    let Some(_tmpfs) = common::faults::TmpfsMount::new(&vol, 16) else {
        println!("skipped: needs root to mount a tmpfs over the volume");
        return;
    };
    copy_files(&saved, &vol);
    let (code, err) = spool.fail(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("another filesystem") && err.contains("now: tmpfs"),
        "{err}"
    );
}

/// Copy the files at the top of `from` into `to`.
fn copy_files(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
