//! Key generation: RSA (2048 by default, as `ssh-keygen -t rsa -b 2048`), 3072 and 4096 by
//! aws-lc-rs; Ed25519 and ECDSA P-256 by the `RustCrypto` crates behind `ssh-key`.

use aws_lc_rs::encoding::AsDer;
use rsa::pkcs8::DecodePrivateKey;
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};

use crate::keys::KeyError;

/// A key type and size to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with this many bits (2048, 3072 or 4096).
    Rsa(u32),
    /// Ed25519.
    Ed25519,
    /// ECDSA on NIST P-256.
    EcdsaP256,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self::Rsa(2048)
    }
}

impl KeySpec {
    /// Builds a spec from a type name (`rsa`, `ed25519`, `ecdsa`) and optional bit count, with
    /// `ssh-keygen`'s defaults.
    pub fn parse(kind: &str, bits: Option<u32>) -> Result<Self, KeyError> {
        match (kind.to_ascii_lowercase().as_str(), bits) {
            ("rsa", None) => Ok(Self::Rsa(2048)),
            ("rsa", Some(b @ (2048 | 3072 | 4096))) => Ok(Self::Rsa(b)),
            ("rsa", Some(b)) => Err(KeyError::Unsupported(format!(
                "RSA with {b} bits (choose 2048, 3072 or 4096)"
            ))),
            ("ed25519", None | Some(256)) => Ok(Self::Ed25519),
            ("ecdsa", None | Some(256)) => Ok(Self::EcdsaP256),
            (other, Some(b)) if other == "ed25519" || other == "ecdsa" => Err(
                KeyError::Unsupported(format!("{other} with {b} bits (it has 256)")),
            ),
            (other, _) => Err(KeyError::Unsupported(format!(
                "{other} (choose rsa, ed25519 or ecdsa)"
            ))),
        }
    }
}

/// Generates a new private key with `comment`.
pub fn generate(spec: KeySpec, comment: &str) -> Result<PrivateKey, KeyError> {
    let keypair = match spec {
        KeySpec::Rsa(bits) => KeypairData::Rsa(generate_rsa(bits)?),
        KeySpec::Ed25519 => random(Algorithm::Ed25519)?,
        KeySpec::EcdsaP256 => random(Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        })?,
    };
    PrivateKey::new(keypair, comment).map_err(|e| KeyError::Signing(e.to_string()))
}

fn random(algorithm: Algorithm) -> Result<KeypairData, KeyError> {
    let key = PrivateKey::random(&mut rand_core::OsRng, algorithm)
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    Ok(key.key_data().clone())
}

fn generate_rsa(bits: u32) -> Result<RsaKeypair, KeyError> {
    use aws_lc_rs::rsa::KeySize;
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => return Err(KeyError::Unsupported(format!("RSA with {other} bits"))),
    };
    let pair = aws_lc_rs::rsa::KeyPair::generate(size)
        .map_err(|e| KeyError::Signing(format!("RSA key generation failed: {e}")))?;
    // The PKCS#8 document is a secret: wiped when dropped.
    let pkcs8 = zeroize::Zeroizing::new(
        pair.as_der()
            .map_err(|e| KeyError::Signing(format!("RSA key export failed: {e}")))?
            .as_ref()
            .to_vec(),
    );
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8)
        .map_err(|e| KeyError::RsaRejected(e.to_string()))?;
    RsaKeypair::try_from(&key).map_err(|e| KeyError::RsaRejected(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Signer;

    #[test]
    fn parses_specs_with_ssh_keygen_defaults() {
        assert_eq!(KeySpec::parse("rsa", None).unwrap(), KeySpec::Rsa(2048));
        assert_eq!(
            KeySpec::parse("RSA", Some(4096)).unwrap(),
            KeySpec::Rsa(4096)
        );
        assert_eq!(KeySpec::parse("ed25519", None).unwrap(), KeySpec::Ed25519);
        assert!(KeySpec::parse("rsa", Some(1024)).is_err());
        assert!(KeySpec::parse("dsa", None).is_err());
    }

    #[test]
    fn generated_keys_sign() {
        for spec in [KeySpec::Rsa(2048), KeySpec::Ed25519, KeySpec::EcdsaP256] {
            let key = generate(spec, "me@host").unwrap();
            assert_eq!(key.comment(), "me@host");
            let signer = Signer::from_keypair(key.key_data()).unwrap();
            assert!(!signer.sign(b"x", 2).unwrap().is_empty());
        }
        let KeypairData::Rsa(rsa) = generate(KeySpec::Rsa(2048), "").unwrap().key_data().clone()
        else {
            panic!("not RSA")
        };
        assert_eq!(rsa.public.n.as_positive_bytes().unwrap().len() * 8, 2048);
    }
}
