//! Writing files a user asked for (exported keys and certificates) so that they are always wholly
//! old or wholly new, and never seen with another mode than their final one: the data goes into
//! an unnamed file (`O_TMPFILE`) whose mode is set on the open descriptor (`fchmod`, so the umask
//! does not matter), is synced, and only then gets a name (`linkat`, which refuses to replace;
//! or a link under a temporary name and `rename` over the target), then the directory is synced.
//! Where the file system has no `O_TMPFILE`, a temporary file created `O_EXCL` stands in, its
//! mode also set through the descriptor, never by path.
//!
//! A directory other users can write to (group- or world-writable, `/tmp` included, or owned by
//! another user) is refused: they could replace or remove what keyward wrote there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target exists and overwriting was not asked for.
    #[error("{0} already exists (use --force to overwrite it)")]
    Exists(PathBuf),
    /// The target's directory can be written by other users.
    #[error(
        "refusing to write {path}: its directory {dir} {why}, so another user could replace or remove the file; write into a directory only you can write to"
    )]
    SharedDirectory {
        /// The target.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// What makes the directory shared.
        why: String,
    },
    /// An I/O error.
    #[error("cannot write {path}")]
    Io {
        /// The target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The directory `path` would be written into.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Why other users could change entries of `dir`, if they could: it is group- or
/// world-writable (a sticky `/tmp` included: its other users cannot replace our file, but they
/// can take the name first), or owned by a user other than us and root. A missing directory is
/// not refused here (writing into it fails on its own).
pub fn shared_directory(dir: &Path) -> Option<String> {
    let meta = fs::metadata(dir).ok()?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "is writable by every user"
        } else {
            "is writable by its group"
        };
        return Some(format!("{who} (mode {mode:04o})"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!("belongs to another user (uid {})", meta.uid()));
    }
    None
}

/// Refuses a target whose directory other users can write to.
pub fn check_target_dir(path: &Path) -> Result<(), WriteError> {
    let dir = parent_dir(path);
    match shared_directory(&dir) {
        Some(why) => Err(WriteError::SharedDirectory {
            path: path.to_owned(),
            dir,
            why,
        }),
        None => Ok(()),
    }
}

/// Writes `contents` to `path` atomically with `mode` (e.g. 0o600 for private keys).
///
/// Without `overwrite`, an existing `path` is an error and is never touched, even if it appears
/// while we write (the final step is a link, which refuses to replace).
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    check_target_dir(path)?;
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(WriteError::Exists(path.to_owned()));
    }
    let dir = parent_dir(path);
    if path.file_name().is_none() {
        return Err(io(io::Error::other("not a file path")));
    }
    let written = match write_unnamed(&dir, path, contents, mode, overwrite) {
        Ok(true) => Ok(()),
        Ok(false) => write_named(&dir, path, contents, mode, overwrite),
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(WriteError::Exists(path.to_owned()));
        }
        return Err(io(e));
    }
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io)
}

/// A fresh name beside `path` for a file about to be renamed over it.
fn temp_name(dir: &Path, path: &Path) -> PathBuf {
    let mut suffix = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(".{name}.{:016x}.tmp", u64::from_le_bytes(suffix)))
}

/// Sets the exact mode through the descriptor (the umask filtered the one given to open), then
/// writes and syncs.
fn fill(file: &mut File, contents: &[u8], mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The `O_TMPFILE` way; `Ok(false)` when the file system (or a missing `/proc`) does not allow
/// it and nothing was written.
fn write_unnamed(
    dir: &Path,
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> io::Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(mode & 0o777)
        .open(dir)
    {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    fill(&mut file, contents, mode)?;
    let target = if overwrite {
        temp_name(dir, path)
    } else {
        path.to_owned()
    };
    if let Err(e) = link_fd(&file, &target) {
        // Without /proc the descriptor has no name to link from: fall back.
        if e.raw_os_error() == Some(libc::ENOENT) && !Path::new("/proc/self/fd").is_dir() {
            return Ok(false);
        }
        return Err(e);
    }
    if overwrite && let Err(e) = fs::rename(&target, path) {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(true)
}

/// Gives the unnamed `file` the name `target` (fails if `target` exists).
fn link_fd(file: &File, target: &Path) -> io::Result<()> {
    let from = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        &from,
        nix::fcntl::AT_FDCWD,
        target,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// The fallback: a named temporary file created `O_EXCL`, then rename or link.
fn write_named(
    dir: &Path,
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> io::Result<()> {
    let temp = temp_name(dir, path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&temp)?;
        fill(&mut file, contents, mode)?;
        if overwrite {
            fs::rename(&temp, path)
        } else {
            fs::hard_link(&temp, path).and_then(|()| fs::remove_file(&temp))
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_never_overwrites_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        write_atomic(&path, b"one", 0o600, false).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            write_atomic(&path, b"two", 0o600, false),
            Err(WriteError::Exists(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"two", 0o644, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_fallback_sets_the_mode_through_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        write_named(dir.path(), &path, b"one", 0o640, false).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(
            write_named(dir.path(), &path, b"two", 0o640, false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        write_named(dir.path(), &path, b"two", 0o600, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directories_other_users_can_write_are_refused() {
        for mode in [0o777, 0o1777, 0o770, 0o1733] {
            let dir = tempfile::tempdir().unwrap();
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            let path = dir.path().join("cert.pem");
            let err = write_atomic(&path, b"x", 0o644, true).unwrap_err();
            assert!(
                matches!(err, WriteError::SharedDirectory { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("writable by"), "{err}");
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                0,
                "nothing written"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        write_atomic(&dir.path().join("ok.pem"), b"x", 0o644, false).unwrap();
        // Another user's directory, even one only they can write to.
        let theirs = tempfile::tempdir().unwrap();
        nix::unistd::chown(
            theirs.path(),
            Some(nix::unistd::Uid::from_raw(65_534)),
            None,
        )
        .unwrap();
        assert!(shared_directory(theirs.path()).is_some_and(|w| w.contains("another user")));
    }

    /// Under a strict umask, a reader racing the writer never sees a file before it is complete
    /// nor with another mode than 0644 (a named temporary file is visible from its creation,
    /// empty and, until its chmod, at 0600). The umask is per process: the check runs in a child
    /// process of this test binary.
    #[test]
    fn racing_readers_never_see_another_mode() {
        const CHILD: &str = "KEYWARD_FILES_RACE_CHILD";
        // Big enough that writing and syncing it takes a while.
        const SIZE: u64 = 1 << 20;
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "files::tests::racing_readers_never_see_another_mode",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("1 passed"), "the child ran the check: {text}");
            return;
        }
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (root, stop) = (root.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for entry in fs::read_dir(&root).unwrap().flatten() {
                        if let Ok(meta) = entry.metadata() {
                            seen += 1;
                            let mode = meta.mode() & 0o7777;
                            let path = entry.path();
                            assert_eq!(mode, 0o644, "{} seen at {mode:o}", path.display());
                            assert_eq!(meta.len(), SIZE, "{} seen incomplete", path.display());
                        }
                    }
                }
                seen
            })
        };
        let data = vec![7u8; usize::try_from(SIZE).unwrap()];
        for i in 0..40 {
            write_atomic(&root.join(format!("f{}", i % 3)), &data, 0o644, true).unwrap();
            write_atomic(&root.join(format!("n{i}")), &data, 0o644, false).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().expect("no file seen with another mode");
        assert!(seen > 0);
    }
}
