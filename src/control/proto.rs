//! Control messages. Each frame is a big-endian `u32` length and a JSON envelope
//! `{"version": 1, "request": {...}}` / `{"version": 1, "response": {...}}`; a peer speaking
//! another version gets a typed error instead of a misread message.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The protocol version spoken here.
pub const VERSION: u32 = 1;

/// What the CLI asks for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Store and agent status.
    Status,
    /// Unseal the store with its passphrase and serve its keys.
    Unlock {
        /// The store passphrase.
        passphrase: Zeroizing<String>,
    },
    /// Seal the store and stop serving its keys.
    Seal,
    /// Set, change or remove the store passphrase.
    ChangePassphrase {
        /// The current passphrase (empty when the store has none).
        old: Zeroizing<String>,
        /// The new one; `None` removes it.
        new: Option<Zeroizing<String>>,
    },
    /// Generate a key and store it.
    KeyGenerate {
        /// Name (unique in the store).
        name: String,
        /// `rsa`, `ed25519` or `ecdsa`.
        kind: String,
        /// Bits (RSA: 2048, 3072, 4096).
        bits: Option<u32>,
        /// Comment (as `ssh-keygen -C`).
        comment: String,
    },
    /// Store an existing private key, given in unencrypted OpenSSH format (the CLI decrypts).
    KeyImport {
        /// Name (unique in the store).
        name: String,
        /// Comment.
        comment: String,
        /// The private key, OpenSSH format, unencrypted.
        private_openssh: Zeroizing<String>,
    },
    /// All stored keys.
    KeyList,
    /// One key, by name or id.
    KeyShow {
        /// Name or id.
        key: String,
    },
    /// The private key in unencrypted OpenSSH format, for an explicit export.
    KeyPrivate {
        /// Name or id.
        key: String,
    },
    /// Delete a key from the store (and unload it).
    KeyDelete {
        /// Name or id.
        key: String,
    },
    /// Rename a key.
    KeyRename {
        /// Name or id.
        key: String,
        /// The new name.
        new_name: String,
    },
    /// Change a key's comment.
    KeyComment {
        /// Name or id.
        key: String,
        /// The new comment.
        comment: String,
    },
    /// Serve a stored key through the agent again (after `ssh-add -d`).
    KeyLoad {
        /// Name or id.
        key: String,
    },
    /// Add an OpenSSH certificate to a stored key, served beside it.
    KeyCertAdd {
        /// Name or id of the key.
        key: String,
        /// The certificate, as an OpenSSH public key line (`*-cert.pub`).
        certificate: String,
    },
    /// The OpenSSH certificates of one stored key, or of all.
    KeyCertList {
        /// Name or id of the key; `None`: every key's.
        key: Option<String>,
    },
    /// Remove OpenSSH certificates from a stored key.
    KeyCertRemove {
        /// Name or id of the key.
        key: String,
        /// Id (or unique id prefix) of the certificate; `None`: all of the key's.
        cert: Option<String>,
    },
    /// Make a self-signed X.509 certificate from a stored RSA key.
    CertCreate {
        /// Name or id of the key.
        key: String,
        /// `CN=...,O=...,OU=...` (default: `CN=<key name>`).
        subject: Option<String>,
        /// Validity in days.
        days: u32,
    },
    /// Track a certificate made elsewhere (PEM).
    CertImport {
        /// The certificate, PEM.
        pem: String,
    },
    /// Certificates (active ones, or all with superseded and expired).
    CertList {
        /// Include superseded and expired certificates.
        all: bool,
    },
    /// One certificate, by id or unique id prefix.
    CertShow {
        /// Id or prefix.
        cert: String,
    },
    /// Renew a certificate now.
    CertRenew {
        /// Id or prefix.
        cert: String,
    },
    /// Show (`policy: None`) or replace a certificate's renewal policy.
    CertPolicy {
        /// Id or prefix.
        cert: String,
        /// The new policy.
        policy: Option<crate::rotation::RenewalPolicy>,
    },
    /// Active certificates that expire within `within` seconds.
    CertCheck {
        /// The window, in seconds.
        within: u64,
    },
    /// Replace a key's policy (`None` clears it back to the default).
    PolicySet {
        /// Name or id of the key.
        key: String,
        /// The policy.
        policy: Option<crate::policy::Policy>,
    },
    /// A key's policy.
    PolicyShow {
        /// Name or id of the key.
        key: String,
    },
    /// A dry run: what the key's policy decides for this request.
    PolicyTest {
        /// Name or id of the key.
        key: String,
        /// The request.
        probe: PolicyProbe,
    },
    /// Audit records from `since` (sequence number), at most `limit`, optionally of one key.
    AuditRead {
        /// First sequence number.
        since: u64,
        /// At most this many.
        limit: usize,
        /// Only this key (name or id).
        key: Option<String>,
    },
    /// Check the audit trail's hash chain.
    AuditVerify,
    /// `request`, authorised with the store passphrase: privileged requests (private export,
    /// deleting or renaming a key, clearing or loosening a policy, setting a renewal hook or
    /// export target) are refused with [`ErrorKind::PassphraseRequired`] without it. The agent
    /// checks it, slowing wrong guesses as it does failed unlocks.
    Authorized {
        /// The store passphrase.
        passphrase: Zeroizing<String>,
        /// The privileged request.
        request: Box<Request>,
    },
}

