//! The freeze lock and the signal guard: the two things that make sure a volume is never left
//! frozen by reel.
//!
//! **The freeze lock** is an advisory `flock(2)` lock on a file under the spool's `locks/`
//! (`Spool::freeze_lock_path`). reel holds it exclusively for as long as the volume is frozen;
//! cooperating writers (site scripts) hold it shared while they write (`flock -s LOCKFILE
//! command`), so a freeze waits for the writes in flight to finish and new writes wait for the
//! thaw. `flock` rather than `fcntl` locks because that is what the `flock(1)` tool that site
//! scripts use takes, and because a `flock` lock belongs to the open file, so it is released
//! when reel's descriptor closes, even if reel is killed with SIGKILL: a crashed reel never
//! leaves the lock held. The lock is taken by polling `try_lock` (every 50 ms) so that the wait
//! is bounded by a timeout instead of hanging behind a writer that never finishes.
//!
//! **The signal guard** turns SIGINT, SIGTERM and SIGHUP into a flag while the volume may be
//! frozen: the handler only stores the signal number in an atomic (the one thing that is
//! async-signal-safe to do), and the clone's loops poll [`check_interrupted`] between items,
//! so the orchestration unwinds normally and runs the thaw hook before reel exits. The previous
//! handlers come back when the last guard is dropped.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How often a contended freeze lock is tried again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// The volume's freeze lock, held exclusively while the volume is frozen. Cooperating writers
/// (site scripts) hold it shared (`flock -s LOCKFILE command`) while they write. Released on
/// drop (closing the descriptor releases the `flock`).
#[derive(Debug)]
pub struct FreezeLock {
    file: File,
    path: PathBuf,
}

impl FreezeLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FreezeLock {
    fn drop(&mut self) {
        // Closing the fd would release it too; unlocking first makes the release immediate
        // even if the File were leaked into a child by mistake.
        let _ = self.file.unlock();
    }
}

/// Create the lock file (and its directory) if needed and take it exclusively, waiting up to
/// `timeout` for shared holders to finish. On timeout: `Error::Volume` naming the lock file
/// and saying that writers still hold it.
pub fn acquire(path: &Path, timeout: Duration) -> Result<FreezeLock> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).at(dir)?;
    }
    // 0644: site scripts running as other users must be able to open it to take it shared.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .at(path)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => {
                return Ok(FreezeLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(
                    path,
                    crate::scan::with_what("cannot lock the freeze lock", e),
                ));
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::Volume(format!(
                "freeze lock {}: writers still hold it after {:.1} s, so the volume cannot be \
                 frozen; find them with `fuser -v {}`, let them finish (or stop them) and run \
                 the clone again",
                path.display(),
                timeout.as_secs_f64(),
                path.display()
            )));
        }
        std::thread::sleep(LOCK_POLL);
    }
}

/// The signals that stop a clone cleanly.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The first signal caught since the outermost live guard was made; 0 = none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// Live guards and the dispositions to restore when the last one goes.
struct Installed {
    count: usize,
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    count: 0,
    previous: Vec::new(),
});

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: one atomic operation. Keep the first signal.
    let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP while alive, restoring the previous handlers when the
/// last live guard is dropped. Guards nest (they are counted).
#[derive(Debug)]
pub struct SignalGuard {
    _private: (),
}

