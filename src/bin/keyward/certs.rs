//! `keyward cert ...`.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use keyward::cli::{Backend, Locations};
use keyward::control::proto::Request;

use crate::{Json, print_json};

#[derive(Subcommand, Debug)]
pub(crate) enum CertCommand {
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
        /// Renew this long before expiry (e.g. 30d, 2w, 12h), or when this share of the lifetime is left (e.g. 20%).
        #[arg(long, value_parser = keyward::cli::certs::parse_renew_before)]
        renew_before: Option<keyward::cli::certs::RenewBefore>,
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
pub(crate) fn cert_command(at: &Locations, command: CertCommand) -> anyhow::Result<ExitCode> {
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
                print!(
                    "{}",
                    keyward::cli::fit_to_terminal(&certs::format_list(&list))
                );
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
                renew_before: match renew_before {
                    Some(certs::RenewBefore::Secs(s)) => Some(s),
                    _ => None,
                },
                renew_before_percent: match renew_before {
                    Some(certs::RenewBefore::Percent(p)) => Some(p),
                    _ => None,
                },
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
                print!(
                    "{}",
                    keyward::cli::fit_to_terminal(&certs::format_list(&list))
                );
            }
            if !list.is_empty() {
                return Ok(ExitCode::from(certs::EXPIRING_EXIT));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
