//! ssh-agent's process modes: bind first (so a taken socket fails on the terminal, exit 1), then
//! fork; the child serves, the parent prints the `eval` lines or becomes the command.
//!
//! Unlike ssh-agent, the parent waits on a pipe until the child serves (store open, sockets
//! bound): what it prints is then always true, and a child that fails says why on the stderr it
//! still shares and the parent exits 1.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use nix::unistd::{ForkResult, Pid};

use super::serve::{self, Launch, Options};
use crate::launch::Shell;
use crate::socket;

/// How the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-s`, `-c` or no flag: detach and print the lines for `eval`.
    Detach,
    /// `-D` or `-d`: stay in the foreground, print the `SSH_AUTH_SOCK` line.
    Foreground,
    /// `command [arg ...]`: the command runs in this process, the agent in a child.
    Command(Vec<OsString>),
    /// keyward's own options only, or a service manager: foreground, default socket, no output.
    Native,
}

/// Whether systemd or launchd started us (they want a process that stays in the foreground).
pub fn service_managed() -> bool {
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    // launchd names the job in XPC_SERVICE_NAME; terminals set it too, to other names.
    let launchd =
        std::env::var_os("XPC_SERVICE_NAME").is_some_and(|v| v == crate::install::LAUNCHD_LABEL);
    set("LISTEN_FDS") || set("NOTIFY_SOCKET") || (cfg!(target_os = "macos") && launchd)
}

/// `-k`: SIGTERM to `$SSH_AGENT_PID`, then the lines that forget it.
pub fn kill(shell: Shell) -> anyhow::Result<ExitCode> {
    let Some(text) = std::env::var_os("SSH_AGENT_PID") else {
        bail!("SSH_AGENT_PID not set, cannot kill agent");
    };
    let text = text.to_string_lossy();
    let pid = match text.parse::<i32>() {
        Ok(pid) if pid >= 2 => pid,
        _ => bail!("SSH_AGENT_PID=\"{text}\", which is not a good PID"),
    };
    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("kill {pid}"))?;
    print!("{}", crate::launch::unset_lines(pid, shell));
    Ok(ExitCode::SUCCESS)
}

/// The `SSH_AUTH_SOCK` line and pid echo of the foreground modes (no `SSH_AGENT_PID`, as
/// ssh-agent -D).
pub fn foreground_lines(socket: &Path, pid: u32, shell: Shell) -> String {
    let sock = socket.display();
    match shell {
        Shell::Bourne => {
            format!("SSH_AUTH_SOCK={sock}; export SSH_AUTH_SOCK;\necho Agent pid {pid};\n")
        }
        Shell::C => format!("setenv SSH_AUTH_SOCK {sock};\necho Agent pid {pid};\n"),
    }
}

