//! Helpers for the fault-injection suite (tests/faults.rs): seeded randomness from the
//! environment, running the binary with a deadline or killing it mid-flight, flipping bytes,
//! and the ground truth (a snapshot per dump) that every committed dump is checked against.
//!
//! Why it is built this way: a fault test is only as good as its oracle. The oracle here is
//! independent of reel: before a command that may commit a dump runs, the volume is copied with
//! `cp -a` (see [`super::snapshot`]) under the key (volume, day); afterwards every dump that
//! `reel list --json` shows must have such a key and restore to exactly that copy. A dump is
//! either listed and exact, or not listed — there is no third state to tolerate.
//!
//! `REEL_FAULT_SEED` (default [`DEFAULT_SEED`]) and `REEL_FAULT_RUNS` (default per test) make
//! CI deterministic and the long run (tools/faults.sh) configurable. Each test prints one
//! `FAULTS <test> key=value ...` line with its counts; tools/faults.sh sums them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Rng, Spool, assert_trees_equal, run_ok, snapshot};

/// The seed CI uses when `REEL_FAULT_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x5EED_FA17;

/// `REEL_FAULT_SEED`, or [`DEFAULT_SEED`]. Accepts decimal or 0x-hex.
pub fn seed() -> u64 {
    match std::env::var("REEL_FAULT_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("REEL_FAULT_SEED={s:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// `REEL_FAULT_RUNS`, or `default` (what CI runs in well under its time budget).
pub fn runs(default: usize) -> usize {
    match std::env::var("REEL_FAULT_RUNS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("REEL_FAULT_RUNS={s:?} is not a number")),
        Err(_) => default,
    }
}

/// A seeded Rng for one test: the run's seed mixed with the test's name, so tests do not
/// share a sequence but each is reproducible from the printed seed.
pub fn rng_for(test: &str) -> Rng {
    let mut h = seed();
    for b in test.bytes() {
        h = h.rotate_left(5) ^ u64::from(b);
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    Rng::new(h)
}

/// Prints the one summary line tools/faults.sh collects.
pub fn report(test: &str, counts: &[(&str, u64)]) {
    let mut line = format!("FAULTS {test} seed={:#x}", seed());
    for (k, v) in counts {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

/// How a run ended.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// True when the test (not the process itself) sent the SIGKILL.
    pub killed_by_us: bool,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }
    pub fn describe(&self) -> String {
        format!(
            "status {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
    /// Panics if the process panicked (a kill is fine, a panic never is).
    pub fn assert_no_panic(&self, what: &str) {
        assert!(
            !self.stderr.contains("panicked at") && !self.stdout.contains("panicked at"),
            "{what}: reel panicked\n{}",
            self.describe()
        );
    }
}

/// Runs `cmd` to its end, output captured in files (no pipe can fill up), and SIGKILLs it at
/// `kill_after` if it is still running then. A run longer than `deadline` is a hang: the
/// process is killed and the test fails.
pub fn run_until(cmd: &mut Command, kill_after: Option<Duration>, deadline: Duration) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir for output");
    let (out_p, err_p) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdout(File::create(&out_p).expect("stdout file"))
        .stderr(File::create(&err_p).expect("stderr file"))
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut killed_by_us = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        let t = started.elapsed();
        if kill_after.is_some_and(|k| t >= k) {
            let _ = child.kill(); // SIGKILL
            killed_by_us = true;
            break child.wait().expect("wait after kill");
        }
        if t >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} hung: still running after {deadline:?}\nstderr so far:\n{}",
                fs::read_to_string(&err_p).unwrap_or_default()
            );
        }
        // Fine-grained near the kill moment, coarse otherwise.
        let step = match kill_after {
            Some(k) if k > t => (k - t).min(Duration::from_millis(2)),
            _ => Duration::from_millis(5),
        };
        std::thread::sleep(step);
    };
    let elapsed = started.elapsed();
    // A process that ended on its own just before our kill did not die by our hand.
    if killed_by_us && status.signal().is_none() {
        killed_by_us = false;
    }
    Ran {
        status,
        stdout: fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: fs::read_to_string(&err_p).unwrap_or_default(),
        elapsed,
        killed_by_us,
    }
}

/// Generous deadline for one command of these small trees on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(240);

/// Runs `cmd` with the deadline; it must exit 0 without a panic.
pub fn run_ok_timed(cmd: &mut Command, what: &str) -> Ran {
    let r = run_until(cmd, None, DEADLINE);
    r.assert_no_panic(what);
    assert_eq!(
        r.code(),
        Some(0),
        "{what}: expected success\n{}",
        r.describe()
    );
    r
}

/// XORs one byte of `p` at `offset` with `mask` (non-zero), in place.
pub fn flip_byte(p: &Path, offset: u64, mask: u8) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= mask;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write byte");
}

/// `cp -a` of a directory (a spool) into `dst` (which must not exist).
pub fn copy_dir(src: &Path, dst: &Path) {
    run_ok(
        Command::new("cp")
            .args(["-a", "--no-target-directory"])
            .arg(src)
            .arg(dst),
    );
}

