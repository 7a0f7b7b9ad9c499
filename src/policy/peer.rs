//! Who is asking: the peer's executable and its chain of parent processes, read from `/proc`
//! (Linux). Elsewhere, or for a process that is gone, these are unknown.
//!
//! The kernel names the process that *connected* (`SO_PEERCRED`), not the one sending each
//! request. A [`Snapshot`] taken at connect time and again before every signature tells whether
//! that process has since exec'd another program or exited (its pid possibly reused, which its
//! start time reveals), so a program cannot connect, then exec an allowed executable and send the
//! request from a forked child. Where the kernel tells who wrote each request
//! ([`crate::agent::senders`]), a request written by any other process than the one that
//! connected is caught as well, even if that one still runs an allowed executable.

use serde::{Deserialize, Serialize};

/// One process in the requester's ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Pid.
    pub pid: i32,
    /// Executable path, if readable.
    pub exe: Option<String>,
}

/// `/usr/bin/ssh (pid 12) from /usr/bin/bash (pid 10)`, for prompts: a process and up to three
/// of its parents, with full paths, so a copy of another program named like a trusted one does
/// not pass for it.
pub fn describe(chain: &[Process]) -> String {
    if chain.is_empty() {
        return "an unknown program".to_owned();
    }
    chain
        .iter()
        .take(4)
        .map(|p| format!("{} (pid {})", p.exe.as_deref().unwrap_or("?"), p.pid))
        .collect::<Vec<_>>()
        .join(" from ")
}

/// The executable of `pid`.
pub fn executable(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The fields of `/proc/PID/stat` after the command name, which is in parentheses and may
/// itself contain spaces and parentheses: the fields start after the last ')'.
fn stat_fields(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.to_owned())
}

/// `stat` field `n` (1-based, as in proc(5)); fields 1 and 2 are the pid and the name.
fn field<T: std::str::FromStr>(fields: &str, n: usize) -> Option<T> {
    fields
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

fn parent(pid: i32) -> Option<i32> {
    field(&stat_fields(pid)?, 4)
}

/// A process at one moment: the program it runs and when it started. A pid is reused only by a
/// process that started later, and exec changes the program but not the start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Executable path, if readable.
    pub exe: Option<String>,
    /// Start time in clock ticks after boot (`stat` field 22).
    pub start: u64,
}

impl Snapshot {
    /// Reads `pid` now (one `readlink` and one small read); `None` if it is gone (a zombie
    /// included) or unreadable.
    pub fn read(pid: i32) -> Option<Self> {
        // The executable first, the start time second: if the pid is reused in between, the
        // start time read is the newcomer's and the comparison fails, as it should.
        let exe = executable(pid);
        let fields = stat_fields(pid)?;
        // A zombie has exited; only its parent's wait keeps its entry.
        if matches!(field::<char>(&fields, 3), Some('Z' | 'X')) {
            return None;
        }
        let start = field(&fields, 22)?;
        Some(Self { exe, start })
    }
}

/// How the process that connected compares, at a request, with itself at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// Same process, same executable.
    Same,
    /// It runs another executable now (it exec'd after connecting).
    Execd {
        /// At connect time.
        then: Option<String>,
        /// Now.
        now: Option<String>,
    },
    /// It has exited (or its pid belongs to another process now): someone else holds the
    /// connection, a forked child or a process it was passed to.
    Gone,
    /// Not known: no pid from the kernel, or `/proc` unreadable at connect time.
    Unknown,
    /// The kernel says another process wrote the request (a forked child, say): why.
    OtherWriter(String),
}

impl Continuity {
    /// Compares the connect-time snapshot with one taken now.
    pub fn of(connected: Option<&Snapshot>, now: Option<&Snapshot>) -> Self {
        match (connected, now) {
            (None, _) => Self::Unknown,
            (Some(_), None) => Self::Gone,
            (Some(then), Some(now)) if then.start != now.start => Self::Gone,
            (Some(then), Some(now)) if then.exe != now.exe => Self::Execd {
                then: then.exe.clone(),
                now: now.exe.clone(),
            },
            (Some(_), Some(_)) => Self::Same,
        }
    }

    /// Why a key with an executable rule cannot trust the connection, if it cannot.
    pub fn distrust(&self) -> Option<String> {
        let show = |e: &Option<String>| e.clone().unwrap_or_else(|| "(unknown)".to_owned());
        match self {
            Self::Same => None,
            Self::Execd { then, now } => Some(format!(
                "the connecting process ran {} and exec'd {} after connecting",
                show(then),
                show(now)
            )),
            Self::Gone => Some(
                "the connecting process has exited: another process (a forked child?) holds its connection"
                    .to_owned(),
            ),
            Self::Unknown => Some("the connecting process could not be identified".to_owned()),
            Self::OtherWriter(why) => Some(why.clone()),
        }
    }
}

/// `pid` and its ancestors, nearest first, up to `max` processes (stops at pid 1).
pub fn chain(pid: i32, max: usize) -> Vec<Process> {
    let mut out = Vec::new();
    let mut current = Some(pid);
    while let Some(p) = current {
        if out.len() >= max || p <= 0 {
            break;
        }
        out.push(Process {
            pid: p,
            exe: executable(p),
        });
        current = if p == 1 { None } else { parent(p) };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_chain() {
        let me = i32::try_from(std::process::id()).unwrap();
        let chain = chain(me, 8);
        assert_eq!(chain[0].pid, me);
        assert_eq!(
            chain[0].exe,
            std::env::current_exe()
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        );
        assert!(chain.len() >= 2, "has a parent");
    }

    #[test]
    fn snapshots_tell_exec_exit_and_pid_reuse_apart() {
        let me = i32::try_from(std::process::id()).unwrap();
        let now = Snapshot::read(me).unwrap();
        assert_eq!(
            now,
            Snapshot::read(me).unwrap(),
            "stable while nothing changes"
        );
        assert_eq!(Continuity::of(Some(&now), Some(&now)), Continuity::Same);
        let execd = Snapshot {
            exe: Some("/usr/bin/ssh".into()),
            ..now.clone()
        };
        assert!(matches!(
            Continuity::of(Some(&now), Some(&execd)),
            Continuity::Execd { .. }
        ));
        let reused = Snapshot {
            start: now.start + 1,
            ..now.clone()
        };
        assert_eq!(Continuity::of(Some(&now), Some(&reused)), Continuity::Gone);
        assert_eq!(Continuity::of(Some(&now), None), Continuity::Gone);
        assert_eq!(Continuity::of(None, Some(&now)), Continuity::Unknown);
        assert!(Continuity::Same.distrust().is_none());
        // An exited child: its snapshot is gone once it is reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        assert!(Snapshot::read(pid).is_none());
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let fields = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21";
        assert_eq!(field::<u64>(fields, 22), Some(4242));
        assert_eq!(field::<i32>(fields, 4), Some(1));
        assert_eq!(field::<i32>(fields, 2), None);
    }
}
