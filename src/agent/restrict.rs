//! Reads the `restrict-destination-v00@openssh.com` key constraint (`ssh-add -h`, PROTOCOL.agent
//! §2) into [`Destinations`], accepting exactly what OpenSSH's agent accepts
//! (`parse_dest_constraint`): a `from` side that is either the origin (no name, no keys) or a
//! named host with keys and never a user; a `to` side with a name and at least one key, and
//! optionally a user pattern; host keys or CA keys (`@cert-authority`); no extensions.

use ssh_encoding::{Decode, Reader};
use ssh_key::public::KeyData;

use crate::policy::dest::{Constraint, Destinations, HopSpec, KeyMatch};

/// The extension's name.
pub const NAME: &str = "restrict-destination-v00@openssh.com";

/// At most this many hops, as in OpenSSH (`AGENT_MAX_DEST_CONSTRAINTS`).
pub const MAX_CONSTRAINTS: usize = 1024;

/// The longest user pattern, as in OpenSSH (`AGENT_USER_CONSTRAINT_MAX_LEN`).
pub const MAX_USER_PATTERN: usize = 256;

/// Why a destination constraint was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestrictError {
    /// The bytes do not follow the format.
    #[error("malformed destination constraint")]
    Malformed,
    /// A field OpenSSH reserves for extensions is not empty.
    #[error("destination constraint with unsupported extensions")]
    Extensions,
    /// `from` names a user, or a host without keys (or keys without a host).
    #[error("inconsistent \"from\" side of a destination constraint")]
    InconsistentFrom,
    /// `to` lacks a host name or keys.
    #[error("incomplete \"to\" side of a destination constraint")]
    IncompleteTo,
    /// A user pattern over [`MAX_USER_PATTERN`] bytes.
    #[error("user pattern longer than {MAX_USER_PATTERN} bytes")]
    UserTooLong,
    /// More than [`MAX_CONSTRAINTS`] hops.
    #[error("more than {MAX_CONSTRAINTS} destination constraints")]
    TooMany,
}

fn malformed<T>(_: T) -> RestrictError {
    RestrictError::Malformed
}

fn string(r: &mut &[u8]) -> Result<Vec<u8>, RestrictError> {
    Vec::<u8>::decode(r).map_err(malformed)
}

fn text(r: &mut &[u8]) -> Result<String, RestrictError> {
    String::from_utf8(string(r)?).map_err(malformed)
}

fn hop(mut r: &[u8]) -> Result<HopSpec, RestrictError> {
    let user = text(&mut r)?;
    let hostname = text(&mut r)?;
    if !string(&mut r)?.is_empty() {
        return Err(RestrictError::Extensions);
    }
    if user.len() > MAX_USER_PATTERN {
        return Err(RestrictError::UserTooLong);
    }
    let mut keys = Vec::new();
    while !r.is_empty() {
        let key = r.read_prefixed(KeyData::decode).map_err(malformed)?;
        let is_ca = u8::decode(&mut r).map_err(malformed)? != 0;
        let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        keys.push(if is_ca {
            KeyMatch::Ca(fingerprint)
        } else {
            KeyMatch::Plain(fingerprint)
        });
    }
    Ok(HopSpec {
        user: (!user.is_empty()).then_some(user),
        hostname: (!hostname.is_empty()).then_some(hostname),
        keys,
    })
}

fn constraint(mut r: &[u8]) -> Result<Constraint, RestrictError> {
    let from = string(&mut r)?;
    let to = string(&mut r)?;
    let extensions = string(&mut r)?;
    if !r.is_empty() {
        return Err(RestrictError::Malformed);
    }
    let (from, to) = (hop(&from)?, hop(&to)?);
    if !extensions.is_empty() {
        return Err(RestrictError::Extensions);
    }
    if from.hostname.is_none() != from.keys.is_empty() || from.user.is_some() {
        return Err(RestrictError::InconsistentFrom);
    }
    if to.hostname.is_none() || to.keys.is_empty() {
        return Err(RestrictError::IncompleteTo);
    }
    Ok(Constraint { from, to })
}

