//! The store's error type: one enum, [`StoreError`], whose messages tell a person what to do,
//! and [`CorruptError`], the typed reason a stored record could not be read.

use std::io;
use std::path::PathBuf;

use super::types::{CertId, KeyId};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory holds no initialised store.
    #[error("no keyward store at {}: run `keyward init` to create one", path.display())]
    NotInitialised {
        /// The store directory.
        path: PathBuf,
    },
    /// The directory has database files but no keyward metadata. sled opens a damaged log as
    /// far as it verifies, so this can be corruption near its start: never `init` over it.
    #[error(
        "{} holds database files but no keyward metadata: it is damaged or not a keyward store; restore it from a backup or move it away (do not run `keyward init` over it)",
        path.display()
    )]
    Damaged {
        /// The store directory.
        path: PathBuf,
    },
    /// `init` was asked to create a store where one already exists, or in a non-empty directory.
    #[error("a keyward store (or other files) already exists at {}", path.display())]
    AlreadyInitialised {
        /// The store directory.
        path: PathBuf,
    },
    /// Another process (normally the running daemon) holds the database open.
    #[error(
        "the store at {} is in use by another process: use the running keyward-agent, or stop it first",
        path.display()
    )]
    InUse {
        /// The store directory.
        path: PathBuf,
    },
    /// An operation on private key material while the master key is not loaded.
    #[error("store at {} is sealed: run `keyward unlock`", path.display())]
    Sealed {
        /// The store directory.
        path: PathBuf,
    },
    /// The agent is locked (`ssh-add -x`): the master key is hidden under the lock password, so
    /// nothing that needs it (private keys, unsealing, the passphrase) can run until it unlocks.
    #[error("the agent is locked: unlock it with `ssh-add -X` first")]
    Locked,
    /// The passphrase given to `unseal` or `change_passphrase` is not the store's.
    #[error("wrong passphrase for the store at {}", path.display())]
    WrongPassphrase {
        /// The store directory.
        path: PathBuf,
    },
    /// A key with this name already exists; nothing was changed.
    #[error("a key named '{name}' already exists")]
    DuplicateName {
        /// The name that is taken.
        name: String,
    },
    /// A key name that the store refuses.
    #[error("'{name}' cannot be used as a key name: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A public key that cannot be encoded.
    #[error("the public key cannot be encoded")]
    PublicKey(#[source] ssh_key::Error),
    /// No key has this name or id.
    #[error("no key named '{0}' (and no key with that id): `keyward key list` shows the keys")]
    KeyNotFound(String),
    /// No key has this id.
    #[error("no key with id {0}")]
    KeyIdNotFound(KeyId),
    /// No certificate has this id.
    #[error("no certificate with id {0}")]
    CertNotFound(CertId),
    /// A certificate record that makes no sense (for example `not_after` before `not_before`).
    #[error("certificate {id} is invalid: {reason}")]
    InvalidCert {
        /// The certificate.
        id: CertId,
        /// Why.
        reason: &'static str,
    },
    /// Argon2id parameters that are out of range.
    #[error("invalid passphrase KDF parameters: {reason}")]
    InvalidKdfParams {
        /// Which limit was crossed.
        reason: &'static str,
    },
    /// Argon2id itself refused to run (it should not, once parameters are checked).
    #[error("argon2id failed: {0}")]
    Kdf(argon2::Error),
    /// The store was written by a newer keyward.
    #[error(
        "the store at {} has schema version {found}, newer than this keyward understands (up to {supported}): upgrade keyward",
        path.display()
    )]
    SchemaTooNew {
        /// The store directory.
        path: PathBuf,
        /// Version found in `meta`.
        found: u32,
        /// Newest version this build can read.
        supported: u32,
    },
    /// A stored record cannot be read.
    #[error("record {what} is corrupt")]
    Corrupt {
        /// Which record (`tree/key`).
        what: String,
        /// What is wrong with it.
        #[source]
        reason: CorruptError,
    },
    /// Creating the store directory or tightening its permissions failed.
    #[error("cannot prepare the store directory {}", path.display())]
    Dir {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the store database at {}", path.display())]
    Open {
        /// The store directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read, write or flush failed in the database.
    #[error("store database error")]
    Db(#[source] sled::Error),
    /// Reading or writing the audit journal (`<store>/audit/`) failed.
    #[error("cannot read or write the audit journal in {}", path.display())]
    Journal {
        /// The journal directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptError {
    /// Shorter than the envelope.
    #[error("it is truncated ({0} bytes)")]
    Truncated(usize),
    /// The envelope checksum does not match: bytes changed after writing.
    #[error("its checksum does not match")]
    Checksum,
    /// A record version this build does not know.
    #[error("version {0} unknown")]
    UnknownVersion(u8),
    /// The record body does not decode.
    #[error("its body does not decode")]
    Decode(#[source] serde_json::Error),
    /// A field has the wrong shape.
    #[error("field `{0}` is malformed")]
    Field(&'static str),
    /// The stored public key does not parse.
    #[error("its public key does not parse")]
    PublicKey(#[source] ssh_key::Error),
    /// The AEAD tag does not verify: the ciphertext was altered, or moved to another record.
    #[error("the encrypted data does not authenticate (altered, or moved from another record)")]
    Aead,
    /// The record's key does not match its index entry or content.
    #[error("it does not match its index entry")]
    Index,
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>, reason: CorruptError) -> Self {
        Self::Corrupt {
            what: what.into(),
            reason,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Db(e)
    }
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
