//! Destination constraints (`ssh-add -h`, OpenSSH's `restrict-destination-v00@openssh.com`)
//! evaluated as OpenSSH's agent does, as pure functions of the constraints, the connection's
//! session bindings, what is signed, and the time.
//!
//! A constraint is a hop `from > to`: `from` empty is the origin (the machine the agent runs
//! on), `to` names a host by its host keys or host-certificate authorities and may carry a user
//! pattern. A connection's bindings are walked in order: the first must be permitted from the
//! origin, each later one from the previous binding's host; every binding but the last must be
//! for forwarding, and a signature's last binding must be for authentication, its user matching
//! the pattern. A key is hidden from a listing on a forwarded connection unless some constraint
//! lets it be used *from* the last host onwards. Stored keyward policies (`destinations`, a
//! list of host-key fingerprints) are compiled to constraints and checked by the same walk.

use crate::agent::bind::Binding;
use crate::policy::request::SignedData;

/// A host key as a binding presents it: a plain key or a host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `SHA256:` fingerprint of the plain public key (of the certified key for a certificate).
    pub fingerprint: String,
    /// The key blob as sent (the whole certificate for a certificate).
    pub blob: Vec<u8>,
    /// The certificate, when the host presented one.
    pub cert: Option<HostCert>,
}

/// What [`HostKey`] keeps of a host certificate (its signature was verified when it was read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCert {
    /// `SHA256:` fingerprint of the signing CA key.
    pub ca_fingerprint: String,
    /// Whether it is a host (not a user) certificate.
    pub host: bool,
    /// Its principals (patterns the host name is matched against).
    pub principals: Vec<String>,
    /// Valid from (unix seconds).
    pub valid_after: u64,
    /// Valid before (unix seconds, exclusive).
    pub valid_before: u64,
    /// Whether it carries critical options (none are defined for host certificates).
    pub critical_options: bool,
    /// The CA's signature algorithm.
    pub signature_algorithm: String,
}

impl HostKey {
    /// A plain host key.
    pub fn plain(key: &ssh_key::public::KeyData) -> Self {
        Self {
            fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            blob: crate::keys::public_blob(key).unwrap_or_default(),
            cert: None,
        }
    }

    /// A host known only by its fingerprint (`keyward policy test --host`).
    pub fn fingerprint(fingerprint: &str) -> Self {
        Self {
            fingerprint: fingerprint.to_owned(),
            blob: Vec::new(),
            cert: None,
        }
    }
}

/// How a constraint names a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    /// This plain host key (`ssh-add -h`: a `known_hosts` key): never a certificate.
    Plain(String),
    /// Certificates signed by this CA (`@cert-authority` lines), for the hop's host name.
    Ca(String),
    /// This key, presented plain or certified (a stored keyward policy's fingerprint).
    Key(String),
}

/// One side of a hop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopSpec {
    /// A user pattern (only on the `to` side).
    pub user: Option<String>,
    /// The host name as the user wrote it; `None` on the `from` side is the origin.
    pub hostname: Option<String>,
    /// The keys that identify it.
    pub keys: Vec<KeyMatch>,
}

/// One `from > to` hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Where the hop starts.
    pub from: HopSpec,
    /// Where it goes.
    pub to: HopSpec,
}

/// A key's destination constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// The hops, in the order given.
    pub constraints: Vec<Constraint>,
}

/// Why a destination-constrained key may not be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestRefusal {
    /// No session-bind: not a login ssh has bound to a host.
    #[error("the key signs only logins on connections ssh has bound to a host")]
    Unbound,
    /// A session-bind on this connection was refused.
    #[error("a session-bind on this connection was refused")]
    BindFailed,
    /// What is signed is not a login with this key.
    #[error("the data to sign is not a login request for this key")]
    NotLogin,
    /// A signature asked for on a binding made for forwarding.
    #[error("a signature on a connection bound for forwarding")]
    SignOnForwarding,
    /// A binding before the last one was made for authentication.
    #[error("forwarding through a connection bound for authentication")]
    ForwardThroughAuth,
    /// A hop that no constraint permits.
    #[error("no constraint permits the hop from {from} to {to}{user}")]
    Hop {
        /// Where it starts (`origin` or a fingerprint).
        from: String,
        /// Where it goes (a fingerprint).
        to: String,
        /// ` as USER` for a signature.
        user: String,
    },
    /// Listed on a forwarded connection, but no constraint permits use from its last host.
    #[error("no constraint permits use from {0} onwards")]
    NotOnwards(String),
    /// The login is for another session than the most recently bound one.
    #[error("the login's session is not the connection's most recent binding")]
    SessionMismatch,
    /// The login names another host key than the most recently bound one.
    #[error("the login's host key is not the most recently bound one")]
    HostKeyMismatch,
    /// A login through a forwarded agent must name its host key (publickey-hostbound).
    #[error("a login through a forwarded agent must be host-bound")]
    NotHostbound,
}

impl Destinations {
    /// The constraints equivalent to a stored policy's destination list: from the origin to
    /// each listed host, and (unless forwarding is denied) from each listed host to each.
    pub fn from_fingerprints(fingerprints: &[String], forwarding: bool) -> Self {
        let spec = |fp: Option<&String>| HopSpec {
            user: None,
            hostname: fp.map(|_| "(listed host)".to_owned()),
            keys: fp.map(|f| KeyMatch::Key(f.clone())).into_iter().collect(),
        };
        let mut constraints = Vec::new();
        for to in fingerprints {
            constraints.push(Constraint {
                from: spec(None),
                to: spec(Some(to)),
            });
        }
        if forwarding {
            for from in fingerprints {
                for to in fingerprints {
                    constraints.push(Constraint {
                        from: spec(Some(from)),
                        to: spec(Some(to)),
                    });
                }
            }
        }
        Self { constraints }
    }
}

