//! What a signature is for, read from the data the client asks the agent to sign:
//! an SSH user-authentication request (RFC 4252 §7, a login) or an `SSHSIG` blob
//! (`ssh-keygen -Y sign`, PROTOCOL.sshsig), with the namespace.

use ssh_encoding::Decode;

/// The kind of data in a sign request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedData {
    /// A login: the session it belongs to, and (for `publickey-hostbound-v00@openssh.com`) the
    /// server's host key blob.
    Userauth {
        /// The session identifier.
        session_id: Vec<u8>,
        /// The user name.
        user: String,
        /// The host key the client bound the request to, if hostbound.
        host_key: Option<Vec<u8>>,
        /// The blob of the key the request authenticates with.
        key: Vec<u8>,
    },
    /// `ssh-keygen -Y sign -n NAMESPACE`.
    Sshsig {
        /// The namespace.
        namespace: String,
    },
    /// An X.509 certificate keyward issues with the key (`cert create`, renewals): never read
    /// from a client's data, only made by the service.
    X509 {
        /// The certificate's subject.
        subject: String,
    },
    /// Anything else.
    Other,
}

/// `SSH_MSG_USERAUTH_REQUEST`.
const USERAUTH_REQUEST: u8 = 50;

/// Classifies `data`.
pub fn classify(data: &[u8]) -> SignedData {
    if let Some(rest) = data.strip_prefix(b"SSHSIG") {
        let mut reader = rest;
        if let Ok(namespace) = String::decode(&mut reader) {
            return SignedData::Sshsig { namespace };
        }
        return SignedData::Other;
    }
    parse_userauth(data).unwrap_or(SignedData::Other)
}

/// Read as OpenSSH's agent reads a login (`parse_userauth_request`): a non-empty session id,
/// a `publickey` or `publickey-hostbound-v00@openssh.com` request for `ssh-connection` with a
/// signature following, whose algorithm is of the key's type, and nothing after it.
fn parse_userauth(data: &[u8]) -> Option<SignedData> {
    let mut r = data;
    let session_id = Vec::<u8>::decode(&mut r).ok()?;
    let kind = u8::decode(&mut r).ok()?;
    if kind != USERAUTH_REQUEST || session_id.is_empty() {
        return None;
    }
    let user = String::decode(&mut r).ok()?;
    let service = String::decode(&mut r).ok()?;
    let method = String::decode(&mut r).ok()?;
    let has_signature = u8::decode(&mut r).ok()?;
    let algorithm = String::decode(&mut r).ok()?;
    let key = Vec::<u8>::decode(&mut r).ok()?;
    let key_type = String::decode(&mut key.as_slice()).ok()?;
    if service != "ssh-connection"
        || has_signature != 1
        || key_family(&algorithm) != key_family(&key_type)
    {
        return None;
    }
    let host_key = match method.as_str() {
        "publickey-hostbound-v00@openssh.com" => Some(Vec::<u8>::decode(&mut r).ok()?),
        "publickey" => None,
        _ => return None,
    };
    r.is_empty().then_some(SignedData::Userauth {
        session_id,
        user,
        host_key,
        key,
    })
}

/// The key type a signature algorithm or key type name stands for (OpenSSH's
/// `sshkey_type_from_name`): RSA's SHA-2 algorithms are RSA keys, every ECDSA curve one type.
fn key_family(name: &str) -> (&str, bool) {
    let (base, cert) = match name.strip_suffix("-cert-v01@openssh.com") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let family = match base {
        "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512" => "rsa",
        b if b.starts_with("ecdsa-sha2-") => "ecdsa",
        b => b,
    };
    (family, cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_encoding::Encode;

    fn put(out: &mut Vec<u8>, s: &[u8]) {
        s.encode(out).unwrap();
    }

    #[test]
    fn recognises_logins_sshsig_and_other_data() {
        let mut login = Vec::new();
        put(&mut login, b"sid");
        login.push(50);
        for s in [
            &b"root"[..],
            b"ssh-connection",
            b"publickey-hostbound-v00@openssh.com",
        ] {
            put(&mut login, s);
        }
        login.push(1);
        put(&mut login, b"rsa-sha2-256");
        let mut key = Vec::new();
        put(&mut key, b"ssh-rsa");
        put(&mut key, b"e and n");
        put(&mut login, &key);
        put(&mut login, b"hostkey");
        assert_eq!(
            classify(&login),
            SignedData::Userauth {
                session_id: b"sid".to_vec(),
                user: "root".into(),
                host_key: Some(b"hostkey".to_vec()),
                key: key.clone(),
            }
        );
        // An algorithm of another key type is not a login with this key.
        let wrong = [&login[..], &[]].concat();
        let at = wrong
            .windows(12)
            .position(|w| w == b"rsa-sha2-256")
            .unwrap();
        let mut wrong = wrong;
        wrong[at..at + 12].copy_from_slice(b"ssh-ed25519x");
        assert_eq!(classify(&wrong), SignedData::Other);
        let mut sig = b"SSHSIG".to_vec();
        put(&mut sig, b"git");
        put(&mut sig, b"");
        assert_eq!(
            classify(&sig),
            SignedData::Sshsig {
                namespace: "git".into()
            }
        );
        assert_eq!(classify(b"random bytes"), SignedData::Other);
        login.push(0);
        assert_eq!(classify(&login), SignedData::Other, "trailing bytes");
    }
}
