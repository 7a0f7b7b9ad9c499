//! The embedded, encrypted store: keys, certificates with their expiry index, per-key policies,
//! the audit log and store metadata.
//!
//! The rest of keyward uses the traits here ([`Vault`], [`KeyStore`], [`CertStore`],
//! [`PolicyStore`], [`KeyCertStore`], [`AuditLog`], or all of them as [`Store`]) and domain types only, so the
//! backend can be swapped; [`SledStore`] is the sled 0.34 implementation.
//!
//! Guarantees of [`SledStore`]:
//! - private keys are encrypted with XChaCha20-Poly1305 under a random master key, with the key id
//!   and public key as associated data; the master key is wrapped under Argon2id of the passphrase,
//!   or stored in plain (and reported so) when the store has none, in its own file
//!   (`master.key`, replaced atomically), never in sled, whose log keeps old values;
//! - a passphrase change makes a new master key and a new database (`db-<generation>/`), so no
//!   file of the store holds the old master key or anything it decrypts;
//! - every method that writes has flushed to disk before it returns, and records that belong
//!   together (key and name, certificate and expiry entry) change in one transaction;
//! - the audit journal's records are authenticated under an audit key derived from the master key
//!   (earlier keys kept, sealed, across passphrase changes) and anchored outside the journal
//!   (`audit.anchor`, `audit-retained.anchor`), see `audit_key.rs`;
//! - records are versioned and checksummed; older schemas are migrated on open;
//! - the directory is `0700` and its files carry no group/other bits;
//! - time is always an argument (unix seconds): the store never reads the clock.

mod audit_key;
mod crypto;
mod error;
mod journal;
mod keyfile;
mod migrate;
mod perms;
mod records;
mod rekey;
mod sled_anchor;
mod sled_certs;
mod sled_key_certs;
mod sled_keys;
mod sled_log;
mod sled_store;
mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use audit_key::{AnchorCheck, AnchorInfo};
pub use crypto::KdfParams;
pub(crate) use crypto::{Sealed, open as aead_open, seal as aead_seal};
pub use error::{CorruptError, Result, StoreError};
pub use journal::raw_audit_records;
pub use keyfile::raw_vault_record;
pub use migrate::CURRENT_SCHEMA;
pub use records::{RecordKind, check_record};
pub use sled_certs::DueIter;
pub use sled_key_certs::KeyCert;
pub use sled_keys::{MAX_NAME_LEN, validate_name};
pub use sled_store::{SledStore, StoreOptions};
pub use types::{
    AuditEntry, AuditEvent, AuditOutcome, CertId, CertOrigin, CertRecord, CertState, CertStatus,
    DueCert, KeyId, KeyInfo, NewKey, ParseIdError, PrivateKeyBytes, StoreStatus,
};

/// The master key: sealing, unsealing and the passphrase.
pub trait Vault {
    /// What `keyward status` shows.
    fn status(&self) -> Result<StoreStatus>;
    /// Whether the master key is not loaded (private keys cannot be read or added).
    fn is_sealed(&self) -> bool;
    /// Loads the master key. [`StoreError::WrongPassphrase`] if `passphrase` is not the store's
    /// (checked in constant time against the stored verifier). A store without a passphrase
    /// ignores it.
    fn unseal(&self, passphrase: &[u8]) -> Result<()>;
    /// Drops the master key from memory.
    fn seal(&self);
    /// Replaces the passphrase (`None`: remove it and store the master key in plain). `old` must
    /// be the current passphrase (ignored if there is none). A new master key is made and every
    /// private key re-encrypted under it, in one crash-safe step, so that neither an older copy of
    /// the store nor the old passphrase opens anything the store holds afterwards; the sealed
    /// state is unchanged.
    fn change_passphrase(&self, old: &[u8], new: Option<&[u8]>, kdf: KdfParams) -> Result<()>;
    /// The agent locked: encrypts the master key in memory under `lock_key` and forgets it, so
    /// nothing in memory decrypts a private key without the lock password. Until
    /// [`reveal_master`](Vault::reveal_master), everything that needs the master key, unsealing
    /// and changing the passphrase fail with [`StoreError::Locked`]. A sealed store stays sealed.
    fn hide_master(&self, lock_key: &[u8; 32]);
    /// The agent unlocked: restores the master key [`hide_master`](Vault::hide_master) hid (or
    /// the sealed state). `false`, and nothing changes, if `lock_key` is not the one it was hidden
    /// under; `true` if nothing was hidden.
    fn reveal_master(&self, lock_key: &[u8; 32]) -> bool;
}

