//! The agent settings that ssh-agent's command line sets: the fingerprint hash of its prompts
//! and logs (`-E`), the provider allow-list (`-P`) and the `-O` options.

use base64ct::{Base64Unpadded, Encoding as _};
use sha2::Digest as _;

/// ssh-agent's default `-P`: libraries under the system library directories.
pub const DEFAULT_ALLOWED_PROVIDERS: &str = "/usr/lib*/*,/usr/local/lib*/*";

/// The hash of fingerprints in confirmation prompts and logs (`-E`), as `ssh-keygen -E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FingerprintHash {
    /// `MD5:aa:bb:...`.
    Md5,
    /// `SHA1:base64`.
    Sha1,
    /// `SHA256:base64` (the default).
    #[default]
    Sha256,
    /// `SHA384:base64`.
    Sha384,
    /// `SHA512:base64`.
    Sha512,
}

impl FingerprintHash {
    /// Parses ssh-agent's `-E` names (case-insensitive, as OpenSSH's digest lookup).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "md5" => Self::Md5,
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha384" => Self::Sha384,
            "sha512" => Self::Sha512,
            _ => return None,
        })
    }

    /// The fingerprint of a public key blob, in `ssh-keygen -l -E` form.
    pub fn fingerprint(self, blob: &[u8]) -> String {
        let (label, digest) = match self {
            Self::Md5 => {
                let hex: Vec<String> = md5::Md5::digest(blob)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                return format!("MD5:{}", hex.join(":"));
            }
            Self::Sha1 => ("SHA1", sha1::Sha1::digest(blob).to_vec()),
            Self::Sha256 => ("SHA256", sha2::Sha256::digest(blob).to_vec()),
            Self::Sha384 => ("SHA384", sha2::Sha384::digest(blob).to_vec()),
            Self::Sha512 => ("SHA512", sha2::Sha512::digest(blob).to_vec()),
        };
        format!("{label}:{}", Base64Unpadded::encode_string(&digest))
    }
}

/// Which provider libraries (PKCS#11, FIDO security keys) the agent may load, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPolicy {
    /// `-P`: comma-separated glob patterns, `!` negating, matched against the library's real
    /// path (OpenSSH's `match_pattern_list`).
    pub allowed: String,
    /// `-O allow-remote-pkcs11`: providers may be named over a forwarded connection too.
    pub allow_remote: bool,
}

impl Default for ProviderPolicy {
    fn default() -> Self {
        Self {
            allowed: DEFAULT_ALLOWED_PROVIDERS.to_owned(),
            allow_remote: false,
        }
    }
}

impl ProviderPolicy {
    /// Whether `path` (already canonical) matches the allow-list: the first negated pattern
    /// that matches refuses, otherwise any positive match allows.
    pub fn allows(&self, path: &str) -> bool {
        crate::agent::pkcs11::allowed(path, &self.allowed)
    }
}

/// Everything ssh-agent's `-E`, `-P` and `-O` flags set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompatOptions {
    /// `-E`.
    pub fingerprint_hash: FingerprintHash,
    /// `-P` and `-O allow-remote-pkcs11`.
    pub providers: ProviderPolicy,
    /// Whether security keys refuse to sign data that is not an SSH message (on unless
    /// `-O no-restrict-websafe`), so a web origin's challenge cannot be signed through the agent.
    pub restrict_websafe: bool,
}

impl CompatOptions {
    /// ssh-agent's defaults.
    pub fn new() -> Self {
        Self {
            restrict_websafe: true,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_patterns_match_as_openssh() {
        let default = ProviderPolicy::default();
        assert!(default.allows("/usr/lib/x86_64-linux-gnu/libykcs11.so"));
        assert!(default.allows("/usr/local/lib64/p.so"));
        assert!(!default.allows("/tmp/evil.so"));
        assert!(!default.allows("/home/u/usr/lib/p.so"));
        let all = ProviderPolicy {
            allowed: "/*".into(),
            allow_remote: false,
        };
        assert!(all.allows("/tmp/sk-dummy.so"));
        let negated = ProviderPolicy {
            allowed: "/usr/lib/*,!/usr/lib/bad*".into(),
            allow_remote: false,
        };
        assert!(negated.allows("/usr/lib/good.so"));
        assert!(!negated.allows("/usr/lib/bad.so"));
        assert!(crate::policy::dest::match_pattern("abc", "a?c"));
        assert!(!crate::policy::dest::match_pattern("ac", "a?c"));
        assert!(crate::policy::dest::match_pattern("", "*"));
    }

    #[test]
    fn fingerprints_use_ssh_keygen_forms() {
        let blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghijklmnopqrstuvwxyz012345";
        assert!(FingerprintHash::Md5.fingerprint(blob).starts_with("MD5:"));
        assert_eq!(FingerprintHash::Md5.fingerprint(blob).len(), 4 + 47);
        assert!(
            FingerprintHash::Sha256
                .fingerprint(blob)
                .starts_with("SHA256:")
        );
        assert_eq!(FingerprintHash::parse("MD5"), Some(FingerprintHash::Md5));
        assert_eq!(FingerprintHash::parse("sha3"), None);
    }
}