/// Runs `mode` (not [`Mode::Native`]).
pub fn run(mode: Mode, options: &Options, shell: Shell) -> anyhow::Result<ExitCode> {
    let mut options = options.clone();
    // The detached agent works from `/`: relative paths must keep meaning what they meant here.
    let absolute = |p: &mut PathBuf| {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    };
    if !options.socket.as_os_str().is_empty() {
        absolute(&mut options.socket);
    }
    for path in [
        &mut options.store,
        &mut options.passphrase_file,
        &mut options.askpass,
    ]
    .into_iter()
    .flatten()
    {
        absolute(path);
    }
    let private_dir = if options.socket.as_os_str().is_empty() {
        let dir = private_dir()?;
        options.socket = dir.join(format!("agent.{}", std::process::id()));
        Some(dir)
    } else {
        None
    };
    if mode == Mode::Foreground {
        // Bound in `serve`, after the signal handlers: a SIGTERM right after the socket
        // accepts must stop us cleanly.
        let launch = Launch {
            listener: None,
            private_dir,
            on_ready: Box::new(move |socket: &Path| {
                // A reader that went away must not take the agent with it (print! panics).
                let mut out = std::io::stdout();
                let _ =
                    out.write_all(foreground_lines(socket, std::process::id(), shell).as_bytes());
                let _ = out.flush();
            }),
            parent: None,
        };
        return serve::serve(&options, launch);
    }
    let listener = match bind(&options.socket) {
        Ok(listener) => listener,
        Err(e) => {
            if let Some(dir) = &private_dir {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
    };
    let (ready_rx, ready_tx) = nix::unistd::pipe().context("pipe")?;
    let parent = nix::unistd::getpid();
    // SAFETY: no other thread exists yet (the runtime starts in the child, in `serve`), so the
    // child may run arbitrary code after the fork.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Child => {
            drop(ready_rx);
            let code = child(&mode, &options, listener, private_dir, ready_tx, parent);
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop(ready_tx);
            drop(listener);
            let mut byte = [0u8; 1];
            let ready = std::fs::File::from(ready_rx).read(&mut byte).unwrap_or(0) == 1;
            if !ready {
                // The child said why on our stderr; leave nothing behind.
                let _ = nix::sys::wait::waitpid(child, None);
                let _ = std::fs::remove_file(&options.socket);
                if let Some(dir) = &private_dir {
                    let _ = std::fs::remove_dir(dir);
                }
                return Ok(ExitCode::FAILURE);
            }
            let pid = child.as_raw();
            if let Mode::Command(command) = mode {
                return Err(exec(&command, &options.socket, pid));
            }
            print!(
                "{}",
                crate::launch::export_lines(&options.socket, pid, shell)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The agent side of the fork.
fn child(
    mode: &Mode,
    options: &Options,
    listener: std::os::unix::net::UnixListener,
    private_dir: Option<PathBuf>,
    ready: OwnedFd,
    parent: Pid,
) -> i32 {
    // Out of the terminal's session, so its hangup and Ctrl-C do not reach us.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let launch = Launch {
        listener: Some(listener),
        private_dir,
        on_ready: Box::new(move |_: &Path| {
            let _ = std::fs::File::from(ready).write_all(b"1");
            // Nothing of ours may hold the caller's stdout open (`eval $(keyward-agent)` reads
            // it to the end), nor write to its terminal later.
            to_dev_null();
        }),
        parent: matches!(mode, Mode::Command(_)).then_some(parent),
    };
    match serve::serve(options, launch) {
        Ok(code) => {
            if code == ExitCode::SUCCESS {
                0
            } else {
                2
            }
        }
        Err(e) => {
            eprintln!("keyward-agent: {e:#}");
            1
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null.
fn to_dev_null() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
}

/// Becomes `command` with the agent in its environment; returns only on failure.
fn exec(command: &[OsString], socket: &Path, pid: i32) -> anyhow::Error {
    let error = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env("SSH_AUTH_SOCK", socket)
        .env("SSH_AGENT_PID", pid.to_string())
        .exec();
    anyhow::Error::new(error).context(command[0].to_string_lossy().into_owned())
}

/// Binds `path` (0600 from the start, in a 0700 directory: [`socket::bind`]), refusing a socket
/// another agent serves with bind's own words.
fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    socket::bind(path).map_err(|e| match e {
        socket::SocketError::AlreadyListening(path) => anyhow::anyhow!(
            "cannot bind to path {}: Address already in use (another agent serves it)",
            path.display()
        ),
        other => other.into(),
    })
}

/// A fresh directory (0700) for one agent's socket: `ssh-XXXXXXXXXX` under the user's private
/// runtime directory when there is one, else under `$TMPDIR` or `/tmp` (as ssh-agent).
fn private_dir() -> anyhow::Result<PathBuf> {
    let base = runtime_dir()
        .or_else(|| {
            std::env::var_os("TMPDIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    nix::unistd::mkdtemp(&base.join("ssh-XXXXXXXXXX"))
        .with_context(|| format!("mkdtemp: private socket dir under {}", base.display()))
}

/// `$XDG_RUNTIME_DIR`, else `/run/user/UID`, when it is a directory of ours that nobody else
/// can write to.
fn runtime_dir() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = nix::unistd::getuid().as_raw();
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        Some(PathBuf::from(format!("/run/user/{uid}"))),
    ];
    candidates.into_iter().flatten().find(|dir| {
        std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0)
    })
}
