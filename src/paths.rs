//! Default locations: the store under the XDG data directory, and the private directory that
//! holds the agent's sockets.
//!
//! The socket directory is never a predictable path in a shared directory (another user could
//! create it first and receive what clients send): it is `$XDG_RUNTIME_DIR/keyward`, else under
//! `/run/user/$UID` when that directory exists and is ours, else under the user's own home (or
//! macOS's per-user `$TMPDIR`).

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The default store directory: `$KEYWARD_STORE`, else `$XDG_DATA_HOME/keyward`, else
/// `$HOME/.local/share/keyward`; `None` when none of these is set.
pub fn default_store_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("KEYWARD_STORE")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("keyward")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/keyward")))
}

/// The default directory for keyward's sockets (see the module documentation for the order).
pub fn default_socket_dir() -> PathBuf {
    socket_dir_from(
        |name| std::env::var_os(name),
        nix::unistd::geteuid().as_raw(),
        is_private_dir,
    )
}

/// The socket directory chosen from the environment (`var`), our uid and a test of whether a
/// directory is private to us; separate from [`default_socket_dir`] so the order can be tested.
pub fn socket_dir_from(
    var: impl Fn(&str) -> Option<OsString>,
    uid: u32,
    private: impl Fn(&Path) -> bool,
) -> PathBuf {
    // Relative values are invalid under the XDG specification and would depend on the cwd.
    let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(runtime) = absolute("XDG_RUNTIME_DIR") {
        return runtime.join("keyward");
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if private(&run_user) {
        return run_user.join("keyward");
    }
    // macOS gives every user a private temporary directory (mode 0700, under /var/folders).
    if cfg!(target_os = "macos")
        && let Some(tmp) = absolute("TMPDIR")
    {
        return tmp.join("keyward");
    }
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("keyward/run");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local/state/keyward/run");
    }
    // Nowhere private is known: this path cannot be created by anyone but root, so a user gets
    // a clear "cannot create" error naming it rather than a shared fallback.
    run_user.join("keyward")
}

/// Whether `dir` is a real directory (not a symlink), owned by us and mode exactly 0700.
pub fn is_private_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|meta| {
        meta.file_type().is_dir()
            && meta.uid() == nix::unistd::geteuid().as_raw()
            && meta.permissions().mode() & 0o7777 == 0o700
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(vars: &[(&str, &str)], run_user_ours: bool) -> PathBuf {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        socket_dir_from(
            |name| {
                vars.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| OsString::from(v))
            },
            1000,
            |p| run_user_ours && p == Path::new("/run/user/1000"),
        )
    }

    #[test]
    fn socket_dir_fallback_order() {
        let all = [
            ("XDG_RUNTIME_DIR", "/xdg"),
            ("XDG_STATE_HOME", "/state"),
            ("HOME", "/home/me"),
        ];
        assert_eq!(dir(&all, true), Path::new("/xdg/keyward"));
        assert_eq!(dir(&all[1..], true), Path::new("/run/user/1000/keyward"));
        assert_eq!(dir(&all[1..], false), Path::new("/state/keyward/run"));
        assert_eq!(
            dir(&all[2..], false),
            Path::new("/home/me/.local/state/keyward/run")
        );
        // Relative values are ignored, never resolved against the working directory.
        assert_eq!(
            dir(&[("XDG_RUNTIME_DIR", "rel"), ("HOME", "/h")], false),
            Path::new("/h/.local/state/keyward/run")
        );
        assert_eq!(dir(&[], false), Path::new("/run/user/1000/keyward"));
    }

    #[test]
    fn private_dir_means_ours_0700_and_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_private_dir(&d));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(!is_private_dir(&link), "a symlink is never private");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            !is_private_dir(&d),
            "a sticky shared directory is not private"
        );
        assert!(!is_private_dir(&tmp.path().join("missing")));
    }
}
