//! `keyward-agent`'s command line (also `keyward agent`): ssh-agent's, with ssh-agent's meaning,
//! output and exit codes, plus keyward's own long options.
//!
//! ssh-agent's modes: `-s`/`-c`/no flag detach and print the lines for `eval`; `-D`/`-d` stay in
//! the foreground and print the `SSH_AUTH_SOCK` line; `command [arg ...]` runs the command with
//! the agent in its environment and the agent exits after it; `-k` kills `$SSH_AGENT_PID`. Given
//! only keyward's long options (or started by systemd or launchd), the agent runs in the
//! foreground on its default socket, as it always has.

// Doc comments here are --help text and the man page, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser};

use super::detach::{self, Mode};
use super::serve::{self, Launch, Options};
use crate::agent::CompatOptions;
use crate::agent::compat::{FingerprintHash, ProviderPolicy};
use crate::clock::parse_duration;
use crate::launch::Shell;
use crate::{config, socket};

/// ssh-agent's exit status for a fatal error (its `fatal()`).
const FATAL: u8 = 255;

const LONG_ABOUT: &str = "\
keyward-agent is an SSH authentication agent that also serves the keys of keyward's encrypted \
store. It accepts ssh-agent(1)'s whole command line with ssh-agent's meaning, output and exit \
codes, so scripts and tests written for ssh-agent run unchanged.

Without -s, -c, -D, -d, -k or a command, as with -s (or -c when $SHELL ends in csh), the agent \
detaches and prints the commands that set SSH_AUTH_SOCK and SSH_AGENT_PID, for \
eval $(keyward-agent). With -D or -d it stays in the foreground and prints the SSH_AUTH_SOCK \
line. Given a command, it runs the command with SSH_AUTH_SOCK and SSH_AGENT_PID in its \
environment; keyward-agent's exit status is the command's, and the agent exits once the \
command has (within a second; ssh-agent takes up to ten). -k sends SIGTERM to \
$SSH_AGENT_PID and prints the commands that unset both variables.

Without -a, each agent gets a fresh private directory (mode 0700) for its socket, as ssh-agent \
makes with mkdtemp: ssh-XXXXXXXXXX/agent.PID under $XDG_RUNTIME_DIR (or /run/user/UID) when \
that is a private directory of the user, else under $TMPDIR or /tmp. A socket another agent \
serves is never taken over: keyward-agent prints \"Address already in use\" and exits 1, \
printing nothing on stdout. Exit status: 0 on success, 1 for a usage or start-up error, 255 for \
a bad -E or -O value, as ssh-agent.

Given only keyward's long options (--socket, --store, --no-store, --config, --askpass, \
--passphrase-file), or started by systemd or launchd with its sockets, keyward-agent stays in \
the foreground on $XDG_RUNTIME_DIR/keyward/agent.sock and prints nothing: that is how \
keyward start and the service units run it. keyward agent ARGS runs the same program.

The agent serves the default store (created without a passphrase on first use) beside the \
keys added with ssh-add, unless --no-store. The store is single-process: a second agent on \
the same store serves keys added with ssh-add only, and says so on stderr.";

