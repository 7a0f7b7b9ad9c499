//! Fingerprints as `ssh-keygen -l` prints them: SHA256 (the default) and the legacy colon-separated
//! MD5 form (`-E md5`) that older clients and portals show.

use md5::{Digest, Md5};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use crate::keys::{KeyError, public_blob};

/// Which hash a fingerprint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FingerprintHash {
    /// `SHA256:base64` (OpenSSH's default).
    #[default]
    Sha256,
    /// `MD5:aa:bb:...` (legacy).
    Md5,
}

impl std::str::FromStr for FingerprintHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" => Ok(Self::Sha256),
            "md5" => Ok(Self::Md5),
            other => Err(format!(
                "unknown fingerprint hash {other:?} (use sha256 or md5)"
            )),
        }
    }
}

/// The fingerprint of `key`, e.g. `SHA256:nThbg6kX...` or `MD5:9f:0e:16:...`.
pub fn fingerprint(key: &KeyData, hash: FingerprintHash) -> Result<String, KeyError> {
    Ok(match hash {
        FingerprintHash::Sha256 => key.fingerprint(HashAlg::Sha256).to_string(),
        FingerprintHash::Md5 => {
            let digest = Md5::digest(public_blob(key)?);
            let hex: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("MD5:{}", hex.join(":"))
        }
    })
}

/// The key size in bits, as `ssh-keygen -l` shows it.
pub fn bits(key: &KeyData) -> u32 {
    match key {
        KeyData::Rsa(rsa) => rsa.n.as_positive_bytes().map_or(0, |n| {
            let lead = n.first().map_or(0, |b| b.leading_zeros());
            u32::try_from(n.len() * 8).unwrap_or(u32::MAX) - lead
        }),
        KeyData::Ecdsa(ec) => match ec.curve() {
            ssh_key::EcdsaCurve::NistP256 => 256,
            ssh_key::EcdsaCurve::NistP384 => 384,
            ssh_key::EcdsaCurve::NistP521 => 521,
        },
        _ => 256,
    }
}

/// The type label `ssh-keygen -l` puts in parentheses.
pub fn type_label(key: &KeyData) -> &'static str {
    match key {
        KeyData::Rsa(_) => "RSA",
        KeyData::Ed25519(_) => "ED25519",
        KeyData::Ecdsa(_) => "ECDSA",
        KeyData::Dsa(_) => "DSA",
        _ => "UNKNOWN",
    }
}

/// The whole `ssh-keygen -l` line: `2048 SHA256:... comment (RSA)`.
pub fn fingerprint_line(key: &PublicKey, hash: FingerprintHash) -> Result<String, KeyError> {
    let comment = if key.comment().is_empty() {
        "no comment"
    } else {
        key.comment()
    };
    Ok(format!(
        "{} {} {} ({})",
        bits(key.key_data()),
        fingerprint(key.key_data(), hash)?,
        comment,
        type_label(key.key_data())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate::{KeySpec, generate};

    fn ssh_keygen_line(path: &std::path::Path, hash: &str) -> String {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-E", hash, "-l", "-f"])
            .arg(path)
            .output()
            .expect("ssh-keygen must be installed (apt-get install openssh-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    #[test]
    fn lines_equal_ssh_keygen_l() {
        let dir = tempfile::tempdir().unwrap();
        for (spec, comment) in [
            (KeySpec::Rsa(2048), "me@host"),
            (KeySpec::Ed25519, ""),
            (KeySpec::EcdsaP256, "two words"),
        ] {
            let key = generate(spec, comment).unwrap();
            let public = key.public_key();
            let path = dir.path().join("k.pub");
            std::fs::write(&path, public.to_openssh().unwrap()).unwrap();
            for (hash, name) in [
                (FingerprintHash::Sha256, "sha256"),
                (FingerprintHash::Md5, "md5"),
            ] {
                assert_eq!(
                    fingerprint_line(public, hash).unwrap(),
                    ssh_keygen_line(&path, name)
                );
            }
        }
        assert_eq!("MD5".parse::<FingerprintHash>(), Ok(FingerprintHash::Md5));
        assert!("sha1".parse::<FingerprintHash>().is_err());
    }
}
