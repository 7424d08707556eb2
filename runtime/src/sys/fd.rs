//! Descriptor hygiene: what a parent left open must not reach a runtime or a container.

use std::io;

/// What [`close_range`] does to the descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Close them now.
    Close,
    /// Mark them close-on-exec: they stay usable until the next execve.
    Cloexec,
}

/// Closes (or marks close-on-exec) every descriptor from `first` up.
pub fn close_range(first: u32, mode: CloseMode) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let flags = match mode {
        CloseMode::Close => 0,
        CloseMode::Cloexec => CLOSE_RANGE_CLOEXEC,
    };
    // SAFETY: close_range takes integers only and changes this process's descriptor table;
    // callers own (or mean to drop) every descriptor from `first` up.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
