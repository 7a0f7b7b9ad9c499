//! `keyward cert ...`: create, import, list, show, export, renew, policy, check, ssh-pubkey.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::certs::{Certificate, ssh_public_key_line};
use crate::cli::Backend;
use crate::control::proto::{CertView, Request, Response};
use crate::files::write_atomic;
use crate::rotation::{CertFormat, ExportTarget, RenewalPolicy};

/// Exit code of `keyward cert check` when something expires inside the window.
pub const EXPIRING_EXIT: u8 = 3;

/// Unwraps a single-certificate answer.
pub fn expect_cert(response: Response) -> anyhow::Result<CertView> {
    match response {
        Response::Cert(view) => Ok(*view),
        other => bail!("unexpected answer from keyward-agent: {other:?}"),
    }
}

/// Unwraps a certificate-list answer.
pub fn expect_certs(response: Response) -> anyhow::Result<Vec<CertView>> {
    match response {
        Response::Certs { certs } => Ok(certs),
        other => bail!("unexpected answer from keyward-agent: {other:?}"),
    }
}

/// `keyward cert import FILE` (PEM or DER).
pub fn import(backend: &mut Backend, file: &Path) -> anyhow::Result<CertView> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let pem = Certificate::parse(&bytes)
        .and_then(|c| c.to_pem())
        .with_context(|| format!("cannot import {}", file.display()))?;
    expect_cert(backend.call(|| Request::CertImport { pem: pem.clone() })?)
}

/// `keyward cert export`: the certificate as PEM or DER (`.cer`), written atomically.
pub fn export(
    backend: &mut Backend,
    cert: &str,
    format: Option<CertFormat>,
    out: &Path,
    force: bool,
) -> anyhow::Result<CertView> {
    let view = expect_cert(backend.call(|| Request::CertShow {
        cert: cert.to_owned(),
    })?)?;
    let parsed = Certificate::parse(view.pem.as_bytes())?;
    let format = format.unwrap_or_else(|| CertFormat::for_path(out));
    write_atomic(out, &format.encode(&parsed)?, 0o644, force)?;
    Ok(view)
}

/// `keyward cert ssh-pubkey FILE`: the `ssh-rsa AAAA... comment` line of any RSA certificate.
pub fn ssh_pubkey(file: &Path, comment: Option<&str>) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let comment = comment.map_or_else(
        || {
            file.file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
        },
        str::to_owned,
    );
    ssh_public_key_line(&bytes, &comment)
        .with_context(|| format!("cannot derive an SSH key from {}", file.display()))
}

/// Changes to a renewal policy asked for on the command line.
#[derive(Debug, Default)]
pub struct PolicyChange {
    /// New renew-before, seconds.
    pub renew_before: Option<u64>,
    /// New renew-before, as a percentage of the lifetime.
    pub renew_before_percent: Option<u8>,
    /// New validity, days.
    pub days: Option<u32>,
    /// Rekey (true) or same key (false).
    pub rekey: Option<bool>,
    /// Export targets to add (format from the extension, or `PATH:pem|der`).
    pub add_exports: Vec<String>,
    /// Remove all export targets first.
    pub clear_exports: bool,
    /// New hook command.
    pub hook: Option<String>,
    /// Remove the hook.
    pub clear_hook: bool,
}

impl PolicyChange {
    /// Whether anything is to change.
    pub fn is_empty(&self) -> bool {
        self.renew_before.is_none()
            && self.renew_before_percent.is_none()
            && self.days.is_none()
            && self.rekey.is_none()
            && self.add_exports.is_empty()
            && !self.clear_exports
            && self.hook.is_none()
            && !self.clear_hook
    }

    /// Applies the change to `policy`.
    pub fn apply(&self, mut policy: RenewalPolicy) -> anyhow::Result<RenewalPolicy> {
        if let Some(v) = self.renew_before {
            policy.renew_before = v;
            policy.renew_before_percent = None;
        }
        if let Some(p) = self.renew_before_percent {
            policy.renew_before_percent = Some(p);
        }
        if let Some(days) = self.days {
            policy.validity_days = Some(days);
        }
        if let Some(rekey) = self.rekey {
            policy.rekey = rekey;
        }
        if self.clear_exports {
            policy.exports.clear();
        }
        for spec in &self.add_exports {
            policy.exports.push(parse_export(spec)?);
        }
        if self.clear_hook {
            policy.hook = None;
        }
        if let Some(hook) = &self.hook {
            policy.hook = Some(hook.clone());
        }
        Ok(policy)
    }
}

