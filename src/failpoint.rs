//! Crash injection for the crash-safety tests: `REEL_FAILPOINT=NAME[:N]` makes the process kill
//! itself with SIGKILL the N-th time (default 1st) it passes the point NAME. The points sit
//! between the steps of the write order (docs/DESIGN.md), where a crash is most instructive.
//!
//! Only with the cargo feature `failpoints`, which the tests turn on (the crate is its own
//! dev-dependency with that feature): a binary built for use (`cargo build --release` or
//! `--profile dist`) has no failpoint, and `hit` is an empty function that the compiler removes.

#[cfg(feature = "failpoints")]
use std::sync::OnceLock;
#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "failpoints")]
static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
#[cfg(feature = "failpoints")]
static HITS: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "failpoints")]
fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let v = std::env::var("REEL_FAILPOINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n))
    })
}

/// Pass the point `name`; dies here if the environment asks for it.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if let Some((want, n)) = target()
        && want == name
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n
    {
        // SIGKILL, not abort: nothing gets to run, as with `kill -9` or a power cut.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Without the `failpoints` feature a point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
