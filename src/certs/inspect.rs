//! Reading any X.509 certificate (ours or not, PEM or DER) and describing it as OpenSSL and
//! management portals do: subject, issuer, serial, validity, SHA-1 thumbprint, SHA-256
//! fingerprint, key algorithm and size; and its state at a given time.

use std::fmt::Write as _;

use sha1::{Digest, Sha1};
use sha2::Sha256;
use x509_cert::der::Decode;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString, UintRef};
use x509_cert::der::pem::LineEnding;
use x509_cert::name::Name;

use super::{CertError, CertState, SECS_PER_DAY};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

/// An X.509 certificate, kept as its DER encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    parsed: x509_cert::Certificate,
}

/// What a certificate says about itself, as `openssl x509 -text` and portals show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject in certificate order, e.g. `CN=web01, O=Example`.
    pub subject: String,
    /// Issuer, in the same form.
    pub issuer: String,
    /// Serial number, upper-case hex without colons, as `openssl x509 -serial` prints it.
    pub serial_hex: String,
    /// Start of validity (unix seconds).
    pub not_before: u64,
    /// End of validity (unix seconds).
    pub not_after: u64,
    /// SHA-1 of the DER, upper-case hex without colons: the "thumbprint" portals show.
    pub sha1_thumbprint: String,
    /// SHA-256 of the DER, upper-case hex with colons, as `openssl x509 -fingerprint -sha256`.
    pub sha256_fingerprint: String,
    /// Public key algorithm: `RSA`, `EC (P-256)`, `Ed25519`, `DSA`, or the OID.
    pub key_algorithm: String,
    /// Key size in bits (RSA modulus, EC curve, DSA prime); 0 when unknown.
    pub key_bits: u32,
    /// Signature algorithm, e.g. `sha256WithRSAEncryption`, or the OID.
    pub signature_algorithm: String,
}

impl Certificate {
    /// Parses a certificate from PEM (text around the block is ignored; the first
    /// `CERTIFICATE` block is used) or DER.
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        // The first certificate block (files may bundle a key or a chain), else any block.
        let block = find_pem_block(bytes, b"-----BEGIN CERTIFICATE-----")
            .or_else(|| find_pem_block(bytes, b"-----BEGIN "));
        match block {
            Some(block) => {
                let (label, der) = x509_cert::der::pem::decode_vec(block)
                    .map_err(|e| CertError::NotACertificate(e.into()))?;
                if label != "CERTIFICATE" {
                    return Err(CertError::WrongPemLabel {
                        label: label.to_owned(),
                    });
                }
                Self::from_der(der)
            }
            None => Self::from_der(bytes.to_vec()),
        }
    }

    /// Parses a DER certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self, CertError> {
        let parsed = x509_cert::Certificate::from_der(&der).map_err(CertError::NotACertificate)?;
        Ok(Self { der, parsed })
    }

    /// The DER encoding (what a `.cer` file holds).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding, byte for byte what `openssl x509` writes.
    pub fn to_pem(&self) -> Result<String, CertError> {
        x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, &self.der)
            .map_err(|e| CertError::Encoding(e.into()))
    }

    /// Describes the certificate.
    pub fn info(&self) -> CertInfo {
        let tbs = &self.parsed.tbs_certificate;
        let (key_algorithm, key_bits) = key_description(&tbs.subject_public_key_info);
        CertInfo {
            subject: name_string(&tbs.subject),
            issuer: name_string(&tbs.issuer),
            serial_hex: serial_hex(tbs.serial_number.as_bytes()),
            not_before: self.not_before(),
            not_after: self.not_after(),
            sha1_thumbprint: hex(&Sha1::digest(&self.der), ""),
            sha256_fingerprint: hex(&Sha256::digest(&self.der), ":"),
            key_algorithm,
            key_bits,
            signature_algorithm: oid_name(&self.parsed.signature_algorithm.oid),
        }
    }

    /// Start of validity (unix seconds).
    pub fn not_before(&self) -> u64 {
        let validity = &self.parsed.tbs_certificate.validity;
        validity.not_before.to_unix_duration().as_secs()
    }

    /// End of validity (unix seconds).
    pub fn not_after(&self) -> u64 {
        let validity = &self.parsed.tbs_certificate.validity;
        validity.not_after.to_unix_duration().as_secs()
    }

    /// Whole days until `not_after` (rounded down; negative once expired).
    pub fn days_left(&self, now: u64) -> i64 {
        let left = i128::from(self.not_after()) - i128::from(now);
        let days = left.div_euclid(i128::from(SECS_PER_DAY));
        i64::try_from(days).unwrap_or(if days < 0 { i64::MIN } else { i64::MAX })
    }

    /// The state at `now` with renewal `renew_before_secs` ahead of expiry: expired from
    /// `not_after` on, expiring inside the window, valid before it. Never
    /// [`CertState::Superseded`], which only the store knows.
    pub fn state(&self, now: u64, renew_before_secs: u64) -> CertState {
        let not_after = self.not_after();
        if now >= not_after {
            CertState::Expired
        } else if now >= not_after.saturating_sub(renew_before_secs) {
            CertState::Expiring
        } else {
            CertState::Valid
        }
    }

    /// The subject key identifier extension, if present.
    pub fn subject_key_id(&self) -> Option<Vec<u8>> {
        let extensions = self.parsed.tbs_certificate.extensions.as_ref()?;
        let ext = extensions.iter().find(|e| e.extn_id == SUBJECT_KEY_ID)?;
        let id = OctetString::from_der(ext.extn_value.as_bytes()).ok()?;
        Some(id.as_bytes().to_vec())
    }

    /// The parsed structure, for the other modules of this one.
    pub(super) fn parsed(&self) -> &x509_cert::Certificate {
        &self.parsed
    }
}

