//! Ctrl-C, `kill` and a closed terminal: the signal only sets a flag. Every wait checks it and
//! fails, and the error unwinds through the guards that stop processes and delete namespaces.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// Whether a signal asked the benchmark to stop.
pub fn is_set() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails if a signal asked the benchmark to stop.
///
/// # Errors
///
/// When it did.
pub fn check() -> anyhow::Result<()> {
    anyhow::ensure!(!is_set(), "interrupted by a signal");
    Ok(())
}
