//! `session-bind@openssh.com`: ssh tells the agent which server (host key) and which SSH session
//! a connection serves, signed by the server. The bindings of one connection are the hops a
//! forwarded agent has travelled; destination policies are checked against them.
//!
//! The message is read here rather than by ssh-agent-lib, whose reader takes only plain host
//! keys: a server may present a host certificate, whose CA signature is verified as it is read
//! (as OpenSSH does), and the session id is verified with the certified key.

use signature::Verifier;
use ssh_encoding::{Decode, Encode, Reader};
use ssh_key::public::KeyData;

use crate::policy::dest::{HostCert, HostKey};

/// At most this many bindings per connection, as in OpenSSH (`AGENT_MAX_SESSION_IDS`).
pub const MAX_BINDINGS: usize = 16;

/// The longest session id accepted, as in OpenSSH (`AGENT_MAX_SID_LEN`).
pub const MAX_SESSION_ID: usize = 128;

/// One verified binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The server's host key (plain or certificate).
    pub host: HostKey,
    /// The SSH session identifier (exchange hash).
    pub session_id: Vec<u8>,
    /// Whether the binding is for agent forwarding rather than authentication.
    pub forwarded: bool,
}

/// Why a binding was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// The message could not be parsed.
    #[error("malformed session-bind message")]
    Malformed,
    /// The session id is longer than any key exchange makes.
    #[error("session id longer than {MAX_SESSION_ID} bytes")]
    SessionIdTooLong,
    /// The host certificate's CA signature does not verify.
    #[error("host certificate signature does not verify")]
    BadCertificate,
    /// The host key's signature over the session id does not verify.
    #[error("session-bind signature does not verify")]
    BadSignature,
    /// The session id is already bound to another host key.
    #[error("session id already bound to a different host key")]
    Conflict,
    /// The connection was bound for authentication, which ends the chain of hops.
    #[error("connection already bound for authentication")]
    AfterAuthentication,
    /// Too many hops.
    #[error("more than {MAX_BINDINGS} session bindings on one connection")]
    TooMany,
}

/// The bindings of one connection, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    hops: Vec<Binding>,
    /// Whether a session-bind was refused on this connection (OpenSSH then refuses
    /// destination-constrained keys on it if nothing was bound).
    failed: bool,
}

/// A parsed, verified `session-bind@openssh.com` body.
struct Bind {
    host: HostKey,
    session_id: Vec<u8>,
    forwarding: bool,
}

/// `SSH2_CERT_TYPE_HOST`.
const CERT_TYPE_HOST: u32 = 2;

fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

fn malformed<E>(_: E) -> BindError {
    BindError::Malformed
}

/// Reads an OpenSSH certificate blob (PROTOCOL.certkeys) and verifies its CA signature. Read
/// here rather than with ssh-key's `Certificate`, which refuses certificates valid "forever"
/// (`valid before` 2^64-1, the default of `ssh-keygen -s`).
fn certificate(blob: &[u8], name: &str) -> Result<(HostKey, KeyData), BindError> {
    let base = name
        .strip_suffix("-cert-v01@openssh.com")
        .ok_or(BindError::Malformed)?;
    let plain = if base.starts_with("sk-") {
        format!("{base}@openssh.com")
    } else {
        base.to_owned()
    };
    let mut r = blob;
    let _name = String::decode(&mut r).map_err(malformed)?;
    let _nonce = Vec::<u8>::decode(&mut r).map_err(malformed)?;
    // The certified key's fields follow, as in a plain key blob of the base algorithm.
    let mut plain_blob = Vec::new();
    plain
        .encode(&mut plain_blob)
        .map_err(|_| BindError::Malformed)?;
    plain_blob.extend_from_slice(r);
    let mut p = plain_blob.as_slice();
    let key = KeyData::decode(&mut p).map_err(malformed)?;
    let _serial = u64::decode(&mut p).map_err(malformed)?;
    let kind = u32::decode(&mut p).map_err(malformed)?;
    let _key_id = String::decode(&mut p).map_err(malformed)?;
    let principals_blob = Vec::<u8>::decode(&mut p).map_err(malformed)?;
    let valid_after = u64::decode(&mut p).map_err(malformed)?;
    let valid_before = u64::decode(&mut p).map_err(malformed)?;
    let critical = Vec::<u8>::decode(&mut p).map_err(malformed)?;
    let _extensions = Vec::<u8>::decode(&mut p).map_err(malformed)?;
    let _reserved = Vec::<u8>::decode(&mut p).map_err(malformed)?;
    let ca_blob = Vec::<u8>::decode(&mut p).map_err(malformed)?;
    let signed_len = blob.len() - p.len();
    let signature_blob = Vec::<u8>::decode(&mut p).map_err(malformed)?;
    if !p.is_empty() {
        return Err(BindError::Malformed);
    }
    let mut principals = Vec::new();
    let mut pr = principals_blob.as_slice();
    while !pr.is_empty() {
        principals.push(String::decode(&mut pr).map_err(malformed)?);
    }
    let ca = KeyData::decode(&mut ca_blob.as_slice()).map_err(malformed)?;
    let signature_algorithm = String::decode(&mut signature_blob.as_slice()).map_err(malformed)?;
    let signature = ssh_key::Signature::decode(&mut signature_blob.as_slice())
        .map_err(|_| BindError::BadCertificate)?;
    ca.verify(&blob[..signed_len], &signature)
        .map_err(|_| BindError::BadCertificate)?;
    let host = HostKey {
        fingerprint: fingerprint(&key),
        blob: blob.to_vec(),
        cert: Some(HostCert {
            ca_fingerprint: fingerprint(&ca),
            host: kind == CERT_TYPE_HOST,
            principals,
            valid_after,
            valid_before,
            critical_options: !critical.is_empty(),
            signature_algorithm,
        }),
    };
    Ok((host, key))
}

