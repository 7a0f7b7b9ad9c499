//! `keyward key ...`.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use keyward::cli::{Backend, Locations};
use keyward::control::proto::{Request, Response};

use crate::{Json, print_json};
use keyward::cli::keys;
use keyward::keys::fingerprint::FingerprintHash;

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
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
    /// OpenSSH certificates of a stored key, served beside it.
    #[command(subcommand)]
    Cert(KeyCertCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCertCommand {
    /// Add an OpenSSH certificate (a *-cert.pub file made with ssh-keygen -s) to a stored key.
    Add {
        /// Name or id of the key.
        key: String,
        /// The certificate file.
        file: PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// List the OpenSSH certificates of one key, or of every key.
    List {
        /// Name or id of the key.
        key: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Remove an OpenSSH certificate (by id or id prefix; all of the key's without one).
    Remove {
        /// Name or id of the key.
        key: String,
        /// Id or id prefix of the certificate.
        id: Option<String>,
    },
}

#[allow(clippy::too_many_lines)] // one short arm per subcommand
pub(crate) fn key_command(at: &Locations, command: KeyCommand) -> anyhow::Result<ExitCode> {
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
                print!(
                    "{}",
                    keyward::cli::fit_to_terminal(&keys::format_list(&list))
                );
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
        KeyCommand::Cert(command) => key_cert_command(&mut backend, command)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn key_cert_command(backend: &mut Backend, command: KeyCertCommand) -> anyhow::Result<()> {
    let expect = |response: Response| match response {
        Response::KeyCerts { certs } => Ok(certs),
        other => bail!("unexpected answer from keyward-agent: {other:?}"),
    };
    match command {
        KeyCertCommand::Add { key, file, json } => {
            let certificate = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let certs = expect(backend.call(|| Request::KeyCertAdd {
                key: key.clone(),
                certificate: certificate.clone(),
            })?)
            .with_context(|| format!("cannot add {} to {key}", file.display()))?;
            if json.json {
                print_json(&certs)?;
            } else {
                print!("{}", keys::format_key_certs(&certs));
            }
        }
        KeyCertCommand::List { key, json } => {
            let certs = expect(backend.call(|| Request::KeyCertList { key: key.clone() })?)?;
            if json.json {
                print_json(&certs)?;
            } else {
                print!(
                    "{}",
                    keyward::cli::fit_to_terminal(&keys::format_key_certs(&certs))
                );
            }
        }
        KeyCertCommand::Remove { key, id } => {
            let certs = expect(backend.call(|| Request::KeyCertRemove {
                key: key.clone(),
                cert: id.clone(),
            })?)?;
            for c in &certs {
                eprintln!("keyward: removed certificate {} from {key}", &c.id[..16]);
            }
        }
    }
    Ok(())
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