/// An SSH agent with a certificate and policy store; a drop-in for ssh-agent.
#[derive(Parser, Debug)]
#[command(name = "keyward-agent", version, about, long_about = LONG_ABOUT)]
#[allow(clippy::struct_excessive_bools)] // the flags mirror ssh-agent's
pub struct Args {
    /// Bind the agent to this Unix-domain socket (default: a fresh private directory; with
    /// keyward's own options only, $XDG_RUNTIME_DIR/keyward/agent.sock).
    #[arg(short = 'a', long = "socket", value_name = "BIND_ADDRESS")]
    socket: Option<PathBuf>,
    /// Print csh commands on stdout (default when $SHELL ends in csh).
    #[arg(short = 'c', conflicts_with = "sh")]
    csh: bool,
    /// Print sh commands on stdout.
    #[arg(short = 's')]
    sh: bool,
    /// Foreground mode: do not detach; print the SSH_AUTH_SOCK line.
    #[arg(short = 'D')]
    foreground: bool,
    /// Debug mode: foreground, with debug logging on stderr.
    #[arg(short = 'd')]
    debug: bool,
    /// Kill the agent named by $SSH_AGENT_PID and print the commands that forget it.
    #[arg(short = 'k', conflicts_with_all = ["foreground", "debug"])]
    kill: bool,
    /// Default lifetime of keys added without one (seconds, or sshd_config(5) time format:
    /// 90m, 1h30m, 2d...).
    #[arg(short = 't', value_name = "LIFE")]
    lifetime: Option<String>,
    /// Hash of the key fingerprints in confirmation prompts and logs: md5, sha1, sha256 (the
    /// default), sha384 or sha512.
    #[arg(short = 'E', value_name = "FINGERPRINT_HASH")]
    fingerprint_hash: Option<String>,
    /// Comma-separated glob patterns of the PKCS#11 and FIDO provider libraries the agent may
    /// load (default: "/usr/lib*/*,/usr/local/lib*/*"); a pattern starting with ! refuses.
    #[arg(short = 'P', value_name = "ALLOWED_PROVIDERS")]
    allowed_providers: Option<String>,
    /// ssh-agent option: no-restrict-websafe (let security keys sign non-SSH data) or
    /// allow-remote-pkcs11 (let forwarded connections name providers).
    #[arg(short = 'O', value_name = "OPTION")]
    options: Vec<String>,
    /// Program asked to confirm uses of keys added with `ssh-add -c` (default: $SSH_ASKPASS).
    #[arg(long, value_name = "PROGRAM")]
    askpass: Option<PathBuf>,
    /// Store directory (default: $KEYWARD_STORE, $XDG_DATA_HOME/keyward or
    /// ~/.local/share/keyward); created without a passphrase if missing.
    #[arg(long, value_name = "DIR", conflicts_with = "no_store")]
    store: Option<PathBuf>,
    /// Serve only keys added with ssh-add, like ssh-agent; no store, no control socket.
    #[arg(long)]
    no_store: bool,
    /// Unseal a passphrase-protected store at start with the passphrase in this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Configuration file (default: $XDG_CONFIG_HOME/keyward/keyward.toml if it exists); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run this command with the agent in its environment; the agent exits when it does.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        conflicts_with_all = ["csh", "sh", "foreground", "debug", "kill"]
    )]
    command: Vec<OsString>,
}

/// The command line's definition, for the man page.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `keyward-agent` with `args` (the program name first); returns its exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    drop_setgid();
    let args: Vec<OsString> = args.into_iter().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::keys::sk::HELPER_ARG)
    {
        return crate::keys::sk::helper_main();
    }
    let parsed = match Args::try_parse_from(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            // ssh-agent's usage() exits 1; --help and --version succeed.
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    match run(&parsed, native_long_option(&args)) {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("{message}");
            let _ = command().write_help(&mut std::io::stderr());
            ExitCode::FAILURE
        }
        Err(Failure::Fatal(message)) => {
            eprintln!("keyward-agent: {message}");
            ExitCode::from(FATAL)
        }
        Err(Failure::Error(e)) => {
            eprintln!("keyward-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a run failed, which decides the exit status as ssh-agent's.
enum Failure {
    /// A bad value that ssh-agent answers with its usage (exit 1).
    Usage(String),
    /// A bad value ssh-agent treats as fatal (exit 255).
    Fatal(String),
    /// Anything else (exit 1).
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Error(e)
    }
}

/// A setgid install (as OpenSSH's tests make of the agent) runs with the real gid only.
fn drop_setgid() {
    let gid = nix::unistd::getgid();
    if nix::unistd::getegid() != gid {
        let _ = nix::unistd::setegid(gid);
        let _ = nix::unistd::setgid(gid);
    }
}

/// Whether one of keyward's own long options was given before the command.
fn native_long_option(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a.starts_with("--") && a.len() > 2
    })
}