/// Reads the extension's body (the contents of the string after its name).
pub fn parse(details: &[u8]) -> Result<Destinations, RestrictError> {
    let mut b = details;
    let mut constraints = Vec::new();
    while !b.is_empty() {
        if constraints.len() >= MAX_CONSTRAINTS {
            return Err(RestrictError::TooMany);
        }
        constraints.push(constraint(&string(&mut b)?)?);
    }
    Ok(Destinations { constraints })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_encoding::Encode;

    fn s(out: &mut Vec<u8>, bytes: &[u8]) {
        bytes.encode(out).unwrap();
    }

    fn key() -> KeyData {
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .key_data()
            .clone()
    }

    fn side(user: &str, host: &str, keys: &[(&KeyData, bool)], ext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s(&mut out, user.as_bytes());
        s(&mut out, host.as_bytes());
        s(&mut out, ext);
        for (k, ca) in keys {
            s(&mut out, &crate::keys::public_blob(k).unwrap());
            out.push(u8::from(*ca));
        }
        out
    }

    fn wrap(constraints: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (from, to) in constraints {
            let mut c = Vec::new();
            s(&mut c, from);
            s(&mut c, to);
            s(&mut c, b"");
            s(&mut body, &c);
        }
        body
    }

    #[test]
    fn accepts_what_openssh_accepts() {
        let (a, b, ca) = (key(), key(), key());
        let fp = |k: &KeyData| k.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        let parsed = parse(&wrap(&[
            (side("", "", &[], b""), side("", "a", &[(&a, false)], b"")),
            (
                side("", "a", &[(&a, false)], b""),
                side("u*", "b", &[(&b, false), (&ca, true)], b""),
            ),
        ]))
        .unwrap();
        assert_eq!(parsed.constraints.len(), 2);
        assert_eq!(parsed.constraints[0].from, HopSpec::default());
        let second = &parsed.constraints[1];
        assert_eq!(second.from.hostname.as_deref(), Some("a"));
        assert_eq!(second.to.user.as_deref(), Some("u*"));
        assert_eq!(
            second.to.keys,
            vec![KeyMatch::Plain(fp(&b)), KeyMatch::Ca(fp(&ca))]
        );
    }

    #[test]
    fn refuses_what_openssh_refuses() {
        let a = key();
        let origin = || side("", "", &[], b"");
        let to_a = || side("", "a", &[(&a, false)], b"");
        let cases = [
            (
                wrap(&[(side("u", "a", &[(&a, false)], b""), to_a())]),
                RestrictError::InconsistentFrom,
            ),
            (
                wrap(&[(side("", "a", &[], b""), to_a())]),
                RestrictError::InconsistentFrom,
            ),
            (
                wrap(&[(side("", "", &[(&a, false)], b""), to_a())]),
                RestrictError::InconsistentFrom,
            ),
            (
                wrap(&[(origin(), side("", "", &[(&a, false)], b""))]),
                RestrictError::IncompleteTo,
            ),
            (
                wrap(&[(origin(), side("", "a", &[], b""))]),
                RestrictError::IncompleteTo,
            ),
            (
                wrap(&[(origin(), side("", "a", &[(&a, false)], b"x"))]),
                RestrictError::Extensions,
            ),
            (
                wrap(&[(origin(), side(&"u".repeat(257), "a", &[(&a, false)], b""))]),
                RestrictError::UserTooLong,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(&bytes), Err(want));
        }
        let mut trailing = wrap(&[(origin(), to_a())]);
        trailing.push(0);
        assert_eq!(parse(&trailing), Err(RestrictError::Malformed));
        let many: Vec<_> = (0..=MAX_CONSTRAINTS).map(|_| (origin(), to_a())).collect();
        assert_eq!(parse(&wrap(&many)), Err(RestrictError::TooMany));
    }
}
