//! X.509 certificates: the domain code behind `keyward cert`.
//!
//! This module owns making a self-signed certificate from a stored RSA key ([`create_self_signed`],
//! the equivalent of `openssl req -x509 -key id_rsa -nodes -days N`), reading any certificate in
//! PEM or DER ([`Certificate::parse`]), describing it the way OpenSSL and management portals do
//! ([`CertInfo`]: SHA-1 thumbprint, SHA-256 fingerprint, subject, validity), its state at a given
//! time ([`CertState`]), and deriving the `ssh-rsa` line of its key ([`ssh_public_key_line`]).
//!
//! It is pure domain code: no files, sockets or store, and the time is always passed in. Every
//! signature is made by the project's [`Signer`](crate::keys::Signer) through a small `rcgen`
//! adapter; `rcgen` is built without a crypto backend of its own.

mod create;
mod inspect;
mod ssh;
mod subject;

#[cfg(test)]
mod openssl_tests;

pub use create::{MAX_VALIDITY_DAYS, create_self_signed};
pub use inspect::{CertInfo, Certificate};
pub use ssh::{ssh_public_key, ssh_public_key_line};
pub use subject::Subject;

use crate::keys::KeyError;

/// Seconds in a day, the unit of certificate validity.
pub const SECS_PER_DAY: u64 = 86_400;

/// A certificate's state at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Outside its renewal window.
    Valid,
    /// Inside its renewal window, not yet expired.
    Expiring,
    /// Past `not_after`.
    Expired,
    /// Replaced by a renewal and kept until it expires; decided by the store, never by
    /// [`Certificate::state`].
    Superseded,
}

impl std::fmt::Display for CertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Valid => "valid",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        })
    }
}

/// Why a certificate cannot be made, read or converted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A subject attribute other than CN, O or OU.
    #[error(
        "unknown subject attribute `{attribute}`: use CN, O and OU, e.g. \"CN=web01,O=Example\""
    )]
    UnknownAttribute {
        /// The attribute as written.
        attribute: String,
    },
    /// A subject part without `=`.
    #[error("subject part `{part}` is not ATTRIBUTE=value, e.g. \"CN=web01\"")]
    MalformedSubject {
        /// The part as written.
        part: String,
    },
    /// A subject attribute with nothing after `=`.
    #[error("subject attribute {attribute} has an empty value")]
    EmptyValue {
        /// The attribute.
        attribute: &'static str,
    },
    /// A subject attribute given twice.
    #[error("subject attribute {attribute} is given more than once")]
    DuplicateAttribute {
        /// The attribute.
        attribute: &'static str,
    },
    /// A subject without a common name.
    #[error("the subject needs a common name, e.g. \"CN=web01\"")]
    MissingCommonName,
    /// A validity outside 1 ..= [`MAX_VALIDITY_DAYS`].
    #[error("a validity of {days} days is out of range: use 1 to {max} days (365 is usual)", max = MAX_VALIDITY_DAYS)]
    InvalidDays {
        /// The validity asked for.
        days: u32,
    },
    /// `now` (plus the validity) is not a date a certificate can carry.
    #[error(
        "the time {now} (unix seconds) plus {days} days is outside the dates a certificate can hold"
    )]
    TimeOutOfRange {
        /// The time passed in.
        now: u64,
        /// The validity asked for.
        days: u32,
    },
    /// The key is not RSA.
    #[error("certificates can be issued for RSA keys only; this key is {algorithm}")]
    NotRsa {
        /// The key's SSH algorithm name.
        algorithm: String,
    },
    /// The signer refused or failed.
    #[error("the key could not sign the certificate")]
    Key(#[source] KeyError),
    /// `rcgen` could not assemble the certificate.
    #[error("cannot build the certificate")]
    Build(#[source] rcgen::Error),
    /// The input is neither a PEM certificate nor a DER certificate.
    #[error("not an X.509 certificate (PEM or DER)")]
    NotACertificate(#[source] x509_cert::der::Error),
    /// The input is PEM, but of something else (a key, a request, ...).
    #[error("not an X.509 certificate (PEM or DER): the PEM block is `{label}`, not `CERTIFICATE`")]
    WrongPemLabel {
        /// The PEM label found.
        label: String,
    },
    /// The certificate's key is not RSA, so it has no `ssh-rsa` form.
    #[error(
        "the certificate's public key is {algorithm}, not RSA: only RSA certificates give an ssh-rsa key"
    )]
    NotRsaCertificate {
        /// The key algorithm, as [`CertInfo::key_algorithm`] names it.
        algorithm: String,
    },
    /// The certificate says RSA but its key does not decode.
    #[error("the certificate's RSA public key is malformed")]
    MalformedPublicKey(#[source] x509_cert::der::Error),
    /// A DER or PEM encoding step failed.
    #[error("cannot encode the certificate")]
    Encoding(#[source] x509_cert::der::Error),
    /// The SSH key could not be built or encoded.
    #[error("cannot build the SSH public key")]
    Ssh(#[source] ssh_key::Error),
}
