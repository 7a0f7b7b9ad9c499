//! Certificate rotation: the per-certificate renewal policy, when a renewal is due, rewriting the
//! export targets, and the hook run after each renewal.
//!
//! The policy is a JSON document in the store's `renewals` tree; certificates without one use
//! [`RenewalPolicy::default`]. Times are unix seconds passed in by the caller.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::certs::{CertInfo, Certificate};
use crate::files::{WriteError, write_atomic};

/// Renew this long before expiry unless a policy says otherwise: 30 days.
pub const DEFAULT_RENEW_BEFORE: u64 = 30 * 86_400;
/// The largest `renew_before` accepted: one year. It also bounds how far ahead the scheduler's
/// range scan of the expiry index reaches.
pub const MAX_RENEW_BEFORE: u64 = 365 * 86_400;
/// A hook may run this long before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The file format of an export target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertFormat {
    /// PEM (`-----BEGIN CERTIFICATE-----`), as `openssl req -x509 -out cert.pem`.
    #[default]
    Pem,
    /// DER, the `.cer` file portals take (`openssl x509 -outform der`).
    Der,
}

impl std::str::FromStr for CertFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pem" => Ok(Self::Pem),
            "der" | "cer" => Ok(Self::Der),
            other => Err(format!(
                "unknown certificate format {other:?} (use pem or der)"
            )),
        }
    }
}

impl CertFormat {
    /// The certificate in this format.
    pub fn encode(self, cert: &Certificate) -> Result<Vec<u8>, crate::certs::CertError> {
        Ok(match self {
            Self::Pem => cert.to_pem()?.into_bytes(),
            Self::Der => cert.der().to_vec(),
        })
    }

    /// The format a file name suggests: `.der`/`.cer` are DER, anything else PEM.
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("der") || e.eq_ignore_ascii_case("cer") => Self::Der,
            _ => Self::Pem,
        }
    }
}

/// A file a certificate is (re)written to after each renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTarget {
    /// Absolute path.
    pub path: PathBuf,
    /// Format.
    pub format: CertFormat,
}

/// How a certificate is renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalPolicy {
    /// Renew this many seconds before `not_after`.
    #[serde(default = "default_renew_before")]
    pub renew_before: u64,
    /// Instead of `renew_before`: renew when this percentage of the certificate's lifetime is
    /// left (1-99; the lead time is capped at [`MAX_RENEW_BEFORE`]).
    #[serde(default)]
    pub renew_before_percent: Option<u8>,
    /// Validity of the next certificate in days; `None` keeps the current one's.
    #[serde(default)]
    pub validity_days: Option<u32>,
    /// Make a new key for the next certificate instead of reusing the current one.
    #[serde(default)]
    pub rekey: bool,
    /// Files rewritten (atomically) with each new certificate.
    #[serde(default)]
    pub exports: Vec<ExportTarget>,
    /// Shell command run after each renewal (see [`run_hook`] for its environment).
    #[serde(default)]
    pub hook: Option<String>,
}

fn default_renew_before() -> u64 {
    DEFAULT_RENEW_BEFORE
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            renew_before: DEFAULT_RENEW_BEFORE,
            renew_before_percent: None,
            validity_days: None,
            rekey: false,
            exports: Vec::new(),
            hook: None,
        }
    }
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// `renew_before` out of range.
    #[error("renew-before must be between 1 hour and 365 days (got {0} seconds)")]
    RenewBefore(u64),
    /// Percentage out of range.
    #[error("renew-before must be between 1% and 99% of the lifetime (got {0}%)")]
    Percent(u8),
    /// Validity out of range.
    #[error("validity must be between 1 and {max} days (got {0})", max = crate::certs::MAX_VALIDITY_DAYS)]
    Validity(u32),
    /// An export path that is not absolute (the daemon's working directory is not the user's).
    #[error("export path {0} must be absolute")]
    RelativeExport(PathBuf),
    /// The stored policy document is unreadable.
    #[error("stored renewal policy is unreadable: {0}")]
    Stored(String),
    /// Renewed certificates would be due for renewal again at once.
    #[error(
        "a validity of {days} days is not longer than renew-before ({renew_before_days} days): every renewal would be due again at once"
    )]
    RenewalLoop {
        /// Validity asked for.
        days: u32,
        /// Renew-before, in days.
        renew_before_days: u64,
    },
}

