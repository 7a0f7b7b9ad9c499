//! Where the sockets live and how they are bound: 0700 directory, 0600 socket, never stealing a
//! live socket from another agent.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a socket could not be bound or reached.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket already.
    #[error("an agent is already listening on {0} (stop it first, or choose another --socket)")]
    AlreadyListening(PathBuf),
    /// Something that is not a socket sits where the socket should go.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The socket directory belongs to someone else.
    #[error(
        "socket directory {path} is owned by uid {owner}, not by you (uid {uid}): another user \
         could replace the sockets in it; remove it (rm -r {path}) or choose a directory of your \
         own (mode 0700)"
    )]
    ForeignDirectory {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        uid: u32,
    },
    /// The socket directory is a symbolic link.
    #[error(
        "socket directory {path} is a symbolic link (to {target}); refusing to follow it: remove \
         the link (rm {path}) and let keyward create the directory"
    )]
    SymlinkDirectory {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The socket directory is not a directory.
    #[error("socket directory {0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// The socket directory lets other users in.
    #[error("socket directory {path} has mode {mode:04o}; it must be {wanted}: {fix}")]
    OpenDirectory {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// What is required.
        wanted: &'static str,
        /// What to do about it.
        fix: String,
    },
    /// A socket file of another user sits where ours should be.
    #[error(
        "{path} is a socket of uid {owner}, not yours (uid {uid}): another user put it there; \
         remove it (rm {path}) and check who can write to its directory"
    )]
    ForeignSocket {
        /// The socket.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        uid: u32,
    },
    /// The process answering on the socket runs as another user: nothing was sent to it.
    #[error(
        "refusing to talk to {path}: it is served by uid {owner}, not by you (uid {uid}), so \
         nothing was sent to it; {fix}"
    )]
    ForeignServer {
        /// The socket.
        path: PathBuf,
        /// The server's uid.
        owner: u32,
        /// Our uid.
        uid: u32,
        /// What to do about it.
        fix: String,
    },
    /// The path does not fit in a Unix socket address.
    #[error(
        "socket path {path} is {len} bytes, over the {max}-byte limit of Unix socket addresses: \
         choose a shorter --socket (or set XDG_RUNTIME_DIR)"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest path that fits.
        max: usize,
    },
    /// An I/O error, with what we were doing.
    #[error("{what} {path}")]
    Io {
        /// What failed.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError + use<> {
    let path = path.to_owned();
    move |source| SocketError::Io { what, path, source }
}

/// The longest socket path (in bytes, without the terminating NUL) a `sockaddr_un` holds.
pub const MAX_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// The default directory for keyward's sockets (decided in [`crate::paths`]).
pub fn default_dir() -> PathBuf {
    crate::paths::default_socket_dir()
}

/// The default agent socket path.
pub fn default_agent_socket() -> PathBuf {
    default_dir().join("agent.sock")
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Fails when `path` cannot be a Unix socket address.
pub fn check_len(path: &Path) -> Result<(), SocketError> {
    let len = path.as_os_str().len();
    if len > MAX_PATH {
        return Err(SocketError::PathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_PATH,
        });
    }
    Ok(())
}

/// Creates the socket's directory (0700, with any missing parents) if it is missing, and checks
/// with `lstat` that the directory is ours and private: owned by our uid and not a symbolic link;
/// mode exactly 0700 for keyward's default directory and any directory created here, and for a
/// directory the user chose (`--socket`), writable by nobody else (no sticky shared directory
/// such as `/tmp`). Anything else is refused with what to fix, never repaired silently.
pub fn prepare_dir(dir: &Path) -> Result<(), SocketError> {
    let strict = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create socket directory", dir))?;
            true
        }
        Err(e) => return Err(io_err("cannot stat socket directory", dir)(e)),
        Ok(_) => dir == default_dir(),
    };
    check_dir(dir, strict)
}

