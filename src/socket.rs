//! Where the sockets live and how they are bound: 0700 directory, 0600 socket, never stealing a
//! live socket from another agent.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket already.
    #[error("an agent is already listening on {0} (stop it first, or choose another --socket)")]
    AlreadyListening(PathBuf),
    /// Something that is not a socket sits where the socket should go.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The socket directory belongs to someone else.
    #[error("socket directory {path} is owned by uid {owner}, not by us (uid {uid})")]
    ForeignDirectory {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        uid: u32,
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

/// The default directory for keyward's sockets: `$XDG_RUNTIME_DIR/keyward`, else
/// `/tmp/keyward-$UID`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("keyward"),
        _ => PathBuf::from(format!("/tmp/keyward-{}", nix::unistd::getuid())),
    }
}

/// The default agent socket path.
pub fn default_agent_socket() -> PathBuf {
    default_dir().join("agent.sock")
}

/// Creates the socket's directory (0700) if it is missing and checks that an existing one is ours.
pub fn prepare_dir(dir: &Path) -> Result<(), SocketError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("cannot create socket directory", dir))?;
        // The mode above is filtered by the umask; say exactly what we mean.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot chmod socket directory", dir))?;
        return Ok(());
    }
    let meta = std::fs::metadata(dir).map_err(io_err("cannot stat socket directory", dir))?;
    let uid = nix::unistd::getuid().as_raw();
    // A directory we did not create (e.g. /tmp for `-a /tmp/x.sock`) is the user's choice, but one
    // owned by another user who could swap our socket is not acceptable unless it is sticky.
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.uid() != uid && meta.uid() != 0 && !sticky {
        return Err(SocketError::ForeignDirectory {
            path: dir.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(())
}

/// Binds a Unix listener at `path` with mode 0600, after making sure no live agent owns it.
///
/// An existing socket is probed with `connect()`: if something answers, binding fails with
/// [`SocketError::AlreadyListening`]; a stale socket file is replaced.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::AlreadyListening(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot stat", path)(e)),
    }
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot chmod socket", path))?;
    Ok(listener)
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
