//! Crash injection for the crash-safety tests: `REEL_FAILPOINT=NAME[:N]` makes the process kill
//! itself with SIGKILL the N-th time (default 1st) it passes the point NAME. The points sit
//! between the steps of the write order (docs/DESIGN.md), where a crash is most instructive. With the
//! variable unset this is one relaxed atomic load per call.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

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
