//! PKCS#11 tokens (`ssh-add -s PROVIDER`, `-e`): the provider library is never loaded into the
//! agent. Each provider runs in its own `ssh-pkcs11-helper` process (OpenSSH's helper, the same
//! one `ssh-agent` uses), spoken to over a pipe with the agent protocol: the helper loads the
//! provider with the user's PIN, answers with the token's public keys, and makes raw RSA or
//! ECDSA signatures over digests the agent prepares. A provider is accepted only from a path
//! matching the allow-list (`-P`, OpenSSH's default `/usr/lib*/*,/usr/local/lib*/*`), after
//! resolving symbolic links; requests over bound (forwarded) connections never get here.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::Digest;
use ssh_encoding::{Decode, Encode};
use zeroize::Zeroizing;

use crate::keys::signer::{RSA_SHA2_256, RSA_SHA2_512};
use crate::policy::dest::match_pattern;

/// OpenSSH's default allow-list of provider paths.
pub const DEFAULT_ALLOWLIST: &str = crate::agent::compat::DEFAULT_ALLOWED_PROVIDERS;

/// Where distributions install OpenSSH's helper (Debian and Ubuntu first, then Fedora and
/// RHEL, Arch, macOS with Homebrew's OpenSSH).
pub const HELPERS: &[&str] = &[
    "/usr/lib/openssh/ssh-pkcs11-helper",
    "/usr/libexec/openssh/ssh-pkcs11-helper",
    "/usr/lib/ssh/ssh-pkcs11-helper",
    "/usr/libexec/ssh-pkcs11-helper",
    "/opt/homebrew/libexec/ssh-pkcs11-helper",
    "/usr/local/libexec/ssh-pkcs11-helper",
];

/// The helper to run: `$SSH_PKCS11_HELPER` (as OpenSSH's agent reads it), else the first of
/// [`HELPERS`] that exists.
pub fn default_helper() -> PathBuf {
    std::env::var_os("SSH_PKCS11_HELPER").map_or_else(
        || {
            HELPERS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(HELPERS[0]))
        },
        PathBuf::from,
    )
}

/// `SSH2_AGENTC_SIGN_REQUEST`.
const SIGN_REQUEST: u8 = 13;
/// `SSH_AGENTC_ADD_SMARTCARD_KEY`.
pub const ADD: u8 = 20;
/// `SSH_AGENTC_REMOVE_SMARTCARD_KEY`.
pub const REMOVE: u8 = 21;
/// `SSH_AGENTC_ADD_SMARTCARD_KEY_CONSTRAINED`.
pub const ADD_CONSTRAINED: u8 = 26;

