//! `keyward`: the command-line interface. Parses arguments and calls `keyward::cli`.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use keyward::cli::{self, Backend, Locations, keys};
use keyward::control::proto::{Request, Response};
use keyward::keys::fingerprint::FingerprintHash;
use keyward::launch::{self, Shell};
use keyward::{paths, socket};

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
}

#[derive(Args, Debug)]
struct Json {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Generate a key (RSA 2048 by default, as `ssh-keygen -t rsa -b 2048`) and serve it.
    Generate {
        /// rsa, ed25519 or ecdsa.
        #[arg(short = 't', long = "type", default_value = "rsa")]
        kind: String,
        /// Bits for RSA: 2048, 3072 or 4096.
        #[arg(short, long)]
        bits: Option<u32>,
        /// Comment (default: user@host, as ssh-keygen).
        #[arg(short = 'C', long)]
        comment: Option<String>,
        /// Name in the store (default: id_<type>).
        #[arg(short, long)]
        name: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Import a private key file: OpenSSH (encrypted too), PKCS#1 or PKCS#8 PEM.
    Import {
        /// The key file.
        file: PathBuf,
        /// Name in the store (default: the file name).
        #[arg(short, long)]
        name: Option<String>,
        /// Comment (default: the key's, or its .pub file's).
        #[arg(short = 'C', long)]
        comment: Option<String>,
        /// Read the key file's passphrase from this file instead of the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        json: Json,
    },
    /// List stored keys.
    List {
        #[command(flatten)]
        json: Json,
    },
    /// Show one key.
    Show {
        /// Name or id.
        key: String,
        #[command(flatten)]
        json: Json,
    },
    /// Export the public key line (default, to stdout) or the private key (--private --out FILE,
    /// which also writes FILE.pub).
    Export {
        /// Name or id.
        key: String,
        /// Export the private key (OpenSSH format).
        #[arg(long)]
        private: bool,
        /// Write to this file (mode 0600 for private keys, 0644 for public).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Encrypt the private key with a passphrase (asked on the terminal).
        #[arg(long)]
        encrypt: bool,
        /// Encrypt the private key with the passphrase in this file.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the fingerprint line, as `ssh-keygen -l [-E md5]`.
    Fingerprint {
        /// Name or id.
        key: String,
        /// sha256 or md5.
        #[arg(short = 'E', long = "hash", default_value = "sha256")]
        hash: FingerprintHash,
    },
    /// Delete a key from the store (it is unloaded from the agent too).
    Delete {
        /// Name or id.
        key: String,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
    /// Rename a key.
    Rename {
        /// Name or id.
        key: String,
        /// New name.
        new_name: String,
    },
    /// Change a key's comment.
    Comment {
        /// Name or id.
        key: String,
        /// New comment.
        comment: String,
    },
    /// Serve a stored key through the agent again (after `ssh-add -d` or `-D`).
    Load {
        /// Name or id.
        key: String,
    },
}

fn main() -> ExitCode {
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let at = Locations {
        agent_socket: cli.socket.unwrap_or_else(socket::default_agent_socket),
        store: cli.store.or_else(paths::default_store_dir),
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
            let mut backend = Backend::open(&at, None)?;
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
            let mut backend = Backend::open(&at, None)?;
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
            Backend::open(&at, None)?.call(|| Request::Seal)?;
            eprintln!("keyward: store sealed");
        }
        Command::Passwd {
            remove,
            old_passphrase_file,
            new_passphrase_file,
        } => {
            let mut backend = Backend::open(&at, None)?;
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
            let (pid, started) = launch::start(&launch::agent_binary(), &at.agent_socket, &args)?;
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
            let pid = launch::running_agent(&at.agent_socket)
                .ok_or_else(|| launch::LaunchError::NotRunning(at.agent_socket.clone()))?;
            print!(
                "{}",
                launch::export_lines(&at.agent_socket, pid, shell(csh))
            );
        }
        Command::Key(command) => return key_command(&at, command),
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_lines)] // one short arm per subcommand
fn key_command(at: &Locations, command: KeyCommand) -> anyhow::Result<ExitCode> {
    let passphrase_file = match &command {
        KeyCommand::Import { .. } | KeyCommand::Export { .. } => None,
        _ => std::env::var_os("KEYWARD_PASSPHRASE_FILE").map(PathBuf::from),
    };
    let mut backend = Backend::open(at, passphrase_file.as_deref())?;
    let show = |view: &keyward::control::proto::KeyView, json: bool| {
        if json {
            print_json(view)
        } else {
            print!("{}", keys::format_key(view));
            Ok(())
        }
    };
    match command {
        KeyCommand::Generate {
            kind,
            bits,
            comment,
            name,
            json,
        } => {
            let view = keys::generate(&mut backend, &kind, bits, name, comment)?;
            show(&view, json.json)?;
        }
        KeyCommand::Import {
            file,
            name,
            comment,
            passphrase_file,
            json,
        } => {
            let view = keys::import(
                &mut backend,
                &file,
                name,
                comment,
                passphrase_file.as_deref(),
            )?;
            show(&view, json.json)?;
        }
        KeyCommand::List { json } => {
            let Response::Keys { keys: list } = backend.call(|| Request::KeyList)? else {
                bail!("unexpected answer");
            };
            if json.json {
                print_json(&list)?;
            } else {
                print!("{}", keys::format_list(&list));
            }
        }
        KeyCommand::Show { key, json } => {
            let Response::Key(view) = backend.call(|| Request::KeyShow { key: key.clone() })?
            else {
                bail!("unexpected answer");
            };
            show(&view, json.json)?;
        }
        KeyCommand::Export {
            key,
            private,
            out,
            force,
            encrypt,
            passphrase_file,
        } => {
            let how = keys::Export {
                private,
                out: out.as_deref(),
                force,
                encrypt,
                passphrase_file: passphrase_file.as_deref(),
            };
            print!("{}", keys::export(&mut backend, &key, &how)?);
        }
        KeyCommand::Fingerprint { key, hash } => {
            let Response::Key(view) = backend.call(|| Request::KeyShow { key: key.clone() })?
            else {
                bail!("unexpected answer");
            };
            println!("{}", keys::fingerprint(&view, hash)?);
        }
        KeyCommand::Delete { key, yes } => {
            if !yes && !confirm_delete(&key)? {
                eprintln!("keyward: nothing deleted");
                return Ok(ExitCode::FAILURE);
            }
            backend.call(|| Request::KeyDelete { key: key.clone() })?;
            eprintln!("keyward: deleted key {key}");
        }
        KeyCommand::Rename { key, new_name } => {
            let Response::Key(view) = backend.call(|| Request::KeyRename {
                key: key.clone(),
                new_name: new_name.clone(),
            })?
            else {
                bail!("unexpected answer");
            };
            eprintln!("keyward: renamed {key} to {}", view.name);
        }
        KeyCommand::Comment { key, comment } => {
            backend.call(|| Request::KeyComment {
                key: key.clone(),
                comment: comment.clone(),
            })?;
        }
        KeyCommand::Load { key } => {
            backend.call(|| Request::KeyLoad { key: key.clone() })?;
            eprintln!("keyward: {key} is served by the agent");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn confirm_delete(key: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        bail!("refusing to delete {key} without confirmation: add --yes");
    }
    eprint!("Delete key {key} from the store for good? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
