//! On-disk layout of the store's values: a versioned, checksummed envelope around a JSON body, and
//! the body structs of each record kind. Domain types stay in `types.rs`, so changing them cannot
//! silently change the disk format.
//!
//! Envelope: `version: u8 ‖ body (JSON) ‖ first 8 bytes of SHA-256(version ‖ body)`. The checksum
//! turns any changed byte into a typed [`CorruptError`] rather than a wrong value.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::crypto::{KdfParams, MasterKey, NONCE_LEN, Sealed};
use super::error::{CorruptError, Result, StoreError};
use super::types::{CertId, CertOrigin, CertRecord, CertStatus, KeyId};

/// Current version of key records.
pub(crate) const KEY_V: u8 = 1;
/// Current version of certificate records.
pub(crate) const CERT_V: u8 = 1;
/// Current version of policy records.
pub(crate) const POLICY_V: u8 = 1;
/// Current version of audit records.
pub(crate) const AUDIT_V: u8 = 1;
/// Current version of the vault (master key) record.
pub(crate) const VAULT_V: u8 = 1;

const SUM_LEN: usize = 8;

/// Names a record in error messages: `tree/key`.
pub(crate) fn what(tree: &str, key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if key.len() != 16 && s.chars().all(|c| c.is_ascii_graphic()) => {
            format!("{tree}/{s}")
        }
        _ => format!("{tree}/{}", hex_encode(key)),
    }
}

fn checksum(version: u8, body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([version])
        .chain_update(body)
        .finalize()
        .into()
}

/// Wraps `body` in the envelope.
pub(crate) fn encode<T: Serialize>(version: u8, body: &T) -> Vec<u8> {
    let json = serde_json::to_vec(body).expect("store records serialize to JSON");
    let mut out = Vec::with_capacity(1 + json.len() + SUM_LEN);
    out.push(version);
    out.extend_from_slice(&json);
    out.extend_from_slice(&checksum(version, &json)[..SUM_LEN]);
    out
}

/// Checks the envelope; returns the version and the body.
pub(crate) fn unwrap_envelope(bytes: &[u8]) -> Result<(u8, &[u8]), CorruptError> {
    if bytes.len() < 1 + SUM_LEN {
        return Err(CorruptError::Truncated(bytes.len()));
    }
    let (head, sum) = bytes.split_at(bytes.len() - SUM_LEN);
    let (version, body) = (head[0], &head[1..]);
    if checksum(version, body)[..SUM_LEN] != *sum {
        return Err(CorruptError::Checksum);
    }
    Ok((version, body))
}

/// Decodes a record that must be at `version`.
pub(crate) fn decode<T: DeserializeOwned>(
    what_: impl FnOnce() -> String,
    version: u8,
    bytes: &[u8],
) -> Result<T> {
    let inner = || -> Result<T, CorruptError> {
        let (v, body) = unwrap_envelope(bytes)?;
        if v != version {
            return Err(CorruptError::UnknownVersion(v));
        }
        serde_json::from_slice(body).map_err(CorruptError::Decode)
    };
    inner().map_err(|reason| StoreError::corrupt(what_(), reason))
}

/// The kinds of record the store keeps, each read by its own decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A key (tree `keys`).
    Key,
    /// A certificate (tree `certs`).
    Cert,
    /// A key's policy document (tree `policies`).
    Policy,
    /// An audit event (tree `audit`).
    Audit,
    /// The master key's protection (`meta/vault`).
    Vault,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Key,
        Self::Cert,
        Self::Policy,
        Self::Audit,
        Self::Vault,
    ];
}

/// Decodes raw stored `bytes` as a record of `kind` with the decoder the store reads it with
/// (envelope, checksum, version, body): `Ok` exactly when the store would accept it. For checking
/// raw values from outside the store, as the property tests and fuzz targets do.
pub fn check_record(kind: RecordKind, bytes: &[u8]) -> Result<()> {
    let what = || format!("{kind:?} record");
    match kind {
        RecordKind::Key => decode::<KeyRec>(what, KEY_V, bytes).map(drop),
        RecordKind::Cert => decode::<CertRec>(what, CERT_V, bytes).map(drop),
        RecordKind::Policy => decode::<serde_json::Value>(what, POLICY_V, bytes).map(drop),
        RecordKind::Audit => decode::<super::AuditEvent>(what, AUDIT_V, bytes).map(drop),
        RecordKind::Vault => Vault::decode(bytes).map(drop),
    }
}

/// Lowercase hex.
pub(crate) fn hex_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Hex to bytes; `None` if not hex.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// serde `with` module: bytes as a hex string.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex_encode(b))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        super::hex_decode(&s).ok_or_else(|| serde::de::Error::custom("not hex"))
    }
}

/// A nonce and ciphertext as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SealedRec {
    #[serde(with = "hex_bytes")]
    pub(crate) nonce: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub(crate) ciphertext: Vec<u8>,
}

impl SealedRec {
    pub(crate) fn from_sealed(s: Sealed) -> Self {
        Self {
            nonce: s.nonce.to_vec(),
            ciphertext: s.ciphertext,
        }
    }

    pub(crate) fn to_sealed(&self) -> Result<Sealed, CorruptError> {
        let nonce: [u8; NONCE_LEN] = self
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CorruptError::Field("nonce"))?;
        Ok(Sealed {
            nonce,
            ciphertext: self.ciphertext.clone(),
        })
    }
}

