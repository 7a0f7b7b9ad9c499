//! The one signer: every private-key operation in keyward goes through [`Signer`].
//!
//! RSA with SHA-2 (`rsa-sha2-256`, `rsa-sha2-512`) is done by aws-lc-rs, whose RSA is constant
//! time and about five times faster than the `rsa` crate (which carries RUSTSEC-2023-0071,
//! "Marvin"). aws-lc-rs offers no PKCS#1 v1.5 *signing* with SHA-1, so the legacy `ssh-rsa`
//! signature, which only old servers ask for, is made by the `rsa` crate with blinding
//! (`sign_with_rng`). Ed25519 and ECDSA use the `RustCrypto` implementations behind `ssh-key`.
//! The private key is parsed once, when the signer is built, never per signature.

use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use ssh_encoding::Encode;
use ssh_key::private::{KeypairData, RsaKeypair};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// Agent sign-request flag asking for an `rsa-sha2-256` signature.
pub const RSA_SHA2_256: u32 = 0x02;
/// Agent sign-request flag asking for an `rsa-sha2-512` signature.
pub const RSA_SHA2_512: u32 = 0x04;

/// Why P-521 keys are refused by the store's import (the agent takes them from `ssh-add`).
pub const P521: &str = "ECDSA P-521 (not supported in the store: use Ed25519, ECDSA P-256/P-384 or RSA, or add it to the agent with ssh-add)";