/// From the first `begin` to the end of its `-----END ...-----` line, if there is one.
fn find_pem_block<'a>(bytes: &'a [u8], begin: &[u8]) -> Option<&'a [u8]> {
    const END: &[u8] = b"-----END ";
    let start = bytes.windows(begin.len()).position(|w| w == begin)?;
    let rest = &bytes[start..];
    let end = rest.windows(END.len()).position(|w| w == END)?;
    let tail = &rest[end + END.len()..];
    let close = tail.windows(5).position(|w| w == b"-----")?;
    Some(&rest[..end + END.len() + close + 5])
}

/// RDNs in certificate order joined with `, ` (OpenSSL's order; RFC 4514 would reverse it).
fn name_string(name: &Name) -> String {
    let parts: Vec<String> = name.0.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

/// The serial as `openssl x509 -serial` prints it: no sign padding byte, at least two digits.
fn serial_hex(bytes: &[u8]) -> String {
    let trimmed = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    };
    hex(trimmed, "")
}

fn hex(bytes: &[u8], separator: &str) -> String {
    let mut out = String::with_capacity(bytes.len() * (2 + separator.len()));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

fn oid_name(oid: &ObjectIdentifier) -> String {
    const_oid_name(oid).map_or_else(|| oid.to_string(), str::to_owned)
}

fn const_oid_name(oid: &ObjectIdentifier) -> Option<&'static str> {
    x509_cert::der::oid::db::DB.by_oid(oid)
}

/// The key algorithm's name and size.
fn key_description(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> (String, u32) {
    let oid = spki.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        let bits = rsa_components(spki).map_or(0, |(n, _)| bit_len(n.as_bytes()));
        return ("RSA".to_owned(), bits);
    }
    if oid == EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        let (name, bits) = match curve.map(|c| c.to_string()).as_deref() {
            Some("1.2.840.10045.3.1.7") => ("P-256".to_owned(), 256),
            Some("1.3.132.0.34") => ("P-384".to_owned(), 384),
            Some("1.3.132.0.35") => ("P-521".to_owned(), 521),
            Some(other) => (other.to_owned(), 0),
            None => ("unknown curve".to_owned(), 0),
        };
        return (format!("EC ({name})"), bits);
    }
    if oid == DSA {
        let bits = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<Vec<UintRef<'_>>>().ok())
            .and_then(|pqg| pqg.first().map(|p| bit_len(p.as_bytes())))
            .unwrap_or(0);
        return ("DSA".to_owned(), bits);
    }
    match oid.to_string().as_str() {
        "1.3.101.112" => ("Ed25519".to_owned(), 256),
        "1.3.101.113" => ("Ed448".to_owned(), 456),
        _ => (oid_name(&oid), 0),
    }
}