/// Start catching SIGINT, SIGTERM and SIGHUP (see [`SignalGuard`]). The outermost guard
/// clears the record of earlier signals.
pub fn catch_signals() -> SignalGuard {
    let mut inst = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if inst.count == 0 {
        CAUGHT.store(0, Ordering::SeqCst);
        inst.previous.clear();
        for sig in SIGNALS {
            // SAFETY: sigaction is plain data; zeroed is a valid starting value, and the
            // fields the kernel reads are set below. The handler only touches an atomic.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    inst.previous.push((sig, old));
                } else {
                    tracing::warn!(
                        "cannot catch signal {sig}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
    }
    inst.count += 1;
    SignalGuard { _private: () }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut inst = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        inst.count = inst.count.saturating_sub(1);
        if inst.count == 0 {
            for (sig, old) in inst.previous.drain(..) {
                // SAFETY: `old` is what sigaction gave us for this signal.
                unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
            }
        }
    }
}

/// The first signal caught since the outermost guard was made, if any. It stays set after
/// the guards are dropped (so the caller can still pick its exit status) until a new
/// outermost guard is made.
pub fn interrupted() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Error::Interrupted(sig))` if a signal was caught: long loops call this between items.
pub fn check_interrupted() -> Result<()> {
    match interrupted() {
        None => Ok(()),
        Some(sig) => Err(Error::Interrupted(sig)),
    }
}

/// Serialises the tests (of this module and of `hook`) that raise signals or depend on the
/// process-wide caught-signal flag: cargo runs tests as threads of one process.
#[cfg(test)]
pub(crate) static TEST_SIGNALS: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn handler_of(sig: libc::c_int) -> libc::sighandler_t {
        unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut cur), 0);
            cur.sa_sigaction
        }
    }

    #[test]
    fn guard_catches_and_restores() {
        let _t = TEST_SIGNALS.lock().unwrap_or_else(|p| p.into_inner());
        let before: Vec<_> = SIGNALS.iter().map(|&s| handler_of(s)).collect();
        {
            let outer = catch_signals();
            assert_eq!(interrupted(), None);
            check_interrupted().unwrap();
            {
                let _inner = catch_signals();
                assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
            }
            // The inner guard's drop must not uninstall while the outer one lives.
            assert_ne!(handler_of(libc::SIGTERM), before[1]);
            assert_eq!(interrupted(), Some(libc::SIGTERM));
            // The first signal is kept.
            assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
            assert_eq!(interrupted(), Some(libc::SIGTERM));
            match check_interrupted() {
                Err(Error::Interrupted(s)) => assert_eq!(s, libc::SIGTERM),
                other => panic!("{other:?}"),
            }
            drop(outer);
        }
        let after: Vec<_> = SIGNALS.iter().map(|&s| handler_of(s)).collect();
        assert_eq!(before, after);
        // Still readable after the guards are gone; a new guard starts clean.
        assert_eq!(interrupted(), Some(libc::SIGTERM));
        let g = catch_signals();
        assert_eq!(interrupted(), None);
        drop(g);
        assert_eq!(handler_of(libc::SIGINT), before[0]);
    }

    #[test]
    fn lock_waits_for_shared_holders() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("locks/v.freeze");
        let lock = acquire(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(lock.path(), path);
        // A writer cannot take it shared while frozen.
        let writer = File::open(&path).unwrap();
        assert!(matches!(
            writer.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(lock);
        writer.try_lock_shared().unwrap();

        // A shared holder makes acquire time out with a message naming the file.
        let t0 = Instant::now();
        let err = acquire(&path, Duration::from_millis(200)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let msg = err.to_string();
        assert!(matches!(err, Error::Volume(_)), "{err:?}");
        assert!(
            msg.contains("v.freeze") && msg.contains("writers still hold it"),
            "{msg}"
        );

        // A holder that finishes while we wait lets acquire through.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(writer);
        });
        let lock = acquire(&path, Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        drop(lock);
    }

    #[test]
    fn flock_tool_interoperates() {
        // What the docs tell site scripts to do: `flock -s LOCKFILE command`.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("v.freeze");
        let lock = acquire(&path, Duration::from_secs(1)).unwrap();
        let st = std::process::Command::new("flock")
            .args(["-s", "-n"])
            .arg(&path)
            .arg("true")
            .status();
        let Ok(st) = st else { return }; // no flock(1) here
        assert!(!st.success(), "flock -s got the lock while frozen");
        drop(lock);
        let st = std::process::Command::new("flock")
            .args(["-s", "-n"])
            .arg(&path)
            .arg("true")
            .status()
            .unwrap();
        assert!(st.success());
    }
}
