//! The freeze lock: one of the two things that make sure a volume is never left frozen by reel
//! (the other is the signal guard, `crate::signal`).
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

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
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
        crate::fsutil::create_dir_all(dir).at(dir)?;
    }
    // 0600 like every file of the spool: a site script that takes it shared runs as the
    // spool's owner (docs/NIGHTLY.md, "The freeze lock").
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::fsutil::FILE_MODE)
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

#[cfg(test)]
mod tests {
    use super::*;

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
