//! OpenSSH certificates (`*-cert-v01@openssh.com`, PROTOCOL.certkeys) as the agent needs them.
//!
//! A certificate is kept as the exact wire blob the client sent: it is what clients name the
//! identity by, and re-encoding it could change it (ssh-key 0.6 cannot even decode a certificate
//! valid "forever", `valid_before` = 2^64-1). This module reads only what the agent needs: the
//! certified public key (to pair it with its private half), the validity and the CA signature,
//! which is checked as OpenSSH's agent checks it before accepting the certificate.

use ssh_encoding::Decode;

use crate::sshbuf::put_string;

/// Why a certificate blob is refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The blob ends early or has bytes after its signature.
    #[error("malformed OpenSSH certificate: {0}")]
    Malformed(&'static str),
    /// The key type is not a certificate type keyward knows.
    #[error("unsupported certificate type {0:?}")]
    Unsupported(String),
    /// The certificate's type differs from the one the message names.
    #[error("certificate of type {found:?} where {expected:?} was named")]
    TypeMismatch {
        /// The type the message named.
        expected: String,
        /// The type inside the certificate.
        found: String,
    },
    /// The CA key or signature does not decode, or the signature does not verify.
    #[error("the certificate's CA signature does not verify")]
    Signature(#[source] Option<ssh_key::Error>),
}

/// Certificate key types, the plain type each certifies, and how many public-key fields
/// (strings and mpints) follow the nonce in its blob.
const TYPES: &[(&str, &str, usize)] = &[
    ("ssh-rsa-cert-v01@openssh.com", "ssh-rsa", 2),
    ("ssh-dss-cert-v01@openssh.com", "ssh-dss", 4),
    (
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256",
        2,
    ),
    (
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384",
        2,
    ),
    (
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        "ecdsa-sha2-nistp521",
        2,
    ),
    ("ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519", 1),
    (
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        3,
    ),
    (
        "sk-ssh-ed25519-cert-v01@openssh.com",
        "sk-ssh-ed25519@openssh.com",
        2,
    ),
];

/// The plain key type a certificate type certifies, if `name` is a certificate type.
pub fn plain_type(name: &str) -> Option<&'static str> {
    TYPES.iter().find(|t| t.0 == name).map(|t| t.1)
}

/// Whether `name` is an OpenSSH certificate key type (known or not).
pub fn is_cert_type(name: &str) -> bool {
    name.ends_with("-cert-v01@openssh.com")
}

/// The parts of a certificate the agent uses, borrowed from its blob.
#[derive(Debug)]
pub struct Certificate<'a> {
    /// The whole certificate blob, as received.
    pub blob: &'a [u8],
    /// The certified key's plain type (`ssh-ed25519`, ...).
    pub plain_type: &'static str,
    /// The certified key's public fields, each without its length prefix, in blob order.
    pub public_fields: Vec<&'a [u8]>,
    /// Serial number.
    pub serial: u64,
    /// Key id.
    pub key_id: &'a [u8],
    /// Start of validity (seconds since the epoch).
    pub valid_after: u64,
    /// End of validity (seconds since the epoch; `u64::MAX` is "forever").
    pub valid_before: u64,
}

impl Certificate<'_> {
    /// The certified key's plain public blob (`string type` then its fields), by which its
    /// fingerprint is computed, as OpenSSH does for certificates.
    pub fn plain_blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, self.plain_type.as_bytes());
        for field in &self.public_fields {
            put_string(&mut out, field);
        }
        out
    }
}

/// Parses `blob`, a certificate of whatever type it names, and checks its CA signature.
pub fn parse_any(blob: &[u8]) -> Result<Certificate<'_>, CertError> {
    let mut r = blob;
    let name = read_string(&mut r)?;
    let name = std::str::from_utf8(name).map_err(|_| CertError::Malformed("key type"))?;
    if !is_cert_type(name) {
        return Err(CertError::Unsupported(name.to_owned()));
    }
    parse(blob, name)
}

/// Parses `blob`, which must be a certificate of type `expected`, and checks its CA signature.
pub fn parse<'a>(blob: &'a [u8], expected: &str) -> Result<Certificate<'a>, CertError> {
    let mut r = blob;
    let name = read_string(&mut r)?;
    let name = std::str::from_utf8(name).map_err(|_| CertError::Malformed("key type"))?;
    if name != expected {
        return Err(CertError::TypeMismatch {
            expected: expected.to_owned(),
            found: name.to_owned(),
        });
    }
    let (_, plain_type, fields) = *TYPES
        .iter()
        .find(|t| t.0 == name)
        .ok_or_else(|| CertError::Unsupported(name.to_owned()))?;
    let _nonce = read_string(&mut r)?;
    let public_fields = (0..fields)
        .map(|_| read_string(&mut r))
        .collect::<Result<Vec<_>, _>>()?;
    let serial = read_u64(&mut r)?;
    let _kind = read_u32(&mut r)?;
    let key_id = read_string(&mut r)?;
    let _principals = read_string(&mut r)?;
    let valid_after = read_u64(&mut r)?;
    let valid_before = read_u64(&mut r)?;
    let _critical = read_string(&mut r)?;
    let _extensions = read_string(&mut r)?;
    let _reserved = read_string(&mut r)?;
    let ca = read_string(&mut r)?;
    let signed = &blob[..blob.len() - r.len()];
    let signature = read_string(&mut r)?;
    if !r.is_empty() {
        return Err(CertError::Malformed("trailing bytes"));
    }
    verify(ca, signed, signature)?;
    Ok(Certificate {
        blob,
        plain_type,
        public_fields,
        serial,
        key_id,
        valid_after,
        valid_before,
    })
}

/// Checks the CA's signature over the certificate's signed part.
fn verify(ca: &[u8], signed: &[u8], signature: &[u8]) -> Result<(), CertError> {
    let ca = ssh_key::public::KeyData::decode(&mut &ca[..])
        .map_err(|e| CertError::Signature(Some(e)))?;
    let signature = ssh_key::Signature::decode(&mut &signature[..])
        .map_err(|e| CertError::Signature(Some(e)))?;
    signature::Verifier::verify(&ca, signed, &signature).map_err(|_| CertError::Signature(None))
}

fn read_u32(r: &mut &[u8]) -> Result<u32, CertError> {
    crate::sshbuf::take_u32(r).ok_or(CertError::Malformed("truncated"))
}

fn read_u64(r: &mut &[u8]) -> Result<u64, CertError> {
    crate::sshbuf::take_u64(r).ok_or(CertError::Malformed("truncated"))
}

fn read_string<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], CertError> {
    crate::sshbuf::take_string(r).ok_or(CertError::Malformed("truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cert_type_names_its_plain_type() {
        assert_eq!(
            plain_type("ssh-ed25519-cert-v01@openssh.com"),
            Some("ssh-ed25519")
        );
        assert_eq!(plain_type("ssh-ed25519"), None);
        assert!(is_cert_type("x-cert-v01@openssh.com"));
    }

    #[test]
    fn truncated_and_foreign_blobs_are_refused() {
        assert!(parse(b"", "ssh-ed25519-cert-v01@openssh.com").is_err());
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-ed25519-cert-v01@openssh.com");
        put_string(&mut blob, b"nonce");
        assert!(matches!(
            parse(&blob, "ssh-ed25519-cert-v01@openssh.com"),
            Err(CertError::Malformed(_))
        ));
        assert!(matches!(
            parse(&blob, "ssh-rsa-cert-v01@openssh.com"),
            Err(CertError::TypeMismatch { .. })
        ));
    }
}
