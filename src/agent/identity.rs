//! The messages that carry keys, decoded here from their frame rather than by ssh-agent-lib:
//! add identity (17, 25), sign (13) and remove (18).
//!
//! ssh-agent-lib decodes every key and certificate through ssh-key 0.6, which refuses OpenSSH
//! certificates valid "forever" (`invalid time`), would re-encode a certificate (its options and
//! extensions must stay byte for byte what the CA signed), and misreads ECDSA scalars with a
//! leading zero byte. Here a key is named by the exact blob the client sent, a certificate is kept
//! as that blob (see [`crate::keys::cert`]), and the private half is read by
//! [`crate::keys::private`].

use ssh_agent_lib::proto::KeyConstraint;
use ssh_encoding::Decode;
use ssh_key::private::KeypairData;

use crate::keys::{self, KeyError, cert};

/// `SSH2_AGENTC_SIGN_REQUEST`.
pub const SIGN_REQUEST: u8 = 13;
/// `SSH2_AGENTC_ADD_IDENTITY`.
pub const ADD_IDENTITY: u8 = 17;
/// `SSH2_AGENTC_REMOVE_IDENTITY`.
pub const REMOVE_IDENTITY: u8 = 18;
/// `SSH2_AGENTC_ADD_ID_CONSTRAINED`.
pub const ADD_ID_CONSTRAINED: u8 = 25;

/// Why a key-carrying message is refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The message is cut short, has trailing bytes or a field is malformed.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The private key does not decode or cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The certificate does not decode or its CA signature does not verify.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// The certificate certifies another key than the private key sent with it.
    #[error("the certificate does not match the private key sent with it")]
    CertMismatch,
    /// A constraint does not decode.
    #[error("malformed constraint")]
    Constraint(#[source] ssh_agent_lib::proto::Error),
}

/// An identity to add, decoded.
pub struct Add {
    /// The blob clients will name the identity by: the certificate blob as received, or the
    /// plain public key blob.
    pub blob: Vec<u8>,
    /// The plain public key (for a certificate, the certified key).
    pub public: ssh_key::public::KeyData,
    /// The private key (zeroized on drop).
    pub keypair: KeypairData,
    /// The comment.
    pub comment: String,
    /// Whether the identity is an OpenSSH certificate.
    pub certificate: bool,
    /// The constraints, in message order.
    pub constraints: Vec<KeyConstraint>,
}

impl std::fmt::Debug for Add {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Add")
            .field("comment", &self.comment)
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

/// A sign request, borrowed from its frame.
#[derive(Debug)]
pub struct Sign<'a> {
    /// The key (or certificate) blob.
    pub blob: &'a [u8],
    /// The data to sign.
    pub data: &'a [u8],
    /// Flags (RSA hash choice).
    pub flags: u32,
}

/// Decodes an add-identity message (17 or 25, `frame` with its type byte).
pub fn decode_add(frame: &[u8]) -> Result<Add, IdentityError> {
    let (&kind, mut r) = frame
        .split_first()
        .ok_or(IdentityError::Malformed("empty"))?;
    let mut peek = r;
    let name = read_string(&mut peek)?;
    let name = std::str::from_utf8(name).map_err(|_| IdentityError::Malformed("key type"))?;
    let (blob, keypair, certificate) = if cert::is_cert_type(name) {
        r = peek;
        let blob = read_string(&mut r)?;
        let cert = cert::parse(blob, name)?;
        let plain = keys::private::plain_from_cert(&cert, &mut r)?;
        let keypair = keys::private::keypair_from_wire(&plain)?;
        let derived = ssh_key::public::KeyData::try_from(&keypair)
            .map_err(|e| IdentityError::Key(KeyError::Malformed(e)))?;
        if keys::public_blob(&derived)? != cert.plain_blob() {
            return Err(IdentityError::CertMismatch);
        }
        (blob.to_vec(), keypair, true)
    } else {
        let keypair = keys::private::read_keypair(&mut r)?;
        let public = ssh_key::public::KeyData::try_from(&keypair)
            .map_err(|e| IdentityError::Key(KeyError::Malformed(e)))?;
        (keys::public_blob(&public)?, keypair, false)
    };
    let public = ssh_key::public::KeyData::try_from(&keypair)
        .map_err(|e| IdentityError::Key(KeyError::Malformed(e)))?;
    let comment = read_string(&mut r)?;
    let comment = String::from_utf8_lossy(comment).into_owned();
    let mut constraints = Vec::new();
    if kind == ADD_ID_CONSTRAINED {
        while !r.is_empty() {
            constraints.push(KeyConstraint::decode(&mut r).map_err(IdentityError::Constraint)?);
        }
    } else if !r.is_empty() {
        return Err(IdentityError::Malformed("trailing bytes"));
    }
    Ok(Add {
        blob,
        public,
        keypair,
        comment,
        certificate,
        constraints,
    })
}

/// Decodes a sign request (13).
pub fn decode_sign(frame: &[u8]) -> Result<Sign<'_>, IdentityError> {
    let mut r = frame.get(1..).ok_or(IdentityError::Malformed("empty"))?;
    let blob = read_string(&mut r)?;
    let data = read_string(&mut r)?;
    let (flags, rest) = r
        .split_first_chunk::<4>()
        .ok_or(IdentityError::Malformed("truncated"))?;
    if !rest.is_empty() {
        return Err(IdentityError::Malformed("trailing bytes"));
    }
    Ok(Sign {
        blob,
        data,
        flags: u32::from_be_bytes(*flags),
    })
}

/// Decodes a remove-identity message (18): the blob of the key or certificate to remove.
pub fn decode_remove(frame: &[u8]) -> Result<&[u8], IdentityError> {
    let mut r = frame.get(1..).ok_or(IdentityError::Malformed("empty"))?;
    let blob = read_string(&mut r)?;
    if r.is_empty() {
        Ok(blob)
    } else {
        Err(IdentityError::Malformed("trailing bytes"))
    }
}

fn read_string<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], IdentityError> {
    crate::sshbuf::take_string(r).ok_or(IdentityError::Malformed("truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_trailing_frames_are_refused() {
        assert!(decode_sign(&[13, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_sign(&[13, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
        let sign = decode_sign(&[13, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 4]).unwrap();
        assert_eq!((sign.blob, sign.data, sign.flags), (&[7u8][..], &[][..], 4));
        assert!(decode_remove(&[18, 0, 0, 0, 2, 1]).is_err());
        assert_eq!(decode_remove(&[18, 0, 0, 0, 1, 1]).unwrap(), &[1]);
        assert!(decode_add(&[17, 0, 0, 0, 3, b'a', b'b']).is_err());
        assert!(decode_add(&[]).is_err());
    }
}
