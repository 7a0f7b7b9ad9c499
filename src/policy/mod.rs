//! Per-key policies: who may use which key, for what, where, when and how often.
//!
//! A [`Policy`] is kept in the store per key (a JSON document), and [`decide`] is a pure function
//! of (policy, request context, now) that the agent session calls before every signature; the
//! session never decides on its own. [`request`] reads what a signature is for (an SSH login,
//! or an `SSHSIG` signature in some namespace) from the data to be signed, and [`peer`] who asks.

mod decide;
pub mod dest;
mod loosen;
pub mod peer;
pub mod request;
pub mod tally;

pub use decide::{Context, Decision, Refusal, Usage, decide, describe, visible};
pub use loosen::loosened;

use serde::{Deserialize, Serialize};

/// How often a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// At most this many signatures...
    pub count: u32,
    /// ...per this many seconds.
    pub per_secs: u64,
}

/// When a key may sign: on these weekdays, between these times of day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Allowed weekdays, 0 = Monday ... 6 = Sunday (empty: every day).
    #[serde(default)]
    pub days: Vec<u8>,
    /// Start, minutes after midnight.
    pub from_minute: u16,
    /// End (exclusive), minutes after midnight; may be before `from_minute` to span midnight.
    pub to_minute: u16,
    /// The time zone of the window, as minutes east of UTC.
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

/// What a key may be used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "namespace")]
pub enum Purpose {
    /// SSH user authentication (a login).
    Login,
    /// `ssh-keygen -Y sign` in this namespace (`git`, `file`, ...); `*` for any.
    Sshsig(String),
    /// Signing an X.509 certificate (`keyward cert create`, renewals).
    X509,
}

/// A key's policy. Every field's default allows, except SHA-1 signatures, which OpenSSH's own
/// servers stopped accepting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Ask through askpass before each signature.
    pub confirm: bool,
    /// Usable for this many seconds after it is loaded (agent start or unseal).
    pub lifetime_secs: Option<u64>,
    /// At most this many signatures in all (counted per key, across unloads and restarts; see
    /// [`tally`]).
    pub max_signatures: Option<u64>,
    /// Rate limit.
    pub rate: Option<RateLimit>,
    /// Allow legacy `ssh-rsa` (SHA-1) signatures.
    pub allow_sha1: bool,
    /// Host keys (`SHA256:...` fingerprints) the key may log in to; empty: any host.
    pub destinations: Vec<String>,
    /// Refuse use over a forwarded agent.
    pub deny_forwarding: bool,
    /// Peer uids allowed (empty: the agent's own uid, which is the only one it admits anyway).
    pub uids: Vec<u32>,
    /// Executables allowed to ask (absolute paths; empty: any).
    pub executables: Vec<String>,
    /// What the key may sign (empty: anything).
    pub purposes: Vec<Purpose>,
    /// When it may sign.
    pub hours: Option<TimeWindow>,
}

/// A policy that cannot be enforced as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A field is out of range.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// The stored document is unreadable.
    #[error("stored policy is unreadable: {0}")]
    Stored(String),
}

impl Policy {
    /// Checks the fields.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: &str| Err(PolicyError::Invalid(m.to_owned()));
        if self.lifetime_secs == Some(0) {
            return bad("lifetime must be at least 1 second");
        }
        if let Some(rate) = self.rate
            && (rate.count == 0 || rate.per_secs == 0)
        {
            return bad("rate needs a count and a period above 0");
        }
        if let Some(d) = self.destinations.iter().find(|d| !d.starts_with("SHA256:")) {
            return Err(PolicyError::Invalid(format!(
                "destination {d:?} is not a SHA256 host-key fingerprint"
            )));
        }
        if let Some(e) = self.executables.iter().find(|e| !e.starts_with('/')) {
            return Err(PolicyError::Invalid(format!(
                "executable {e:?} must be an absolute path"
            )));
        }
        if let Some(w) = &self.hours
            && (w.from_minute >= 1440 || w.to_minute > 1440 || w.days.iter().any(|&d| d > 6))
        {
            return bad("time window out of range (minutes 0-1440, days 0-6)");
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

    /// Whether a connection bound to `host` (a `SHA256:` fingerprint) may see this key.
    pub fn allows_host(&self, host: &str) -> bool {
        self.destinations.is_empty() || self.destinations.iter().any(|d| d == host)
    }
}