/// OpenSSH's `match_pattern`: `*` and `?` wildcards, case-sensitive, whole string.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    fn go(s: &[u8], p: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some((&c, rest)) => s
                .split_first()
                .is_some_and(|(&h, tail)| (c == b'?' || c == h) && go(tail, rest)),
        }
    }
    go(s.as_bytes(), pattern.as_bytes())
}

/// OpenSSH's `match_key_hop`: whether `key` is one of the hop's keys (a plain key equal to a
/// listed plain key, or a valid host certificate for the hop's name from a listed CA).
fn match_key_hop(key: &HostKey, hop: &HopSpec, now: u64) -> bool {
    let hostname = hop.hostname.as_deref().unwrap_or("(ORIGIN)");
    hop.keys.iter().any(|m| match (m, &key.cert) {
        (KeyMatch::Plain(fp), None) | (KeyMatch::Key(fp), _) => *fp == key.fingerprint,
        (KeyMatch::Ca(fp), Some(cert)) => {
            *fp == cert.ca_fingerprint && cert_valid_for(cert, hostname, now)
        }
        _ => false,
    })
}

/// OpenSSH's `sshkey_cert_check_host`.
fn cert_valid_for(cert: &HostCert, hostname: &str, now: u64) -> bool {
    cert.host
        && now >= cert.valid_after
        && now < cert.valid_before
        && cert.principals.iter().any(|p| match_pattern(hostname, p))
        && !cert.critical_options
        && !matches!(cert.signature_algorithm.as_str(), "ssh-rsa" | "ssh-dss")
}

/// OpenSSH's `permitted_by_dest_constraints`: whether some constraint permits the hop from
/// `from` (`None`: the origin) to `to` (`None`: anywhere), for `user` if given.
fn permitted_hop(
    dests: &Destinations,
    from: Option<&HostKey>,
    to: Option<&HostKey>,
    user: Option<&str>,
    now: u64,
) -> bool {
    dests.constraints.iter().any(|d| {
        let from_ok = match from {
            None => d.from.hostname.is_none() && d.from.keys.is_empty(),
            Some(key) => match_key_hop(key, &d.from, now),
        };
        let to_ok = to.is_none_or(|key| match_key_hop(key, &d.to, now));
        let user_ok = match (&d.to.user, user) {
            (Some(pattern), Some(user)) => match_pattern(user, pattern),
            _ => true,
        };
        from_ok && to_ok && user_ok
    })
}

fn origin_name(key: Option<&HostKey>) -> String {
    key.map_or_else(|| "origin".to_owned(), |k| k.fingerprint.clone())
}

/// OpenSSH's `identity_permitted`: whether a key under `dests` may be listed (`user` `None`)
/// or sign a login as `user` on a connection with these bindings. `bind_failed`: a session-bind
/// was attempted on the connection and refused.
pub fn identity_permitted(
    dests: &Destinations,
    bindings: &[Binding],
    bind_failed: bool,
    user: Option<&str>,
    now: u64,
) -> Result<(), DestRefusal> {
    if bindings.is_empty() {
        // Local use (listing): allowed unless a binding was attempted and failed.
        return if bind_failed {
            Err(DestRefusal::BindFailed)
        } else {
            Ok(())
        };
    }
    let mut from: Option<&HostKey> = None;
    for (i, hop) in bindings.iter().enumerate() {
        let last = i + 1 == bindings.len();
        let test_user = if last {
            if hop.forwarded && user.is_some() {
                return Err(DestRefusal::SignOnForwarding);
            }
            user
        } else {
            if !hop.forwarded {
                return Err(DestRefusal::ForwardThroughAuth);
            }
            None
        };
        if !permitted_hop(dests, from, Some(&hop.host), test_user, now) {
            return Err(DestRefusal::Hop {
                from: origin_name(from),
                to: hop.host.fingerprint.clone(),
                user: test_user.map_or_else(String::new, |u| format!(" as {u}")),
            });
        }
        from = Some(&hop.host);
    }
    // A listing on a forwarded connection: hide a key that may log in to this host but not be
    // used beyond it.
    if let Some(last) = bindings.last()
        && last.forwarded
        && user.is_none()
        && !permitted_hop(dests, Some(&last.host), None, None, now)
    {
        return Err(DestRefusal::NotOnwards(last.host.fingerprint.clone()));
    }
    Ok(())
}

/// The sign-request rules of OpenSSH's agent for a destination-constrained key `key_blob`:
/// a bound connection, a login request with this key, permitted along every binding, for the
/// most recently bound session and host key (host-bound when forwarded).
pub fn sign_permitted(
    dests: &Destinations,
    bindings: &[Binding],
    bind_failed: bool,
    data: &SignedData,
    key_blob: &[u8],
    now: u64,
) -> Result<(), DestRefusal> {
    let Some(last) = bindings.last() else {
        return Err(DestRefusal::Unbound);
    };
    let SignedData::Userauth {
        session_id,
        user,
        host_key,
        key,
    } = data
    else {
        return Err(DestRefusal::NotLogin);
    };
    if key.as_slice() != key_blob {
        return Err(DestRefusal::NotLogin);
    }
    identity_permitted(dests, bindings, bind_failed, Some(user), now)?;
    if *session_id != last.session_id {
        return Err(DestRefusal::SessionMismatch);
    }
    match host_key {
        None if bindings.len() > 1 => Err(DestRefusal::NotHostbound),
        Some(host_key) if *host_key != last.host.blob => Err(DestRefusal::HostKeyMismatch),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "dest_tests.rs"]
mod tests;