/// Reads the host key blob: a plain key, or a certificate whose CA signature verifies.
fn host_key(blob: &[u8]) -> Result<(HostKey, KeyData), BindError> {
    let name = String::decode(&mut &blob[..]).map_err(|_| BindError::Malformed)?;
    if name.ends_with("-cert-v01@openssh.com") {
        certificate(blob, &name)
    } else {
        let mut reader = blob;
        let key = KeyData::decode(&mut reader).map_err(|_| BindError::Malformed)?;
        if !reader.is_empty() {
            return Err(BindError::Malformed);
        }
        Ok((HostKey::plain(&key), key))
    }
}

fn parse(details: &[u8]) -> Result<Bind, BindError> {
    let mut r = details;
    let blob = Vec::<u8>::decode(&mut r).map_err(|_| BindError::Malformed)?;
    let session_id = Vec::<u8>::decode(&mut r).map_err(|_| BindError::Malformed)?;
    let signature = r
        .read_prefixed(ssh_key::Signature::decode)
        .map_err(|_| BindError::Malformed)?;
    let forwarding = u8::decode(&mut r).map_err(|_| BindError::Malformed)?;
    if !r.is_empty() {
        return Err(BindError::Malformed);
    }
    if session_id.len() > MAX_SESSION_ID {
        return Err(BindError::SessionIdTooLong);
    }
    let (host, key) = host_key(&blob)?;
    key.verify(&session_id, &signature)
        .map_err(|_| BindError::BadSignature)?;
    Ok(Bind {
        host,
        session_id,
        forwarding: forwarding != 0,
    })
}

impl Bindings {
    /// Verifies and records a `session-bind@openssh.com` message body.
    pub fn bind(&mut self, details: &ssh_agent_lib::proto::Unparsed) -> Result<(), BindError> {
        let result = self.record(details.as_ref());
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn record(&mut self, details: &[u8]) -> Result<(), BindError> {
        let msg = parse(details)?;
        // As OpenSSH: nothing may follow a binding for authentication, not even a repeat.
        if self.hops.iter().any(|b| !b.forwarded) {
            return Err(BindError::AfterAuthentication);
        }
        if let Some(existing) = self.hops.iter().find(|b| b.session_id == msg.session_id) {
            // Re-binding the same session to the same key is harmless (ssh may repeat it).
            return if existing.host.blob == msg.host.blob {
                Ok(())
            } else {
                Err(BindError::Conflict)
            };
        }
        if self.hops.len() >= MAX_BINDINGS {
            return Err(BindError::TooMany);
        }
        self.hops.push(Binding {
            host: msg.host,
            session_id: msg.session_id,
            forwarded: msg.forwarding,
        });
        Ok(())
    }

    /// Whether a session-bind was refused on this connection.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The recorded hops, oldest first.
    pub fn hops(&self) -> &[Binding] {
        &self.hops
    }

    /// Whether `ssh` bound this connection for agent forwarding: its requests come from another
    /// host.
    pub fn forwarded(&self) -> bool {
        self.hops.iter().any(|h| h.forwarded)
    }
}
