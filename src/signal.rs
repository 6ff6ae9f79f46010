//! The signal guard: SIGINT, SIGTERM and SIGHUP become a flag while work that must finish
//! cleanly runs (a frozen volume must be thawed, a dump's packs must be left consistent). The
//! handler only stores the signal number in an atomic (the one thing that is async-signal-safe
//! to do), and long loops poll [`check_interrupted`] between items, so the work unwinds
//! normally (the clone runs its thaw hook) before reel exits. The previous handlers come back
//! when the last guard is dropped.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

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

/// Serialises the tests (of this module and of `clone::hook`) that raise signals or depend on the
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
}
