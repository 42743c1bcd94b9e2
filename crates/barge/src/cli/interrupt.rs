//! Ctrl-C for the commands that follow something (`--wait`, `logs -f`, `watch`): SIGINT sets
//! a flag that their loops check between polls, so they end cleanly (a redrawn screen is left
//! whole, the cursor shown again) instead of dying mid-line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How often a waiting loop looks at the flag: Ctrl-C is answered within this long.
const INTERRUPT_CHECK_MS: u64 = 50;

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: nothing else is safe in a signal handler.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Takes over SIGINT for the rest of the process.
pub fn catch() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps `ms`, or less if Ctrl-C comes; false when it came.
pub fn sleep(ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(ms);
    while !interrupted() {
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(INTERRUPT_CHECK_MS)));
    }
    false
}