/// The modulus and exponent of an RSA SPKI, or why they do not decode.
pub(super) fn rsa_components(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
) -> Result<(UintRef<'_>, UintRef<'_>), x509_cert::der::Error> {
    let bytes = spki.subject_public_key.as_bytes().ok_or_else(|| {
        x509_cert::der::Error::from(x509_cert::der::ErrorKind::Value {
            tag: x509_cert::der::Tag::BitString,
        })
    })?;
    let fields = Vec::<UintRef<'_>>::from_der(bytes)?;
    match fields.as_slice() {
        [n, e] => Ok((*n, *e)),
        _ => Err(x509_cert::der::ErrorKind::Length {
            tag: x509_cert::der::Tag::Sequence,
        }
        .into()),
    }
}

pub(super) fn key_algorithm_name(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> String {
    key_description(spki).0
}

fn bit_len(be: &[u8]) -> u32 {
    let be = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    let len = u32::try_from(be.len()).unwrap_or(u32::MAX / 8);
    len * 8 - be[0].leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::super::create::tests::test_cert;
    use super::*;

    const NOW: u64 = 1_767_225_600;

    #[test]
    fn parses_its_own_pem_and_der() {
        let cert = test_cert("CN=parse", 30, NOW);
        let pem = cert.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        let with_text = format!("subject=CN = parse\n{pem}trailing notes\n");
        assert_eq!(Certificate::parse(with_text.as_bytes()).unwrap(), cert);
        assert_eq!(Certificate::parse(cert.der()).unwrap(), cert);
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(Certificate::parse(crlf.as_bytes()).unwrap(), cert);
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let bundle = format!("{key}{pem}{pem}");
        assert_eq!(Certificate::parse(bundle.as_bytes()).unwrap(), cert);
    }

    #[test]
    fn fingerprints_have_the_portal_and_openssl_shapes() {
        let info = test_cert("CN=fp", 30, NOW).info();
        assert_eq!(info.sha1_thumbprint.len(), 40);
        assert!(
            info.sha1_thumbprint
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(info.sha256_fingerprint.len(), 32 * 3 - 1);
        assert_eq!(info.sha256_fingerprint.matches(':').count(), 31);
    }

    #[test]
    fn days_left_and_state_follow_the_clock() {
        let cert = test_cert("CN=state", 60, NOW);
        let end = NOW + 60 * SECS_PER_DAY;
        let window = 30 * SECS_PER_DAY;
        assert_eq!(cert.days_left(NOW), 60);
        assert_eq!(cert.days_left(NOW + 1), 59);
        assert_eq!(cert.days_left(end), 0);
        assert_eq!(cert.days_left(end + 1), -1);
        assert_eq!(cert.state(NOW, window), CertState::Valid);
        assert_eq!(cert.state(end - window - 1, window), CertState::Valid);
        assert_eq!(cert.state(end - window, window), CertState::Expiring);
        assert_eq!(cert.state(end - 1, window), CertState::Expiring);
        assert_eq!(cert.state(end, window), CertState::Expired);
        assert_eq!(cert.state(end - 1, u64::MAX), CertState::Expiring);
    }

    #[test]
    fn non_certificates_are_named_as_such() {
        for input in [
            &b""[..],
            b"\x30\x03\x02\x01\x01",
            b"ssh-rsa AAAAB3Nza user@host\n",
        ] {
            let err = Certificate::parse(input).unwrap_err();
            assert!(matches!(err, CertError::NotACertificate(_)), "{err:?}");
            assert_eq!(err.to_string(), "not an X.509 certificate (PEM or DER)");
        }
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = Certificate::parse(key).unwrap_err();
        assert!(matches!(&err, CertError::WrongPemLabel { label } if label == "PRIVATE KEY"));
        assert!(
            err.to_string()
                .starts_with("not an X.509 certificate (PEM or DER)")
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Certificate::parse(broken),
            Err(CertError::NotACertificate(_))
        ));
    }

    #[test]
    fn helpers_format_like_openssl() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(hex(&[0xab, 0x01], ":"), "AB:01");
        assert_eq!(bit_len(&[0x00, 0x01, 0xff]), 9);
        assert_eq!(bit_len(&[]), 0);
    }
}