/// Why a key cannot be used or a signature not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key type is one keyward does not sign with.
    #[error("unsupported key type {0}")]
    Unsupported(String),
    /// The RSA key is malformed or too weak for the constant-time backend.
    #[error("RSA key rejected: {0}")]
    RsaRejected(String),
    /// An encoding step failed.
    #[error("cannot encode key or signature")]
    Encoding(#[source] ssh_encoding::Error),
    /// A private key in wire form does not decode.
    #[error("malformed private key")]
    Malformed(#[source] ssh_key::Error),
    /// The key's parts are inconsistent or out of range.
    #[error("invalid private key: {0}")]
    Invalid(&'static str),
    /// A signing backend reported an error.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Holds one private key, prepared for signing.
pub struct Signer {
    kind: Kind,
}

enum Kind {
    Rsa(Box<RsaSigner>),
    Ed25519(Box<ssh_key::private::Ed25519Keypair>),
    Ecdsa(Box<ssh_key::private::EcdsaKeypair>),
    /// DSA (`ssh-dss`), still offered by OpenSSH 9.2 and used by its tests.
    Dsa(Box<ssh_key::private::DsaKeypair>),
    /// A FIDO security key, signing through its provider in a helper process.
    Sk(Box<crate::keys::sk::SkSigner>),
}

struct RsaSigner {
    /// Constant-time SHA-2 signer.
    fast: aws_lc_rs::rsa::KeyPair,
    /// Blinded SHA-1 signer for legacy `ssh-rsa` only; zeroized on drop by the `rsa` crate.
    legacy: rsa::RsaPrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self.kind {
            Kind::Rsa(_) => "Signer(RSA)",
            Kind::Ed25519(_) => "Signer(Ed25519)",
            Kind::Ecdsa(_) => "Signer(ECDSA)",
            Kind::Dsa(_) => "Signer(DSA)",
            Kind::Sk(_) => "Signer(security key)",
        })
    }
}

impl Signer {
    /// Prepares `keypair` for signing, validating it.
    pub fn from_keypair(keypair: &KeypairData) -> Result<Self, KeyError> {
        let kind = match keypair {
            KeypairData::Rsa(rsa) => Kind::Rsa(Box::new(RsaSigner::new(rsa)?)),
            KeypairData::Ed25519(ed) => Kind::Ed25519(Box::new(ed.clone())),
            // ECDSA keys from the wire are read by `keys::private`, which checks the scalar
            // against the public point (ssh-key 0.6 cannot read short P-521 scalars).
            KeypairData::Ecdsa(ec) => Kind::Ecdsa(Box::new(ec.clone())),
            KeypairData::Dsa(dsa) => {
                // Checked once here (the `dsa` crate validates the group and key), not per
                // signature.
                let _checked = dsa::SigningKey::try_from(dsa)
                    .map_err(|_| KeyError::Invalid("DSA key parameters"))?;
                Kind::Dsa(Box::new(dsa.clone()))
            }
            KeypairData::SkEcdsaSha2NistP256(_) | KeypairData::SkEd25519(_) => {
                return Err(KeyError::Unsupported(
                    "security key without a provider (ssh-add names one)".into(),
                ));
            }
            other => {
                let name = other
                    .algorithm()
                    .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
                return Err(KeyError::Unsupported(name));
            }
        };
        Ok(Self { kind })
    }

    /// A security key that signs through the provider library at `provider` (canonical, allowed).
    pub fn security_key(keypair: &KeypairData, provider: PathBuf) -> Result<Self, KeyError> {
        Ok(Self {
            kind: Kind::Sk(Box::new(crate::keys::sk::SkSigner::new(keypair, provider)?)),
        })
    }

    /// Whether this key signs through a security-key provider.
    pub fn is_security_key(&self) -> bool {
        matches!(self.kind, Kind::Sk(_))
    }

    /// Whether this is an RSA key (the only type whose signature depends on the flags).
    pub fn is_rsa(&self) -> bool {
        matches!(self.kind, Kind::Rsa(_))
    }

    /// The signature algorithm a sign request with `flags` gets, as OpenSSH's agent chooses it:
    /// for RSA, SHA-256 when asked for, else SHA-512 when asked for, else legacy SHA-1.
    pub fn algorithm(&self, flags: u32) -> &'static str {
        match &self.kind {
            Kind::Rsa(_) if flags & RSA_SHA2_256 != 0 => "rsa-sha2-256",
            Kind::Rsa(_) if flags & RSA_SHA2_512 != 0 => "rsa-sha2-512",
            Kind::Rsa(_) => "ssh-rsa",
            Kind::Ed25519(_) => "ssh-ed25519",
            Kind::Ecdsa(ec) => match ec.as_ref() {
                ssh_key::private::EcdsaKeypair::NistP256 { .. } => "ecdsa-sha2-nistp256",
                ssh_key::private::EcdsaKeypair::NistP384 { .. } => "ecdsa-sha2-nistp384",
                ssh_key::private::EcdsaKeypair::NistP521 { .. } => "ecdsa-sha2-nistp521",
            },
            Kind::Dsa(_) => "ssh-dss",
            Kind::Sk(sk) => sk.algorithm(),
        }
    }

    /// Signs `data` and returns the SSH signature blob (`string algorithm, string signature`),
    /// ready to be sent in an agent sign response.
    pub fn sign(&self, data: &[u8], flags: u32) -> Result<Vec<u8>, KeyError> {
        match &self.kind {
            Kind::Rsa(rsa) => {
                let algorithm = self.algorithm(flags);
                let raw = rsa.sign(algorithm, data)?;
                encode_blob(algorithm, &raw)
            }
            Kind::Ed25519(ed) => encode_signature(&try_sign(ed.as_ref(), data)?),
            Kind::Ecdsa(ec) => encode_signature(&try_sign(ec.as_ref(), data)?),
            // A 40-byte r || s blob (RFC 4253 6.6) over SHA-1, deterministic (RFC 6979).
            Kind::Dsa(dsa) => encode_signature(&try_sign(dsa.as_ref(), data)?),
            Kind::Sk(sk) => sk.sign(data),
        }
    }
}