/// Key record, version 1 (tree `keys`, key = id). The name is also in `key_names`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRec {
    pub(crate) name: String,
    pub(crate) comment: String,
    /// SSH wire encoding of the public key (no comment); part of the AEAD associated data.
    #[serde(with = "hex_bytes")]
    pub(crate) public: Vec<u8>,
    pub(crate) private: SealedRec,
    pub(crate) created_at: u64,
    pub(crate) updated_at: u64,
}

/// Certificate record, version 1 (tree `certs`, key = id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertRec {
    pub(crate) key_id: Option<KeyId>,
    pub(crate) subject: String,
    #[serde(with = "hex_bytes")]
    pub(crate) der: Vec<u8>,
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
    pub(crate) origin: CertOrigin,
    pub(crate) status: CertStatus,
    pub(crate) created_at: u64,
}

impl CertRec {
    pub(crate) fn from_domain(c: &CertRecord) -> Self {
        Self {
            key_id: c.key_id,
            subject: c.subject.clone(),
            der: c.der.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            origin: c.origin,
            status: c.status,
            created_at: c.created_at,
        }
    }

    pub(crate) fn into_domain(self, id: CertId) -> CertRecord {
        CertRecord {
            id,
            key_id: self.key_id,
            subject: self.subject,
            der: self.der,
            not_before: self.not_before,
            not_after: self.not_after,
            origin: self.origin,
            status: self.status,
            created_at: self.created_at,
        }
    }
}

/// The master key's protection (tree `meta`, key `vault`). One record, so changing the passphrase
/// is a single atomic write.
#[derive(Serialize, Deserialize)]
pub(crate) struct VaultRec<'a> {
    /// Whether a passphrase protects the master key; `false` means it is stored in plain below.
    pub(crate) passphrase: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kdf: Option<KdfParams>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub(crate) salt: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub(crate) verifier: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) master_wrapped: Option<SealedRec>,
    /// Hex of the master key when there is no passphrase (borrowed so no stray copy is made).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub(crate) master_plain: Option<&'a str>,
}

/// The decoded vault.
pub(crate) enum Vault {
    /// Master key wrapped under a passphrase-derived key.
    Passphrase {
        kdf: KdfParams,
        salt: Vec<u8>,
        verifier: Vec<u8>,
        wrapped: Sealed,
    },
    /// Master key in plain.
    Plain(MasterKey),
}

impl Vault {
    /// The envelope `meta/vault` held (tests build stores of that layout with it).
    pub(crate) fn encode(&self) -> Vec<u8> {
        self.with_rec(|rec| encode(VAULT_V, rec))
    }

    /// Runs `f` on the record form (which borrows a hex copy of a plain key, zeroized after).
    pub(crate) fn with_rec<T>(&self, f: impl FnOnce(&VaultRec<'_>) -> T) -> T {
        match self {
            Vault::Passphrase {
                kdf,
                salt,
                verifier,
                wrapped,
            } => f(&VaultRec {
                passphrase: true,
                kdf: Some(*kdf),
                salt: Some(salt.clone()),
                verifier: Some(verifier.clone()),
                master_wrapped: Some(SealedRec::from_sealed(wrapped.clone())),
                master_plain: None,
            }),
            Vault::Plain(k) => {
                let hex = Zeroizing::new(hex_encode(k.expose()));
                f(&VaultRec {
                    passphrase: false,
                    kdf: None,
                    salt: None,
                    verifier: None,
                    master_wrapped: None,
                    master_plain: Some(&hex),
                })
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let inner = || -> Result<Self, CorruptError> {
            let (v, body) = unwrap_envelope(bytes)?;
            if v != VAULT_V {
                return Err(CorruptError::UnknownVersion(v));
            }
            let rec: VaultRec<'_> = serde_json::from_slice(body).map_err(CorruptError::Decode)?;
            Self::from_rec(rec)
        };
        inner().map_err(|r| StoreError::corrupt("meta/vault", r))
    }

    /// The vault a decoded record describes.
    pub(crate) fn from_rec(rec: VaultRec<'_>) -> Result<Self, CorruptError> {
        if rec.passphrase {
            let kdf = rec.kdf.ok_or(CorruptError::Field("kdf"))?;
            let salt = rec.salt.ok_or(CorruptError::Field("salt"))?;
            let verifier = rec
                .verifier
                .filter(|v| v.len() == 32)
                .ok_or(CorruptError::Field("verifier"))?;
            let wrapped = rec
                .master_wrapped
                .ok_or(CorruptError::Field("master_wrapped"))?
                .to_sealed()?;
            Ok(Vault::Passphrase {
                kdf,
                salt,
                verifier,
                wrapped,
            })
        } else {
            let hex = rec
                .master_plain
                .ok_or(CorruptError::Field("master_plain"))?;
            let raw = Zeroizing::new(hex_decode(hex).ok_or(CorruptError::Field("master_plain"))?);
            Ok(Vault::Plain(
                MasterKey::from_slice(&raw).ok_or(CorruptError::Field("master_plain"))?,
            ))
        }
    }
}

/// serde `with` module: optional bytes as hex.
mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub(crate) fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => super::hex_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<std::borrow::Cow<str>>::deserialize(d)?
            .map(|s| super::hex_decode(&s).ok_or_else(|| serde::de::Error::custom("not hex")))
            .transpose()
    }
}
