//! Which process wrote each request: `SO_PEERCRED` names the process that *connected*, and a
//! forked child using the inherited descriptor is invisible to it. With `SO_PASSCRED` on the
//! listening socket (inherited by every accepted one, and applied by the kernel to bytes sent
//! before the accept too), every read carries the credentials of the process that wrote those
//! bytes, and the kernel never returns bytes of two writers in one read. [`SenderReader`] reads
//! frames that way and remembers the writers of the current frame.
//!
//! Linux only; elsewhere the reader is a plain read and every frame's sender is unknown.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

/// Who wrote the bytes of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Senders {
    /// Nothing read yet, or no credentials came with the bytes (not Linux, `SO_PASSCRED` off).
    #[default]
    Unknown,
    /// Every byte came from this pid.
    One(i32),
    /// Several processes wrote parts of the frame (the first other pid is kept).
    Mixed(i32, i32),
}

impl Senders {
    fn note(&mut self, pid: Option<i32>) {
        *self = match (*self, pid) {
            (Self::Unknown, Some(p)) => Self::One(p),
            (Self::One(a), Some(p)) if a != p => Self::Mixed(a, p),
            (current, _) => current,
        };
    }

    /// Why a frame was not wholly written by `connected`, if it was not (and this is known).
    pub fn other_than(self, connected: i32) -> Option<String> {
        match self {
            Self::Unknown => None,
            Self::One(p) if p == connected => None,
            Self::One(p) => Some(format!(
                "the request was written by pid {p}{}, not by the process that connected (pid {connected})",
                describe(p)
            )),
            Self::Mixed(a, b) => Some(format!(
                "the request was written by several processes (pids {a} and {b}{})",
                describe(b)
            )),
        }
    }
}

fn describe(pid: i32) -> String {
    crate::policy::peer::executable(pid).map_or_else(String::new, |e| format!(", {e}"))
}

/// Asks the kernel to attach the writer's credentials to everything sent to connections accepted
/// on `listener` from now on.
pub fn pass_credentials(listener: &UnixListener) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::socket::setsockopt(listener, nix::sys::socket::sockopt::PassCred, &true)?;
    let _ = listener;
    Ok(())
}

/// Reads from a connection, noting who wrote what is read into `senders`.
pub struct SenderReader<'a> {
    stream: &'a UnixStream,
    senders: &'a mut Senders,
}

impl<'a> SenderReader<'a> {
    /// A reader over `stream` that records writers in `senders`.
    pub fn new(stream: &'a UnixStream, senders: &'a mut Senders) -> Self {
        Self { stream, senders }
    }
}

impl AsyncRead for SenderReader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            std::task::ready!(this.stream.poll_read_ready(cx))?;
            let read = this.stream.try_io(tokio::io::Interest::READABLE, || {
                recv(this.stream, buf.initialize_unfilled())
            });
            match read {
                Ok((n, pid)) => {
                    buf.advance(n);
                    if n > 0 {
                        this.senders.note(pid);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One `recvmsg`: the bytes read and the writer's pid, if the kernel sent one (0 means a writer
/// the agent's pid namespace cannot see).
#[cfg(target_os = "linux")]
fn recv(stream: &UnixStream, into: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
    use std::os::fd::AsRawFd;
    let mut space = nix::cmsg_space!(UnixCredentials);
    let mut iov = [io::IoSliceMut::new(into)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut pid = None;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(creds) if creds.pid() > 0 => {
                pid = Some(creds.pid());
            }
            // Descriptors nobody asked for are closed at once.
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    Ok((msg.bytes, pid))
}

#[cfg(not(target_os = "linux"))]
fn recv(stream: &UnixStream, into: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    stream.try_read(into).map(|n| (n, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_one_writer_or_several() {
        let mut s = Senders::default();
        s.note(None);
        assert_eq!(s, Senders::Unknown);
        s.note(Some(5));
        s.note(Some(5));
        assert_eq!(s, Senders::One(5));
        assert!(s.other_than(5).is_none());
        assert!(s.other_than(6).is_some_and(|w| w.contains("pid 5")));
        s.note(Some(7));
        assert_eq!(s, Senders::Mixed(5, 7));
        assert!(s.other_than(5).is_some());
        assert!(Senders::Unknown.other_than(5).is_none());
    }

    /// A frame written by this process arrives with our pid; bytes written before the accept
    /// carry it too.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn reads_carry_the_writer_pid() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        pass_credentials(&listener).unwrap();
        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(b"early").await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut senders = Senders::default();
        let mut buf = [0u8; 5];
        SenderReader::new(&server, &mut senders)
            .read_exact(&mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"early");
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(senders, Senders::One(me));
    }
}