impl Signer {
    /// The private key in SSH wire form (a `KeypairData` encoding), for sealing it while the
    /// agent is locked; [`from_wire`](Self::from_wire) reads it back. The buffer is sized
    /// before writing (no reallocation leaves copies behind) and zeroized on drop, as is every
    /// intermediate.
    pub fn to_wire(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        // Each temporary `KeypairData` zeroizes its private half when dropped.
        let keypair = match &self.kind {
            Kind::Rsa(rsa) => KeypairData::Rsa(rsa.keypair()?),
            Kind::Ed25519(ed) => KeypairData::Ed25519(ed.as_ref().clone()),
            Kind::Ecdsa(ec) => KeypairData::Ecdsa(ec.as_ref().clone()),
            Kind::Dsa(dsa) => KeypairData::Dsa(dsa.as_ref().clone()),
            Kind::Sk(sk) => sk.keypair().clone(),
        };
        // A security key's provider follows its key.
        let provider = match &self.kind {
            Kind::Sk(sk) => Some(sk.provider().as_os_str().as_encoded_bytes()),
            _ => None,
        };
        let len = ssh_encoding::Encode::encoded_len(&keypair).map_err(KeyError::Encoding)?
            + provider.map_or(0, |p| 4 + p.len());
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        keypair.encode(&mut *out).map_err(KeyError::Encoding)?;
        if let Some(provider) = provider {
            provider.encode(&mut *out).map_err(KeyError::Encoding)?;
        }
        Ok(out)
    }

    /// Prepares the key [`to_wire`](Self::to_wire) wrote.
    pub fn from_wire(mut bytes: &[u8]) -> Result<Self, KeyError> {
        let keypair = crate::keys::private::read_keypair(&mut bytes)?;
        if matches!(
            keypair,
            KeypairData::SkEcdsaSha2NistP256(_) | KeypairData::SkEd25519(_)
        ) {
            let provider = <Vec<u8> as ssh_encoding::Decode>::decode(&mut bytes)
                .map_err(|e| KeyError::Malformed(e.into()))?;
            let provider = std::ffi::OsString::from_vec(provider);
            return Self::security_key(&keypair, PathBuf::from(provider));
        }
        if !bytes.is_empty() {
            let trailing = ssh_encoding::Error::TrailingData {
                remaining: bytes.len(),
            };
            return Err(KeyError::Malformed(trailing.into()));
        }
        Self::from_keypair(&keypair)
    }

    /// A raw PKCS#1 v1.5 SHA-256 signature (no SSH framing), for X.509 certificates; RSA only.
    pub fn rsa_pkcs1_sha256(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.kind {
            Kind::Rsa(rsa) => rsa.sign("rsa-sha2-256", data),
            _ => Err(KeyError::Unsupported(self.algorithm(0).to_owned())),
        }
    }

    /// The PKCS#1 `RSAPublicKey` DER of an RSA key (what X.509 wraps in its SPKI); RSA only.
    pub fn rsa_public_pkcs1_der(&self) -> Result<Vec<u8>, KeyError> {
        match &self.kind {
            Kind::Rsa(rsa) => Ok(aws_lc_rs::signature::KeyPair::public_key(&rsa.fast)
                .as_ref()
                .to_vec()),
            _ => Err(KeyError::Unsupported(self.algorithm(0).to_owned())),
        }
    }
}

fn try_sign<S: signature::Signer<ssh_key::Signature>>(
    signer: &S,
    data: &[u8],
) -> Result<ssh_key::Signature, KeyError> {
    signer
        .try_sign(data)
        .map_err(|e| KeyError::Signing(e.to_string()))
}

fn encode_signature(sig: &ssh_key::Signature) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    sig.encode(&mut out).map_err(KeyError::Encoding)?;
    Ok(out)
}

fn encode_blob(algorithm: &str, raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(8 + algorithm.len() + raw.len());
    algorithm.encode(&mut out).map_err(KeyError::Encoding)?;
    raw.encode(&mut out).map_err(KeyError::Encoding)?;
    Ok(out)
}