/// The request `keyward policy test` asks about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyProbe {
    /// Host key fingerprint (`SHA256:...`) the login goes to.
    pub host: Option<String>,
    /// Requesting executable.
    pub exe: Option<String>,
    /// `login`, or an SSHSIG namespace such as `git`.
    pub purpose: Option<String>,
    /// Requesting uid (default: ours).
    pub uid: Option<u32>,
    /// Whether the request arrives through a forwarded agent.
    pub forwarded: bool,
    /// The hosts (`SHA256:` fingerprints) the agent was forwarded through, in order.
    #[serde(default)]
    pub via: Vec<String>,
    /// Signature algorithm (default `rsa-sha2-256`; `ssh-rsa` is SHA-1).
    pub algorithm: Option<String>,
}

/// One audit record as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditView {
    /// Sequence number.
    pub seq: u64,
    /// When, unix seconds.
    pub at: u64,
    /// When, RFC 3339.
    pub time: String,
    /// The key's name, if it still exists, else its id.
    pub key: Option<String>,
    /// What happened.
    pub action: String,
    /// `allowed`, `refused` or `info`.
    pub outcome: String,
    /// Details (requester, host, purpose, reason, chain).
    pub detail: serde_json::Value,
}

/// A certificate as the CLI shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertView {
    /// Id (32 hex digits).
    pub id: String,
    /// The stored key it certifies (name), if any.
    pub key: Option<String>,
    /// Subject, e.g. `CN=web01, O=Example`.
    pub subject: String,
    /// Serial, upper-case hex.
    pub serial: String,
    /// Start of validity, unix seconds.
    pub not_before: u64,
    /// End of validity, unix seconds.
    pub not_after: u64,
    /// End of validity, RFC 3339 UTC.
    pub expires: String,
    /// Whole days until expiry (negative once expired).
    pub days_left: i64,
    /// `valid`, `expiring`, `expired` or `superseded`.
    pub state: String,
    /// SHA-1 thumbprint, upper-case hex (what management portals show).
    pub sha1_thumbprint: String,
    /// SHA-256 fingerprint, colon-separated upper-case hex.
    pub sha256_fingerprint: String,
    /// `issued` or `imported`.
    pub origin: String,
    /// The certificate that replaced it, if superseded.
    pub superseded_by: Option<String>,
    /// The renewal policy in force.
    pub renewal: crate::rotation::RenewalPolicy,
    /// The certificate, PEM.
    pub pem: String,
}

/// An OpenSSH certificate of a stored key as the CLI shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyCertView {
    /// Id: SHA-256 of the certificate blob, lower-case hex.
    pub id: String,
    /// The stored key it certifies (name).
    pub key: String,
    /// The certificate type (`ssh-ed25519-cert-v01@openssh.com`, ...).
    #[serde(rename = "type")]
    pub cert_type: String,
    /// The certificate's key id.
    pub key_id: String,
    /// Serial number.
    pub serial: u64,
    /// Start of validity, unix seconds.
    pub valid_after: u64,
    /// End of validity, unix seconds (`u64::MAX`: forever).
    pub valid_before: u64,
    /// End of validity, RFC 3339 UTC, or `forever`.
    pub expires: String,
    /// `valid`, `expiring` or `expired`.
    pub state: String,
    /// Whether the agent serves it now (`None` without a running agent).
    pub served: Option<bool>,
    /// The certificate as an OpenSSH public key line, byte for byte what the CA signed.
    pub public: String,
}

