//! `keyward policy ...` and `keyward audit ...`.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use keyward::cli::{Backend, Locations};
use keyward::control::proto::{Request, Response};

use crate::{Json, print_json};
use std::io::Write as _;

/// Policy flags (`keyward policy set` and `test`).
#[derive(Args, Debug, Default)]
pub(crate) struct PolicyFlags {
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
    /// Allowed purpose: login, x509 (issuing certificates), or an SSHSIG namespace such as git or
    /// file, or * (repeatable).
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
pub(crate) enum PolicyCommand {
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
        /// A host the agent was forwarded through, in order (fingerprint or known_hosts name;
        /// repeatable; implies --forwarded).
        #[arg(long, value_name = "HOST")]
        via: Vec<String>,
        /// A legacy ssh-rsa (SHA-1) signature.
        #[arg(long)]
        sha1: bool,
        /// known_hosts file for host names (default: ~/.ssh/known_hosts).
        #[arg(long, value_name = "FILE")]
        known_hosts: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
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

pub(crate) fn policy_command(at: &Locations, command: PolicyCommand) -> anyhow::Result<ExitCode> {
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
            via,
            sha1,
            known_hosts: kh,
        } => {
            let kh = known_hosts(kh);
            let host = match host {
                Some(h) => Some(p::resolve_host(&h, &kh)?.remove(0)),
                None => None,
            };
            let via = via
                .iter()
                .map(|h| p::resolve_host(h, &kh).map(|mut fps| fps.remove(0)))
                .collect::<Result<Vec<_>, _>>()?;
            let probe = keyward::control::proto::PolicyProbe {
                host,
                exe,
                purpose,
                uid,
                forwarded: forwarded || !via.is_empty(),
                via,
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

pub(crate) fn audit_command(
    at: &Locations,
    verify: bool,
    key: Option<&str>,
    since: keyward::cli::policy::Since,
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
                    println!(
                        "audit trail intact: {} records ({} keyed)",
                        v.records, v.keyed
                    );
                    for note in &v.notes {
                        println!("note: {note}");
                    }
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
    let (mut from, not_before) = match since {
        keyward::cli::policy::Since::Seq(seq) => (seq, 0),
        keyward::cli::policy::Since::Ago(d) => (
            0,
            keyward::clock::Clock::unix_now(&keyward::clock::SystemClock)
                .saturating_sub(d.as_secs()),
        ),
    };
    loop {
        let Response::Audit { mut records } = backend.call(|| Request::AuditRead {
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
        records.retain(|r| r.at >= not_before);
        if json {
            for r in &records {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            print!(
                "{}",
                keyward::cli::fit_to_terminal(&keyward::cli::policy::format_audit(&records))
            );
        }
        std::io::stdout().flush()?;
        if !follow {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(ExitCode::SUCCESS)
}
