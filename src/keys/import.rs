//! Reading private keys from the formats users have: OpenSSH (`-----BEGIN OPENSSH PRIVATE
//! KEY-----`, passphrase-encrypted too), PKCS#1 (`RSA PRIVATE KEY`), PKCS#8 (`PRIVATE KEY` and
//! `ENCRYPTED PRIVATE KEY`: RSA, Ed25519, P-256) and SEC1 (`EC PRIVATE KEY`, P-256).

use base64ct::Encoding as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use ssh_key::PrivateKey;
use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The key is encrypted and no passphrase was given.
    #[error("the key is encrypted: a passphrase is needed")]
    NeedsPassphrase,
    /// The passphrase does not decrypt the key.
    #[error("wrong passphrase (or corrupt key)")]
    WrongPassphrase,
    /// Legacy OpenSSL-encrypted PEM (`Proc-Type: 4,ENCRYPTED`).
    #[error(
        "legacy encrypted PEM is not supported: convert it with `ssh-keygen -p -f FILE` (OpenSSH format) first"
    )]
    LegacyEncryptedPem,
    /// A key type keyward does not use.
    #[error("unsupported key type {0}")]
    Unsupported(&'static str),
    /// Nothing we recognise.
    #[error("not a private key in a known format (OpenSSH, PKCS#1 or PKCS#8 PEM, SEC1 EC PEM)")]
    Unrecognized,
    /// Recognised but malformed.
    #[error("malformed {format} key: {reason}")]
    Malformed {
        /// Which format it claimed to be.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn malformed(format: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ImportError {
    move |e| ImportError::Malformed {
        format,
        reason: e.to_string(),
    }
}

/// Whether `text` holds an encrypted private key that needs a passphrase.
pub fn is_encrypted(text: &str) -> bool {
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return PrivateKey::from_openssh(text).is_ok_and(|k| k.is_encrypted());
    }
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
}

/// Parses a private key; `passphrase` is used only if the key is encrypted. A comment found in
/// the file (OpenSSH format) is kept; PEM formats have none.
pub fn parse_private_key(text: &str, passphrase: Option<&[u8]>) -> Result<PrivateKey, ImportError> {
    let key = parse_any(text, passphrase)?;
    // DSA signs with SHA-1 only, which store policies treat as legacy: the agent takes DSA keys
    // from ssh-add (OpenSSH 9.2 still offers them), the store does not.
    if matches!(key.key_data(), KeypairData::Dsa(_)) {
        return Err(ImportError::Unsupported(DSA));
    }
    Ok(key)
}

/// Why DSA keys are refused.
const DSA: &str = "DSA (not supported in the store: use Ed25519, ECDSA or RSA, or add it to the agent with ssh-add)";

fn parse_any(text: &str, passphrase: Option<&[u8]>) -> Result<PrivateKey, ImportError> {
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(ImportError::LegacyEncryptedPem);
    }
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        if is_openssh_p521(text) {
            return Err(ImportError::Unsupported(crate::keys::signer::P521));
        }
        let key = PrivateKey::from_openssh(text).map_err(|e| malformed("OpenSSH")(&e))?;
        if !key.is_encrypted() {
            return Ok(key);
        }
        let passphrase = passphrase.ok_or(ImportError::NeedsPassphrase)?;
        return key
            .decrypt(passphrase)
            .map_err(|_| ImportError::WrongPassphrase);
    }
    let keypair = if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| malformed("PKCS#1")(&e))?;
        rsa_keypair(&key)?
    } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let passphrase = passphrase.ok_or(ImportError::NeedsPassphrase)?;
        let (label, doc) = pkcs8::SecretDocument::from_pem(text.trim())
            .map_err(|e| malformed("encrypted PKCS#8")(&e))?;
        debug_assert_eq!(label, "ENCRYPTED PRIVATE KEY");
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| malformed("encrypted PKCS#8")(&e))?;
        let plain = info
            .decrypt(passphrase)
            .map_err(|_| ImportError::WrongPassphrase)?;
        pkcs8_keypair(plain.as_bytes())?
    } else if text.contains("-----BEGIN PRIVATE KEY-----") {
        let (_, doc) =
            pkcs8::SecretDocument::from_pem(text.trim()).map_err(|e| malformed("PKCS#8")(&e))?;
        pkcs8_keypair(doc.as_bytes())?
    } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        let secret = p256::SecretKey::from_sec1_pem(text).map_err(|e| malformed("SEC1 EC")(&e))?;
        p256_keypair(&secret)
    } else {
        return Err(ImportError::Unrecognized);
    };
    PrivateKey::new(keypair, "").map_err(|e| malformed("private")(&e))
}

/// Whether an OpenSSH private key file holds a P-521 key (its public key names the curve in
/// clear, even when the private part is encrypted).
fn is_openssh_p521(text: &str) -> bool {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64ct::Base64::decode_vec(&body)
        .is_ok_and(|bytes| bytes.windows(8).any(|w| w == b"nistp521"))
}

fn rsa_keypair(key: &rsa::RsaPrivateKey) -> Result<KeypairData, ImportError> {
    key.validate().map_err(|e| malformed("RSA")(&e))?;
    Ok(KeypairData::Rsa(
        RsaKeypair::try_from(key).map_err(|e| malformed("RSA")(&e))?,
    ))
}

