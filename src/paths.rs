//! Default locations: the store under the XDG data directory.

use std::path::PathBuf;

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
