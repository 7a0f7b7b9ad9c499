//! Socket activation: picking up the `agent` and `control` sockets that systemd
//! (`LISTEN_FDS`/`LISTEN_FDNAMES`) or launchd (`launch_activate_socket`) bound for us, and telling
//! systemd we are ready (`sd_notify`).
//!
//! Sockets handed over this way belong to the service manager: the daemon serves them and never
//! removes their files at exit, so the next connection starts it again.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{SockType, getsockopt, sockopt};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// The name of the agent socket (`FileDescriptorName=agent`, launchd `Sockets` key).
pub const AGENT: &str = "agent";
/// The name of the control socket (`FileDescriptorName=control`).
pub const CONTROL: &str = "control";

/// Why the sockets passed by the service manager cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` or `LISTEN_PID` is not a number.
    #[error("socket activation: {var}={value:?} is not a number")]
    BadVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A socket has a name we do not serve.
    #[error(
        "socket activation passed a socket named {0:?}: name the sockets `agent` and `control` \
         (FileDescriptorName= in keyward.socket)"
    )]
    UnknownName(String),
    /// Two sockets have the same name.
    #[error("socket activation passed two sockets named {0:?}")]
    Duplicate(String),
    /// A passed descriptor is not a listening Unix stream socket.
    #[error("socket activation: descriptor {fd} ({name}) is not a Unix stream socket")]
    NotAUnixStream {
        /// The descriptor.
        fd: RawFd,
        /// Its name.
        name: String,
        /// The cause, if the check itself failed.
        #[source]
        source: Option<io::Error>,
    },
    /// launchd refused to hand over a socket.
    #[error("launchd: launch_activate_socket({name:?}) failed")]
    Launchd {
        /// The socket name in the plist.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The sockets the service manager passed; either may be absent.
#[derive(Debug, Default)]
pub struct Activated {
    /// The agent socket.
    pub agent: Option<UnixListener>,
    /// The control socket.
    pub control: Option<UnixListener>,
}

impl Activated {
    /// Whether any socket was passed.
    pub fn is_active(&self) -> bool {
        self.agent.is_some() || self.control.is_some()
    }

    /// The file system path of the passed agent socket.
    pub fn agent_path(&self) -> Option<PathBuf> {
        let addr = self.agent.as_ref()?.local_addr().ok()?;
        addr.as_pathname().map(std::path::Path::to_owned)
    }
}

/// The sockets passed by systemd or launchd, or none when the daemon was started directly.
pub fn take() -> Result<Activated, ActivationError> {
    let activated = from_systemd()?;
    #[cfg(target_os = "macos")]
    if !activated.is_active() {
        return launchd::take();
    }
    Ok(activated)
}

/// The `(fd, name)` pairs that systemd's variables describe for process `pid`: empty unless
/// `LISTEN_PID` names us. Unnamed sockets are `agent` then `control`, in order.
pub fn parse_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> Result<Vec<(RawFd, String)>, ActivationError> {
    let number = |var: &'static str, value: &str| {
        value
            .trim()
            .parse::<u32>()
            .map_err(|_| ActivationError::BadVar {
                var,
                value: value.to_owned(),
            })
    };
    let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
        return Ok(Vec::new());
    };
    // The variables are inherited by children; only the process they were meant for uses them.
    if number("LISTEN_PID", listen_pid)? != pid {
        return Ok(Vec::new());
    }
    let count = number("LISTEN_FDS", listen_fds)?;
    let names: Vec<&str> = listen_fdnames.map_or_else(Vec::new, |n| n.split(':').collect());
    let mut out: Vec<(RawFd, String)> = Vec::new();
    for i in 0..count {
        let fd = LISTEN_FDS_START + RawFd::try_from(i).unwrap_or(RawFd::MAX - LISTEN_FDS_START);
        let name = match names.get(i as usize).copied() {
            // systemd names sockets without FileDescriptorName= "unknown" (or the unit name).
            Some(n) if n == AGENT || n == CONTROL => n.to_owned(),
            Some(n) if !n.is_empty() && n != "unknown" && !n.ends_with(".socket") => {
                return Err(ActivationError::UnknownName(n.to_owned()));
            }
            _ => match i {
                0 => AGENT.to_owned(),
                1 => CONTROL.to_owned(),
                _ => return Err(ActivationError::UnknownName(format!("#{i}"))),
            },
        };
        if out.iter().any(|(_, n)| *n == name) {
            return Err(ActivationError::Duplicate(name));
        }
        out.push((fd, name));
    }
    Ok(out)
}