/// Keys: public parts readable while sealed, private parts only when unsealed.
pub trait KeyStore {
    /// Adds a key (needs unsealed: the private key is encrypted first). Names are unique:
    /// [`StoreError::DuplicateName`] leaves the store unchanged.
    fn put_key(&self, key: NewKey, now: u64) -> Result<KeyId>;
    /// A key by name, or else by id (32 hex digits).
    fn get_key(&self, name_or_id: &str) -> Result<KeyInfo>;
    /// A key by id.
    fn key(&self, id: KeyId) -> Result<KeyInfo>;
    /// All keys, sorted by name.
    fn list_keys(&self) -> Result<Vec<KeyInfo>>;
    /// Decrypts a private key (needs unsealed).
    fn private_key(&self, id: KeyId) -> Result<PrivateKeyBytes>;
    /// Renames a key; [`StoreError::DuplicateName`] if the new name is taken.
    fn rename_key(&self, id: KeyId, new_name: &str, now: u64) -> Result<()>;
    /// Changes a key's comment.
    fn set_comment(&self, id: KeyId, comment: &str, now: u64) -> Result<()>;
    /// Deletes a key, its policy and its OpenSSH certificates; returns what was deleted. Certificates that name the key
    /// keep their `key_id` (they are still tracked until they expire).
    fn delete_key(&self, id: KeyId) -> Result<KeyInfo>;
}

/// Certificates and the expiry index.
pub trait CertStore {
    /// Adds or replaces a certificate and its expiry index entry (active certificates only).
    /// Its `key_id`, if any, must name a stored key.
    fn put_cert(&self, cert: &CertRecord) -> Result<()>;
    /// [`put_cert`](CertStore::put_cert) for many certificates, all or none, with one flush.
    fn put_certs(&self, certs: &[CertRecord]) -> Result<()>;
    /// A certificate by id.
    fn get_cert(&self, id: CertId) -> Result<CertRecord>;
    /// All certificates, by `not_after`.
    fn list_certs(&self) -> Result<Vec<CertRecord>>;
    /// Active certificates with `not_after < t`, soonest first (a range scan of the index). For a
    /// renewal window `w`, ask for `due_before(now + w)`.
    fn due_before(&self, t: u64) -> Result<Vec<DueCert>>;
    /// The active certificate that expires first: what the scheduler sleeps until.
    fn next_due(&self) -> Result<Option<DueCert>>;
    /// Marks a certificate superseded (by a renewal) and removes it from the expiry index.
    fn mark_superseded(&self, id: CertId, by: Option<CertId>, at: u64) -> Result<()>;
    /// Deletes a certificate and its index entry.
    fn delete_cert(&self, id: CertId) -> Result<()>;
    /// Sets the renewal policy of a certificate (a JSON document owned by the rotation code).
    fn put_renewal(&self, id: CertId, policy: &serde_json::Value) -> Result<()>;
    /// The first active certificate with `not_after >= t`, in expiry order.
    fn first_due_from(&self, t: u64) -> Result<Option<DueCert>>;
    /// The renewal policy of a certificate, if one was set.
    fn get_renewal(&self, id: CertId) -> Result<Option<serde_json::Value>>;
    /// Every renewal policy (few: one per certificate whose owner set one).
    fn renewals(&self) -> Result<Vec<(CertId, serde_json::Value)>>;
}

