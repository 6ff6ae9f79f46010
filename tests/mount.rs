//! `reel mount`: two dumps of a rich tree mounted with FUSE and compared, field by field,
//! with exact copies of the tree as it was on each day; then SIGINT must unmount and exit 0.
//! Runs where /dev/fuse can be opened (root, CI); elsewhere it says it was skipped.

#![cfg(feature = "mount")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Spool, assert_trees_equal, mutate_day, rich_tree, snapshot};

fn fuse_available() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
}

fn mounted(dir: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let want = dir.to_str().expect("utf-8 temp path");
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want))
}

/// The mount process; on an early panic it is stopped and the mount point released.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
        if mounted(&self.dir) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Start `reel mount v MNT EXTRA...` and wait until it is mounted; None (having said why)
/// where this machine does not let FUSE mount.
fn start(spool: &Spool, mnt: &Path, extra: &[&str]) -> Option<Mounted> {
    let child = spool
        .cmd()
        .args(["mount", "v"])
        .arg(mnt)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reel mount");
    let mut m = Mounted {
        child: Some(child),
        dir: mnt.to_path_buf(),
    };
    let start = Instant::now();
    while !mounted(mnt) {
        if let Some(st) = m.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
            let out = m
                .child
                .take()
                .expect("child")
                .wait_with_output()
                .expect("out");
            let err = String::from_utf8_lossy(&out.stderr);
            // /dev/fuse opens but the kernel refuses the mount (a container without
            // CAP_SYS_ADMIN, no fusermount): the test cannot run here; say so.
            if err.contains("Operation not permitted") || err.contains("Permission denied") {
                println!("skipped: mounting FUSE is not permitted here: {err}");
                return None;
            }
            panic!("reel mount exited with {st}: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mount never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(m)
}

/// SIGINT the mount, which must unmount and exit 0; returns what it wrote to standard error.
fn stop(m: &mut Mounted) -> String {
    let child = m.child.take().expect("child");
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().expect("wait for reel mount");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "reel mount after SIGINT: {}: {err}",
        out.status
    );
    assert!(!mounted(&m.dir), "still mounted after SIGINT");
    err
}

#[test]
fn mount_shows_every_dump_and_unmounts_on_sigint() {
    if !fuse_available() {
        println!("skipped: /dev/fuse not available");
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let vol = work.path().join("vol");
    let (day1, day2) = (work.path().join("day1"), work.path().join("day2"));
    rich_tree(&vol);
    // A hard link at the top whose group's first name is in a directory not listed yet:
    // resolving it must not recurse into the directory being indexed.
    fs::hard_link(vol.join("hard/a"), vol.join("zz_link")).expect("link");
    snapshot(&vol, &day1);
    let spool: Spool = common::spool_with_full_dump(&vol);
    mutate_day(&vol, 1);
    snapshot(&vol, &day2);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    // The latest clone (a store clone, not dumped yet) is the `backup` folder.
    spool.run(["clone", "v"]);

    let mnt = work.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let Some(mut m) = start(&spool, &mnt, &[]) else {
        return;
    };

    let mut names: Vec<String> = fs::read_dir(&mnt)
        .expect("read mount root")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["2026-11-01T00:00:00", "2026-11-02T00:00:00", "backup"]
    );
    assert_trees_equal(&day2, &mnt.join("backup"));
    assert_trees_equal(&day1, &mnt.join("2026-11-01T00:00:00"));
    assert_trees_equal(&day2, &mnt.join("2026-11-02T00:00:00"));
    // Read-only.
    assert!(fs::write(mnt.join("2026-11-02T00:00:00/new"), b"x").is_err());

    stop(&mut m);
    assert!(!mounted(&mnt), "still mounted after SIGINT");
}

/// After a purge, a file whose data is on tape only reads as EIO (a file system cannot ask
/// for a tape) and the log names the tape once for that file, however often it is read; the
/// rest of the day reads from the spool. Mounted with the tapes folder, the day reads whole.
#[test]
fn purged_files_name_their_tape_and_read_from_images_given_at_mount() {
    if !fuse_available() {
        println!("skipped: /dev/fuse not available");
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let spool = common::replaced_file_days(work.path());
    let tapes = work.path().join("tapes");
    fs::create_dir(&tapes).expect("mkdir tapes");
    let img = tapes.join("w1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    spool.run(["purge", "--exported"]);
    let day2 = work.path().join("day2");
    let mnt = work.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");

    let Some(mut m) = start(&spool, &mnt, &[]) else {
        return;
    };
    let x = mnt.join("2026-11-02T00:00:00/big/x.bin");
    for _ in 0..3 {
        let e = fs::read(&x).expect_err("a file on tape only does not read");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    }
    assert_eq!(
        fs::read(mnt.join("2026-11-02T00:00:00/small.txt")).expect("read small.txt"),
        fs::read(day2.join("small.txt")).expect("day2 small.txt")
    );
    let err = stop(&mut m);
    let told: Vec<&str> = err.lines().filter(|l| l.contains("big/x.bin")).collect();
    assert_eq!(told.len(), 1, "one line for the file: {err}");
    assert!(
        told[0].contains("W1")
            && told[0].contains("--tapes DIR")
            && !told[0].contains("reel check"),
        "{err}"
    );

    let Some(mut m) = start(&spool, &mnt, &["--tapes", tapes.to_str().unwrap()]) else {
        return;
    };
    assert_trees_equal(&day2, &mnt.join("2026-11-02T00:00:00"));
    let err = stop(&mut m);
    assert!(!err.contains("ERROR"), "{err}");
}

/// Unmounted from outside (`umount`, as `fusermount -u` does for a user), the mount ends
/// quietly with status 0: no warning that its own unmount then found nothing to unmount.
#[test]
fn an_outside_unmount_ends_the_mount_quietly() {
    if !fuse_available() {
        println!("skipped: /dev/fuse not available");
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool: Spool = common::spool_with_full_dump(&vol);
    let mnt = work.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let Some(mut m) = start(&spool, &mnt, &[]) else {
        return;
    };
    let st = std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .expect("run umount");
    assert!(st.success(), "umount {}: {st}", mnt.display());
    let out = m
        .child
        .take()
        .expect("child")
        .wait_with_output()
        .expect("wait for reel mount");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reel mount: {}: {err}", out.status);
    assert!(!err.contains("WARN") && !err.contains("failed"), "{err}");
}
