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
        /// From this sequence number on.
        #[arg(long, default_value_t = 0)]
        since: u64,
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

#[allow(clippy::too_many_lines)] // one short arm per subcommand
fn key_command(at: &Locations, command: KeyCommand) -> anyhow::Result<ExitCode> {
    let mut backend = Backend::open(at)?;
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

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Make a self-signed certificate from a stored RSA key, like
    /// `openssl req -x509 -key id_rsa -nodes -days 365`.
    Create {
        /// Name or id of the key.
        #[arg(short, long)]
        key: String,
        /// Validity in days.
        #[arg(short, long, default_value_t = 365)]
        days: u32,
        /// Subject, e.g. "CN=web01,O=Example,OU=Ops" (default: CN=<key name>).
        #[arg(short, long)]
        subject: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Track a certificate made elsewhere (PEM or DER) for expiry checks.
    Import {
        /// The certificate file.
        file: PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// List active certificates (--all adds superseded and expired ones).
    List {
        /// Include superseded and expired certificates.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Show one certificate (id or unique id prefix).
    Show {
        /// Id or prefix.
        cert: String,
        /// Print the PEM instead.
        #[arg(long)]
        pem: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Write a certificate as PEM or DER (.cer: the format from the extension unless --format).
    Export {
        /// Id or prefix.
        cert: String,
        /// pem or der.
        #[arg(short, long)]
        format: Option<keyward::rotation::CertFormat>,
        /// Target file.
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the `ssh-rsa AAAA...` line of the key in any RSA certificate (PEM or DER).
    SshPubkey {
        /// The certificate file.
        file: PathBuf,
        /// Comment (default: the file name without extension).
        #[arg(short = 'C', long)]
        comment: Option<String>,
    },
    /// Renew a certificate now (its policy decides validity, key and exports).
    Renew {
        /// Id or prefix.
        cert: String,
        #[command(flatten)]
        json: Json,
    },
    /// Show or change a certificate's renewal policy.
    Policy {
        /// Id or prefix.
        cert: String,
        /// Renew this long before expiry (e.g. 30d, 2w, 12h).
        #[arg(long, value_parser = keyward::clock::parse_duration)]
        renew_before: Option<std::time::Duration>,
        /// Validity of renewed certificates in days.
        #[arg(long)]
        days: Option<u32>,
        /// Make a new key at each renewal.
        #[arg(long, conflicts_with = "same_key")]
        rekey: bool,
        /// Keep the same key at each renewal (the default).
        #[arg(long)]
        same_key: bool,
        /// Rewrite this file at each renewal (PATH, PATH:pem or PATH:der; repeatable).
        #[arg(long = "export", value_name = "PATH")]
        exports: Vec<String>,
        /// Remove the export targets set so far.
        #[arg(long)]
        no_exports: bool,
        /// Run this shell command after each renewal (see the README for its environment).
        #[arg(long, conflicts_with = "no_hook")]
        hook: Option<String>,
        /// Remove the hook.
        #[arg(long)]
        no_hook: bool,
        #[command(flatten)]
        json: Json,
    },
    /// List certificates expiring within the window; exits 3 if there are any (for monitoring).
    Check {
        /// The window (e.g. 30d).
        #[arg(long, default_value = "30d", value_parser = keyward::clock::parse_duration)]
        within: std::time::Duration,
        #[command(flatten)]
        json: Json,
    },
}

#[allow(clippy::too_many_lines)] // one short arm per subcommand
fn cert_command(at: &Locations, command: CertCommand) -> anyhow::Result<ExitCode> {
    use keyward::cli::certs;
    if let CertCommand::SshPubkey { file, comment } = &command {
        println!("{}", certs::ssh_pubkey(file, comment.as_deref())?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut backend = Backend::open(at)?;
    let show = |view: &keyward::control::proto::CertView, json: bool| {
        if json {
            print_json(view)
        } else {
            print!("{}", certs::format_cert(view));
            Ok(())
        }
    };
    match command {
        CertCommand::Create {
            key,
            days,
            subject,
            json,
        } => {
            let view = certs::expect_cert(backend.call(|| Request::CertCreate {
                key: key.clone(),
                subject: subject.clone(),
                days,
            })?)?;
            show(&view, json.json)?;
        }
        CertCommand::Import { file, json } => {
            show(&certs::import(&mut backend, &file)?, json.json)?;
        }
        CertCommand::List { all, json } => {
            let list = certs::expect_certs(backend.call(|| Request::CertList { all })?)?;
            if json.json {
                print_json(&list)?;
            } else {
                print!("{}", certs::format_list(&list));
            }
        }
        CertCommand::Show { cert, pem, json } => {
            let view =
                certs::expect_cert(backend.call(|| Request::CertShow { cert: cert.clone() })?)?;
            if pem {
                print!("{}", view.pem);
            } else {
                show(&view, json.json)?;
            }
        }
        CertCommand::Export {
            cert,
            format,
            out,
            force,
        } => {
            let view = certs::export(&mut backend, &cert, format, &out, force)?;
            eprintln!("keyward: wrote {} ({})", out.display(), view.subject);
        }
        CertCommand::SshPubkey { .. } => unreachable!("handled above"),
        CertCommand::Renew { cert, json } => {
            let view =
                certs::expect_cert(backend.call(|| Request::CertRenew { cert: cert.clone() })?)?;
            show(&view, json.json)?;
        }
        CertCommand::Policy {
            cert,
            renew_before,
            days,
            rekey,
            same_key,
            exports,
            no_exports,
            hook,
            no_hook,
            json,
        } => {
            let change = certs::PolicyChange {
                renew_before: renew_before.map(|d| d.as_secs()),
                days,
                rekey: if rekey {
                    Some(true)
                } else if same_key {
                    Some(false)
                } else {
                    None
                },
                add_exports: exports,
                clear_exports: no_exports,
                hook,
                clear_hook: no_hook,
            };
            let current =
                certs::expect_cert(backend.call(|| Request::CertShow { cert: cert.clone() })?)?;
            let view = if change.is_empty() {
                current
            } else {
                let policy = change.apply(current.renewal.clone())?;
                certs::expect_cert(backend.call(|| Request::CertPolicy {
                    cert: current.id.clone(),
                    policy: Some(policy.clone()),
                })?)?
            };
            show(&view, json.json)?;
        }
        CertCommand::Check { within, json } => {
            let list = certs::expect_certs(backend.call(|| Request::CertCheck {
                within: within.as_secs(),
            })?)?;
            if json.json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!(
                    "no certificate expires within {} days",
                    within.as_secs() / 86_400
                );
            } else {
                print!("{}", certs::format_list(&list));
            }
            if !list.is_empty() {
                return Ok(ExitCode::from(certs::EXPIRING_EXIT));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Policy flags (`keyward policy set` and `test`).
#[derive(Args, Debug, Default)]
struct PolicyFlags {
    /// Ask through askpass before each signature.
    #[arg(long)]
    confirm: bool,
    /// Usable for this long after the key is loaded (e.g. 8h).
    #[arg(long, value_parser = keyward::clock::parse_duration)]
    lifetime: Option<std::time::Duration>,
    /// At most this many signatures.
    #[arg(long)]
    max_signatures: Option<u64>,
    /// At most COUNT signatures per PERIOD, e.g. 10/1m.
    #[arg(long, value_parser = keyward::cli::policy::parse_rate)]
    rate: Option<keyward::policy::RateLimit>,
    /// Allow legacy ssh-rsa (SHA-1) signatures.
    #[arg(long)]
    allow_sha1: bool,
    /// Allowed destination: a host-key fingerprint (SHA256:...) or a host name from known_hosts
    /// (repeatable).
    #[arg(long = "destination", value_name = "HOST")]
    destinations: Vec<String>,
    /// Refuse use over a forwarded agent (ssh -A).
    #[arg(long)]
    deny_forwarding: bool,
    /// Allowed peer uid (repeatable).
    #[arg(long = "uid")]
    uids: Vec<u32>,
    /// Allowed executable, absolute path (repeatable).
    #[arg(long = "exe", value_name = "PATH")]
    executables: Vec<String>,
    /// Allowed purpose: login, or an SSHSIG namespace such as git or file, or * (repeatable).
    #[arg(long = "purpose")]
    purposes: Vec<String>,
    /// When: "[DAYS] HH:MM-HH:MM [+HH:MM]", e.g. "mon-fri 08:00-20:00 +01:00".
    #[arg(long, value_parser = keyward::cli::policy::parse_hours)]
    hours: Option<keyward::policy::TimeWindow>,
    /// known_hosts file for host names (default: ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Replace a key's policy with the one the flags describe (no flags: the default policy).
    Set {
        /// Name or id of the key.
        key: String,
        #[command(flatten)]
        flags: PolicyFlags,
        #[command(flatten)]
        json: Json,
    },
    /// Show a key's policy.
    Show {
        /// Name or id of the key.
        key: String,
        #[command(flatten)]
        json: Json,
    },
    /// Reset a key's policy to the default.
    Clear {
        /// Name or id of the key.
        key: String,
    },
    /// Dry run: what the key's policy decides for a request; exits 1 when refused.
    Test {
        /// Name or id of the key.
        key: String,
        /// Destination host (fingerprint or known_hosts name).
        #[arg(long)]
        host: Option<String>,
        /// Requesting executable.
        #[arg(long)]
        exe: Option<String>,
        /// login, or an SSHSIG namespace.
        #[arg(long)]
        purpose: Option<String>,
        /// Requesting uid.
        #[arg(long)]
        uid: Option<u32>,
        /// Through a forwarded agent.
        #[arg(long)]
        forwarded: bool,
        /// A legacy ssh-rsa (SHA-1) signature.
        #[arg(long)]
        sha1: bool,
        /// known_hosts file for host names (default: ~/.ssh/known_hosts).
        #[arg(long, value_name = "FILE")]
        known_hosts: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the hash chain: exits 1 when a record was edited or removed.
    Verify,
}

fn known_hosts(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(".ssh/known_hosts")
    })
}

fn build_policy(flags: PolicyFlags) -> anyhow::Result<keyward::policy::Policy> {
    use keyward::cli::policy as p;
    let hosts = known_hosts(flags.known_hosts);
    let mut destinations = Vec::new();
    for host in &flags.destinations {
        destinations.extend(p::resolve_host(host, &hosts)?);
    }
    let policy = keyward::policy::Policy {
        confirm: flags.confirm,
        lifetime_secs: flags.lifetime.map(|d| d.as_secs()),
        max_signatures: flags.max_signatures,
        rate: flags.rate,
        allow_sha1: flags.allow_sha1,
        destinations,
        deny_forwarding: flags.deny_forwarding,
        uids: flags.uids,
        executables: flags.executables,
        purposes: flags.purposes.iter().map(|s| p::parse_purpose(s)).collect(),
        hours: flags.hours,
    };
    policy.validate()?;
    Ok(policy)
}

fn policy_command(at: &Locations, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    use keyward::cli::policy as p;
    let mut backend = Backend::open(at)?;
    let show = |response: Response, json: bool| -> anyhow::Result<()> {
        let Response::Policy { key, policy } = response else {
            bail!("unexpected answer");
        };
        if json {
            print_json(&policy)
        } else {
            print!("{}", p::format_policy(&key, &policy));
            Ok(())
        }
    };
    match command {
        PolicyCommand::Set { key, flags, json } => {
            let policy = build_policy(flags)?;
            show(
                backend.call(|| Request::PolicySet {
                    key: key.clone(),
                    policy: Some(policy.clone()),
                })?,
                json.json,
            )?;
        }
        PolicyCommand::Show { key, json } => show(
            backend.call(|| Request::PolicyShow { key: key.clone() })?,
            json.json,
        )?,
        PolicyCommand::Clear { key } => {
            backend.call(|| Request::PolicySet {
                key: key.clone(),
                policy: None,
            })?;
            eprintln!("keyward: policy of {key} reset to the default");
        }
        PolicyCommand::Test {
            key,
            host,
            exe,
            purpose,
            uid,
            forwarded,
            sha1,
            known_hosts: kh,
        } => {
            let host = match host {
                Some(h) => Some(p::resolve_host(&h, &known_hosts(kh))?.remove(0)),
                None => None,
            };
            let probe = keyward::control::proto::PolicyProbe {
                host,
                exe,
                purpose,
                uid,
                forwarded,
                algorithm: sha1.then(|| "ssh-rsa".to_owned()),
            };
            let Response::Decision {
                allowed,
                confirm,
                rule,
            } = backend.call(|| Request::PolicyTest {
                key: key.clone(),
                probe: probe.clone(),
            })?
            else {
                bail!("unexpected answer");
            };
            if allowed {
                println!(
                    "allowed{}",
                    if confirm { " after confirmation" } else { "" }
                );
            } else {
                println!("refused by {}", rule.unwrap_or_default());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_command(
    at: &Locations,
    verify: bool,
    key: Option<&str>,
    since: u64,
    limit: usize,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut backend = Backend::open(at)?;
    if verify {
        let Response::Verified(v) = backend.call(|| Request::AuditVerify)? else {
            bail!("unexpected answer");
        };
        if json {
            print_json(&v)?;
        }
        return Ok(match v.broken {
            None => {
                if !json {
                    println!("audit trail intact: {} records", v.records);
                }
                ExitCode::SUCCESS
            }
            Some((seq, why)) => {
                if !json {
                    println!("audit trail BROKEN at record {seq}: {why}");
                }
                ExitCode::FAILURE
            }
        });
    }
    let mut from = since;
    loop {
        let Response::Audit { records } = backend.call(|| Request::AuditRead {
            since: from,
            limit,
            key: key.map(str::to_owned),
        })?
        else {
            bail!("unexpected answer");
        };
        if let Some(last) = records.last() {
            from = last.seq + 1;
        }
        if json {
            for r in &records {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            print!("{}", keyward::cli::policy::format_audit(&records));
        }
        std::io::stdout().flush()?;
        if !follow {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(ExitCode::SUCCESS)
}
