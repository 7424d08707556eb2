//! process.terminal: a pty made inside the container, whose master goes to the caller's
//! `--console-socket` with SCM_RIGHTS (as runc sends it) and whose slave becomes stdio.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::{Error, Result};

/// Connects to the console socket (on the host side, before the container's root hides it).
pub(crate) fn connect(socket: &Path) -> Result<OwnedFd> {
    let stream = UnixStream::connect(socket).map_err(|e| Error::io(socket, e))?;
    Ok(OwnedFd::from(stream))
}

/// Makes a pty in the container's /dev/pts, sends its master over `socket` and makes its
/// slave the controlling terminal and stdio of the calling process.
pub(crate) fn attach_pty(socket: &OwnedFd) -> Result<()> {
    let sys = |op: &'static str| move |e| Error::sys(op, "/dev/ptmx", e);
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("posix_openpt"))?;
    nix::pty::grantpt(&master).map_err(sys("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt"))?;
    let slave_name = nix::pty::ptsname_r(&master).map_err(sys("ptsname"))?;
    let slave = nix::fcntl::open(
        Path::new(&slave_name),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", &slave_name, e))?;
    let fds = [master.as_raw_fd()];
    let name = slave_name.as_bytes();
    let iov = [std::io::IoSlice::new(name)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys("sendmsg", "console socket", e))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", "", e))?;
    // SAFETY: TIOCSCTTY takes the slave descriptor we own and an integer argument.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::sys(
            "ioctl(TIOCSCTTY)",
            &slave_name,
            nix::errno::Errno::last(),
        ));
    }
    for target in 0..3 {
        nix::unistd::dup2(slave, target).map_err(|e| Error::sys("dup2", &slave_name, e))?;
    }
    if slave > 2 {
        let _ = nix::unistd::close(slave);
    }
    Ok(())
}