fn p256_keypair(secret: &p256::SecretKey) -> KeypairData {
    let public = secret.public_key().to_encoded_point(false);
    KeypairData::Ecdsa(EcdsaKeypair::NistP256 {
        public,
        private: secret.clone().into(),
    })
}

/// A decrypted PKCS#8 `PrivateKeyInfo`: RSA, Ed25519 or P-256.
fn pkcs8_keypair(der: &[u8]) -> Result<KeypairData, ImportError> {
    if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
        return rsa_keypair(&key);
    }
    if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
        return Ok(KeypairData::Ed25519(Ed25519Keypair::from(&key)));
    }
    if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(p256_keypair(&key));
    }
    Err(ImportError::Malformed {
        format: "PKCS#8",
        reason: "not an RSA, Ed25519 or P-256 key".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(cmd: &mut Command) {
        let out = cmd
            .output()
            .expect("openssh-client and openssl must be installed");
        assert!(
            out.status.success(),
            "{:?}: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A key made by the real tools, in every format we accept, must import to the same public key.
    #[test]
    fn imports_what_ssh_keygen_and_openssl_write() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = d.join("id_rsa");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "c"])
            .arg("-f")
            .arg(&key));
        let public = std::fs::read_to_string(d.join("id_rsa.pub")).unwrap();
        let public = ssh_key::PublicKey::from_openssh(&public).unwrap();
        let openssh = std::fs::read_to_string(&key).unwrap();
        assert_eq!(
            parse_private_key(&openssh, None).unwrap().public_key(),
            &public
        );

        run(Command::new("ssh-keygen")
            .args(["-q", "-p", "-N", "pw", "-P", ""])
            .arg("-f")
            .arg(&key));
        let encrypted = std::fs::read_to_string(&key).unwrap();
        assert!(is_encrypted(&encrypted));
        assert!(matches!(
            parse_private_key(&encrypted, None),
            Err(ImportError::NeedsPassphrase)
        ));
        assert!(matches!(
            parse_private_key(&encrypted, Some(b"no")),
            Err(ImportError::WrongPassphrase)
        ));
        assert_eq!(
            parse_private_key(&encrypted, Some(b"pw"))
                .unwrap()
                .public_key()
                .key_data(),
            public.key_data()
        );

        run(Command::new("ssh-keygen")
            .args(["-q", "-p", "-m", "PEM", "-N", "", "-P", "pw"])
            .arg("-f")
            .arg(&key));
        let pkcs1 = std::fs::read_to_string(&key).unwrap();
        assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
        assert_eq!(
            parse_private_key(&pkcs1, None)
                .unwrap()
                .public_key()
                .key_data(),
            public.key_data()
        );

        let p8 = d.join("p8.pem");
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&p8));
        let pkcs8 = std::fs::read_to_string(&p8).unwrap();
        assert_eq!(
            parse_private_key(&pkcs8, None)
                .unwrap()
                .public_key()
                .key_data(),
            public.key_data()
        );

        run(Command::new("openssl")
            .args([
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-passout",
                "pass:pw",
                "-in",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&p8));
        let enc8 = std::fs::read_to_string(&p8).unwrap();
        assert!(is_encrypted(&enc8));
        assert_eq!(
            parse_private_key(&enc8, Some(b"pw"))
                .unwrap()
                .public_key()
                .key_data(),
            public.key_data()
        );
        assert!(matches!(
            parse_private_key(&enc8, Some(b"x")),
            Err(ImportError::WrongPassphrase)
        ));
    }

    #[test]
    fn imports_ed25519_and_ec_pem_from_openssl() {
        let dir = tempfile::tempdir().unwrap();
        for (alg, file) in [("ed25519", "ed.pem"), ("EC", "ec.pem")] {
            let path = dir.path().join(file);
            let mut cmd = Command::new("openssl");
            cmd.args(["genpkey", "-algorithm", alg]);
            if alg == "EC" {
                cmd.args(["-pkeyopt", "ec_paramgen_curve:P-256"]);
            }
            run(cmd.arg("-out").arg(&path));
            let text = std::fs::read_to_string(&path).unwrap();
            let key = parse_private_key(&text, None).unwrap();
            crate::keys::Signer::from_keypair(key.key_data()).unwrap();
        }
    }

    #[test]
    fn refuses_p521_whatever_its_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-b", "521", "-N", ""])
            .arg("-f")
            .arg(&key));
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(matches!(
            parse_private_key(&text, None),
            Err(ImportError::Unsupported(_))
        ));
    }

    #[test]
    fn refuses_dsa_for_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "dsa", "-N", ""])
            .arg("-f")
            .arg(&key));
        let text = std::fs::read_to_string(&key).unwrap();
        let err = parse_private_key(&text, None).unwrap_err();
        assert!(err.to_string().contains("DSA"), "{err}");
    }

    #[test]
    fn rejects_garbage_clearly() {
        assert!(matches!(
            parse_private_key("hello", None),
            Err(ImportError::Unrecognized)
        ));
        let broken =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(matches!(
            parse_private_key(broken, None),
            Err(ImportError::Malformed { .. })
        ));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n";
        assert!(matches!(
            parse_private_key(legacy, None),
            Err(ImportError::LegacyEncryptedPem)
        ));
    }
}
