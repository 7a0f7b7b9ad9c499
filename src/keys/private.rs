//! Private keys in the agent's wire form: `string type` and the fields OpenSSH's
//! `sshkey_private_serialize` writes for it, as in an add-identity message.
//!
//! ECDSA keys are read here rather than by ssh-key 0.6, which wants the private scalar in exactly
//! the curve's field size: OpenSSH writes it as a minimal mpint, so every key whose scalar has a
//! leading zero byte (half of all P-521 keys, 1 in 256 of P-256/P-384) failed to decode. The
//! scalar is left-padded, checked by the curve's own crate and matched against the public point.
//!
//! A certificate's private half omits the public fields the certificate already carries: it is
//! rebuilt into the plain form ([`plain_from_cert`]) and read like a plain key.

use ssh_encoding::Decode;
use ssh_key::private::{EcdsaKeypair, KeypairData};
use zeroize::Zeroizing;

use crate::keys::KeyError;
use crate::keys::cert::Certificate;
use crate::sshbuf::put_string;

/// Reads one private key in wire form from the front of `reader`.
pub fn read_keypair(reader: &mut &[u8]) -> Result<KeypairData, KeyError> {
    let mut peek = *reader;
    let name = read_string(&mut peek)?;
    match name {
        b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => {
            let keypair = read_ecdsa(name, &mut peek)?;
            *reader = peek;
            Ok(KeypairData::Ecdsa(keypair))
        }
        _ => KeypairData::decode(reader).map_err(KeyError::Malformed),
    }
}

/// Reads a private key that must fill `bytes` exactly.
pub fn keypair_from_wire(mut bytes: &[u8]) -> Result<KeypairData, KeyError> {
    let keypair = read_keypair(&mut bytes)?;
    if bytes.is_empty() {
        Ok(keypair)
    } else {
        Err(KeyError::Malformed(
            ssh_encoding::Error::TrailingData {
                remaining: bytes.len(),
            }
            .into(),
        ))
    }
}

/// Reads the private half of certificate `cert` from the front of `reader` (the fields after the
/// certificate blob in an add-identity message) and returns the plain key's wire form.
pub fn plain_from_cert(
    cert: &Certificate<'_>,
    reader: &mut &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    // Private fields that follow the certificate, by type (see OpenSSH's *_serialize_private).
    let (public, private): (Vec<&[u8]>, usize) = match cert.plain_type {
        // The plain form has n, e where the certificate has e, n.
        "ssh-rsa" => (vec![cert.public_fields[1], cert.public_fields[0]], 4),
        "ssh-dss" => (cert.public_fields.clone(), 1),
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => {
            (cert.public_fields.clone(), 1)
        }
        // Ed25519 repeats its public key in the private half: pk, sk.
        "ssh-ed25519" => (Vec::new(), 2),
        // application, flags, key handle, reserved after the curve and point.
        "sk-ecdsa-sha2-nistp256@openssh.com" => (cert.public_fields[..2].to_vec(), 4),
        // pk, application, flags, key handle, reserved.
        "sk-ssh-ed25519@openssh.com" => (Vec::new(), 5),
        other => return Err(KeyError::Unsupported(other.to_owned())),
    };
    let start = *reader;
    for i in 0..private {
        let sk_flags = cert.plain_type.starts_with("sk-") && i == private - 3;
        if sk_flags {
            let (_, rest) = reader.split_first().ok_or_else(truncated)?;
            *reader = rest;
        } else {
            read_string(reader)?;
        }
    }
    let private = &start[..start.len() - reader.len()];
    let len = 4 + cert.plain_type.len() + public.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(len + private.len()));
    put_string(&mut out, cert.plain_type.as_bytes());
    for field in public {
        put_string(&mut out, field);
    }
    out.extend_from_slice(private);
    Ok(out)
}