/// A `--renew-before` value: a duration (`30d`, `12h`) or a percentage of the lifetime (`20%`).
pub fn parse_renew_before(text: &str) -> Result<RenewBefore, String> {
    match text.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse()
            .map(RenewBefore::Percent)
            .map_err(|_| format!("invalid percentage {text:?}")),
        None => crate::clock::parse_duration(text)
            .map(|d| RenewBefore::Secs(d.as_secs()))
            .map_err(|_| format!("invalid renew-before {text:?} (e.g. 30d, 12h or 20%)")),
    }
}

/// A parsed `--renew-before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewBefore {
    /// Seconds before expiry.
    Secs(u64),
    /// Percentage of the lifetime.
    Percent(u8),
}

/// `PATH`, `PATH:pem` or `PATH:der`; relative paths are made absolute here, since the daemon
/// writes them from its own working directory.
fn parse_export(spec: &str) -> anyhow::Result<ExportTarget> {
    let (path, format) = match spec.rsplit_once(':') {
        Some((path, f)) if matches!(f.to_ascii_lowercase().as_str(), "pem" | "der" | "cer") => (
            PathBuf::from(path),
            Some(f.parse::<CertFormat>().map_err(anyhow::Error::msg)?),
        ),
        _ => (PathBuf::from(spec), None),
    };
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()?.join(path)
    };
    let format = format.unwrap_or_else(|| CertFormat::for_path(&path));
    Ok(ExportTarget { path, format })
}

/// `keyward cert list` as a table.
pub fn format_list(certs: &[CertView]) -> String {
    if certs.is_empty() {
        return "no certificates (make one with `keyward cert create --key NAME`)\n".into();
    }
    let mut out = format!(
        "{:12}  {:10}  {:>5}  {:20}  {:40}  {:12}  SUBJECT\n",
        "ID", "STATE", "DAYS", "EXPIRES", "THUMBPRINT (SHA-1)", "KEY"
    );
    for c in certs {
        out.push_str(&format!(
            "{:12}  {:10}  {:>5}  {:20}  {:40}  {:12}  {}\n",
            &c.id[..12],
            c.state,
            c.days_left,
            c.expires,
            c.sha1_thumbprint,
            c.key.as_deref().unwrap_or("-"),
            c.subject
        ));
    }
    out
}

/// `keyward cert show` as text.
pub fn format_cert(c: &CertView) -> String {
    let policy = &c.renewal;
    let exports: Vec<String> = policy
        .exports
        .iter()
        .map(|t| format!("{} ({:?})", t.path.display(), t.format))
        .collect();
    format!(
        "id:           {}\nsubject:      {}\nserial:       {}\nkey:          {}\norigin:       {}\nstate:        {}{}\nexpires:      {} ({} days left)\nthumbprint:   {} (SHA-1)\nsha256:       {}\nrenewal:      {} before expiry, {} key, validity {}\nexports:      {}\nhook:         {}\n",
        c.id,
        c.subject,
        c.serial,
        c.key.as_deref().unwrap_or("- (imported, tracked only)"),
        c.origin,
        c.state,
        c.superseded_by
            .as_ref()
            .map_or_else(String::new, |by| format!(" by {by}")),
        c.expires,
        c.days_left,
        c.sha1_thumbprint,
        c.sha256_fingerprint,
        policy.renew_before_percent.map_or_else(
            || format!("{} days", policy.renew_before / 86_400),
            |p| format!("{p}% of the lifetime"),
        ),
        if policy.rekey { "new" } else { "same" },
        policy
            .validity_days
            .map_or_else(|| "as now".to_owned(), |d| format!("{d} days")),
        if exports.is_empty() {
            "-".to_owned()
        } else {
            exports.join(", ")
        },
        policy.hook.as_deref().unwrap_or("-"),
    )
}