/// The `lstat` checks of [`prepare_dir`] on an existing directory.
pub fn check_dir(dir: &Path, strict: bool) -> Result<(), SocketError> {
    let meta =
        std::fs::symlink_metadata(dir).map_err(io_err("cannot stat socket directory", dir))?;
    if meta.file_type().is_symlink() {
        return Err(SocketError::SymlinkDirectory {
            path: dir.to_owned(),
            target: std::fs::read_link(dir).unwrap_or_default(),
        });
    }
    if !meta.is_dir() {
        return Err(SocketError::NotADirectory(dir.to_owned()));
    }
    let uid = euid();
    if meta.uid() != uid {
        return Err(SocketError::ForeignDirectory {
            path: dir.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    // Without write access for others (and no sticky bit, the mark of a shared directory) nobody
    // else can create, replace or rename anything in it.
    let (ok, wanted) = if strict {
        (mode == 0o700, "exactly 0700")
    } else {
        (mode & 0o7022 == 0, "writable by you only")
    };
    if !ok {
        // Never advise tightening a shared directory such as /tmp: that would break it for others.
        let fix = if mode & 0o1002 != 0 {
            "it is a shared directory; put the socket in a directory of your own (mode 0700), \
             e.g. keyward's default"
                .to_owned()
        } else {
            format!("chmod 700 {}", dir.display())
        };
        return Err(SocketError::OpenDirectory {
            path: dir.to_owned(),
            mode,
            wanted,
            fix,
        });
    }
    Ok(())
}

/// The uid of the process that serves `stream` (`SO_PEERCRED`, or `getpeereid` on the BSDs).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        getsockopt(stream, PeerCredentials)
            .map(|c| c.uid())
            .map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        nix::unistd::getpeereid(stream)
            .map(|(uid, _)| uid.as_raw())
            .map_err(io::Error::from)
    }
}

/// Connects to the server at `path` and checks, before anything is sent, that it runs as our
/// uid. `Ok(None)` when nothing listens there; [`SocketError::ForeignServer`] when another user's
/// process answers (root's too: root has no business serving our sockets, and a link to one of
/// root's sockets, a log socket say, would otherwise receive our keys).
pub fn connect(path: &Path) -> Result<Option<UnixStream>, SocketError> {
    check_len(path)?;
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err("cannot connect to", path)(e)),
    };
    let owner = peer_uid(&stream).map_err(io_err("cannot read the peer credentials of", path))?;
    let uid = euid();
    if owner != uid {
        return Err(SocketError::ForeignServer {
            path: path.to_owned(),
            owner,
            uid,
            fix: foreign_fix(path),
        });
    }
    Ok(Some(stream))
}

/// What to do when another user serves `path`: name the link or directory that let it in.
fn foreign_fix(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("/"));
    match check_dir(dir, false) {
        Err(SocketError::SymlinkDirectory { target, .. }) => format!(
            "its directory {} is a symbolic link to {}: remove the link (rm {}) and start \
             keyward again",
            dir.display(),
            target.display(),
            dir.display()
        ),
        Err(e @ (SocketError::ForeignDirectory { .. } | SocketError::OpenDirectory { .. })) => {
            format!("{e}")
        }
        _ => format!(
            "remove it (rm {}) and start keyward again; check who can write to {}",
            path.display(),
            dir.display()
        ),
    }
}

/// Binds a Unix listener at `path` with mode 0600, after making sure no live agent owns it.
///
/// An existing socket is probed with [`connect()`]: if something answers, binding fails with
/// [`SocketError::AlreadyListening`] (or [`SocketError::ForeignServer`]); a stale socket file of
/// ours is replaced, another user's never.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, SocketError> {
    check_len(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if meta.uid() != euid() {
                return Err(SocketError::ForeignSocket {
                    path: path.to_owned(),
                    owner: meta.uid(),
                    uid: euid(),
                });
            }
            if connect(path)?.is_some() {
                return Err(SocketError::AlreadyListening(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot stat", path)(e)),
    }
    // The socket file takes its mode from the umask: make it 0600 from the start. The daemon
    // binds before it runs anything else that creates files, so the process-wide umask is safe
    // to change for this moment.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    bound.map_err(io_err("cannot bind", path))
}

/// Removes the socket at `path` if it is still the one we bound (same inode), so an agent that
/// replaced ours in the meantime keeps its socket.
pub fn remove_if_ours(path: &Path, ino: u64) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.ino() == ino
    {
        let _ = std::fs::remove_file(path);
    }
}

/// The inode of the socket file at `path`, to recognise it at shutdown.
pub fn inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0600_in_a_new_0700_dir_and_refuses_a_live_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join("agent.sock");
        let _listener = bind(&path).unwrap();
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        let sock_mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        assert_eq!((dir_mode, sock_mode), (0o700, 0o600));
        assert!(matches!(bind(&path), Err(SocketError::AlreadyListening(_))));
    }

    #[test]
    fn refuses_shared_symlinked_and_open_directories() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = bind(&shared.join("agent.sock")).unwrap_err();
        assert!(
            matches!(err, SocketError::OpenDirectory { mode: 0o1777, .. })
                && err.to_string().contains("shared directory")
                && !err.to_string().contains("chmod"),
            "{err}"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        assert!(matches!(
            bind(&link.join("agent.sock")),
            Err(SocketError::SymlinkDirectory { .. })
        ));
        // A directory of ours that only we can write to is fine for an explicit --socket...
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(bind(&shared.join("agent.sock")).is_ok());
        // ...but keyward's own directories must be exactly 0700.
        let err = check_dir(&shared, true).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 700 {}", shared.display())),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_path_too_long_for_sockaddr_un() {
        let long = PathBuf::from(format!("/{}", "x".repeat(MAX_PATH)));
        let err = bind(&long).unwrap_err();
        assert!(matches!(err, SocketError::PathTooLong { .. }), "{err}");
        assert!(err.to_string().contains(&long.display().to_string()));
        assert!(matches!(
            connect(&long),
            Err(SocketError::PathTooLong { .. })
        ));
    }

    #[test]
    fn connect_checks_the_server_is_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s");
        assert!(connect(&path).unwrap().is_none());
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(connect(&path).unwrap().is_some());
    }

    #[test]
    fn replaces_a_stale_socket_but_not_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("agent.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(bind(&path).is_ok());
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind(&file), Err(SocketError::NotASocket(_))));
    }
}
