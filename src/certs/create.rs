//! Issuing a self-signed certificate for an RSA key, as `openssl req -x509 -key id_rsa -nodes
//! -days N` does: X.509 v3, sha256WithRSAEncryption, a random positive serial, subject key
//! identifier (SHA-1 of the PKCS#1 public key, as OpenSSL computes it), authority key identifier,
//! and `basicConstraints = critical, CA:TRUE`, so `openssl verify -CAfile c.pem c.pem` accepts the
//! certificate as its own trust anchor.
//!
//! `rcgen` lays out the certificate; [`RcgenKey`] hands it our [`Signer`] so every signature is
//! made by the project's constant-time RSA code (rcgen is built without a backend of its own).

use std::cell::RefCell;

use rand_core::RngCore;
use sha1::{Digest, Sha1};

use super::{CertError, Certificate, SECS_PER_DAY, Subject};
use crate::keys::{KeyError, Signer};

/// The longest validity accepted, in days (about a hundred years).
pub const MAX_VALIDITY_DAYS: u32 = 36_500;

/// Makes a self-signed certificate for the RSA key in `signer`, valid from `now_unix` for `days`
/// days.
pub fn create_self_signed(
    signer: &Signer,
    subject: &Subject,
    days: u32,
    now_unix: u64,
) -> Result<Certificate, CertError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(CertError::InvalidDays { days });
    }
    if !signer.is_rsa() {
        return Err(CertError::NotRsa {
            algorithm: signer.algorithm(0).to_owned(),
        });
    }
    let key = RcgenKey::new(signer)?;
    let (not_before, not_after) = validity(now_unix, days)?;
    let key_id = Sha1::digest(&key.public).to_vec();

    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    params.distinguished_name = subject.to_distinguished_name();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Without a crypto backend rcgen would write an empty identifier; this is OpenSSL's.
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(key_id);
    params.use_authority_key_identifier_extension = true;

    let built = params
        .self_signed(&key)
        .map_err(|e| match key.take_failure() {
            Some(cause) => CertError::Key(cause),
            None => CertError::Build(e),
        })?;
    Certificate::from_der(built.der().to_vec())
}

/// `not_before = now`, `not_after = now + days`, as OpenSSL sets them.
fn validity(
    now_unix: u64,
    days: u32,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CertError> {
    let out_of_range = || CertError::TimeOutOfRange {
        now: now_unix,
        days,
    };
    let at = |secs: u64| {
        i64::try_from(secs)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or_else(out_of_range)
    };
    let end = now_unix
        .checked_add(u64::from(days) * SECS_PER_DAY)
        .ok_or_else(out_of_range)?;
    let (not_before, not_after) = (at(now_unix)?, at(end)?);
    // GeneralizedTime in a certificate has four year digits.
    if not_after.year() > 9999 {
        return Err(out_of_range());
    }
    Ok((not_before, not_after))
}

/// 16 random bytes, top bit clear (positive) and the next one set (never zero, always 16 bytes).
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// `rcgen`'s view of our [`Signer`]: PKCS#1 public key and RSA-SHA256 signatures.
struct RcgenKey<'a> {
    signer: &'a Signer,
    /// PKCS#1 `RSAPublicKey` DER, which rcgen wraps in the SPKI.
    public: Vec<u8>,
    /// The signer's own error, kept because rcgen's error type cannot carry it.
    failure: RefCell<Option<KeyError>>,
}

impl<'a> RcgenKey<'a> {
    fn new(signer: &'a Signer) -> Result<Self, CertError> {
        Ok(Self {
            signer,
            public: signer.rsa_public_pkcs1_der().map_err(CertError::Key)?,
            failure: RefCell::new(None),
        })
    }