fn read_ecdsa(name: &[u8], reader: &mut &[u8]) -> Result<EcdsaKeypair, KeyError> {
    let curve = read_string(reader)?;
    if !name.ends_with(curve) {
        return Err(KeyError::Invalid("ECDSA curve does not match the key type"));
    }
    let point = read_string(reader)?;
    let scalar = read_string(reader)?;
    let invalid = || KeyError::Invalid("ECDSA private scalar out of range");
    // An mpint: a leading zero only when the top bit is set, and never negative here.
    let digits = &scalar[scalar.iter().take_while(|b| **b == 0).count()..];
    macro_rules! curve {
        ($krate:ident, $size:literal, $variant:ident) => {{
            if digits.len() > $size {
                return Err(invalid());
            }
            let mut padded = Zeroizing::new([0u8; $size]);
            padded[$size - digits.len()..].copy_from_slice(digits);
            let secret = $krate::SecretKey::from_slice(&padded[..]).map_err(|_| invalid())?;
            let public = $krate::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &secret.public_key(),
                false,
            );
            if public.as_bytes() != point {
                return Err(KeyError::Invalid(
                    "ECDSA public key does not match its private key",
                ));
            }
            EcdsaKeypair::$variant {
                public,
                private: secret.into(),
            }
        }};
    }
    Ok(match curve {
        b"nistp256" => curve!(p256, 32, NistP256),
        b"nistp384" => curve!(p384, 48, NistP384),
        b"nistp521" => curve!(p521, 66, NistP521),
        _ => return Err(KeyError::Unsupported("unknown ECDSA curve".into())),
    })
}

fn truncated() -> KeyError {
    KeyError::Malformed(ssh_encoding::Error::Length.into())
}

fn read_string<'a>(reader: &mut &'a [u8]) -> Result<&'a [u8], KeyError> {
    crate::sshbuf::take_string(reader).ok_or_else(truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_encoding::Encode;

    /// Every ECDSA curve, including scalars with leading zero bytes written minimally as
    /// OpenSSH does.
    #[test]
    fn ecdsa_scalars_of_any_length_decode() {
        for curve in [
            ssh_key::EcdsaCurve::NistP256,
            ssh_key::EcdsaCurve::NistP384,
            ssh_key::EcdsaCurve::NistP521,
        ] {
            let mut short = 0;
            for _ in 0..64 {
                let key = EcdsaKeypair::random(&mut rand_core::OsRng, curve).unwrap();
                let private = key.private_key_bytes();
                let digits = &private[private.iter().take_while(|b| **b == 0).count()..];
                short += usize::from(digits.len() < private.len());
                let mut wire = Vec::new();
                format!("ecdsa-sha2-{curve}").encode(&mut wire).unwrap();
                curve.as_str().encode(&mut wire).unwrap();
                key.public_key_bytes().encode(&mut wire).unwrap();
                let mpint = ssh_key::Mpint::from_positive_bytes(digits).unwrap();
                mpint.encode(&mut wire).unwrap();
                let read = keypair_from_wire(&wire).unwrap();
                assert_eq!(read, KeypairData::Ecdsa(key));
            }
            if curve == ssh_key::EcdsaCurve::NistP521 {
                assert!(short > 0, "some P-521 scalars are shorter than 66 bytes");
            }
        }
    }

    #[test]
    fn a_mismatched_public_point_is_refused() {
        let a = EcdsaKeypair::random(&mut rand_core::OsRng, ssh_key::EcdsaCurve::NistP256).unwrap();
        let b = EcdsaKeypair::random(&mut rand_core::OsRng, ssh_key::EcdsaCurve::NistP256).unwrap();
        let mut wire = Vec::new();
        "ecdsa-sha2-nistp256".encode(&mut wire).unwrap();
        "nistp256".encode(&mut wire).unwrap();
        a.public_key_bytes().encode(&mut wire).unwrap();
        ssh_key::Mpint::from_positive_bytes(b.private_key_bytes())
            .unwrap()
            .encode(&mut wire)
            .unwrap();
        assert!(keypair_from_wire(&wire).is_err());
    }
}
