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

fn parse_userauth(data: &[u8]) -> Option<SignedData> {
    let mut r = data;
    let session_id = Vec::<u8>::decode(&mut r).ok()?;
    let kind = u8::decode(&mut r).ok()?;
    if kind != USERAUTH_REQUEST {
        return None;
    }
    let user = String::decode(&mut r).ok()?;
    let service = String::decode(&mut r).ok()?;
    let method = String::decode(&mut r).ok()?;
    if service != "ssh-connection" || !method.starts_with("publickey") {
        return None;
    }
    let has_signature = u8::decode(&mut r).ok()?;
    let _algorithm = String::decode(&mut r).ok()?;
    let _key = Vec::<u8>::decode(&mut r).ok()?;
    let host_key = if method == "publickey-hostbound-v00@openssh.com" {
        Some(Vec::<u8>::decode(&mut r).ok()?)
    } else {
        None
    };
    (has_signature == 1 && r.is_empty()).then_some(SignedData::Userauth {
        session_id,
        user,
        host_key,
    })
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
        put(&mut login, b"keyblob");
        put(&mut login, b"hostkey");
        assert_eq!(
            classify(&login),
            SignedData::Userauth {
                session_id: b"sid".to_vec(),
                user: "root".into(),
                host_key: Some(b"hostkey".to_vec())
            }
        );
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
