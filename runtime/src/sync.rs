//! The message channel between the runtime and the container's init: a SOCK_SEQPACKET
//! socketpair, so each send is one message.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};

use crate::error::{Error, Result};

/// Largest message accepted: the state JSON with annotations fits.
const MAX_MESSAGE: usize = 64 * 1024;

/// What runtime and init tell each other during `create`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// Runtime -> init: the cgroup and id maps are in place; carries the state JSON for hooks.
    Go(Vec<u8>),
    /// Init -> runtime: init made its cgroup and moved in; the limits can be applied.
    CgroupReady,
    /// Init -> runtime: mounts are done, run the prestart and createRuntime hooks now.
    RunHooks,
    /// Runtime -> init: those hooks succeeded.
    HooksDone,
    /// Init -> runtime: set up and waiting for `start`.
    Ready,
    /// Either way: the sender failed, with its reason.
    Failed(String),
    /// Exec's helper -> runtime: the host pid of the process it started.
    Pid(i32),
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Go(state) => [b"G".as_slice(), state].concat(),
            Message::CgroupReady => b"C".to_vec(),
            Message::RunHooks => b"H".to_vec(),
            Message::HooksDone => b"D".to_vec(),
            Message::Ready => b"R".to_vec(),
            Message::Failed(reason) => [b"F".as_slice(), reason.as_bytes()].concat(),
            Message::Pid(pid) => [b"P".as_slice(), pid.to_string().as_bytes()].concat(),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        Some(match tag {
            b'G' => Message::Go(rest.to_vec()),
            b'C' => Message::CgroupReady,
            b'H' => Message::RunHooks,
            b'D' => Message::HooksDone,
            b'R' => Message::Ready,
            b'F' => Message::Failed(String::from_utf8_lossy(rest).into_owned()),
            b'P' => Message::Pid(std::str::from_utf8(rest).ok()?.parse().ok()?),
            _ => return None,
        })
    }
}

/// One end of the channel.
#[derive(Debug)]
pub(crate) struct Channel(OwnedFd);

/// A connected pair (runtime end, init end), both close-on-exec.
pub(crate) fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", "", e))?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub(crate) fn send(&self, msg: &Message) -> Result<()> {
        send(self.0.as_raw_fd(), &msg.encode(), MsgFlags::MSG_NOSIGNAL)
            .map(drop)
            .map_err(|e| Error::sys("send", "sync socket", e))
    }

    /// The next message; `None` when the other end closed (it exited).
    pub(crate) fn recv(&self) -> Result<Option<Message>> {
        // Peek at the length first (SOCK_SEQPACKET with MSG_TRUNC reports a whole message's
        // size), so a one-byte message costs no large buffer.
        let mut probe = [0u8; 1];
        let len = loop {
            match recv(
                self.0.as_raw_fd(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                // The peer exited leaving a message of ours unread: the kernel reports that
                // once (ECONNRESET) ahead of what the peer sent before exiting.
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNRESET) => continue,
                Err(e) => return Err(Error::sys("recv", "sync socket", e)),
                Ok(0) => return Ok(None),
                Ok(n) => break n.min(MAX_MESSAGE),
            }
        };
        let mut buf = vec![0u8; len];
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return Message::decode(&buf[..n])
                        .map(Some)
                        .ok_or_else(|| Error::Init("garbled sync message".into()));
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNRESET) => continue,
                Err(e) => return Err(Error::sys("recv", "sync socket", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = pair().unwrap();
        for msg in [
            Message::Go(b"{\"id\":\"x\"}".to_vec()),
            Message::CgroupReady,
            Message::RunHooks,
            Message::HooksDone,
            Message::Ready,
            Message::Failed("mount /proc: EPERM".into()),
            Message::Pid(4242),
            Message::Go(vec![b'x'; 40_000]),
        ] {
            a.send(&msg).unwrap();
            assert_eq!(b.recv().unwrap(), Some(msg));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn a_peer_that_exits_with_unread_messages_still_delivers_its_last_words() {
        let (runtime, init) = pair().unwrap();
        runtime.send(&Message::Go(b"{}".to_vec())).unwrap();
        init.send(&Message::Failed("mount: ENODEV".into())).unwrap();
        // Closed with Go unread: the runtime's socket gets ECONNRESET first.
        drop(init);
        assert_eq!(
            runtime.recv().unwrap(),
            Some(Message::Failed("mount: ENODEV".into()))
        );
        assert_eq!(runtime.recv().unwrap(), None);
    }
}
