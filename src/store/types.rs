//! Domain types of the store's API: ids, key and certificate records, audit events and status.
//! Nothing here is a sled type; the on-disk layout lives in `records.rs`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// A fresh random id (128 bits from the OS generator).
            pub fn random() -> Self {
                let mut b = [0u8; 16];
                OsRng.fill_bytes(&mut b);
                Self(b)
            }
            /// The id from its 16 raw bytes.
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(b)
            }
            /// The 16 raw bytes (also the big-endian sled key).
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            pub(crate) fn from_slice(b: &[u8]) -> Option<Self> {
                b.try_into().ok().map(Self)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let v = crate::store::records::hex_decode(s).ok_or(ParseIdError)?;
                Self::from_slice(&v).ok_or(ParseIdError)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A key's id: 128 random bits, shown as 32 hex digits.
    ///
    /// Random rather than sled's `generate_id()` counter so ids stay unique across stores, exports
    /// and restored backups, reveal nothing about how many keys exist, and can be made before the
    /// record is written (the id is part of the AEAD associated data).
    KeyId
);
id_type!(
    /// A certificate's id: 128 random bits, shown as 32 hex digits (random for the same reasons
    /// as [`KeyId`]).
    CertId
);

/// A string that is not a 32-hex-digit id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an id (32 hex digits)")]
pub struct ParseIdError;

/// Private key material (the encoding is the caller's: OpenSSH, PKCS#8 DER, ...). Zeroized on drop;
/// deliberately has no `Debug`, `Display` or `Clone`.
pub struct PrivateKeyBytes(Zeroizing<Vec<u8>>);

impl PrivateKeyBytes {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Unwraps into the zeroizing buffer.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl From<Vec<u8>> for PrivateKeyBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }
}

/// A key to add with `put_key`.
pub struct NewKey {
    /// Unique name.
    pub name: String,
    /// Free-form comment (as `ssh-keygen -C`).
    pub comment: String,
    /// The public key (its own comment is ignored; `comment` is kept).
    pub public: ssh_key::PublicKey,
    /// The private key, encrypted before it is written.
    pub private: PrivateKeyBytes,
}

/// A stored key's public information (readable while sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Id.
    pub id: KeyId,
    /// Unique name.
    pub name: String,
    /// Comment.
    pub comment: String,
    /// Public key, with `comment` set as its comment.
    pub public: ssh_key::PublicKey,
    /// When added (unix seconds, as passed by the caller).
    pub created_at: u64,
    /// When the name or comment last changed (unix seconds).
    pub updated_at: u64,
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertOrigin {
    /// Issued by keyward from a stored key.
    Issued,
    /// Made elsewhere, imported for expiry tracking.
    Imported,
}

/// The stored lifecycle of a certificate. Valid/expiring/expired depend on the time and are
/// computed by [`CertRecord::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CertStatus {
    /// Current; listed in the expiry index.
    Active,
    /// Replaced by a renewal; kept until it expires, not in the expiry index.
    Superseded {
        /// The certificate that replaced it, if known.
        by: Option<CertId>,
        /// When (unix seconds).
        at: u64,
    },
}

/// A certificate as tracked by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Id.
    pub id: CertId,
    /// The stored key it certifies, if any (imported certificates may have none).
    pub key_id: Option<KeyId>,
    /// Subject, for listings without parsing `der`.
    pub subject: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Start of validity (unix seconds).
    pub not_before: u64,
    /// End of validity (unix seconds); the expiry index is ordered by it.
    pub not_after: u64,
    /// Issued or imported.
    pub origin: CertOrigin,
    /// Active or superseded.
    pub status: CertStatus,
    /// When recorded (unix seconds).
    pub created_at: u64,
}

/// A certificate's state at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// Active and outside its renewal window.
    Valid,
    /// Active and inside its renewal window.
    Expiring,
    /// Past `not_after`.
    Expired,
    /// Replaced by a renewal (and not yet expired).
    Superseded,
}

impl CertRecord {
    /// The state at `now`, with renewal `renew_before_secs` ahead of expiry.
    pub fn state(&self, now: u64, renew_before_secs: u64) -> CertState {
        if now >= self.not_after {
            CertState::Expired
        } else if matches!(self.status, CertStatus::Superseded { .. }) {
            CertState::Superseded
        } else if now >= self.not_after.saturating_sub(renew_before_secs) {
            CertState::Expiring
        } else {
            CertState::Valid
        }
    }
}

/// An entry of the expiry index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueCert {
    /// The certificate's `not_after` (unix seconds).
    pub not_after: u64,
    /// The certificate.
    pub id: CertId,
}

/// The result of a decision recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The operation was allowed.
    Allowed,
    /// The operation was refused.
    Refused,
    /// Not a decision (lock, unlock, key added, ...).
    Info,
}

/// One audit event. Never put secrets in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (unix seconds).
    pub at: u64,
    /// The key concerned, if any.
    pub key_id: Option<KeyId>,
    /// What was attempted, e.g. `"sign"`.
    pub action: String,
    /// Allowed, refused or informational.
    pub outcome: AuditOutcome,
    /// Why, and the context (client, destination, ...), as the caller structures it.
    pub detail: serde_json::Value,
}

/// An audit event with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increasing sequence number (gaps are possible after a crash).
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
}

/// What `keyward status` shows about the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    /// The store directory.
    pub path: PathBuf,
    /// Whether a passphrase protects the master key (false: the key is stored in plain).
    pub passphrase_set: bool,
    /// Whether the master key is not loaded.
    pub sealed: bool,
    /// Number of keys.
    pub key_count: usize,
    /// Number of certificates.
    pub cert_count: usize,
    /// Schema version on disk.
    pub schema_version: u32,
}