fn run(args: &Args, native: bool) -> Result<ExitCode, Failure> {
    let csh = args.csh || (!args.sh && args.command.is_empty() && Shell::from_env() == Shell::C);
    let shell = if csh { Shell::C } else { Shell::Bourne };
    if args.kill {
        return Ok(detach::kill(shell)?);
    }
    let mode = if !args.command.is_empty() {
        Mode::Command(args.command.clone())
    } else if detach::service_managed() && !(args.sh || args.csh) {
        // systemd or launchd hold the sockets and want us in the foreground.
        Mode::Native
    } else if args.debug || args.foreground {
        Mode::Foreground
    } else if args.sh || args.csh {
        Mode::Detach
    } else if native {
        Mode::Native
    } else {
        Mode::Detach
    };
    let mut options = options(args)?;
    if matches!(mode, Mode::Detach | Mode::Command(_)) {
        // The detached agent shares the caller's stderr only until it serves: warnings (a
        // store that belongs to another agent) belong there, its chatter does not.
        options.log_level = Some("warn".to_owned());
    }
    if mode == Mode::Native {
        if options.socket.as_os_str().is_empty() {
            options.socket = socket::default_agent_socket();
        }
        let served = serve::serve(&options, Launch::foreground(Box::new(|_: &Path| {})))?;
        return Ok(served);
    }
    Ok(detach::run(mode, &options, shell)?)
}

/// Merges the command line with the configuration file; an empty socket means none was given.
fn options(args: &Args) -> Result<Options, Failure> {
    let lifetime = match &args.lifetime {
        Some(text) => {
            Some(parse_duration(text).map_err(|_| Failure::Usage("Invalid lifetime".to_owned()))?)
        }
        None => None,
    };
    let mut compat = CompatOptions::new();
    if let Some(name) = &args.fingerprint_hash {
        compat.fingerprint_hash = FingerprintHash::parse(name)
            .ok_or_else(|| Failure::Fatal(format!("Invalid hash algorithm \"{name}\"")))?;
    }
    compat.providers = ProviderPolicy {
        allowed: args
            .allowed_providers
            .clone()
            .unwrap_or_else(|| crate::agent::compat::DEFAULT_ALLOWED_PROVIDERS.to_owned()),
        allow_remote: false,
    };
    for option in &args.options {
        match option.as_str() {
            "no-restrict-websafe" => compat.restrict_websafe = false,
            "allow-remote-pkcs11" => compat.providers.allow_remote = true,
            other => return Err(Failure::Fatal(format!("Unknown -O option \"{other}\""))),
        }
    }
    let (file, path) = config::Config::load(args.config.as_deref()).map_err(anyhow::Error::from)?;
    let mut options = Options {
        socket: args.socket.clone().unwrap_or_default(),
        lifetime,
        askpass: args.askpass.clone(),
        debug: args.debug,
        store: args.store.clone(),
        no_store: args.no_store,
        passphrase_file: args.passphrase_file.clone(),
        defaults: crate::service::Defaults::from_config(&file),
        log_level: None,
        compat,
    };
    // Only a store we open needs its passphrase (a missing systemd credential is an error then).
    let uses_store = !options.no_store && (options.store.is_some() || file.store.enabled);
    if options.passphrase_file.is_none() && uses_store {
        options.passphrase_file = file
            .passphrase_file(&path.unwrap_or_default())
            .context("in the configuration file")?;
    }
    if options.socket.as_os_str().is_empty()
        && let Some(socket) = file.agent.socket
    {
        options.socket = socket.0;
    }
    options.lifetime = options.lifetime.or(file.agent.lifetime.map(|d| d.0));
    options.askpass = options.askpass.or(file.agent.askpass.map(|p| p.0));
    if options.store.is_none() && !options.no_store {
        options.store = file.store.path.map(|p| p.0);
        options.no_store = !file.store.enabled;
    }
    options.log_level = Some(file.log.level.0);
    Ok(options)
}
