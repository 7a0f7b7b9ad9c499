//! Starting and stopping the two agents under test, each in its own temporary directory, and
//! reading their peak memory.
//!
//! Readiness is a successful `connect()` on the socket, never a sleep of a guessed length.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

use crate::proto::Client;

/// How long an agent may take to start listening or to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(10);

/// Which agent a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `keyward-agent --socket PATH`.
    Keyward,
    /// OpenSSH's `ssh-agent -D -a PATH`.
    OpenSsh,
}

impl Kind {
    /// Column name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keyward => "keyward",
            Self::OpenSsh => "ssh-agent",
        }
    }

    /// The executable: `KEYWARD_AGENT_BIN` / `SSH_AGENT_BIN` override the built binary and the
    /// `ssh-agent` found on PATH.
    fn program(self) -> Result<PathBuf> {
        match self {
            Self::Keyward => std::env::var_os("KEYWARD_AGENT_BIN")
                .map(PathBuf::from)
                .or_else(|| option_env!("CARGO_BIN_EXE_keyward-agent").map(PathBuf::from))
                .context(
                    "no keyward-agent binary: run through `cargo bench` or set KEYWARD_AGENT_BIN",
                ),
            Self::OpenSsh => Ok(std::env::var_os("SSH_AGENT_BIN")
                .map_or_else(|| PathBuf::from("ssh-agent"), PathBuf::from)),
        }
    }
}

/// A running agent; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Agent {
    kind: Kind,
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl Agent {
    /// Starts an agent in a fresh directory and waits until its socket accepts connections.
    pub fn start(kind: Kind) -> Result<Self> {
        let mut agent = Self::spawn(kind, &[])?;
        agent.wait_ready()?;
        Ok(agent)
    }

    /// Starts an agent in a fresh directory with `extra` arguments and returns at once, before
    /// it listens: the caller times its start-up.
    pub fn spawn(kind: Kind, extra: &[&OsStr]) -> Result<Self> {
        let program = kind.program()?;
        let dir = tempfile::Builder::new()
            .prefix("kwbench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let socket = dir.path().join("agent.sock");
        let log = fs::File::create(dir.path().join("agent.log"))?;
        let mut cmd = Command::new(&program);
        match kind {
            Kind::Keyward => cmd.arg("--socket").arg(&socket),
            Kind::OpenSsh => cmd.arg("-D").arg("-a").arg(&socket),
        };
        cmd.args(extra);
        // Keep keyward away from the user's real store and config; quiet logs cost nothing.
        let home = dir.path().join("home");
        fs::create_dir(&home)?;
        cmd.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            kind,
            child,
            socket,
            dir,
        })
    }

    /// Fails, with the agent's log, if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log:\n{}",
                self.kind.name(),
                self.log()
            );
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if Client::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening; its log:\n{}",
                    self.kind.name(),
                    self.log()
                );
            }
            if start.elapsed() > PATIENCE {
                bail!("{} is not listening after {PATIENCE:?}", self.kind.name());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Which agent this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its agent socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Peak resident set size (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading /proc/PID/status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }

    /// User plus system CPU time used so far by all the agent's threads, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .context("reading /proc/PID/stat")?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let ticks: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        let [user, system] = ticks[..] else {
            bail!("unexpected /proc/PID/stat format");
        };
        #[allow(clippy::cast_precision_loss)]
        Ok((user + system) as f64 / clock_ticks())
    }

    /// Sends SIGTERM and waits for the process to exit; an agent that ignores it is killed.
    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // `kill(1)` rather than libc keeps this file free of `unsafe`.
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .context("running kill -TERM")?;
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("{} ignored SIGTERM for {PATIENCE:?}", self.kind.name())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// `sysconf(_SC_CLK_TCK)`, through `getconf` to stay free of `unsafe`; 100 on Linux in practice.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
