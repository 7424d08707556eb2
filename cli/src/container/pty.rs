//! `-t`: the console socket the runtime sends the pty master over, raw mode for the caller's
//! terminal (restored on drop), and the byte proxy between the terminal and the master.

use std::io::{IoSliceMut, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};

/// Listens where the runtime connects (`CreateOptions::console_socket`).
pub(crate) fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

/// Accepts the runtime's connection and takes the pty master it sends with SCM_RIGHTS.
pub(crate) fn receive_master(listener: &UnixListener) -> anyhow::Result<OwnedFd> {
    let (stream, _) = listener
        .accept()
        .context("accepting the console connection")?;
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receiving the pty master")?;
    let fd = msg
        .cmsgs()
        .context("reading the console message")?
        .find_map(|m| match m {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the runtime sent no pty master"))?;
    // SAFETY: the descriptor arrived with this message; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The caller's terminal in raw mode until dropped.
#[derive(Debug)]
pub(crate) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin when it is a terminal; None otherwise.
    pub(crate) fn enter() -> anyhow::Result<Option<Self>> {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Ok(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("raw mode")?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Gives the pty the size of the caller's terminal, when it has one.
pub(crate) fn copy_window_size(master: BorrowedFd<'_>) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass; fd 0 may be any file.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0 {
        // SAFETY: TIOCSWINSZ reads the winsize we pass; the master is an open pty.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

/// Copies stdin to the master (when `input`) and the master to stdout until the pty closes
/// (EIO or EOF once every slave descriptor is gone).
pub(crate) fn proxy(master: &OwnedFd, input: bool) -> anyhow::Result<()> {
    let mut master_file = std::fs::File::from(master.try_clone()?);
    let mut stdout = std::io::stdout().lock();
    let mut stdin_open = input;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if stdin_open {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of pollfd of the length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }
        if fds[0].revents != 0 {
            match master_file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    stdout.write_all(&buf[..n])?;
                    stdout.flush()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: the slave side is closed, the container is gone.
                Err(_) => return Ok(()),
            }
        }
        if stdin_open && fds[1].revents != 0 {
            match nix::unistd::read(0, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => master_file.write_all(&buf[..n])?,
            }
        }
    }
}
