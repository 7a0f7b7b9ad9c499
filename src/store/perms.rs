//! File-system permissions of the store directory: created `0700`, opened under umask `077`, and
//! every file in it stripped of group/other bits on each open.
//!
//! The `0700` directory is the real barrier: sled creates files later (blobs, snapshots) with the
//! process umask, which the daemon's unit sets to `077`; the sweep on open repairs anything made
//! under a looser umask since.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use super::error::{Result, StoreError};

const DIR_MODE: u32 = 0o700;
const GROUP_OTHER: u32 = 0o077;

fn dir_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Dir {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and missing parents) with mode `0700`, or tightens an existing one to `0700`.
pub(crate) fn prepare_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(dir_err(dir))?;
    let meta = fs::metadata(dir).map_err(dir_err(dir))?;
    if !meta.is_dir() {
        return Err(StoreError::Dir {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(dir_err(dir))?;
    }
    Ok(())
}

/// Removes group/other permission bits from everything under `dir` (not following symlinks).
pub(crate) fn tighten_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(dir_err(dir))? {
        let entry = entry.map_err(dir_err(dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(dir_err(&path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & GROUP_OTHER != 0 {
            fs::set_permissions(
                &path,
                fs::Permissions::from_mode(mode & !GROUP_OTHER & 0o7777),
            )
            .map_err(dir_err(&path))?;
        }
        if meta.is_dir() {
            tighten_tree(&path)?;
        }
    }
    Ok(())
}

/// Serialises umask changes made by this module (the umask is per process).
static UMASK_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` with the process umask at least `077`, then restores it.
pub(crate) fn with_private_umask<T>(f: impl FnOnce() -> T) -> T {
    let _lock = UMASK_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: umask(2) only swaps an integer in the process's file-creation mask; it cannot fail
    // and touches no memory of ours.
    let old = unsafe { libc::umask(0o077) };
    // SAFETY: as above.
    unsafe { libc::umask(old | 0o077) };
    let out = f();
    // SAFETY: as above; restores the caller's mask.
    unsafe { libc::umask(old) };
    out
}