fn from_systemd() -> Result<Activated, ActivationError> {
    let var = |name| std::env::var(name).ok();
    let fds = parse_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    let mut activated = Activated::default();
    for (fd, name) in fds {
        // SAFETY: systemd's protocol hands descriptors LISTEN_FDS_START..+LISTEN_FDS to the
        // process named by LISTEN_PID (checked above) and nothing else in this process owns them:
        // they are taken once, at start, before any other code opens a file. An fd that is not
        // open makes the checks in `listener` fail rather than touch another object.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = listener(owned, fd, &name)?;
        if name == AGENT {
            activated.agent = Some(listener);
        } else {
            activated.control = Some(listener);
        }
    }
    Ok(activated)
}

/// Checks that `fd` is a Unix stream socket, marks it close-on-exec (askpass children must not
/// inherit it) and non-blocking for tokio.
fn listener(owned: OwnedFd, fd: RawFd, name: &str) -> Result<UnixListener, ActivationError> {
    let not_unix = |source: Option<io::Error>| ActivationError::NotAUnixStream {
        fd,
        name: name.to_owned(),
        source,
    };
    let errno = |e: nix::Error| not_unix(Some(io::Error::from(e)));
    let kind = getsockopt(&owned.as_fd(), sockopt::SockType).map_err(errno)?;
    if kind != SockType::Stream {
        return Err(not_unix(None));
    }
    fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(errno)?;
    let listener = UnixListener::from(owned);
    if listener.local_addr().is_err() {
        return Err(not_unix(None));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| not_unix(Some(e)))?;
    Ok(listener)
}

/// Sends `state` (e.g. `READY=1`, `STOPPING=1`) to systemd when it asked for notifications
/// (`Type=notify` sets `$NOTIFY_SOCKET`); does nothing otherwise. Failures are logged, never
/// fatal: the daemon serves either way.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return;
    };
    if let Err(e) = send_notify(&path, state) {
        tracing::warn!(error = %e, "cannot notify systemd ({state})");
    }
}

fn send_notify(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(io::Error::other("abstract NOTIFY_SOCKET outside Linux"));
        }
    }
    socket.send_to(state.as_bytes(), path)?;
    Ok(())
}

#[cfg(target_os = "macos")]
#[path = "activation_launchd.rs"]
mod launchd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pick_the_sockets_and_others_are_refused() {
        let pid = 42;
        assert!(parse_env(None, None, None, pid).unwrap().is_empty());
        assert!(
            parse_env(Some("41"), Some("2"), None, pid)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            parse_env(Some("42"), Some("2"), Some("control:agent"), pid).unwrap(),
            vec![(3, "control".to_owned()), (4, "agent".to_owned())]
        );
        assert_eq!(
            parse_env(Some("42"), Some("2"), None, pid).unwrap(),
            vec![(3, "agent".to_owned()), (4, "control".to_owned())]
        );
        assert_eq!(
            parse_env(Some("42"), Some("1"), Some("keyward.socket"), pid).unwrap(),
            vec![(3, "agent".to_owned())]
        );
        assert!(matches!(
            parse_env(Some("42"), Some("1"), Some("web"), pid),
            Err(ActivationError::UnknownName(n)) if n == "web"
        ));
        assert!(matches!(
            parse_env(Some("42"), Some("2"), Some("agent:agent"), pid),
            Err(ActivationError::Duplicate(_))
        ));
        assert!(matches!(
            parse_env(Some("x"), Some("1"), None, pid),
            Err(ActivationError::BadVar {
                var: "LISTEN_PID",
                ..
            })
        ));
    }

    #[test]
    fn notify_reaches_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_passed_listener_is_accepted_and_a_datagram_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stream = UnixListener::bind(dir.path().join("s")).unwrap();
        let l = listener(OwnedFd::from(stream), 3, "agent").unwrap();
        assert!(l.local_addr().unwrap().as_pathname().is_some());
        let dgram = std::os::unix::net::UnixDatagram::bind(dir.path().join("d")).unwrap();
        assert!(listener(OwnedFd::from(dgram), 4, "control").is_err());
    }
}
