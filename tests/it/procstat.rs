//! What the load tests measure and how big they are: a daemon's memory, CPU time and open
//! descriptors read from `/proc`, list-latency percentiles, this process's descriptor limit, and
//! test sizes taken from the environment (CI runs the defaults; `scripts/soak` sets them larger).

use std::fmt;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The size `name` sets in the environment, or `default` (the CI size) when unset.
#[track_caller]
pub fn env_size(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// Raises this process's soft descriptor limit to its hard limit (the daemon inherits it) and
/// panics if even the hard limit is below `needed`.
pub fn raise_nofile(needed: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    assert!(
        hard >= needed,
        "RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors this test needs"
    );
}

/// The soft `Max open files` limit of `pid`, from `/proc/PID/limits`.
pub fn nofile_soft(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("soft limit in {line:?}"))
}

/// Memory figures of a process, in KiB, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: u64,
    /// Highest resident set size so far (`VmHWM`).
    pub hwm: u64,
    /// Private writable virtual memory (`VmData`): what a process reserved, touched or not.
    pub data: u64,
}

impl Memory {
    /// Reads the figures of `pid`.
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        };
        Memory {
            rss: kib("VmRSS:"),
            hwm: kib("VmHWM:"),
            data: kib("VmData:"),
        }
    }

    /// The larger of each figure.
    #[must_use]
    pub fn max(self, other: Memory) -> Memory {
        Memory {
            rss: self.rss.max(other.rss),
            hwm: self.hwm.max(other.hwm),
            data: self.data.max(other.data),
        }
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rss {} KiB hwm {} KiB data {} KiB",
            self.rss, self.hwm, self.data
        )
    }
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Clock ticks per second (`CLK_TCK`).
pub fn ticks_per_second() -> u64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .expect("sysconf")
        .expect("CLK_TCK set");
    u64::try_from(tick).expect("positive tick")
}

/// How many descriptors `pid` has open (0 once it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The 99th percentile and the maximum of `latencies` (zero when empty).
pub fn p99_and_max(latencies: &mut [Duration]) -> (Duration, Duration) {
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    (p99, latencies.last().copied().unwrap_or_default())
}