/// The largest helper reply read.
const MAX_REPLY: usize = 256 * 1024;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The provider path does not resolve.
    #[error("provider {0}: {1}")]
    Path(String, #[source] std::io::Error),
    /// The resolved path is not on the allow-list.
    #[error("provider {0} is not on the allow-list ({1})")]
    NotAllowed(String, String),
    /// The provider is loaded already.
    #[error("provider {0} is already loaded")]
    Loaded(String),
    /// The provider is not loaded.
    #[error("provider {0} is not loaded")]
    NotLoaded(String),
    /// The helper could not be run or talked to.
    #[error("ssh-pkcs11-helper: {0}")]
    Helper(#[source] std::io::Error),
    /// The helper refused (wrong PIN, no keys, unusable provider) or answered nonsense.
    #[error("ssh-pkcs11-helper refused: {0}")]
    Refused(&'static str),
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns, `!` negates; a negated match wins.
pub fn allowed(path: &str, list: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if match_pattern(path, negated) {
                return false;
            }
        } else if match_pattern(path, pattern) {
            positive = true;
        }
    }
    positive
}

/// One running helper.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Helper {
    fn spawn(program: &Path) -> Result<Self, TokenError> {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TokenError::Helper)?;
        let stdin = child.stdin.take().ok_or(TokenError::Refused("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or(TokenError::Refused("no stdout"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, TokenError> {
        let len = u32::try_from(request.len()).map_err(|_| TokenError::Refused("too long"))?;
        let mut frame = Zeroizing::new(Vec::with_capacity(4 + request.len()));
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(request);
        self.stdin.write_all(&frame).map_err(TokenError::Helper)?;
        let mut len = [0u8; 4];
        self.stdout
            .read_exact(&mut len)
            .map_err(TokenError::Helper)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_REPLY {
            return Err(TokenError::Refused("bad reply length"));
        }
        let mut reply = vec![0; len];
        self.stdout
            .read_exact(&mut reply)
            .map_err(TokenError::Helper)?;
        Ok(reply)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing its stdin ends the helper; reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token key: its provider's helper signs with it.
pub struct TokenKey {
    helper: Arc<Mutex<Helper>>,
    blob: Vec<u8>,
    kind: TokenKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Rsa,
    Ecdsa(&'static str, usize),
}

/// DER `DigestInfo` prefixes (RFC 8017 §9.2) for SHA-1, SHA-256 and SHA-512.
const SHA1_INFO: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA512_INFO: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

impl TokenKey {
    /// The public key blob.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Signs `data` as an agent sign request with `flags` asks, returning the SSH signature blob.
    pub fn sign(&self, data: &[u8], flags: u32) -> Result<Vec<u8>, TokenError> {
        let (algorithm, input) = match self.kind {
            TokenKind::Rsa => {
                let (algorithm, mut info, digest) = if flags & RSA_SHA2_256 != 0 {
                    (
                        "rsa-sha2-256",
                        SHA256_INFO.to_vec(),
                        sha2::Sha256::digest(data).to_vec(),
                    )
                } else if flags & RSA_SHA2_512 != 0 {
                    (
                        "rsa-sha2-512",
                        SHA512_INFO.to_vec(),
                        sha2::Sha512::digest(data).to_vec(),
                    )
                } else {
                    (
                        "ssh-rsa",
                        SHA1_INFO.to_vec(),
                        sha1::Sha1::digest(data).to_vec(),
                    )
                };
                info.extend_from_slice(&digest);
                (algorithm, info)
            }
            TokenKind::Ecdsa(name, bits) => {
                let digest = match bits {
                    256 => sha2::Sha256::digest(data).to_vec(),
                    384 => sha2::Sha384::digest(data).to_vec(),
                    _ => sha2::Sha512::digest(data).to_vec(),
                };
                (name, digest)
            }
        };
        let mut request = vec![SIGN_REQUEST];
        put(&mut request, &self.blob);
        put(&mut request, &input);
        request.extend_from_slice(&0u32.to_be_bytes());
        let reply = self
            .helper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .call(&request)?;
        let raw = match reply.split_first() {
            Some((&crate::agent::wire::SIGN_RESPONSE, mut rest)) => {
                let raw = Vec::<u8>::decode(&mut rest)
                    .map_err(|_| TokenError::Refused("bad signature"))?;
                if !rest.is_empty() {
                    return Err(TokenError::Refused("bad signature"));
                }
                raw
            }
            _ => return Err(TokenError::Refused("signature refused by the token")),
        };
        let signature = match self.kind {
            TokenKind::Rsa => raw,
            TokenKind::Ecdsa(..) => {
                ecdsa_der_to_ssh(&raw).ok_or(TokenError::Refused("bad ECDSA signature"))?
            }
        };
        let mut out = Vec::new();
        put(&mut out, algorithm.as_bytes());
        put(&mut out, &signature);
        Ok(out)
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let _ = bytes.encode(out);
}

/// Reads one DER element of `tag`, returning its contents and the rest.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// `ECDSA-Sig-Value` (DER `SEQUENCE { r INTEGER, s INTEGER }`) to SSH's `mpint r, mpint s`:
/// DER integers are already minimal two's complement, as mpints are.
fn ecdsa_der_to_ssh(sig: &[u8]) -> Option<Vec<u8>> {
    let (seq, rest) = der(sig, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (r, seq) = der(seq, 0x02)?;
    let (s, seq) = der(seq, 0x02)?;
    if !seq.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    put(&mut out, r);
    put(&mut out, s);
    Some(out)
}

/// A loaded provider: its helper and keys.
struct Provider {
    keys: Vec<Arc<TokenKey>>,
}

/// The providers loaded into the agent, by resolved path.
pub struct Tokens {
    helper: PathBuf,
    allowlist: String,
    providers: Mutex<HashMap<String, Provider>>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new(default_helper(), DEFAULT_ALLOWLIST.into())
    }
}

impl Tokens {
    /// Providers run by `helper`, accepted from paths matching `allowlist`.
    pub fn new(helper: PathBuf, allowlist: String) -> Self {
        Self {
            helper,
            allowlist,
            providers: Mutex::new(HashMap::new()),
        }
    }

    /// The allow-list.
    pub fn allowlist(&self) -> &str {
        &self.allowlist
    }

    fn resolve(&self, provider: &str) -> Result<String, TokenError> {
        let path = std::fs::canonicalize(provider)
            .map_err(|e| TokenError::Path(provider.to_owned(), e))?;
        let path = path.to_string_lossy().into_owned();
        if !allowed(&path, &self.allowlist) {
            return Err(TokenError::NotAllowed(path, self.allowlist.clone()));
        }
        Ok(path)
    }

    /// Loads `provider` with `pin` in a new helper; its keys and their labels.
    pub fn add(
        &self,
        provider: &str,
        pin: &[u8],
    ) -> Result<Vec<(Arc<TokenKey>, String)>, TokenError> {
        let path = self.resolve(provider)?;
        if self.lock().contains_key(&path) {
            return Err(TokenError::Loaded(path));
        }
        let mut helper = Helper::spawn(&self.helper)?;
        let mut request = Zeroizing::new(vec![ADD]);
        put(&mut request, path.as_bytes());
        put(&mut request, pin);
        let reply = helper.call(&request)?;
        let Some((&crate::agent::wire::IDENTITIES_ANSWER, mut r)) = reply.split_first() else {
            return Err(TokenError::Refused(
                "the provider gave no keys (wrong PIN?)",
            ));
        };
        let bad = |_| TokenError::Refused("malformed key list");
        let count = u32::decode(&mut r).map_err(bad)?;
        let helper = Arc::new(Mutex::new(helper));
        let mut keys = Vec::new();
        for _ in 0..count {
            let blob = Vec::<u8>::decode(&mut r).map_err(bad)?;
            let label = String::decode(&mut r).map_err(bad)?;
            let name = String::decode(&mut blob.as_slice()).map_err(bad)?;
            let kind = match name.as_str() {
                "ssh-rsa" => TokenKind::Rsa,
                "ecdsa-sha2-nistp256" => TokenKind::Ecdsa("ecdsa-sha2-nistp256", 256),
                "ecdsa-sha2-nistp384" => TokenKind::Ecdsa("ecdsa-sha2-nistp384", 384),
                "ecdsa-sha2-nistp521" => TokenKind::Ecdsa("ecdsa-sha2-nistp521", 521),
                _ => continue,
            };
            keys.push((
                Arc::new(TokenKey {
                    helper: Arc::clone(&helper),
                    blob,
                    kind,
                }),
                label,
            ));
        }
        if keys.is_empty() {
            return Err(TokenError::Refused("the token has no usable keys"));
        }
        self.lock().insert(
            path,
            Provider {
                keys: keys.iter().map(|(k, _)| Arc::clone(k)).collect(),
            },
        );
        Ok(keys)
    }

    /// Unloads `provider`; the blobs of its keys (to remove from the key ring).
    pub fn remove(&self, provider: &str) -> Result<Vec<Vec<u8>>, TokenError> {
        let path = std::fs::canonicalize(provider).map_or_else(
            |_| provider.to_owned(),
            |p| p.to_string_lossy().into_owned(),
        );
        let removed = self
            .lock()
            .remove(&path)
            .ok_or_else(|| TokenError::NotLoaded(path.clone()))?;
        Ok(removed.keys.iter().map(|k| k.blob.clone()).collect())
    }

    /// The token key with this blob, if a loaded provider has it.
    pub fn find(&self, blob: &[u8]) -> Option<Arc<TokenKey>> {
        self.lock()
            .values()
            .flat_map(|p| p.keys.iter())
            .find(|k| k.blob == blob)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Provider>> {
        self.providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A smartcard message's provider, PIN and what follows (message 26's constraints).
pub type ProviderRequest<'a> = (String, Zeroizing<Vec<u8>>, &'a [u8]);

/// Reads `string provider, string pin` (messages 20 and 21) from `body`, the PIN into memory
/// that is wiped after use; the rest (constraints of message 26) is returned.
pub fn read_provider(body: &[u8]) -> Option<ProviderRequest<'_>> {
    let mut r = body;
    let provider = String::decode(&mut r).ok()?;
    let (len, rest) = r.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (pin, rest) = rest.split_at(len);
    Some((provider, Zeroizing::new(pin.to_vec()), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_as_openssh() {
        for (path, want) in [
            ("/usr/lib/softhsm/libsofthsm2.so", true),
            ("/usr/lib64/opensc-pkcs11.so", true),
            ("/usr/local/lib/x.so", true),
            ("/tmp/libsofthsm2.so", false),
            ("/usr/libexec", false),
        ] {
            assert_eq!(allowed(path, DEFAULT_ALLOWLIST), want, "{path}");
        }
        assert!(!allowed("/usr/lib/bad.so", "/usr/lib*/*,!/usr/lib/bad.so"));
        assert!(allowed("/opt/p.so", "/opt/*"));
    }

    #[test]
    fn ecdsa_signature_conversion() {
        // r = 0x80 (needs a leading zero in both encodings), s = 0x01.
        let der = [0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01];
        assert_eq!(
            ecdsa_der_to_ssh(&der).unwrap(),
            [0, 0, 0, 2, 0x00, 0x80, 0, 0, 0, 1, 0x01]
        );
        assert!(ecdsa_der_to_ssh(&der[..8]).is_none());
        assert!(ecdsa_der_to_ssh(&[0x31, 0x00]).is_none());
    }

    #[test]
    fn provider_message_keeps_the_trailing_constraints() {
        let mut body = Vec::new();
        put(&mut body, b"/usr/lib/p.so");
        put(&mut body, b"1234");
        body.push(2);
        let (provider, pin, rest) = read_provider(&body).unwrap();
        assert_eq!(provider, "/usr/lib/p.so");
        assert_eq!(&pin[..], b"1234");
        assert_eq!(rest, [2]);
        assert!(read_provider(&body[..10]).is_none());
    }
}
