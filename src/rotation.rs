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
    /// An export path in a directory other users can write to.
    #[error(
        "cannot export to {path}: its directory {why}, so another user could replace the certificate; choose a directory only you can write to"
    )]
    SharedExport {
        /// The export path.
        path: PathBuf,
        /// What makes its directory shared.
        why: String,
    },
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
        for target in &self.exports {
            if let Some(dir) = target.path.parent()
                && let Some(why) = crate::files::shared_directory(dir)
            {
                return Err(PolicyError::SharedExport {
                    path: target.path.clone(),
                    why,
                });
            }
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

/// Checks that every export target can be written (its directory exists, and no other user can
/// write to it), so a renewal whose exports would fail is refused before anything changes.
pub fn check_exports(targets: &[ExportTarget]) -> Result<(), ExportError> {
    for target in targets {
        let dir = target.path.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Err(ExportError::MissingDirectory(target.path.clone()));
        }
        crate::files::check_target_dir(&target.path).map_err(ExportError::Write)?;
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
///
/// The hook runs in a process group of its own. When its shell exits, or after
/// [`HOOK_TIMEOUT`], the whole group is killed: a job it left in the background neither keeps the
/// renewal waiting nor outlives the hook. Output is collected until then, and for at most
/// [`PIPE_GRACE`] after: a process that left the group (`setsid`) with the pipes open cannot
/// hold the renewal either.
pub fn run_hook(
    command: &str,
    new_id: &str,
    old_id: &str,
    info: &CertInfo,
    paths: &[PathBuf],
) -> HookOutcome {
    let paths = std::env::join_paths(paths)
        .map_or_else(|_| String::new(), |p| p.to_string_lossy().into_owned());
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env("KEYWARD_CERT_ID", new_id)
        .env("KEYWARD_CERT_OLD_ID", old_id)
        .env("KEYWARD_CERT_SUBJECT", &info.subject)
        .env("KEYWARD_CERT_THUMBPRINT", &info.sha1_thumbprint)
        .env("KEYWARD_CERT_NOT_AFTER", info.not_after.to_string())
        .env("KEYWARD_CERT_PATHS", paths);
    run_group(cmd, HOOK_TIMEOUT)
}

/// How long a killed hook's pipes are read before its output is taken as it is.
pub const PIPE_GRACE: Duration = Duration::from_secs(1);

/// The most output kept from a hook.
const HOOK_OUTPUT: usize = 4096;

/// Runs `cmd` as the leader of a new process group, kills the group when the leader exits or
/// `timeout` passes, and returns the leader's exit code and output.
fn run_group(mut cmd: std::process::Command, timeout: Duration) -> HookOutcome {
    use std::os::unix::process::CommandExt;
    let spawned = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return HookOutcome {
                exit_code: None,
                output: format!("cannot run /bin/sh: {e}"),
            };
        }
    };
    let Ok(leader) = i32::try_from(child.id()).map(nix::unistd::Pid::from_raw) else {
        return HookOutcome {
            exit_code: None,
            output: "hook pid out of range".to_owned(),
        };
    };
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    // Wait for the leader to exit without reaping it: while it is an unreaped zombie its pid,
    // which is also the group's id, cannot be reused, so killing the group below can only reach
    // the hook's own processes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
        let _ = tx.send(nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(leader),
            flags,
        ));
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    // ESRCH (nothing left in the group) is the usual case after a clean exit.
    let _ = nix::sys::signal::killpg(leader, nix::sys::signal::Signal::SIGKILL);
    let status = child.wait();
    let deadline = std::time::Instant::now() + PIPE_GRACE;
    let mut output = Vec::new();
    for pipe in [stdout, stderr].into_iter().flatten() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Ok(bytes) = pipe.recv_timeout(left) {
            output.extend_from_slice(&bytes);
        }
    }
    output.truncate(HOOK_OUTPUT);
    let mut output = String::from_utf8_lossy(&output).into_owned();
    if timed_out {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&format!("hook killed after {timeout:?}"));
        return HookOutcome {
            exit_code: None,
            output,
        };
    }
    match status {
        Ok(status) => HookOutcome {
            exit_code: status.code(),
            output,
        },
        Err(e) => HookOutcome {
            exit_code: None,
            output: format!("hook failed: {e}"),
        },
    }
}

/// Reads `pipe` to its end on a thread, keeping the first [`HOOK_OUTPUT`] bytes.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = HOOK_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let _ = tx.send(kept);
    });
    rx
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

    fn sh(command: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(command);
        cmd
    }

    /// Still alive (not a zombie) a few seconds after it was killed: SIGKILL is delivered at
    /// once, but the exit completes asynchronously.
    fn alive(pid: &str) -> bool {
        let live = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with(['Z', 'X'])
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while live() {
            if std::time::Instant::now() > deadline {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn pids(output: &str) -> Vec<String> {
        output
            .split_whitespace()
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_background_job_neither_holds_the_hook_nor_outlives_it() {
        let started = std::time::Instant::now();
        let out = run_group(sh("sleep 1000 & echo $!; exit 0"), Duration::from_secs(30));
        assert!(
            // Far below the 30 s timeout: the background job did not hold the hook (a bound
            // against a hang, wide enough for a loaded machine, not a speed check).
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.exit_code, Some(0));
        let pids = pids(&out.output);
        assert_eq!(pids.len(), 1, "{out:?}");
        assert!(
            !alive(&pids[0]),
            "the background sleep was killed with the group"
        );
    }

    #[test]
    fn the_timeout_kills_the_whole_group() {
        let started = std::time::Instant::now();
        let timeout = Duration::from_secs(1);
        let out = run_group(sh("sleep 1000 & echo $!; sleep 1000"), timeout);
        let took = started.elapsed();
        assert!(took >= timeout, "{took:?}");
        assert!(
            took < timeout + PIPE_GRACE + Duration::from_secs(20),
            "{took:?}"
        );
        assert_eq!(out.exit_code, None);
        assert!(out.output.contains("hook killed after"), "{out:?}");
        let pids = pids(&out.output);
        assert_eq!(pids.len(), 1, "{out:?}");
        assert!(
            !alive(&pids[0]),
            "the background sleep was killed with the group"
        );
    }

    #[test]
    fn an_escaped_process_holding_the_pipes_does_not_hold_the_hook() {
        let started = std::time::Instant::now();
        let out = run_group(
            sh("setsid sleep 1000 & echo $!; exit 0"),
            Duration::from_secs(30),
        );
        let took = started.elapsed();
        assert!(took < PIPE_GRACE + Duration::from_secs(20), "{took:?}");
        assert_eq!(out.exit_code, Some(0));
        for pid in pids(&out.output) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
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