impl RsaSigner {
    fn new(key: &RsaKeypair) -> Result<Self, KeyError> {
        let int = |m: &ssh_key::Mpint| {
            m.as_positive_bytes()
                .map(rsa::BigUint::from_bytes_be)
                .ok_or_else(|| KeyError::RsaRejected("negative RSA parameter".into()))
        };
        // Built from n, e, d, p, q ourselves: ssh-key 0.6's own conversion passes p twice.
        let legacy = rsa::RsaPrivateKey::from_components(
            int(&key.public.n)?,
            int(&key.public.e)?,
            int(&key.private.d)?,
            vec![int(&key.private.p)?, int(&key.private.q)?],
        )
        .map_err(|e| KeyError::RsaRejected(e.to_string()))?;
        legacy
            .validate()
            .map_err(|e| KeyError::RsaRejected(e.to_string()))?;
        let der = legacy
            .to_pkcs1_der()
            .map_err(|e| KeyError::RsaRejected(e.to_string()))?;
        let der = Zeroizing::new(der.as_bytes().to_vec());
        let fast = aws_lc_rs::rsa::KeyPair::from_der(&der).map_err(|e| {
            KeyError::RsaRejected(format!("{e} (keyward needs RSA keys of 2048 to 8192 bits)"))
        })?;
        Ok(Self { fast, legacy })
    }

    /// The key as ssh-key's type, built from the `rsa` key's parts. Every big-endian copy made
    /// on the way is zeroized; the result zeroizes its private half on drop.
    fn keypair(&self) -> Result<RsaKeypair, KeyError> {
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        let mpint = |n: &rsa::BigUint| {
            let bytes = Zeroizing::new(n.to_bytes_be());
            ssh_key::Mpint::from_positive_bytes(&bytes)
                .map_err(|e| KeyError::RsaRejected(e.to_string()))
        };
        let key = &self.legacy;
        let [p, q] = key.primes() else {
            return Err(KeyError::RsaRejected("not a two-prime RSA key".into()));
        };
        // iqmp = q⁻¹ mod p, which the `rsa` key has precomputed (as a `BigInt`, a type `rsa` does
        // not re-export, hence the closure).
        #[allow(clippy::redundant_closure_for_method_calls)]
        let iqmp = key
            .qinv()
            .and_then(|qinv| qinv.to_biguint())
            .map(Zeroizing::new)
            .ok_or_else(|| KeyError::RsaRejected("RSA key without CRT values".into()))?;
        Ok(RsaKeypair {
            public: ssh_key::public::RsaPublicKey {
                e: mpint(key.e())?,
                n: mpint(key.n())?,
            },
            private: ssh_key::private::RsaPrivateKey {
                d: mpint(key.d())?,
                iqmp: mpint(&iqmp)?,
                p: mpint(p)?,
                q: mpint(q)?,
            },
        })
    }

    fn sign(&self, algorithm: &str, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let encoding: &'static dyn aws_lc_rs::signature::RsaEncoding = match algorithm {
            "rsa-sha2-256" => &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            "rsa-sha2-512" => &aws_lc_rs::signature::RSA_PKCS1_SHA512,
            _ => {
                let signer = SigningKey::<sha1::Sha1>::new(self.legacy.clone());
                let sig = signer
                    .try_sign_with_rng(&mut rand_core::OsRng, data)
                    .map_err(|e| KeyError::Signing(e.to_string()))?;
                return Ok(sig.to_vec());
            }
        };
        let mut sig = vec![0; self.fast.public_modulus_len()];
        self.fast
            .sign(
                encoding,
                &aws_lc_rs::rand::SystemRandom::new(),
                data,
                &mut sig,
            )
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;
    use ssh_encoding::Decode;
    use ssh_key::{HashAlg, PrivateKey, public::KeyData};

    fn rsa_key() -> PrivateKey {
        let kp = RsaKeypair::random(&mut rand_core::OsRng, 2048).unwrap();
        PrivateKey::new(KeypairData::Rsa(kp), "test").unwrap()
    }

    fn verify(public: &KeyData, data: &[u8], blob: &[u8]) -> String {
        let sig = ssh_key::Signature::decode(&mut &blob[..]).unwrap();
        public.verify(data, &sig).unwrap();
        sig.algorithm().to_string()
    }

