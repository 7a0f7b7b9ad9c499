//! The SSH form of a certificate's key: the `ssh-rsa AAAA... comment` line that VM provisioning
//! writes to `authorized_keys` from a `.pem` or `.cer`, identical to what `ssh-keygen -y -f id_rsa`
//! prints for the private key.

use ssh_key::public::{KeyData, RsaPublicKey};
use ssh_key::{Mpint, PublicKey};

use super::inspect::{key_algorithm_name, rsa_components};
use super::{CertError, Certificate};

/// The certificate's RSA public key as an SSH key (with an empty comment).
pub fn ssh_public_key(cert: &Certificate) -> Result<PublicKey, CertError> {
    let spki = &cert.parsed().tbs_certificate.subject_public_key_info;
    let algorithm = key_algorithm_name(spki);
    if algorithm != "RSA" {
        return Err(CertError::NotRsaCertificate { algorithm });
    }
    let (n, e) = rsa_components(spki).map_err(CertError::MalformedPublicKey)?;
    let rsa = RsaPublicKey {
        e: Mpint::from_positive_bytes(e.as_bytes()).map_err(CertError::Ssh)?,
        n: Mpint::from_positive_bytes(n.as_bytes()).map_err(CertError::Ssh)?,
    };
    Ok(PublicKey::new(KeyData::Rsa(rsa), ""))
}

/// The `ssh-rsa AAAA... comment` line for the certificate in `bytes` (PEM or DER); without a
/// comment when `comment` is empty.
pub fn ssh_public_key_line(bytes: &[u8], comment: &str) -> Result<String, CertError> {
    let mut key = ssh_public_key(&Certificate::parse(bytes)?)?;
    key.set_comment(comment);
    key.to_openssh().map_err(CertError::Ssh)
}

#[cfg(test)]
mod tests {
    use super::super::create::tests::{test_cert, test_key};
    use super::*;

    #[test]
    fn key_from_certificate_equals_the_signing_key() {
        let cert = test_cert("CN=ssh", 1, 1_767_225_600);
        let ssh_key::private::KeypairData::Rsa(pair) = test_key() else {
            unreachable!()
        };
        let expected = PublicKey::new(KeyData::Rsa(pair.public.clone()), "me@host");
        let line = ssh_public_key_line(cert.der(), "me@host").unwrap();
        assert_eq!(line, expected.to_openssh().unwrap());
        let pem_line = ssh_public_key_line(cert.to_pem().unwrap().as_bytes(), "").unwrap();
        assert!(pem_line.starts_with("ssh-rsa AAAA"));
        assert!(!pem_line.ends_with(' '));
        assert_eq!(
            ssh_public_key(&cert).unwrap().key_data(),
            expected.key_data()
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = ssh_public_key_line(b"\x00\x01garbage", "").unwrap_err();
        assert_eq!(err.to_string(), "not an X.509 certificate (PEM or DER)");
    }
}
