//! Process hardening for the daemon: no core dumps, no same-uid debugger, private files.
//!
//! A core dump or a `ptrace` attach would hand every loaded private key to whoever reads it.
//! On Linux `PR_SET_DUMPABLE = 0` also makes `/proc/PID/mem` and friends root-owned, so other
//! processes of the same user cannot read the daemon's memory.

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::stat::{Mode, umask};

/// Applies every protection this OS offers; returns the ones that could not be applied, so the
/// caller can log them (none of them is worth refusing to start over).
pub fn harden_process() -> Vec<String> {
    let mut failed = Vec::new();
    // Files and sockets we create are ours alone unless we chmod them on purpose.
    umask(Mode::from_bits_truncate(0o077));
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        failed.push(format!("RLIMIT_CORE=0: {e}"));
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        failed.push(format!("PR_SET_DUMPABLE=0: {e}"));
    }
    failed
}
