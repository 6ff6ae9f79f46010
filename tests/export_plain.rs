//! `reel export-plain` end to end with the stock tools: a level 0 and level 1 plain export
//! applied with `restore -r` in order rebuild the day-2 tree exactly (what the format
//! carries), `restore -t` lists the level 0, the level 1 is much smaller, and a later level 1
//! is based on the level 0, not on the earlier level 1; extended attributes reach the stock
//! `restore` and come back through `reel ingest-dump`.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn restore_installed() -> bool {
    let ok = Command::new("restore")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("skipped: restore not installed");
    }
    ok
}

fn run_restore(args: &[&str], dir: &Path) -> (Vec<u8>, String) {
    let mut child = Command::new("restore")
        .args(args)
        .current_dir(dir)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run restore");
    // restore may exit before it asks: a closed pipe here is not a failure.
    let _ = child.stdin.take().unwrap().write_all(b"y\n");
    let out = child.wait_with_output().unwrap();
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cp -a` of `src`, then what a BSD dump cannot carry taken away: mtimes below the
/// microsecond.
fn expected_copy(src: &Path, dst: &Path) {
    snapshot(src, dst);
    let mut all = vec![dst.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        let p = all[i].clone();
        i += 1;
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                all.push(e.unwrap().path());
            }
        }
    }
    for p in &all {
        let (s, ns) = mtime_of(p);
        set_mtime(p, s, ns / 1000 * 1000);
    }
}

/// `restore -r` each image in order in a new directory `dir`; restore must not complain.
fn restore_chain(images: &[&Path], dir: &Path) {
    fs::create_dir(dir).unwrap();
    for img in images {
        let (_, err) = run_restore(&["-r", "-y", "-f", img.to_str().unwrap()], dir);
        let bad: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("set owner/mode for '.'"))
            .collect();
        assert!(bad.is_empty(), "restore -r -f {}:\n{err}", img.display());
    }
    fs::remove_file(dir.join("restoresymtable")).unwrap();
}

/// Compare a `restore -r` result with the expected tree. `restore -r` restores into "." and
/// never sets the times of "." itself (the stock tool's behaviour), and removing
/// `restoresymtable` touches it anyway: the root's mtime is taken from the expected tree.
fn assert_restored(expected: &Path, restored: &Path) {
    let (s, ns) = mtime_of(expected);
    set_mtime(restored, s, ns);
    assert_trees_equal(expected, restored);
}

/// Relative paths of every entry under `root` (the root itself excluded), as `./a/b`.
fn all_paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap();
            out.push(format!("./{}", rel.to_string_lossy()));
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn export(spool: &Spool, level: &str, to: &Path) -> String {
    spool.run([
        "export-plain",
        "v",
        "--level",
        level,
        "--to",
        to.to_str().unwrap(),
    ])
}

#[test]
fn levels_restore_with_stock_restore_r() {
    if !restore_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let vol = w.join("vol");
    rich_tree(&vol);
    snapshot(&vol, &w.join("day1"));
    let spool = spool_with_full_dump(&vol);
    let l0 = w.join("L0.dump");
    let out = export(&spool, "0", &l0);
    assert!(out.contains("level 0"), "{out}");

    // restore -t lists every path of the level 0.
    let (listing, err) = run_restore(&["-t", "-f", l0.to_str().unwrap()], w);
    assert!(err.trim().is_empty(), "restore -t: {err}");
    let listing = String::from_utf8_lossy(&listing).into_owned();
    let mut listed: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, p)| p.to_string()))
        .filter(|p| p != ".")
        .collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed, all_paths(&w.join("day1")), "restore -t listing");

    mutate_day(&vol, 1);
    snapshot(&vol, &w.join("day2"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let l1 = w.join("L1.dump");
    let out = export(&spool, "1", &l1);
    assert!(
        out.contains("level 1") && out.contains("based on plain export 1"),
        "{out}"
    );

    restore_chain(&[&l0, &l1], &w.join("r2"));
    expected_copy(&w.join("day2"), &w.join("exp2"));
    assert_restored(&w.join("exp2"), &w.join("r2"));

    let (s0, s1) = (
        fs::metadata(&l0).unwrap().len(),
        fs::metadata(&l1).unwrap().len(),
    );
    // A BSD dump carries changed files whole: the day's page edits of the ~10 MB
    // `data/structured.db` put it on the level 1 entirely; everything else the day changed is
    // small. The level 0 also carries the unchanged 3 MB `bin/random3m.bin` and the rest.
    let db = fs::metadata(w.join("day2/data/structured.db"))
        .unwrap()
        .len();
    assert!(
        s1 <= db + (1 << 20) && s1 + (2 << 20) < s0,
        "level 1 ({s1} bytes) carries more than the changed files (db {db}); level 0 is {s0}"
    );

    // A further level 1 is based on the level 0 (cumulative), not on the first level 1.
    mutate_day(&vol, 2);
    snapshot(&vol, &w.join("day3"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-03"]);
    let l1b = w.join("L1b.dump");
    let out = export(&spool, "1", &l1b);
    assert!(out.contains("based on plain export 1"), "{out}");
    restore_chain(&[&l0, &l1b], &w.join("r3"));
    expected_copy(&w.join("day3"), &w.join("exp3"));
    assert_restored(&w.join("exp3"), &w.join("r3"));

    // And a level 2 on top of that level 1 continues the chain L0, L1b, L2.
    mutate_day(&vol, 3);
    snapshot(&vol, &w.join("day4"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-04"]);
    let l2 = w.join("L2.dump");
    let out = export(&spool, "2", &l2);
    assert!(out.contains("based on plain export 3"), "{out}");
    restore_chain(&[&l0, &l1b, &l2], &w.join("r4"));
    expected_copy(&w.join("day4"), &w.join("exp4"));
    assert_restored(&w.join("exp4"), &w.join("r4"));
}

#[test]
fn a_level_without_a_lower_export_becomes_level_0_and_split_images_restore() {
    if !restore_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let vol = w.join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    let img: PathBuf = w.join("split");
    let out = spool.run([
        "export-plain",
        "v",
        "--level",
        "3",
        "--capacity",
        "64K",
        "--to",
        img.to_str().unwrap(),
    ]);
    assert!(out.contains("writing a level 0 instead"), "{out}");
    assert!(w.join("split.002").exists(), "{out}");
    let x = w.join("x");
    fs::create_dir(&x).unwrap();
    let prefix = format!("{}.", img.display());
    let (_, err) = run_restore(&["-x", "-a", "-y", "-M", "-b", "10", "-f", &prefix], &x);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("set owner/mode for '.'"))
        .collect();
    assert!(bad.is_empty(), "restore -x -M:\n{err}");
    expected_copy(&vol, &w.join("exp"));
    assert_trees_equal(&w.join("exp"), &x);
}

#[test]
fn bad_requests_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    let to = work.path().join("x.dump");
    let (code, err) = spool.fail([
        "export-plain",
        "nosuch",
        "--level",
        "0",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = spool.fail([
        "export-plain",
        "v",
        "--level",
        "10",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
}

/// Every path under `root` (the root included, as ".") with its xattrs, where it has any.
fn xattrs_by_path(root: &Path) -> Vec<(String, reel::tape::bsd::Xattrs)> {
    let mut out: Vec<_> = std::iter::once(".".to_string())
        .chain(all_paths(root))
        .map(|rel| {
            let x = xattrs(&root.join(&rel));
            (rel, x)
        })
        .filter(|(_, x)| !x.is_empty())
        .collect();
    out.sort();
    out
}

#[test]
fn xattrs_reach_stock_restore_and_come_back_through_ingest() {
    if !restore_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let vol = w.join("vol");
    fs::create_dir_all(vol.join("sub")).unwrap();
    for (name, body) in [
        ("several.txt", "three attributes\n"),
        ("long.txt", "one long value\n"),
        ("none.txt", "no attributes\n"),
        ("sub/inner.txt", "in a directory with an attribute\n"),
    ] {
        fs::write(vol.join(name), body).unwrap();
    }
    if !set_xattr(&vol.join("several.txt"), "user.a", b"1") {
        eprintln!("skipped: the file system refuses user xattrs");
        return;
    }
    set_xattr(&vol.join("several.txt"), "user.b", &[0, 1, 2, 255]);
    set_xattr(&vol.join("several.txt"), "user.c", b"");
    let long: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    set_xattr(&vol.join("long.txt"), "user.long", &long);
    set_xattr(&vol.join("long.txt"), "user.short", b"s");
    set_xattr(&vol.join("sub"), "user.dir", b"on a directory");
    set_xattr(&vol.join("sub/inner.txt"), "user.x", b"y");
    fs::hard_link(vol.join("several.txt"), vol.join("sub/link.txt")).unwrap();
    if is_root() {
        fs::write(vol.join("trusted.txt"), "a trusted attribute\n").unwrap();
        set_xattr(&vol.join("trusted.txt"), "trusted.t", b"root only");
        // A POSIX ACL (user 1000 may read and write), stored converted on tape.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [(1u16, 6u16, u32::MAX), (2, 6, 1000), (4, 4, u32::MAX)]
            .into_iter()
            .chain([(0x10, 6, u32::MAX), (0x20, 4, u32::MAX)])
        {
            acl.extend(
                [
                    &tag.to_le_bytes()[..],
                    &perm.to_le_bytes(),
                    &id.to_le_bytes(),
                ]
                .concat(),
            );
        }
        set_xattr(&vol.join("trusted.txt"), "system.posix_acl_access", &acl);
    }
    let want = xattrs_by_path(&vol);
    let spool = spool_with_full_dump(&vol);
    let img = w.join("L0.dump");
    export(&spool, "0", &img);

    // The stock restore puts every attribute back.
    let x = w.join("x");
    fs::create_dir(&x).unwrap();
    let (_, err) = run_restore(&["-x", "-a", "-y", "-f", img.to_str().unwrap()], &x);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("set owner/mode for '.'"))
        .collect();
    assert!(bad.is_empty(), "restore -x:\n{err}");
    assert_eq!(xattrs_by_path(&x), want, "after restore -x");

    // And ingesting the image gives them back too.
    spool.run(["ingest-dump", "back", img.to_str().unwrap()]);
    let r = w.join("r");
    spool.run(["restore", "back", "--to", r.to_str().unwrap()]);
    assert_eq!(xattrs_by_path(&r), want, "after ingest-dump and restore");
}

/// A day whose file data purge removed from the spool (it is on tape W1 only) exports with
/// `--tapes`, to the image the spool wrote before the purge, and without it the refusal names
/// the tape instead of calling the spool damaged.
#[test]
fn a_purged_day_exports_from_the_tape_that_holds_it() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let spool = replaced_file_days(w);
    let tapes = w.join("tapes");
    fs::create_dir(&tapes).unwrap();
    let img = tapes.join("w1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    let plain = |to: &Path, extra: &[&str]| {
        let mut args = vec![
            "export-plain",
            "v",
            "--at",
            "2026-11-02",
            "--level",
            "0",
            "--to",
            to.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let before = w.join("before.dump");
    spool.run(plain(&before, &[]));
    let out = spool.run(["purge", "--exported"]);
    assert!(out.contains("removed 1 packs"), "{out}");
    spool.run(["check", "--read-data"]);

    let refused = w.join("refused.dump");
    let (code, err) = spool.fail(plain(&refused, &[]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("W1") && err.contains("--tapes DIR") && err.contains("--tape IMAGE"),
        "the refusal names the tape and how to give it: {err}"
    );
    assert!(!err.contains("reel check"), "nothing is damaged: {err}");
    assert!(!refused.exists(), "a refused export leaves no image");

    let from_dir = w.join("from-dir.dump");
    spool.run(plain(&from_dir, &["--tapes", tapes.to_str().unwrap()]));
    let from_file = w.join("from-file.dump");
    spool.run(plain(&from_file, &["--tape", img.to_str().unwrap()]));
    let want = fs::read(&before).unwrap();
    for got in [&from_dir, &from_file] {
        assert!(
            fs::read(got).unwrap() == want,
            "{} differs from the export made before the purge",
            got.display()
        );
    }
    if restore_installed() {
        restore_chain(&[&from_dir], &w.join("r2"));
        expected_copy(&w.join("day2"), &w.join("exp2"));
        assert_restored(&w.join("exp2"), &w.join("r2"));
    }
}
