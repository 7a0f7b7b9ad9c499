//! The TOML configuration file (`config/keyward.toml` documents every key): parsing, validation
//! and defaults.
//!
//! Unknown keys and bad values are errors that name the file, the line and the key, so a typo
//! never silently falls back to a default. Command-line flags override the file; the binaries
//! decide that precedence, this module only says what the file holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rotation::{DEFAULT_RENEW_BEFORE, MAX_RENEW_BEFORE};

/// The log filter used when neither the file nor a flag sets one.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The audit trail keeps at most this many records unless the file says otherwise; the
/// refusals and changes also kept apart are bounded by the same number, separately. The one
/// place this default is set.
pub const DEFAULT_AUDIT_MAX_EVENTS: usize = 100_000;

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a bad value.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// Two settings contradict each other, or one needs something the environment lacks.
    #[error("{path}: {message}")]
    Conflict {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A duration written as text (`3600`, `90m`, `1h30m`, `30d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::clock::parse_duration(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", self.0.as_secs()))
    }
}

/// A path that is absolute or starts with `~/` (expanded against `$HOME` when read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigPath(pub PathBuf);

impl<'de> Deserialize<'de> for ConfigPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        expand(&text).map(Self).map_err(serde::de::Error::custom)
    }
}

fn expand(text: &str) -> Result<PathBuf, String> {
    if let Some(rest) = text.strip_prefix("~/") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} starts with ~/ but HOME is not set"))?;
        return Ok(PathBuf::from(home).join(rest));
    }
    let path = PathBuf::from(text);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "{text:?} is not an absolute path (write /... or ~/...)"
        ))
    }
}

/// A `tracing` filter such as `info` or `keyward=debug,warn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLevel(pub String);

impl Default for LogLevel {
    fn default() -> Self {
        Self(DEFAULT_LOG_LEVEL.to_owned())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        tracing_subscriber::EnvFilter::try_new(&text)
            .map(|_| Self(text.clone()))
            .map_err(|e| serde::de::Error::custom(format!("invalid log filter {text:?}: {e}")))
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[store]`: where keys and certificates live and how the store is unsealed.
    pub store: StoreConfig,
    /// `[agent]`: the sockets and the settings for keys added with `ssh-add`.
    pub agent: AgentSection,
    /// `[log]`.
    pub log: LogConfig,
    /// `[policy]`: the policy of stored keys that have none of their own.
    pub policy: PolicyDefaults,
    /// `[renewal]`: the renewal policy of certificates that have none of their own.
    pub renewal: RenewalDefaults,
    /// `[audit]`.
    pub audit: AuditConfig,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Store directory (default: `$KEYWARD_STORE`, `$XDG_DATA_HOME/keyward`,
    /// `~/.local/share/keyward`).
    pub path: Option<ConfigPath>,
    /// `false` serves only keys added with `ssh-add`, as `keyward-agent --no-store`.
    pub enabled: bool,
    /// Unseal the store at start with the passphrase in this file.
    pub passphrase_file: Option<ConfigPath>,
    /// Unseal the store at start with this systemd credential (`LoadCredential=`).
    pub credential: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: None,
            enabled: true,
            passphrase_file: None,
            credential: None,
        }
    }
}

/// `[agent]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// The agent socket (default: `$XDG_RUNTIME_DIR/keyward/agent.sock`); `control.sock` is
    /// always beside it.
    pub socket: Option<ConfigPath>,
    /// Lifetime of keys added without one (`ssh-add` without `-t`); default: unlimited.
    pub lifetime: Option<HumanDuration>,
    /// Program that confirms uses of keys added with `ssh-add -c` (default: `$SSH_ASKPASS`).
    pub askpass: Option<ConfigPath>,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter; `KEYWARD_LOG` and `-d` override it.
    pub level: LogLevel,
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyDefaults {
    /// Ask before each use, as `ssh-add -c`.
    pub confirm: bool,
    /// Usable for this long after load or unlock; default: unlimited.
    pub lifetime: Option<HumanDuration>,
    /// At most this many signatures; default: unlimited.
    pub max_signatures: Option<u64>,
    /// Allow legacy SHA-1 `ssh-rsa` signatures.
    pub allow_sha1: bool,
    /// Allow use over a forwarded agent (`ssh -A`).
    pub allow_forwarded: bool,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            confirm: false,
            lifetime: None,
            max_signatures: None,
            allow_sha1: false,
            allow_forwarded: true,
        }
    }
}

/// `[renewal]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenewalDefaults {
    /// Renew this long before expiry (at most one year).
    pub renew_before: HumanDuration,
    /// Validity of a renewed certificate in days; default: the current certificate's.
    pub validity_days: Option<u32>,
    /// Make a new key at each renewal instead of reusing the certificate's key.
    pub rekey: bool,
}

impl Default for RenewalDefaults {
    fn default() -> Self {
        Self {
            renew_before: HumanDuration(Duration::from_secs(DEFAULT_RENEW_BEFORE)),
            validity_days: None,
            rekey: false,
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Keep at most this many audit events; the oldest go first.
    pub max_events: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_AUDIT_MAX_EVENTS,
        }
    }
}

impl Config {
    /// Parses `text`, read from `path` (named in errors), and checks it.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |span| line_of(text, span.start));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        config.check(text, path)?;
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The file given on the command line, else the default file if it exists, else the
    /// defaults; with the path that was read.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(path) => path.to_owned(),
            None => match default_path().filter(|p| p.exists()) {
                Some(path) => path,
                None => return Ok((Self::default(), None)),
            },
        };
        Ok((Self::read(&path)?, Some(path)))
    }

    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let at = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: key_line(text, key),
            message,
        };
        if self.renewal.renew_before.0.as_secs() > MAX_RENEW_BEFORE {
            return Err(at(
                "renew_before",
                "renewal.renew_before: at most 365d".to_owned(),
            ));
        }
        if self.renewal.validity_days == Some(0) {
            return Err(at(
                "validity_days",
                "renewal.validity_days: must be at least 1".to_owned(),
            ));
        }
        if self.audit.max_events == 0 {
            return Err(at(
                "max_events",
                "audit.max_events: must be at least 1".to_owned(),
            ));
        }
        if let Some(name) = &self.store.credential
            && (name.is_empty() || name.contains('/'))
        {
            return Err(at(
                "credential",
                format!("store.credential: {name:?} is not a credential name"),
            ));
        }
        if self.store.credential.is_some() && self.store.passphrase_file.is_some() {
            return Err(ConfigError::Conflict {
                path: path.to_owned(),
                message: "set store.passphrase_file or store.credential, not both".to_owned(),
            });
        }
        Ok(())
    }

    /// The file holding the passphrase that unseals the store at start: `store.passphrase_file`,
    /// or the systemd credential `store.credential` under `$CREDENTIALS_DIRECTORY`.
    pub fn passphrase_file(&self, path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        if let Some(file) = &self.store.passphrase_file {
            return Ok(Some(file.0.clone()));
        }
        let Some(name) = &self.store.credential else {
            return Ok(None);
        };
        match std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
            Some(dir) => Ok(Some(PathBuf::from(dir).join(name))),
            None => Err(ConfigError::Conflict {
                path: path.to_owned(),
                message: format!(
                    "store.credential = {name:?} but systemd passed no credentials: add \
                     `LoadCredentialEncrypted={name}:...` (or LoadCredential=) to keyward.service"
                ),
            }),
        }
    }
}

/// The default file's socket and store directory, for the `keyward` CLI to find the agent the
/// file configures; `Err` when the file exists but is invalid.
pub fn client_locations() -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let (config, _) = Config::load(None)?;
    Ok((
        config.agent.socket.map(|p| p.0),
        config.store.path.map(|p| p.0),
    ))
}

/// `$XDG_CONFIG_HOME/keyward/keyward.toml`, else `~/.config/keyward/keyward.toml`.
pub fn default_path() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".config")))
        .map(|dir| dir.join("keyward").join("keyward.toml"))
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// The line on which `key` is assigned (the first one), for errors found after parsing.
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
