//! Proves the test harness can fail: `assert_trees_equal` accepts an exact copy and rejects a
//! copy with any one kind of damage, and `mutate_day` really changes the tree every day.
//! Without these, a passing fidelity test would prove nothing.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// The panic message of `assert_trees_equal(expected, actual)`, or None if it passed.
fn compare_msg(expected: &Path, actual: &Path) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(|| assert_trees_equal(expected, actual))) {
        Ok(()) => None,
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

/// Snapshot `orig`, damage the copy with `damage`, and check the comparer names `needle`.
fn must_detect(orig: &Path, what: &str, needle: &str, damage: impl FnOnce(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    snapshot(orig, &copy);
    damage(&copy);
    let msg = compare_msg(orig, &copy)
        .unwrap_or_else(|| panic!("assert_trees_equal did not notice: {what}"));
    assert!(
        msg.contains(needle),
        "{what}: the message should mention {needle:?}:\n{msg}"
    );
}

/// Overwrite bytes in place and put the mtime back, so only the content differs.
fn poke(p: &Path, offset: u64, data: &[u8]) {
    let (s, ns) = mtime_of(p);
    let mut f = OpenOptions::new().write(true).open(p).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    set_mtime(p, s, ns);
}

#[test]
fn comparer_accepts_exact_copy_and_rejects_each_kind_of_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    rich_tree(&orig);

    // The tree has what it claims.
    let sparse = fs::metadata(orig.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_LEN);
    assert!(
        sparse.blocks() * 512 < SPARSE_LEN / 2,
        "sparse.img is not sparse on this file system"
    );
    assert_eq!(fs::metadata(orig.join("hard/a")).unwrap().nlink(), 3);
    assert_eq!(
        fs::symlink_metadata(orig.join("modes/setuid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );

    // An exact copy passes, both ways round, and so does the tree against itself.
    let copy = tmp.path().join("copy");
    snapshot(&orig, &copy);
    assert_trees_equal(&orig, &copy);
    assert_trees_equal(&copy, &orig);
    assert_trees_equal(&orig, &orig);

    must_detect(&orig, "one byte changed", "content", |c| {
        poke(&c.join("bin/random3m.bin"), 1_500_000, b"\x00");
        poke(&c.join("bin/random3m.bin"), 1_500_001, b"\xff");
    });
    must_detect(&orig, "one byte changed in a non-UTF-8 name", "caf", |c| {
        poke(&path_bytes(c, b"caf\xe9"), 0, b"A");
    });
    must_detect(&orig, "file truncated", "size", |c| {
        let (s, ns) = mtime_of(&c.join("small.txt"));
        fs::write(c.join("small.txt"), b"hello").unwrap();
        set_mtime(&c.join("small.txt"), s, ns);
    });
    must_detect(&orig, "mode changed", "mode", |c| {
        fs::set_permissions(c.join("modes/setgid"), fs::Permissions::from_mode(0o755)).unwrap();
    });
    must_detect(&orig, "one mtime nanosecond", "mtime", |c| {
        let (s, ns) = mtime_of(&c.join("docs/readme.md"));
        set_mtime(&c.join("docs/readme.md"), s, (ns + 1) % 1_000_000_000);
    });
    must_detect(&orig, "a directory's mtime", "\"src/a\": mtime", |c| {
        let (s, ns) = mtime_of(&c.join("src/a"));
        set_mtime(&c.join("src/a"), s + 1, ns);
    });
    must_detect(
        &orig,
        "a symlink's own mtime",
        "\"links/dangling\": mtime",
        |c| {
            let (s, ns) = mtime_of(&c.join("links/dangling"));
            set_mtime(&c.join("links/dangling"), s, ns ^ 1);
        },
    );
    must_detect(&orig, "the root's mode", "<root>: mode", |c| {
        fs::set_permissions(c, fs::Permissions::from_mode(0o700)).unwrap();
    });
    must_detect(&orig, "the root's mtime", "<root>: mtime", |c| {
        set_mtime(c, 1, 1);
    });
    must_detect(&orig, "symlink target", "target", |c| {
        let (s, ns) = mtime_of(&c.join("links/to_small"));
        fs::remove_file(c.join("links/to_small")).unwrap();
        std::os::unix::fs::symlink("../empty.txt", c.join("links/to_small")).unwrap();
        set_mtime(&c.join("links/to_small"), s, ns);
        // the parent's mtime moved too; put it back so only the target differs
        let (ps, pns) = mtime_of(&orig.join("links"));
        set_mtime(&c.join("links"), ps, pns);
    });
    must_detect(&orig, "a missing file", "missing", |c| {
        fs::remove_file(c.join("empty.txt")).unwrap();
    });
    must_detect(&orig, "an extra file", "not in the expected tree", |c| {
        fs::write(c.join("empty_dir/extra"), b"").unwrap();
    });
    must_detect(&orig, "a fifo turned into a file", "kind", |c| {
        fs::remove_file(c.join("fifo")).unwrap();
        fs::write(c.join("fifo"), b"").unwrap();
    });
    must_detect(&orig, "a broken hard link", "hard links", |c| {
        let b = c.join("hard/b");
        let (s, ns) = mtime_of(&b);
        let data = fs::read(&b).unwrap();
        fs::remove_file(&b).unwrap();
        fs::write(&b, data).unwrap();
        set_mtime(&b, s, ns);
    });
    must_detect(&orig, "an extra hard link", "hard links", |c| {
        let p = c.join("docs/old_1.txt");
        fs::remove_file(&p).unwrap();
        fs::hard_link(c.join("small.txt"), &p).unwrap();
        // contents and times differ too, but the link group must be named
    });
    must_detect(&orig, "holes filled in", "holes lost", |c| {
        let p = c.join("sparse.img");
        let (s, ns) = mtime_of(&p);
        let dense = c.join("dense.tmp");
        let mut cmd = std::process::Command::new("cp");
        cmd.args(["-p", "--sparse=never"]).arg(&p).arg(&dense);
        run_ok(&mut cmd);
        fs::rename(&dense, &p).unwrap();
        set_mtime(&p, s, ns);
    });
    if set_xattr(&copy.join("small.txt"), "user.probe", b"x") {
        must_detect(&orig, "xattr value", "xattrs", |c| {
            set_xattr(&c.join("xattr.txt"), "user.comment", b"hellO");
        });
        must_detect(&orig, "xattr removed", "xattrs", |c| {
            assert!(remove_xattr(&c.join("xattr.txt"), "user.blob"));
        });
    }
    if is_root() {
        must_detect(&orig, "owner", "owner", |c| {
            lchown(&c.join("owned"), 1234, 1235);
        });
        must_detect(&orig, "device number", "rdev", |c| {
            let p = c.join("dev/null_like");
            let (s, ns) = mtime_of(&p);
            fs::remove_file(&p).unwrap();
            mknod_char(&p, 1, 5, 0o666);
            set_mtime(&p, s, ns);
        });
        must_detect(&orig, "trusted xattr", "trusted.reel", |c| {
            set_xattr(&c.join("trusted.txt"), "trusted.reel", b"changed");
        });
    }
}

#[test]
fn mutate_day_changes_the_tree_every_day() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    rich_tree(&live);
    let mut prev = tmp.path().join("day0");
    snapshot(&live, &prev);
    for day in 1..=7 {
        mutate_day(&live, day);
        let snap = tmp.path().join(format!("day{day}"));
        snapshot(&live, &snap);
        assert_trees_equal(&live, &snap);
        let diffs = tree_differences(&prev, &snap);
        let all = diffs.join("\n");
        // The kinds of change every day must contain.
        for needle in [
            "daily/d",                         // additions
            "\"docs/readme.md\": content",     // in-place edit
            "\"data/structured.db\": content", // middle of a large file
            "\"logs/app.log\": size",          // append
            "missing from the actual tree",    // deletions (and renames)
            "names/walker_",                   // file rename
            "rot/gen_",                        // directory rename
            "\"modes/flip.txt\": mode",        // mode only
            "\"times/touched.txt\": mtime",    // mtime only
            "hard/link_d",                     // hard links added/removed
            "\"links/moving\": target",        // symlink retargeted
            "\"stealth.dat\": content",        // same size, same mtime, new bytes
        ] {
            assert!(all.contains(needle), "day {day}: no {needle:?} in\n{all}");
        }
        // Mode-only and mtime-only changes really are only that.
        for line in &diffs {
            if line.starts_with("\"modes/flip.txt\"") {
                assert!(line.contains(": mode:"), "day {day}: {line}");
            }
            if line.starts_with("\"times/touched.txt\"") {
                assert!(line.contains(": mtime:"), "day {day}: {line}");
            }
            if line.starts_with("\"stealth.dat\"") {
                assert!(line.contains(": content:"), "day {day}: {line}");
            }
        }
        if day % 2 == 0 {
            assert!(
                all.contains("\"bin/random3m.bin\": size"),
                "day {day}: no insertion"
            );
        }
        prev = snap;
    }
}

#[test]
fn trees_and_days_are_deterministic_in_names_and_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    rich_tree(&a);
    rich_tree(&b);
    for day in 1..=3 {
        mutate_day(&a, day);
        mutate_day(&b, day);
    }
    // Only times the kernel chose may differ (entries written during the days).
    let diffs = tree_differences(&a, &b);
    let other: Vec<_> = diffs.iter().filter(|l| !l.contains(": mtime:")).collect();
    assert!(other.is_empty(), "{other:#?}");
}

#[test]
fn prng_is_deterministic_and_spread() {
    let (mut a, mut b) = (Rng::new(7), Rng::new(7));
    let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    let mut c = Rng::new(8);
    assert_ne!(xs[0], c.next_u64());
    let t = Rng::new(1).text(10_000);
    assert_eq!(t.len(), 10_000);
    assert!(!t.contains(&0));
}
