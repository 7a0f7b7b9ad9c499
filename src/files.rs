//! Writing files a user asked for (exported keys and certificates) so that they are always wholly
//! old or wholly new: a temp file created `O_EXCL` with the final mode, fsync, then rename (or
//! link, when overwriting is not allowed), then fsync of the directory.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target exists and overwriting was not asked for.
    #[error("{0} already exists (use --force to overwrite it)")]
    Exists(PathBuf),
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

/// Writes `contents` to `path` atomically with `mode` (e.g. 0o600 for private keys).
///
/// Without `overwrite`, an existing `path` is an error and is never touched, even if it appears
/// while we write (the final step is `link`, which refuses to replace).
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
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(WriteError::Exists(path.to_owned()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io(io::Error::other("not a file path")))?;
    let mut suffix = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
    let temp = dir.join(format!(
        ".{}.{:016x}.tmp",
        name.to_string_lossy(),
        u64::from_le_bytes(suffix)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The mode given to open() is filtered by the umask; set exactly what was asked.
        fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        if overwrite {
            fs::rename(&temp, path)
        } else {
            fs::hard_link(&temp, path).and_then(|()| fs::remove_file(&temp))
        }
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(WriteError::Exists(path.to_owned()));
        }
        return Err(io(e));
    }
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