    fn take_failure(&self) -> Option<KeyError> {
        self.failure.borrow_mut().take()
    }
}

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.rsa_pkcs1_sha256(msg).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::OnceLock;

    use ssh_key::private::{KeypairData, RsaKeypair};

    use super::*;

    /// One RSA-2048 key for the whole test binary (generating one costs time).
    pub(in crate::certs) fn test_key() -> &'static KeypairData {
        static KEY: OnceLock<KeypairData> = OnceLock::new();
        KEY.get_or_init(|| {
            KeypairData::Rsa(RsaKeypair::random(&mut rand_core::OsRng, 2048).unwrap())
        })
    }

    pub(in crate::certs) fn test_cert(subject: &str, days: u32, now: u64) -> Certificate {
        let signer = Signer::from_keypair(test_key()).unwrap();
        create_self_signed(&signer, &Subject::parse(subject).unwrap(), days, now).unwrap()
    }

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    #[test]
    fn certificate_carries_subject_validity_and_key_ids() {
        let cert = test_cert("CN=web01,O=Example,OU=Ops", 365, NOW);
        let info = cert.info();
        assert_eq!(info.subject, "CN=web01, O=Example, OU=Ops");
        assert_eq!(info.issuer, info.subject);
        assert_eq!(info.not_before, NOW);
        assert_eq!(info.not_after, NOW + 365 * SECS_PER_DAY);
        assert_eq!(info.key_algorithm, "RSA");
        assert_eq!(info.key_bits, 2048);
        assert_eq!(info.signature_algorithm, "sha256WithRSAEncryption");
        assert_eq!(info.serial_hex.len(), 32);
        let signer = Signer::from_keypair(test_key()).unwrap();
        let ski = Sha1::digest(signer.rsa_public_pkcs1_der().unwrap());
        assert_eq!(cert.subject_key_id(), Some(ski.to_vec()));
    }

    #[test]
    fn subject_round_trips_through_the_certificate() {
        // Renewal re-parses the subject a certificate reports; escapes must survive.
        let subject = Subject::new("a+b\\c")
            .unwrap()
            .with_organization("Acme, Inc.; \"x\" <y>")
            .unwrap()
            .with_organizational_unit("#ops=1")
            .unwrap();
        let signer = Signer::from_keypair(test_key()).unwrap();
        let cert = create_self_signed(&signer, &subject, 1, NOW).unwrap();
        assert_eq!(Subject::parse(&cert.info().subject).unwrap(), subject);
    }

    #[test]
    fn serials_are_random_positive_and_sixteen_bytes() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let serial = random_serial().to_bytes();
            assert_eq!(serial.len(), 16);
            assert_eq!(serial[0] & 0xc0, 0x40, "positive, no leading zero byte");
            assert!(seen.insert(serial));
        }
        let a = test_cert("CN=a", 1, NOW).info().serial_hex;
        let b = test_cert("CN=a", 1, NOW).info().serial_hex;
        assert_ne!(a, b);
    }

    #[test]
    fn validity_bounds_are_enforced() {
        let signer = Signer::from_keypair(test_key()).unwrap();
        let subject = Subject::new("x").unwrap();
        for days in [0, MAX_VALIDITY_DAYS + 1] {
            let err = create_self_signed(&signer, &subject, days, NOW).unwrap_err();
            assert!(matches!(err, CertError::InvalidDays { days: d } if d == days));
            assert!(err.to_string().contains("use 1 to 36500 days"));
        }
        let err = create_self_signed(&signer, &subject, 1, 253_402_300_000).unwrap_err();
        assert!(matches!(err, CertError::TimeOutOfRange { .. }));
        // The longest validity still fits (GeneralizedTime after 2049).
        let long = create_self_signed(&signer, &subject, MAX_VALIDITY_DAYS, NOW).unwrap();
        assert_eq!(
            long.info().not_after,
            NOW + u64::from(MAX_VALIDITY_DAYS) * SECS_PER_DAY
        );
    }

    #[test]
    fn non_rsa_keys_are_refused_by_name() {
        for alg in [
            ssh_key::Algorithm::Ed25519,
            ssh_key::Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
        ] {
            let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, alg).unwrap();
            let signer = Signer::from_keypair(key.key_data()).unwrap();
            let err =
                create_self_signed(&signer, &Subject::new("x").unwrap(), 365, NOW).unwrap_err();
            let CertError::NotRsa { algorithm } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(algorithm, signer.algorithm(0));
            assert!(err.to_string().contains("RSA keys only"));
        }
    }
}
