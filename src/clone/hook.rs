//! Running the admin's hook commands (freeze, thaw, snapshot, release).
//!
//! A hook is a shell command from `reel.toml`, run through `sh -c` with `REEL_VOLUME` and
//! `REEL_PATH` in its environment and stdin from /dev/null. Three things shape this module:
//!
//! - **Output goes to unlinked temporary files, not pipes.** A hook that writes more than a
//!   pipe buffer cannot deadlock against us, and a hook that leaves a background child behind
//!   (a daemon it started, `sleep 100 &`) cannot make us wait for EOF on a pipe that child
//!   still holds: we wait for the hook's own process, then read the files.
//! - **The hook gets its own process group**, so a timeout or an interruption kills
//!   everything it started (SIGTERM to the group, SIGKILL after 2 s), and a Ctrl-C on the
//!   terminal reaches reel only, which then decides (the thaw hook must still run).
//! - **We poll** (`try_wait` every 20 ms) rather than block, so that a timeout and a caught
//!   signal ([`crate::signal::interrupted`]) are noticed while the hook runs.
//!
//! The error of a failed hook names the volume, the hook, the command, how it ended and the
//! tail of its output, because that output is usually the only clue the admin gets.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a running hook is polled.
const POLL: Duration = Duration::from_millis(20);
/// How long a hook's process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// At most this much of each output stream is kept (the tail).
const MAX_OUTPUT: u64 = 1 << 20;
/// Lines of output quoted in an error message, per stream.
const TAIL_LINES: usize = 20;
/// Longest quoted line.
const TAIL_LINE_CHARS: usize = 300;

/// Which hook is run: decides the wording of messages only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    Freeze,
    Thaw,
    Snapshot,
    Release,
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookKind::Freeze => "freeze",
            HookKind::Thaw => "thaw",
            HookKind::Snapshot => "snapshot",
            HookKind::Release => "release",
        })
    }
}

/// What a successful hook printed, and how long it ran.
#[derive(Clone, Debug, Default)]
pub struct HookOutput {
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `cmd` through `sh -c` with `REEL_VOLUME=volume`, `REEL_PATH=path` and `extra_env` in
/// its environment, stdin from /dev/null. Fails (`Error::Hook`) when it exits non-zero, is
/// killed, cannot start, or runs past `timeout` (then its whole process group is killed:
/// SIGTERM, then SIGKILL after 2 s). When `interruptible` and `signal::interrupted()` becomes
/// `Some(sig)` while it runs, it is killed the same way and `Error::Interrupted(sig)` is
/// returned. The thaw hook is run with `interruptible = false`.
pub fn run_hook(
    kind: HookKind,
    cmd: &str,
    volume: &str,
    path: &Path,
    extra_env: &[(&str, &str)],
    timeout: Duration,
    interruptible: bool,
) -> Result<HookOutput> {
    let cannot_start = |why: String| {
        Error::Hook(format!(
            "volume {volume}: cannot start the {kind} hook `{cmd}`: {why}; check the command \
             in reel.toml [volumes.{volume}]"
        ))
    };
    let out_file = unlinked_temp().map_err(|e| cannot_start(format!("temporary file: {e}")))?;
    let err_file = unlinked_temp().map_err(|e| cannot_start(format!("temporary file: {e}")))?;
    let stdout = out_file
        .try_clone()
        .map_err(|e| cannot_start(e.to_string()))?;
    let stderr = err_file
        .try_clone()
        .map_err(|e| cannot_start(e.to_string()))?;

    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .env("REEL_VOLUME", volume)
        .env("REEL_PATH", path)
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let start = Instant::now();
    let mut child = command.spawn().map_err(|e| cannot_start(e.to_string()))?;
    drop(command); // closes our copies of the child's output descriptors

    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ended::Exited(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                break Ended::WaitFailed(e);
            }
        }
        if interruptible && let Some(sig) = crate::signal::interrupted() {
            kill_group(&mut child);
            tracing::info!("volume {volume}: {kind} hook killed: reel caught signal {sig}");
            return Err(Error::Interrupted(sig));
        }
        if start.elapsed() >= timeout {
            kill_group(&mut child);
            break Ended::TimedOut;
        }
        std::thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    let output = HookOutput {
        stdout: read_tail(out_file),
        stderr: read_tail(err_file),
        elapsed,
    };
    let how = match ended {
        Ended::Exited(status) if status.success() => {
            tracing::debug!(
                "volume {volume}: {kind} hook took {:.3} s",
                elapsed.as_secs_f64()
            );
            return Ok(output);
        }
        Ended::Exited(status) => describe(status),
        Ended::WaitFailed(e) => format!("could not be waited for ({e}) and was killed"),
        Ended::TimedOut => format!(
            "hung past the timeout of {} s and was killed; raise hook_timeout in reel.toml \
             [volumes.{volume}] if it needs longer",
            timeout.as_secs_f64()
        ),
    };
    Err(Error::Hook(format!(
        "volume {volume}: {kind} hook `{cmd}` {how}{}",
        quote_output(&output)
    )))
}