/// A `Spool` handle for an existing spool directory `dir` (kept, not deleted, when the
/// handle drops: `dir` must be inside a test's own temporary directory).
pub fn spool_at(dir: &Path) -> SpoolAt {
    SpoolAt(dir.to_path_buf())
}

/// A spool that lives in a directory the test owns (a copy, a mount point).
pub struct SpoolAt(pub PathBuf);

impl SpoolAt {
    pub fn cmd(&self) -> Command {
        let mut c = super::reel();
        c.arg("--spool").arg(&self.0);
        c
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Anything a reel command can run against.
pub trait SpoolLike {
    fn command(&self) -> Command;
    fn dir(&self) -> &Path;
}

impl SpoolLike for Spool {
    fn command(&self) -> Command {
        self.cmd()
    }
    fn dir(&self) -> &Path {
        self.path()
    }
}

impl SpoolLike for SpoolAt {
    fn command(&self) -> Command {
        self.cmd()
    }
    fn dir(&self) -> &Path {
        self.path()
    }
}

/// One dump as `reel list --json` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    pub volume: String,
    /// The local date of its time, `YYYY-MM-DD`: the key of its snapshot.
    pub day: String,
    pub time: String,
    pub level: u64,
}

/// `reel list --json` of any spool, with a deadline.
pub fn listed(s: &dyn SpoolLike) -> Vec<Listed> {
    let r = run_ok_timed(s.command().args(["list", "--json"]), "reel list --json");
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("reel list --json: {e}\n{}", r.stdout));
    v.as_array()
        .expect("list --json is an array")
        .iter()
        .map(|d| {
            let time = d["time"].as_str().expect("time").to_string();
            Listed {
                id: d["id"].as_u64().expect("id"),
                volume: d["volume"].as_str().expect("volume").to_string(),
                day: time[..10].to_string(),
                time,
                level: d["level"].as_u64().expect("level"),
            }
        })
        .collect()
}

/// The ground truth: (volume, day) -> an exact copy of the volume as the dump of that day saw it.
#[derive(Default)]
pub struct Truth {
    pub snaps: BTreeMap<(String, String), PathBuf>,
}

impl Truth {
    /// Copies `vol` as the truth for (volume, day), replacing an earlier copy of that key.
    pub fn record(&mut self, volume: &str, day: &str, vol: &Path, store: &Path) {
        let dst = store.join(format!("snap-{volume}-{day}"));
        if dst.exists() {
            let _ = fs::remove_dir_all(&dst);
        }
        snapshot(vol, &dst);
        self.snaps
            .insert((volume.to_string(), day.to_string()), dst);
    }

    /// Restores dump `d` of `s` into a fresh directory under `scratch` and compares it with
    /// its snapshot (panicking on any difference); the restored tree is removed afterwards.
    pub fn assert_restores(&self, s: &dyn SpoolLike, d: &Listed, scratch: &Path, what: &str) {
        let Some(snap) = self.snaps.get(&(d.volume.clone(), d.day.clone())) else {
            panic!("{what}: dump {d:?} is listed but no command that could commit it ran");
        };
        let target = scratch.join(format!("restore-{}-{}", d.id, d.day));
        let _ = fs::remove_dir_all(&target);
        let r = run_until(
            s.command()
                .args(["restore", &d.volume, "--dump", &d.id.to_string(), "--to"])
                .arg(&target),
            None,
            DEADLINE,
        );
        r.assert_no_panic(what);
        assert_eq!(
            r.code(),
            Some(0),
            "{what}: committed dump {d:?} does not restore\n{}",
            r.describe()
        );
        assert_trees_equal(snap, &target);
        let _ = fs::remove_dir_all(&target);
    }
}

/// `reel check --read-data` must pass (unreferenced packs are notes, not problems).
pub fn assert_check_passes(s: &dyn SpoolLike, what: &str) {
    let r = run_until(s.command().args(["check", "--read-data"]), None, DEADLINE);
    r.assert_no_panic(what);
    assert!(
        r.code() == Some(0) && r.stdout.contains("no problems found"),
        "{what}: check fails\n{}",
        r.describe()
    );
}

/// The files and directories left under `SPOOL/tmp/`.
pub fn tmp_leftovers(spool_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(spool_dir.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A tmpfs of `size_mb` MiB mounted at `dir` (created), unmounted when dropped. Returns None
/// (after printing why) when the test does not run as root.
pub struct TmpfsMount {
    pub dir: PathBuf,
}

impl TmpfsMount {
    pub fn new(dir: &Path, size_mb: u64) -> Option<TmpfsMount> {
        if !super::is_root() {
            return None;
        }
        fs::create_dir_all(dir).expect("mkdir mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            // Root in a container without CAP_SYS_ADMIN: say so rather than fail.
            println!(
                "skipped: cannot mount a tmpfs at {} ({})",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(TmpfsMount {
            dir: dir.to_path_buf(),
        })
    }

    /// Grows (or shrinks) the tmpfs in place; its files stay.
    pub fn resize(&self, size_mb: u64) {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size_mb}m")])
                .arg(&self.dir),
        );
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there: detach it now, the kernel frees it later.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