/// Per-key policy documents. Their schema belongs to the policy module; the store keeps them
/// versioned and checksummed, and deletes a key's policy with the key.
pub trait PolicyStore {
    /// Sets the policy of a stored key.
    fn put_policy(&self, key: KeyId, policy: &serde_json::Value) -> Result<()>;
    /// The policy of a key, if set.
    fn get_policy(&self, key: KeyId) -> Result<Option<serde_json::Value>>;
    /// Removes a key's policy; whether there was one.
    fn delete_policy(&self, key: KeyId) -> Result<bool>;
    /// Saves how much a key has been used (`None`: forget it), so its limits survive unloads and
    /// restarts; with `durable`, flushed before returning (see [`crate::policy::tally`]).
    fn put_usage(&self, key: KeyId, usage: Option<&serde_json::Value>, durable: bool)
    -> Result<()>;
    /// A key's saved usage, if any.
    fn get_usage(&self, key: KeyId) -> Result<Option<serde_json::Value>>;
}

/// The OpenSSH certificates of stored keys (`keyward key cert add`), served beside their key.
pub trait KeyCertStore {
    /// Adds certificate `blob` (its wire form, byte for byte) to stored key `key`; adding one
    /// already there changes nothing. [`StoreError::KeyIdNotFound`] if there is no such key.
    fn put_key_cert(&self, key: KeyId, blob: &[u8], now: u64) -> Result<KeyCert>;
    /// The certificates of `key`, or of every key, by key then by SHA-256.
    fn key_certs(&self, key: Option<KeyId>) -> Result<Vec<KeyCert>>;
    /// Removes a key's certificate by the SHA-256 of its blob; whether it was there.
    fn delete_key_cert(&self, key: KeyId, sha256: &[u8; 32]) -> Result<bool>;
}

/// The audit log: append-only, bounded by [`prune_audit`](AuditLog::prune_audit).
pub trait AuditLog {
    /// Appends an event; returns its sequence number.
    fn append_audit(&self, event: &AuditEvent) -> Result<u64>;
    /// Like `append_audit`, but not synced before returning: the record survives a crash of the
    /// process at once and reaches the disk within half a second. For high-rate records.
    fn append_audit_lazy(&self, event: &AuditEvent) -> Result<u64>;
    /// Up to `limit` events with `seq >= since_seq`, oldest first: retained records older than
    /// the trail's oldest, then the trail.
    fn read_audit(&self, since_seq: u64, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Keeps the newest `max_count` events of the trail, and the newest `max_count` retained
    /// records; returns how many were removed.
    fn prune_audit(&self, max_count: usize) -> Result<usize>;
    /// The newest audit record, if any.
    fn last_audit(&self) -> Result<Option<AuditEntry>>;
    /// HMAC-SHA256 of `parts` (concatenated) under the current audit key, derived from the master
    /// key: the key's epoch and the tag. `None` while the store is sealed.
    fn audit_mac(&self, parts: &[&[u8]]) -> Option<(u64, [u8; 32])>;
    /// Whether `tag` is the MAC of `parts` under the audit key of `epoch`; `None` if the store has
    /// no key of that epoch. [`StoreError::Sealed`] while sealed.
    fn audit_mac_check(&self, epoch: u64, parts: &[&[u8]], tag: &[u8]) -> Result<Option<bool>>;
    /// The sealed anchor (newest record on disk, `HEAD`, counter) compared with the trail on
    /// disk (`retained`: the journal of retained records). [`StoreError::Sealed`] while sealed.
    fn audit_anchor_check(&self, retained: bool) -> Result<AnchorCheck>;
    /// Keeps a copy of record `seq` (a refusal or change, with its own chain link) in the journal
    /// of retained records, which [`prune_audit`](AuditLog::prune_audit) bounds on its own so
    /// that a flood of allowed signatures cannot push it out. Durable within the background
    /// flush interval (the record itself already is).
    fn append_audit_retained(&self, seq: u64, event: &AuditEvent) -> Result<()>;
    /// Up to `limit` records with `seq >= since_seq` of one journal (`retained`: the retained
    /// records, with their own chain links; else the trail), oldest first, as stored.
    fn read_audit_journal(
        &self,
        retained: bool,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;
    /// The newest retained record.
    fn last_audit_retained(&self) -> Result<Option<AuditEntry>>;
}

/// The whole store, as one object-safe trait (`Arc<dyn Store>`).
pub trait Store:
    Vault + KeyStore + CertStore + PolicyStore + KeyCertStore + AuditLog + Send + Sync
{
}

impl<T: Vault + KeyStore + CertStore + PolicyStore + KeyCertStore + AuditLog + Send + Sync> Store
    for T
{
}
