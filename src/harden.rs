//! Process setup for the daemon: no core dumps, no same-uid debugger, private files, enough
//! descriptors for the connections it is meant to hold, and few malloc arenas.
//!
//! A core dump or a `ptrace` attach would hand every loaded private key to whoever reads it.
//! On Linux `PR_SET_DUMPABLE = 0` also makes `/proc/PID/mem` and friends root-owned, so other
//! processes of the same user cannot read the daemon's memory.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, umask};

/// The soft descriptor limit the daemon raises itself to (or to the hard limit, if lower).
///
/// systemd and most shells start processes with a soft limit of 1,024, too few for an agent that
/// holds a thousand idle connections. The hard limit is often much higher (2^19 or 2^20); it is not
/// taken whole because children (the askpass program) inherit the soft limit, and some programs
/// size tables by it or close every descriptor up to it.
pub const OPEN_FILES_TARGET: u64 = 65_536;

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

/// Malloc arenas the daemon allows itself (glibc's default is 8 per core).
///
/// Signatures run on whichever runtime thread read the request, and each new thread that
/// allocates gets an arena of its own: measured, two arenas cut the agent's peak resident memory
/// under the benchmark's load by about 1 MiB (of 11-12), with one arena per core still.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] (a no-op on other C libraries). Call it before
/// any thread is started. Returns whether the C library took the setting.
pub fn limit_malloc_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt(3) only sets a tuning parameter of the allocator; with M_ARENA_MAX it
        // limits how many arenas later threads create. It reads no memory of ours.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Raises the soft descriptor limit to [`OPEN_FILES_TARGET`] (at most the hard limit; never
/// lowers it). Returns the soft limit now in force.
pub fn raise_open_files() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let wanted = OPEN_FILES_TARGET.min(hard);
    if soft >= wanted {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)?;
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_arena_limit() {
        assert!(limit_malloc_arenas());
    }

    #[test]
    fn raising_is_idempotent_and_never_lowers() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let raised = raise_open_files().unwrap();
        assert!(raised >= soft && raised <= hard);
        assert!(raised >= OPEN_FILES_TARGET.min(hard));
        assert_eq!(raise_open_files().unwrap(), raised);
    }
}
