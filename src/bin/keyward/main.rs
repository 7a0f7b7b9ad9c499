//! `keyward`: the command-line interface. Parses arguments and calls `keyward::cli`.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use keyward::cli::{self, Backend, Locations};
use keyward::control::proto::{Request, Response};
use keyward::launch::{self, Shell};
use keyward::{paths, socket};

mod certs;
mod keys;
mod policy;

use certs::{CertCommand, cert_command};
use keys::{KeyCommand, key_command};
use policy::{AuditCommand, PolicyCommand, audit_command, policy_command};

/// Manage keyward, an SSH agent with a certificate and policy store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Agent socket (default: $XDG_RUNTIME_DIR/keyward/agent.sock); the control socket is beside it.
    #[arg(long, global = true, value_name = "PATH", env = "KEYWARD_SOCKET")]
    socket: Option<PathBuf>,
    /// Store directory, used when no agent runs (default: $KEYWARD_STORE, $XDG_DATA_HOME/keyward
    /// or ~/.local/share/keyward).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// File holding the store passphrase, for commands that open a sealed store themselves
    /// (no agent running).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "KEYWARD_PASSPHRASE_FILE"
    )]
    store_passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the store, protected by a passphrase (or not, with --no-passphrase).
    Init {
        /// Keep private keys unencrypted at rest (protected by file permissions only).
        #[arg(long, conflicts_with = "passphrase_file")]
        no_passphrase: bool,
        /// Read the new passphrase from this file instead of the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Show the agent, the store and whether it is sealed.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Unseal the running agent's store and serve its keys.
    Unlock {
        /// Read the passphrase from this file instead of the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Seal the running agent's store: its keys are no longer served until `keyward unlock`.
    Seal,
    /// Set, change or remove the store passphrase.
    Passwd {
        /// Remove the passphrase (keys then rest protected by file permissions only).
        #[arg(long, conflicts_with = "new_passphrase_file")]
        remove: bool,
        /// Read the current passphrase from this file.
        #[arg(long, value_name = "FILE")]
        old_passphrase_file: Option<PathBuf>,
        /// Read the new passphrase from this file.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Start the agent in the background (reusing a running one) and print the lines that point
    /// SSH_AUTH_SOCK at it: eval "$(keyward start)".
    Start {
        /// Print csh syntax.
        #[arg(short = 'c')]
        csh: bool,
        /// Extra arguments passed to keyward-agent (e.g. `-- -t 1h`).
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Stop the running agent.
    Stop,
    /// Print the lines that point SSH_AUTH_SOCK at the running agent.
    Env {
        /// Print csh syntax.
        #[arg(short = 'c')]
        csh: bool,
    },
    /// Manage stored keys.
    #[command(subcommand)]
    Key(KeyCommand),
    #[command(flatten)]
    Native(keyward::native::NativeCommand),
    /// Manage X.509 certificates made from stored keys, and their renewal.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Per-key policies: who may use a stored key, for what, where, when and how often.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read the audit trail of every signature decision and key change.
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        /// Only this key (name or id).
        #[arg(long)]
        key: Option<String>,
        /// From this sequence number on, or records of the last DURATION (e.g. 1h, 2d).
        #[arg(long, default_value = "0", value_parser = keyward::cli::policy::parse_since)]
        since: keyward::cli::policy::Since,
        /// At most this many records.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
        /// Keep printing new records as they come.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Args, Debug)]
pub(crate) struct Json {
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

fn main() -> ExitCode {
    // `keyward agent ARGS...` is keyward-agent itself (one binary can be both), with the
    // arguments untouched by the CLI's parser. Hidden: `keyward start` uses it.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "agent") {
        return keyward::daemon::main(std::iter::once("keyward-agent".into()).chain(args));
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn shell(csh: bool) -> Shell {
    if csh { Shell::C } else { Shell::Bourne }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[allow(clippy::too_many_lines)] // one short arm per subcommand
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Where the configuration file puts the agent; flags and KEYWARD_SOCKET win over it.
    let (config_socket, config_store) = keyward::config::client_locations().unwrap_or_else(|e| {
        eprintln!("keyward: ignoring the configuration file: {e}");
        (None, None)
    });
    let at = Locations {
        agent_socket: cli
            .socket
            .or(config_socket)
            .unwrap_or_else(socket::default_agent_socket),
        store: cli.store.or(config_store).or_else(paths::default_store_dir),
        store_passphrase_file: cli.store_passphrase_file,
    };
    match cli.command {
        Command::Init {
            no_passphrase,
            passphrase_file,
        } => eprintln!(
            "keyward: {}",
            cli::init(&at, no_passphrase, passphrase_file.as_deref())?
        ),
        Command::Status { json } => {
            let mut backend = Backend::open(&at)?;
            let Response::Status(status) = backend.call(|| Request::Status)? else {
                bail!("unexpected answer");
            };
            if json {
                print_json(&status)?;
            } else {
                print!("{}", cli::format_status(&status, &at.agent_socket));
            }
        }
        Command::Unlock { passphrase_file } => {
            let mut backend = Backend::open(&at)?;
            if !backend.is_daemon() {
                bail!("no agent is running: keys are unsealed when a command needs them");
            }
            let passphrase =
                cli::passphrase::obtain(passphrase_file.as_deref(), "Store passphrase: ")?;
            backend.call(|| Request::Unlock {
                passphrase: passphrase.clone(),
            })?;
            eprintln!("keyward: store unsealed; its keys are served");
        }
        Command::Seal => {
            Backend::open(&at)?.call(|| Request::Seal)?;
            eprintln!("keyward: store sealed");
        }
        Command::Passwd {
            remove,
            old_passphrase_file,
            new_passphrase_file,
        } => {
            let mut backend = Backend::open(&at)?;
            let Response::Status(status) = backend.call(|| Request::Status)? else {
                bail!("unexpected answer");
            };
            let old = if status.passphrase_set {
                cli::passphrase::obtain(old_passphrase_file.as_deref(), "Current passphrase: ")?
            } else {
                zeroize::Zeroizing::new(String::new())
            };
            let new = if remove {
                None
            } else {
                Some(cli::passphrase::obtain_new(new_passphrase_file.as_deref())?)
            };
            backend.call(|| Request::ChangePassphrase {
                old: old.clone(),
                new: new.clone(),
            })?;
            eprintln!(
                "keyward: {}",
                if remove {
                    "passphrase removed"
                } else {
                    "passphrase set"
                }
            );
        }
        Command::Start { csh, agent_args } => {
            let mut args = agent_args;
            if let Some(store) = &at.store {
                args.extend(["--store".to_owned(), store.display().to_string()]);
            }
            let agent = launch::agent_command()?;
            let (pid, started) = launch::start_command(&agent, &at.agent_socket, &args)?;
            if !started {
                eprintln!("keyward: reusing the agent already running (pid {pid})");
            }
            print!(
                "{}",
                launch::export_lines(&at.agent_socket, pid, shell(csh))
            );
        }
        Command::Stop => {
            let pid = launch::stop(&at.agent_socket)?;
            eprintln!("keyward: stopped the agent (pid {pid})");
        }
        Command::Env { csh } => {
            let pid = launch::probe(&at.agent_socket)?
                .ok_or_else(|| launch::LaunchError::NotRunning(at.agent_socket.clone()))?;
            print!(
                "{}",
                launch::export_lines(&at.agent_socket, pid, shell(csh))
            );
        }
        Command::Key(command) => return key_command(&at, command),
        Command::Native(command) => {
            let root = <Cli as clap::CommandFactory>::command();
            return Ok(keyward::native::run(
                command,
                &at.agent_socket,
                at.store,
                root,
            )?);
        }
        Command::Cert(command) => return cert_command(&at, command),
        Command::Policy(command) => return policy_command(&at, command),
        Command::Audit {
            command,
            key,
            since,
            limit,
            follow,
            json,
        } => {
            let verify = matches!(command, Some(AuditCommand::Verify));
            return audit_command(&at, verify, key.as_deref(), since, limit, follow, json.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
