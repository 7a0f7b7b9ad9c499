//! Who is asking: the peer's executable and its chain of parent processes, read from `/proc`
//! (Linux). Elsewhere, or for a process that is gone, these are unknown.

use serde::{Deserialize, Serialize};

/// One process in the requester's ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Pid.
    pub pid: i32,
    /// Executable path, if readable.
    pub exe: Option<String>,
}

/// The executable of `pid`.
pub fn executable(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: read after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
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
}
