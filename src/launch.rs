//! Starting, finding and stopping a detached agent for shells (`keyward start`,
//! `keyward-agent -s`), and the `SSH_AUTH_SOCK` lines they print for `eval`.
//!
//! The daemon itself never forks; this spawns it as a new process in its own process group. The
//! running agent's pid is read from the socket's peer credentials, so no pid file can go stale.

use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Pid;

/// How long to wait for an agent to start answering, or to go away.
pub const WAIT: Duration = Duration::from_secs(10);

/// Why an agent could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Spawning the daemon failed.
    #[error("cannot run {0}")]
    Spawn(PathBuf, #[source] io::Error),
    /// The daemon exited before answering.
    #[error("keyward-agent exited with {status} before answering on {socket}; see {log}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The socket it was to serve.
        socket: PathBuf,
        /// Its log file.
        log: PathBuf,
    },
    /// The daemon did not answer in time.
    #[error("keyward-agent did not answer on {0} within {WAIT:?}")]
    NoAnswer(PathBuf),
    /// No agent answers on the socket.
    #[error("no agent is running on {0}")]
    NotRunning(PathBuf),
    /// The agent did not stop.
    #[error("agent (pid {0}) did not stop within {WAIT:?}")]
    DidNotStop(i32),
    /// Signalling failed.
    #[error("cannot signal pid {0}")]
    Signal(i32, #[source] nix::Error),
    /// Preparing the socket directory or log file failed.
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
    /// Another I/O error.
    #[error("{0}")]
    Io(String, #[source] io::Error),
}

/// Which shell syntax to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// sh, bash, zsh (`ssh-agent -s`).
    Bourne,
    /// csh, tcsh (`ssh-agent -c`).
    C,
}

impl Shell {
    /// The shell named by `$SHELL`, as `ssh-agent` guesses it when neither -s nor -c is given.
    pub fn from_env() -> Self {
        match std::env::var("SHELL") {
            Ok(s) if s.ends_with("csh") => Self::C,
            _ => Self::Bourne,
        }
    }
}

/// The lines that export the agent's socket and pid, in `ssh-agent`'s format.
pub fn export_lines(socket: &Path, pid: i32, shell: Shell) -> String {
    let sock = socket.display();
    match shell {
        Shell::Bourne => format!(
            "SSH_AUTH_SOCK={sock}; export SSH_AUTH_SOCK;\nSSH_AGENT_PID={pid}; export SSH_AGENT_PID;\necho Agent pid {pid};\n"
        ),
        Shell::C => format!(
            "setenv SSH_AUTH_SOCK {sock};\nsetenv SSH_AGENT_PID {pid};\necho Agent pid {pid};\n"
        ),
    }
}

/// The lines that forget the agent (`ssh-agent -k`).
pub fn unset_lines(pid: i32, shell: Shell) -> String {
    match shell {
        Shell::Bourne => {
            format!("unset SSH_AUTH_SOCK;\nunset SSH_AGENT_PID;\necho Agent pid {pid} killed;\n")
        }
        Shell::C => {
            format!(
                "unsetenv SSH_AUTH_SOCK;\nunsetenv SSH_AGENT_PID;\necho Agent pid {pid} killed;\n"
            )
        }
    }
}

/// The pid of the process serving `socket`, if one answers.
pub fn running_agent(socket: &Path) -> Option<i32> {
    let stream = UnixStream::connect(socket).ok()?;
    getsockopt(&stream, PeerCredentials).ok().map(|c| c.pid())
}

/// The `keyward-agent` binary: beside the running executable, else from `PATH`.
pub fn agent_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("keyward-agent")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("keyward-agent"))
}

/// Starts `agent` detached, serving `socket` with the extra `args`, unless an agent already
/// answers there; returns the serving pid and whether it was started now.
pub fn start(agent: &Path, socket: &Path, args: &[String]) -> Result<(i32, bool), LaunchError> {
    if let Some(pid) = running_agent(socket) {
        return Ok((pid, false));
    }
    let dir = socket.parent().unwrap_or(Path::new("."));
    crate::socket::prepare_dir(dir)?;
    let log = dir.join("agent.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| LaunchError::Io(format!("cannot open log file {}", log.display()), e))?;
    let mut child = Command::new(agent)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        // Its own process group: a Ctrl-C in the shell that started it does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| LaunchError::Spawn(agent.to_owned(), e))?;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pid) = running_agent(socket) {
            return Ok((pid, true));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::Exited {
                status,
                socket: socket.to_owned(),
                log,
            });
        }
        if Instant::now() > deadline {
            return Err(LaunchError::NoAnswer(socket.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the agent serving `socket`; returns its pid.
pub fn stop(socket: &Path) -> Result<i32, LaunchError> {
    let pid = running_agent(socket).ok_or_else(|| LaunchError::NotRunning(socket.to_owned()))?;
    terminate(pid)?;
    let deadline = Instant::now() + WAIT;
    while running_agent(socket).is_some() {
        if Instant::now() > deadline {
            return Err(LaunchError::DidNotStop(pid));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: i32) -> Result<(), LaunchError> {
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| LaunchError::Signal(pid, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_match_ssh_agent() {
        let p = Path::new("/run/k/agent.sock");
        assert_eq!(
            export_lines(p, 42, Shell::Bourne),
            "SSH_AUTH_SOCK=/run/k/agent.sock; export SSH_AUTH_SOCK;\nSSH_AGENT_PID=42; export SSH_AGENT_PID;\necho Agent pid 42;\n"
        );
        assert!(
            export_lines(p, 42, Shell::C).starts_with("setenv SSH_AUTH_SOCK /run/k/agent.sock;\n")
        );
    }

    #[test]
    fn finds_the_pid_behind_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        assert_eq!(running_agent(&path), None);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(running_agent(&path), Some(std::process::id().cast_signed()));
    }
}