impl RenewalPolicy {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(3_600..=MAX_RENEW_BEFORE).contains(&self.renew_before) {
            return Err(PolicyError::RenewBefore(self.renew_before));
        }
        if let Some(days) = self.validity_days
            && (days == 0 || days > crate::certs::MAX_VALIDITY_DAYS)
        {
            return Err(PolicyError::Validity(days));
        }
        if let Some(p) = self.renew_before_percent
            && !(1..=99).contains(&p)
        {
            return Err(PolicyError::Percent(p));
        }
        if let Some(days) = self.validity_days
            && self.renew_before_percent.is_none()
            && u64::from(days) * 86_400 <= self.renew_before
        {
            return Err(PolicyError::RenewalLoop {
                days,
                renew_before_days: self.renew_before / 86_400,
            });
        }
        if let Some(target) = self.exports.iter().find(|t| !t.path.is_absolute()) {
            return Err(PolicyError::RelativeExport(target.path.clone()));
        }
        Ok(())
    }

    /// Reads a stored policy document.
    pub fn from_json(value: serde_json::Value) -> Result<Self, PolicyError> {
        serde_json::from_value(value).map_err(|e| PolicyError::Stored(e.to_string()))
    }

    /// The policy as a stored document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// How long before expiry a certificate valid from `not_before` to `not_after` is renewed.
    pub fn lead(&self, not_before: u64, not_after: u64) -> u64 {
        match self.renew_before_percent {
            Some(p) => {
                (not_after.saturating_sub(not_before) / 100 * u64::from(p)).min(MAX_RENEW_BEFORE)
            }
            None => self.renew_before,
        }
    }

    /// The longest lead this policy can give any certificate (bounds the scheduler's scan).
    pub fn max_lead(&self) -> u64 {
        if self.renew_before_percent.is_some() {
            MAX_RENEW_BEFORE
        } else {
            self.renew_before
        }
    }

    /// When a certificate valid from `not_before` to `not_after` is due for renewal.
    pub fn renew_at(&self, not_before: u64, not_after: u64) -> u64 {
        not_after.saturating_sub(self.lead(not_before, not_after))
    }
}

/// Checks that every export target can be written (its directory exists), so a renewal whose
/// exports would fail is refused before anything changes.
pub fn check_exports(targets: &[ExportTarget]) -> Result<(), ExportError> {
    for target in targets {
        let dir = target.path.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Err(ExportError::MissingDirectory(target.path.clone()));
        }
    }
    Ok(())
}

/// Rewrites every export target with `cert`; returns the paths written.
pub fn write_exports(
    cert: &Certificate,
    targets: &[ExportTarget],
) -> Result<Vec<PathBuf>, ExportError> {
    let mut written = Vec::with_capacity(targets.len());
    for target in targets {
        let bytes = target.format.encode(cert).map_err(ExportError::Encode)?;
        write_atomic(&target.path, &bytes, 0o644, true).map_err(ExportError::Write)?;
        written.push(target.path.clone());
    }
    Ok(written)
}

/// An export target could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Encoding failed.
    #[error("cannot encode the certificate")]
    Encode(#[source] crate::certs::CertError),
    /// Writing failed.
    #[error(transparent)]
    Write(WriteError),
    /// The target's directory does not exist.
    #[error(
        "cannot export to {0}: its directory does not exist (create it, or change the policy with `keyward cert policy ID --no-exports --export PATH`)"
    )]
    MissingDirectory(PathBuf),
}

/// What a hook did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    /// Exit code (`None`: killed by a signal or timed out).
    pub exit_code: Option<i32>,
    /// Up to 4 KiB of its combined output.
    pub output: String,
}