    #[test]
    fn rsa_sha2_signatures_verify_and_name_their_algorithm() {
        let key = rsa_key();
        let signer = Signer::from_keypair(key.key_data()).unwrap();
        for (flags, name) in [
            (RSA_SHA2_256, "rsa-sha2-256"),
            (RSA_SHA2_512, "rsa-sha2-512"),
        ] {
            let blob = signer.sign(b"hello", flags).unwrap();
            assert_eq!(verify(key.public_key().key_data(), b"hello", &blob), name);
        }
    }

    #[test]
    fn legacy_sha1_signature_is_pkcs1_v15_over_sha1() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        let key = rsa_key();
        let signer = Signer::from_keypair(key.key_data()).unwrap();
        let blob = signer.sign(b"hello", 0).unwrap();
        let mut reader = &blob[..];
        assert_eq!(String::decode(&mut reader).unwrap(), "ssh-rsa");
        let raw = Vec::<u8>::decode(&mut reader).unwrap();
        let KeypairData::Rsa(kp) = key.key_data() else {
            unreachable!()
        };
        let public = rsa::RsaPublicKey::try_from(&kp.public).unwrap();
        let sig = Signature::try_from(raw.as_slice()).unwrap();
        VerifyingKey::<sha1::Sha1>::new(public)
            .verify(b"hello", &sig)
            .unwrap();
    }

    #[test]
    fn ed25519_and_ecdsa_sign() {
        for alg in [
            ssh_key::Algorithm::Ed25519,
            ssh_key::Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
        ] {
            let key = PrivateKey::random(&mut rand_core::OsRng, alg).unwrap();
            let signer = Signer::from_keypair(key.key_data()).unwrap();
            let blob = signer.sign(b"data", RSA_SHA2_512).unwrap();
            let name = verify(key.public_key().key_data(), b"data", &blob);
            assert_eq!(name, signer.algorithm(0));
            let _ = key.fingerprint(HashAlg::Sha256);
        }
    }

    #[test]
    fn raw_rsa_signature_and_pkcs1_public_key() {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        let key = rsa_key();
        let signer = Signer::from_keypair(key.key_data()).unwrap();
        let public =
            rsa::RsaPublicKey::from_pkcs1_der(&signer.rsa_public_pkcs1_der().unwrap()).unwrap();
        let sig = signer.rsa_pkcs1_sha256(b"tbs").unwrap();
        let sig = Signature::try_from(sig.as_slice()).unwrap();
        VerifyingKey::<sha2::Sha256>::new(public)
            .verify(b"tbs", &sig)
            .unwrap();
        let ed = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let ed = Signer::from_keypair(ed.key_data()).unwrap();
        assert!(ed.rsa_pkcs1_sha256(b"x").is_err());
    }

    #[test]
    fn every_key_type_survives_the_wire_form() {
        let rsa = rsa_key();
        for key in [
            rsa,
            PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap(),
            PrivateKey::random(
                &mut rand_core::OsRng,
                ssh_key::Algorithm::Ecdsa {
                    curve: ssh_key::EcdsaCurve::NistP256,
                },
            )
            .unwrap(),
        ] {
            let signer = Signer::from_keypair(key.key_data()).unwrap();
            let wire = signer.to_wire().unwrap();
            assert_eq!(
                wire.len(),
                wire.capacity(),
                "no spare copy from a reallocation"
            );
            let mut expected = Vec::new();
            key.key_data().encode(&mut expected).unwrap();
            assert_eq!(
                wire.as_slice(),
                expected.as_slice(),
                "{:?}",
                key.algorithm()
            );
            let again = Signer::from_wire(&wire).unwrap();
            let blob = again.sign(b"data", RSA_SHA2_256).unwrap();
            verify(key.public_key().key_data(), b"data", &blob);
        }
        assert!(Signer::from_wire(b"garbage").is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = rsa_key();
        let signer = Signer::from_keypair(key.key_data()).unwrap();
        assert_eq!(format!("{signer:?}"), "Signer(RSA)");
    }
}
