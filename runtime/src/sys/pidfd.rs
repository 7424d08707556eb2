//! Process descriptors: a pidfd pins one process (no pid reuse can swap it) and becomes
//! readable when that process exits, whoever its parent is.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A pidfd for `pid`, or None when no such process exists (ESRCH).
pub fn open(pid: i32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(e),
        };
    }
    let fd = i32::try_from(fd)
        .map_err(|_| io::Error::other(format!("pidfd_open returned {fd}, not a descriptor")))?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Whether `pid` exits (or is gone) within `timeout`.
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let Ok(Some(pidfd)) = open(pid) else {
        // ESRCH: already gone (any other failure has always counted as gone too).
        return true;
    };
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return n > 0;
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    #[test]
    fn open_a_gone_process_is_none_and_wait_sees_exit() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = i32::try_from(child.id()).unwrap();
        // Not reaped yet: the zombie still has a pidfd, readable because it has exited.
        assert!(super::wait_exit(pid, Duration::from_secs(10)));
        child.wait().unwrap();
        assert!(super::open(pid).unwrap().is_none());
    }

    #[test]
    fn wait_times_out_on_a_running_process() {
        let mut child = Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).unwrap();
        assert!(super::open(pid).unwrap().is_some());
        assert!(!super::wait_exit(pid, Duration::from_millis(10)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
