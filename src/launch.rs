//! Starting, finding and stopping a detached agent for shells (`keyward start`,
//! `keyward-agent -s`), and the `SSH_AUTH_SOCK` lines they print for `eval`.
//!
//! The daemon itself never forks; this spawns it as a new process in its own process group. The
//! running agent's pid is read from the socket's peer credentials, so no pid file can go stale.

use std::io;
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
    #[error("cannot run the agent ({0})")]
    Spawn(String, #[source] io::Error),
    /// The daemon exited before answering.
    #[error(
        "the agent ({command}) exited with {status} before answering on {socket}; no agent is \
         running. Its log {log} ends with:\n{tail}"
    )]
    Exited {
        /// The command that was run.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The socket it was to serve.
        socket: PathBuf,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// The daemon did not answer in time (it has been stopped).
    #[error(
        "the agent ({command}) did not answer on {socket} within {WAIT:?} and was stopped; no \
         agent is running. Its log {log} ends with:\n{tail}"
    )]
    NoAnswer {
        /// The command that was run.
        command: String,
        /// The socket it was to serve.
        socket: PathBuf,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// No agent answers on the socket.
    #[error("no agent is running on {0}")]
    NotRunning(PathBuf),
    /// The agent did not stop.
    #[error("agent (pid {0}) did not stop within {WAIT:?}")]
    DidNotStop(i32),
    /// Signalling failed.
    #[error("cannot signal pid {0}")]
    Signal(i32, #[source] nix::Error),
    /// Preparing the socket directory, or reaching the socket, failed.
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

/// The pid of the process serving `socket`, if one of our uid answers (another user's server is
/// never "running" for us; [`probe`] says why).
pub fn running_agent(socket: &Path) -> Option<i32> {
    probe(socket).ok().flatten()
}

/// The pid of the process serving `socket`: `Ok(None)` when nothing answers, an error when
/// another user's process does (nothing is sent to it).
pub fn probe(socket: &Path) -> Result<Option<i32>, LaunchError> {
    let Some(stream) = crate::socket::connect(socket)? else {
        return Ok(None);
    };
    let cred = getsockopt(&stream, PeerCredentials).map_err(|e| {
        LaunchError::Io(
            format!("cannot read the peer of {}", socket.display()),
            e.into(),
        )
    })?;
    Ok(Some(cred.pid()))
}

/// How to run the agent: a program and the arguments that come before the agent's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the agent's own (`agent` when the CLI binary plays the agent).
    pub prefix: Vec<String>,
}

impl AgentCommand {
    /// The command as a person would type it, for messages.
    pub fn display(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.prefix.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The agent to run: `keyward-agent` beside the running executable when it exists, otherwise the
/// running executable itself as `<exe> agent` (`cargo run --bin keyward` builds only `keyward`,
/// which is the agent too).
pub fn agent_command() -> Result<AgentCommand, LaunchError> {
    let exe = std::env::current_exe()
        .map_err(|e| LaunchError::Io("cannot find the running executable".into(), e))?;
    Ok(agent_command_for(&exe))
}

/// [`agent_command`] for the executable `exe`.
pub fn agent_command_for(exe: &Path) -> AgentCommand {
    match exe.parent().map(|dir| dir.join("keyward-agent")) {
        Some(beside) if beside.is_file() => AgentCommand {
            program: beside,
            prefix: Vec::new(),
        },
        _ => AgentCommand {
            program: exe.to_owned(),
            prefix: vec!["agent".to_owned()],
        },
    }
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
    let command = AgentCommand {
        program: agent.to_owned(),
        prefix: Vec::new(),
    };
    start_command(&command, socket, args)
}

/// [`start`] with the agent run as `command`. On any error no agent it started is left running.
pub fn start_command(
    command: &AgentCommand,
    socket: &Path,
    args: &[String],
) -> Result<(i32, bool), LaunchError> {
    if let Some(pid) = probe(socket)? {
        return Ok((pid, false));
    }
    crate::socket::check_len(socket)?;
    let dir = socket.parent().unwrap_or(Path::new("."));
    crate::socket::prepare_dir(dir)?;
    let log = dir.join("agent.log");
    let log_file = open_log(&log)?;
    let mut child = Command::new(&command.program)
        .args(&command.prefix)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        // Its own process group: a Ctrl-C in the shell that started it does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| LaunchError::Spawn(command.display(), e))?;
    let deadline = Instant::now() + WAIT;
    loop {
        match probe(socket) {
            Ok(Some(pid)) => return Ok((pid, true)),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::Exited {
                command: command.display(),
                status,
                socket: socket.to_owned(),
                tail: log_tail(&log),
                log,
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::NoAnswer {
                command: command.display(),
                socket: socket.to_owned(),
                tail: log_tail(&log),
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens the agent's log for appending: created 0600, never through a symlink; one left looser
/// by an older keyward is tightened through its descriptor.
fn open_log(log: &Path) -> Result<std::fs::File, LaunchError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |e| LaunchError::Io(format!("cannot open log file {}", log.display()), e);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    Ok(file)
}

/// The last lines of the log, indented, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        return "  (empty)".to_owned();
    }
    tail.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stops the agent serving `socket`; returns its pid.
pub fn stop(socket: &Path) -> Result<i32, LaunchError> {
    let pid = probe(socket)?.ok_or_else(|| LaunchError::NotRunning(socket.to_owned()))?;
    terminate(pid)?;
    let deadline = Instant::now() + WAIT;
    while probe(socket)?.is_some() {
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

    #[test]
    fn agent_beside_the_executable_else_the_executable_itself() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("keyward");
        std::fs::write(&exe, b"").unwrap();
        assert_eq!(
            agent_command_for(&exe),
            AgentCommand {
                program: exe.clone(),
                prefix: vec!["agent".into()]
            }
        );
        assert_eq!(
            agent_command_for(&exe).display(),
            format!("{} agent", exe.display())
        );
        let beside = dir.path().join("keyward-agent");
        std::fs::write(&beside, b"").unwrap();
        assert_eq!(
            agent_command_for(&exe),
            AgentCommand {
                program: beside,
                prefix: Vec::new()
            }
        );
    }

    #[test]
    fn log_is_created_0600_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        drop(open_log(&log).unwrap());
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(open_log(&link).is_err());
    }
}