enum Ended {
    Exited(ExitStatus),
    WaitFailed(io::Error),
    TimedOut,
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("failed with exit status {code}")
    } else if let Some(sig) = status.signal() {
        format!("was killed by signal {sig}")
    } else {
        format!("failed ({status})")
    }
}

/// SIGTERM the child's process group, give it [`KILL_GRACE`] to exit, SIGKILL the group,
/// and reap the child. The child is not reaped before the SIGKILL (`WNOWAIT`), so its pid,
/// which is the group id, cannot be reused by an unrelated process in between.
fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on a negative pid signals that process group; no memory is involved.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline && !has_exited(pgid) {
        std::thread::sleep(POLL);
    }
    // Children that ignored SIGTERM, or outlived the shell, go now.
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

/// Has the process `pid` (our child) exited? Leaves it unreaped.
fn has_exited(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data; waitid fills it. WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // With WNOHANG, a child still running leaves si_pid 0. An error (no such child)
        // means there is nothing left to wait for.
        rc != 0 || info.si_pid() != 0
    }
}

/// An anonymous file for a hook's output: `O_TMPFILE` where the filesystem has it, else a
/// named file unlinked at once.
fn unlinked_temp() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let anon = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(&dir);
    if let Ok(f) = anon {
        return Ok(f);
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dir.join(format!(
        ".reel-hook-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(f)
}

/// The last [`MAX_OUTPUT`] bytes written to `f`, as lossy UTF-8. Output is a diagnostic:
/// an unreadable file gives a note, not an error.
fn read_tail(mut f: File) -> String {
    let read = (|| -> io::Result<String> {
        let len = f.seek(SeekFrom::End(0))?;
        let from = len.saturating_sub(MAX_OUTPUT);
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::new();
        f.take(MAX_OUTPUT).read_to_end(&mut buf)?;
        let mut s = String::from_utf8_lossy(&buf).into_owned();
        if from > 0 {
            s.insert_str(0, &format!("[... first {from} bytes not kept ...]\n"));
        }
        Ok(s)
    })();
    read.unwrap_or_else(|e| format!("[output unreadable: {e}]"))
}

/// The tail of both streams for an error message; empty if the hook printed nothing.
fn quote_output(out: &HookOutput) -> String {
    let mut s = String::new();
    for (name, text) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
        let lines: Vec<&str> = text.lines().collect();
        if lines.iter().all(|l| l.trim().is_empty()) {
            continue;
        }
        let skip = lines.len().saturating_sub(TAIL_LINES);
        s.push_str(&format!("\n--- its {name}"));
        if skip > 0 {
            s.push_str(&format!(" (last {TAIL_LINES} of {} lines)", lines.len()));
        }
        s.push_str(" ---");
        for line in &lines[skip..] {
            s.push_str("\n  ");
            match line.char_indices().nth(TAIL_LINE_CHARS) {
                Some((cut, _)) => {
                    s.push_str(&line[..cut]);
                    s.push_str(" [...]");
                }
                None => s.push_str(line),
            }
        }
    }
    if s.is_empty() {
        s.push_str(" (it printed nothing)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(20);

    fn run(cmd: &str, timeout: Duration) -> Result<HookOutput> {
        run_hook(
            HookKind::Freeze,
            cmd,
            "vol",
            Path::new("/srv/vol"),
            &[("REEL_EXTRA", "x y")],
            timeout,
            false,
        )
    }

    /// Is `pid` gone (or a zombie nobody reaped: in a container PID 1 may not reap)?
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_dead(pid: i32) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if dead(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn environment_output_and_display() {
        let out = run(
            r#"echo "$REEL_VOLUME $REEL_PATH $REEL_EXTRA"; echo warn >&2; read x || echo eof"#,
            LONG,
        )
        .unwrap();
        assert_eq!(out.stdout, "vol /srv/vol x y\neof\n");
        assert_eq!(out.stderr, "warn\n");
        assert!(out.elapsed < LONG);
        assert_eq!(HookKind::Thaw.to_string(), "thaw");
        assert_eq!(HookKind::Snapshot.to_string(), "snapshot");
        assert_eq!(HookKind::Release.to_string(), "release");
    }

    #[test]
    fn failure_names_everything_and_quotes_the_tail() {
        let err = run(
            "for i in $(seq 1 100); do echo line$i >&2; done; echo out; exit 3",
            LONG,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Hook(_)), "{err:?}");
        let msg = err.to_string();
        for want in [
            "volume vol",
            "freeze hook",
            "exit status 3",
            "seq 1 100",
            "line100",
            "line81\n",
            "last 20 of 100 lines",
            "stdout ---\n  out",
        ] {
            assert!(msg.contains(want), "missing {want:?} in {msg}");
        }
        assert!(!msg.contains("line80\n"), "{msg}");

        let msg = run("kill -9 $$", LONG).unwrap_err().to_string();
        assert!(msg.contains("killed by signal 9"), "{msg}");
        let msg = run("exit 1", LONG).unwrap_err().to_string();
        assert!(msg.contains("printed nothing"), "{msg}");
        // A command the kernel cannot even be given.
        let msg = run("a\0b", LONG).unwrap_err().to_string();
        assert!(msg.contains("cannot start the freeze hook"), "{msg}");
    }

    #[test]
    fn lots_of_output_does_not_deadlock() {
        let out = run(
            "head -c 3000000 /dev/zero | tr '\\0' x; head -c 300000 /dev/zero | tr '\\0' y >&2",
            LONG,
        )
        .unwrap();
        // Only the tail of a huge stream is kept, and it says so.
        let kept = 3_000_000 - MAX_OUTPUT;
        assert!(
            out.stdout
                .starts_with(&format!("[... first {kept} bytes not kept ...]\n"))
        );
        assert_eq!(
            out.stdout.bytes().filter(|&b| b == b'x').count() as u64,
            MAX_OUTPUT
        );
        assert_eq!(out.stderr.len(), 300_000);
    }

    #[test]
    fn background_child_does_not_hold_us() {
        let t0 = Instant::now();
        let out = run("sleep 30 & echo $!", LONG).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let pid: i32 = out.stdout.trim().parse().unwrap();
        // A successful hook's children are its business; clean up ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pid");
        // The background child ignores SIGTERM: only the SIGKILL after the grace gets it.
        let cmd = format!(
            "(trap '' TERM; sleep 60) & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let t0 = Instant::now();
        let err = run(&cmd, Duration::from_millis(300)).unwrap_err();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(6), "{took:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("hung past the timeout of 0.3 s")
                && msg.contains("raise hook_timeout in reel.toml [volumes.vol]")
                && msg.contains("started"),
            "{msg}"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            wait_dead(pid),
            "background child {pid} survived the timeout"
        );
    }

    #[test]
    fn a_signal_interrupts_an_interruptible_hook_only() {
        let _t = crate::signal::TEST_SIGNALS
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pid");
        let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let guard = crate::signal::catch_signals();
        let raiser = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            unsafe { libc::raise(libc::SIGTERM) };
        });
        let t0 = Instant::now();
        let err = run_hook(
            HookKind::Snapshot,
            &cmd,
            "vol",
            Path::new("/"),
            &[],
            LONG,
            true,
        )
        .unwrap_err();
        raiser.join().unwrap();
        assert!(
            matches!(err, Error::Interrupted(s) if s == libc::SIGTERM),
            "{err:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(6));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(wait_dead(pid));

        // The thaw hook runs to its end even though a signal was caught.
        assert!(crate::signal::interrupted().is_some());
        let out = run_hook(
            HookKind::Thaw,
            "sleep 0.1; echo thawed",
            "vol",
            Path::new("/"),
            &[],
            LONG,
            false,
        )
        .unwrap();
        assert_eq!(out.stdout, "thawed\n");
        drop(guard);
    }
}