/// Runs `command` with `sh -c` after a renewal, with the new certificate described in its
/// environment: `KEYWARD_CERT_ID`, `KEYWARD_CERT_OLD_ID`, `KEYWARD_CERT_SUBJECT`,
/// `KEYWARD_CERT_THUMBPRINT` (SHA-1, upper-case hex), `KEYWARD_CERT_NOT_AFTER` (unix seconds),
/// `KEYWARD_CERT_PATHS` (the export paths, `:`-separated).
pub fn run_hook(
    command: &str,
    new_id: &str,
    old_id: &str,
    info: &CertInfo,
    paths: &[PathBuf],
) -> HookOutcome {
    let paths = std::env::join_paths(paths)
        .map_or_else(|_| String::new(), |p| p.to_string_lossy().into_owned());
    let child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("KEYWARD_CERT_ID", new_id)
        .env("KEYWARD_CERT_OLD_ID", old_id)
        .env("KEYWARD_CERT_SUBJECT", &info.subject)
        .env("KEYWARD_CERT_THUMBPRINT", &info.sha1_thumbprint)
        .env("KEYWARD_CERT_NOT_AFTER", info.not_after.to_string())
        .env("KEYWARD_CERT_PATHS", paths)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            return HookOutcome {
                exit_code: None,
                output: format!("cannot run /bin/sh: {e}"),
            };
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HOOK_TIMEOUT) {
        Ok(Ok(out)) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            if output.len() > 4096 {
                let mut cut = 4096;
                while !output.is_char_boundary(cut) {
                    cut -= 1;
                }
                output.truncate(cut);
            }
            HookOutcome {
                exit_code: out.status.code(),
                output,
            }
        }
        Ok(Err(e)) => HookOutcome {
            exit_code: None,
            output: format!("hook failed: {e}"),
        },
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                nix::sys::signal::Signal::SIGKILL,
            );
            HookOutcome {
                exit_code: None,
                output: format!("hook killed after {HOOK_TIMEOUT:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_and_bounds() {
        let p = RenewalPolicy::from_json(serde_json::json!({})).unwrap();
        assert_eq!(p, RenewalPolicy::default());
        assert_eq!(p.renew_at(0, 100 * 86_400), 70 * 86_400);
        let pct = RenewalPolicy {
            renew_before_percent: Some(20),
            ..RenewalPolicy::default()
        };
        assert_eq!(pct.renew_at(0, 100 * 86_400), 80 * 86_400);
        assert_eq!(pct.lead(0, 100 * 365 * 86_400), MAX_RENEW_BEFORE, "capped");
        let bad = RenewalPolicy {
            renew_before_percent: Some(100),
            ..RenewalPolicy::default()
        };
        assert_eq!(bad.validate(), Err(PolicyError::Percent(100)));
        assert!(p.validate().is_ok());
        let bad = RenewalPolicy {
            renew_before: 10,
            ..RenewalPolicy::default()
        };
        assert_eq!(bad.validate(), Err(PolicyError::RenewBefore(10)));
        let bad = RenewalPolicy {
            validity_days: Some(0),
            ..RenewalPolicy::default()
        };
        assert!(bad.validate().is_err());
        let bad = RenewalPolicy {
            exports: vec![ExportTarget {
                path: "rel.pem".into(),
                format: CertFormat::Pem,
            }],
            ..RenewalPolicy::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(PolicyError::RelativeExport(_))
        ));
        assert_eq!(
            CertFormat::for_path(Path::new("/x/my.cer")),
            CertFormat::Der
        );
        assert_eq!("DER".parse::<CertFormat>(), Ok(CertFormat::Der));
    }

    #[test]
    fn hook_sees_the_new_certificate_and_reports_its_exit() {
        let info = CertInfo {
            subject: "CN=x".into(),
            issuer: "CN=x".into(),
            serial_hex: "01".into(),
            not_before: 1,
            not_after: 2,
            sha1_thumbprint: "ABCD".into(),
            sha256_fingerprint: String::new(),
            key_algorithm: "RSA".into(),
            key_bits: 2048,
            signature_algorithm: String::new(),
        };
        let out = run_hook(
            "echo $KEYWARD_CERT_ID $KEYWARD_CERT_THUMBPRINT $KEYWARD_CERT_PATHS; exit 3",
            "new",
            "old",
            &info,
            &[PathBuf::from("/a.pem"), PathBuf::from("/b.cer")],
        );
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.output.trim(), "new ABCD /a.pem:/b.cer");
    }
}
