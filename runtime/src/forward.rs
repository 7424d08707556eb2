//! `run` in the foreground passes the signals a terminal or supervisor sends it on to the
//! container's process, as runc does, instead of dying and leaving the container behind.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The pid signals go to; 0 before there is one.
static TARGET: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

extern "C" fn forward(signal: libc::c_int) {
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, signal) };
    }
}

/// From now on, the forwarded signals received by this process go to `pid`. SA_RESTART keeps
/// the caller's waitpid going.
pub fn forward_to(pid: Pid) -> Result<()> {
    TARGET.store(pid.as_raw(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in FORWARDED {
        // SAFETY: the handler only reads an atomic and calls kill, both async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| Error::sys("sigaction", signal.as_str(), e))?;
    }
    Ok(())
}