/// A stored key as the CLI shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyView {
    /// Id (32 hex digits).
    pub id: String,
    /// Name.
    pub name: String,
    /// Comment.
    pub comment: String,
    /// `RSA`, `ED25519`, `ECDSA`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// Size in bits.
    pub bits: u32,
    /// `SHA256:...`.
    pub sha256: String,
    /// `MD5:aa:bb:...`.
    pub md5: String,
    /// The one-line public key (`ssh-rsa AAAA... comment`).
    pub public: String,
    /// Created, unix seconds.
    pub created_at: u64,
    /// Whether the agent serves it now (unknown when no agent runs).
    pub loaded: Option<bool>,
}

/// Store and agent status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusView {
    /// Whether a daemon answered (false when the CLI opened the store itself).
    pub daemon: bool,
    /// The daemon's pid.
    pub pid: Option<u32>,
    /// Store directory.
    pub store: String,
    /// Whether a passphrase protects the store.
    pub passphrase_set: bool,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Stored keys.
    pub key_count: usize,
    /// Stored certificates.
    pub cert_count: usize,
    /// Schema version.
    pub schema_version: u32,
    /// Keys the agent serves now (stored and `ssh-add`ed).
    pub agent_keys: Option<usize>,
}

/// Error categories a script can act on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such key or certificate.
    NotFound,
    /// Already exists.
    Exists,
    /// The store is sealed.
    Sealed,
    /// Wrong passphrase.
    WrongPassphrase,
    /// The request is privileged: send it again as `authorized` with the store passphrase.
    PassphraseRequired,
    /// The user declined at the confirmation prompt.
    Declined,
    /// The key's policy refuses the signature the request needs.
    Refused,
    /// The agent is locked (`ssh-add -x`): unlock it with `ssh-add -X`.
    Locked,
    /// The request is invalid.
    Invalid,
    /// The daemon runs without a store.
    NoStore,
    /// Protocol version mismatch.
    Version,
    /// Anything else.
    Internal,
}

/// What the daemon answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// Status.
    Status(StatusView),
    /// One key.
    Key(KeyView),
    /// Keys.
    Keys {
        /// The keys.
        keys: Vec<KeyView>,
    },
    /// One certificate.
    Cert(Box<CertView>),
    /// Certificates.
    Certs {
        /// The certificates.
        certs: Vec<CertView>,
    },
    /// OpenSSH certificates of stored keys.
    KeyCerts {
        /// The certificates.
        certs: Vec<KeyCertView>,
    },
    /// A key's policy.
    Policy {
        /// The key's name.
        key: String,
        /// The policy in force.
        policy: crate::policy::Policy,
    },
    /// A policy decision.
    Decision {
        /// Whether the signature would be made.
        allowed: bool,
        /// Whether the user would be asked first.
        confirm: bool,
        /// The rule that refused it.
        rule: Option<String>,
    },
    /// Audit records.
    Audit {
        /// The records, oldest first.
        records: Vec<AuditView>,
    },
    /// Result of an audit verification.
    Verified(crate::audit::Verification),
    /// A private key, OpenSSH format, unencrypted.
    Private {
        /// The key.
        openssh: Zeroizing<String>,
    },
    /// Failure.
    Error {
        /// Category.
        kind: ErrorKind,
        /// A message a person can act on.
        message: String,
    },
}

/// A request with its protocol version.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Protocol version.
    pub version: u32,
    /// The request.
    pub request: Request,
}

/// A response with its protocol version.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// Protocol version.
    pub version: u32,
    /// The response.
    pub response: Response,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let env = RequestEnvelope {
            version: VERSION,
            request: Request::KeyShow { key: "k".into() },
        };
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"request":{"op":"key_show","key":"k"}}"#
        );
        let back: RequestEnvelope = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.request, Request::KeyShow { key } if key == "k"));
        assert!(
            serde_json::from_str::<RequestEnvelope>(r#"{"version":1,"request":{"op":"nope"}}"#)
                .is_err()
        );
    }
}
