//! OpenSSH certificates of stored keys (`keyward key cert add/list/remove`): checked against the
//! key and the CA's signature when added, kept in the store byte for byte, served by the agent
//! beside the plain key under the key's policy and usage, and tracked for expiry with the X.509
//! certificates (`keyward cert list`, `cert check`).
//!
//! Adding a certificate is not privileged: it only lets the key be presented as the CA vouched,
//! which the key's owner could do with `ssh-add` anyway, and it signs under the key's own policy.
//! Removing one is not privileged either: it takes nothing away that `ssh-add -d` could not.

use std::sync::Arc;

use base64ct::{Base64, Encoding};
use sha2::{Digest, Sha256};

use super::{Service, ServiceError};
use crate::agent::keyring::{Constraints, Entry, SignerSlot};
use crate::control::proto::{CertView, KeyCertView, Request, Response};
use crate::keys::{self, cert};
use crate::store::{KeyCert, KeyInfo};

/// Why a certificate file is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyCertError {
    /// The file is not one OpenSSH public key line.
    #[error("malformed OpenSSH certificate file: {0}")]
    Malformed(&'static str),
    /// The blob does not decode, is not a certificate or its CA signature does not verify.
    #[error("OpenSSH certificate refused")]
    Cert(#[source] cert::CertError),
    /// The certificate certifies another key.
    #[error("the certificate certifies {certified}, not the key {key} ({fingerprint})")]
    OtherKey {
        /// The stored key's name.
        key: String,
        /// Its fingerprint.
        fingerprint: String,
        /// The certified key's fingerprint.
        certified: String,
    },
    /// The certificate has expired already.
    #[error("the certificate expired at {0}")]
    Expired(String),
    /// No certificate of the key matches.
    #[error("key {key} has no OpenSSH certificate {cert} (see `keyward key cert list {key}`)")]
    NotFound {
        /// The key's name.
        key: String,
        /// The id or prefix asked for.
        cert: String,
    },
    /// Several certificates match an id prefix.
    #[error("{0} matches several certificates of the key: give more of the id")]
    Ambiguous(String),
    /// An X.509 request names a stored key's OpenSSH certificate.
    #[error(
        "{id} is an OpenSSH certificate of key {key}, not an X.509 one: see `keyward key cert list {key}`"
    )]
    NotX509 {
        /// The id asked for.
        id: String,
        /// The key's name.
        key: String,
    },
}

/// The certificate blob of an OpenSSH public key line (`TYPE BASE64 [COMMENT]`), whose type must
/// be the one inside the blob.
pub fn blob_of_line(text: &str) -> Result<Vec<u8>, KeyCertError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or(KeyCertError::Malformed("no certificate line"))?;
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(KeyCertError::Malformed("expected `TYPE BASE64 [COMMENT]`"));
    };
    if !cert::is_cert_type(kind) {
        return Err(KeyCertError::Malformed(
            "not a certificate (`*-cert-v01@openssh.com`): give the `-cert.pub` file",
        ));
    }
    let blob = Base64::decode_vec(b64).map_err(|_| KeyCertError::Malformed("bad base64"))?;
    cert::parse(&blob, kind).map_err(KeyCertError::Cert)?;
    Ok(blob)
}

/// The certificate's id: SHA-256 of its blob, lower-case hex.
fn cert_id(sha256: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    sha256.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Unix seconds as RFC 3339, or `forever`.
fn expires(valid_before: u64) -> String {
    if valid_before == u64::MAX {
        "forever".to_owned()
    } else {
        super::certs::rfc3339(valid_before)
    }
}

impl Service {
    pub(super) fn key_cert_request(
        &self,
        request: Request,
        now: u64,
    ) -> Result<Response, ServiceError> {
        let store = self.store()?;
        Ok(match request {
            Request::KeyCertAdd { key, certificate } => {
                let info = store.get_key(&key)?;
                let blob = blob_of_line(&certificate)?;
                let parsed = cert::parse_any(&blob).map_err(KeyCertError::Cert)?;
                let plain = keys::public_blob(info.public.key_data())?;
                if parsed.plain_blob() != plain {
                    let fp = |b: &[u8]| {
                        format!(
                            "SHA256:{}",
                            base64ct::Base64Unpadded::encode_string(&Sha256::digest(b))
                        )
                    };
                    return Err(KeyCertError::OtherKey {
                        key: info.name.clone(),
                        fingerprint: fp(&plain),
                        certified: fp(&parsed.plain_blob()),
                    }
                    .into());
                }
                if parsed.valid_before <= now {
                    return Err(KeyCertError::Expired(expires(parsed.valid_before)).into());
                }
                let stored = store.put_key_cert(info.id, &blob, now)?;
                // Stored either way: a locked agent serves it with the key's next load.
                if let Err(e) = self.serve_certs(&info, std::slice::from_ref(&stored)) {
                    tracing::info!(key = %info.name, error = %e, "certificate stored, not served now");
                }
                Response::KeyCerts {
                    certs: vec![self.key_cert_view(&info, &stored, now)?],
                }
            }
            Request::KeyCertList { key } => {
                let keys = match key {
                    Some(key) => vec![store.get_key(&key)?],
                    None => store.list_keys()?,
                };
                let mut certs = Vec::new();
                for info in &keys {
                    for stored in store.key_certs(Some(info.id))? {
                        certs.push(self.key_cert_view(info, &stored, now)?);
                    }
                }
                Response::KeyCerts { certs }
            }
            Request::KeyCertRemove { key, cert } => {
                let info = store.get_key(&key)?;
                let all = store.key_certs(Some(info.id))?;
                let chosen: Vec<&KeyCert> = match &cert {
                    None => all.iter().collect(),
                    Some(wanted) => {
                        let wanted_lc = wanted.to_ascii_lowercase();
                        let hits: Vec<&KeyCert> = all
                            .iter()
                            .filter(|c| cert_id(&c.sha256).starts_with(&wanted_lc))
                            .collect();
                        match hits.len() {
                            0 => {
                                return Err(KeyCertError::NotFound {
                                    key: info.name.clone(),
                                    cert: wanted.clone(),
                                }
                                .into());
                            }
                            1 => hits,
                            _ => return Err(KeyCertError::Ambiguous(wanted.clone()).into()),
                        }
                    }
                };
                let mut certs = Vec::new();
                for stored in chosen {
                    let view = self.key_cert_view(&info, stored, now)?;
                    store.delete_key_cert(info.id, &stored.sha256)?;
                    if let Some(ring) = &self.keyring {
                        ring.unload(&stored.blob);
                    }
                    certs.push(KeyCertView {
                        served: self.keyring.as_ref().map(|_| false),
                        ..view
                    });
                }
                Response::KeyCerts { certs }
            }
            other => unreachable!("dispatch handles {other:?}"),
        })
    }

    /// The error for X.509 id `wanted` that matches none: saying so when it is a stored key's
    /// OpenSSH certificate (`keyward cert list` shows them too).
    pub(super) fn not_x509(&self, wanted: &str) -> ServiceError {
        let wanted_lc = wanted.to_ascii_lowercase();
        let hit = self.store().ok().and_then(|store| {
            let cert =
                store.key_certs(None).ok()?.into_iter().find(|c| {
                    !wanted_lc.is_empty() && cert_id(&c.sha256).starts_with(&wanted_lc)
                })?;
            store.key(cert.key_id).ok()
        });
        match hit {
            Some(info) => ServiceError::KeyCert(KeyCertError::NotX509 {
                id: wanted.to_owned(),
                key: info.name,
            }),
            None => ServiceError::CertNotFound(wanted.to_owned()),
        }
    }

    fn key_cert_view(
        &self,
        info: &KeyInfo,
        stored: &KeyCert,
        now: u64,
    ) -> Result<KeyCertView, ServiceError> {
        let parsed = cert::parse_any(&stored.blob).map_err(KeyCertError::Cert)?;
        let kind = cert_type(&stored.blob);
        Ok(KeyCertView {
            id: cert_id(&stored.sha256),
            key: info.name.clone(),
            cert_type: kind.to_owned(),
            key_id: String::from_utf8_lossy(parsed.key_id).into_owned(),
            serial: parsed.serial,
            valid_after: parsed.valid_after,
            valid_before: parsed.valid_before,
            expires: expires(parsed.valid_before),
            state: self.key_cert_state(&parsed, now).to_owned(),
            served: self
                .keyring
                .as_ref()
                .map(|ring| ring.find(&stored.blob, self.clock.boot_now()).is_some()),
            public: format!(
                "{kind} {} {}",
                Base64::encode_string(&stored.blob),
                info.comment
            )
            .trim_end()
            .to_owned(),
        })
    }

    /// `valid`, `expiring` (inside the default renewal lead, as X.509 certificates) or `expired`.
    fn key_cert_state(&self, parsed: &cert::Certificate<'_>, now: u64) -> &'static str {
        let lead = self
            .defaults
            .renewal
            .lead(parsed.valid_after, parsed.valid_before);
        if now >= parsed.valid_before {
            "expired"
        } else if parsed.valid_before != u64::MAX && now >= parsed.valid_before.saturating_sub(lead)
        {
            "expiring"
        } else {
            "valid"
        }
    }

    /// Every stored key's OpenSSH certificates as `keyward cert list` shows certificates: those
    /// expiring before `due_before` if set (expired ones included, as `cert check` reports
    /// X.509 certificates), else all of them, expired ones only with `expired`.
    pub(super) fn key_certs_as_cert_views(
        &self,
        due_before: Option<u64>,
        expired: bool,
        now: u64,
    ) -> Result<Vec<CertView>, ServiceError> {
        let store = self.store()?;
        let mut out = Vec::new();
        for info in store.list_keys()? {
            for stored in store.key_certs(Some(info.id))? {
                let view = self.key_cert_view(&info, &stored, now)?;
                let wanted = match due_before {
                    Some(t) => view.valid_before < t,
                    None => expired || view.state != "expired",
                };
                if !wanted {
                    continue;
                }
                let days_left = if view.valid_before == u64::MAX {
                    i64::MAX
                } else {
                    let secs = i128::from(view.valid_before) - i128::from(now);
                    i64::try_from(secs.div_euclid(86_400)).unwrap_or(i64::MIN)
                };
                out.push(CertView {
                    id: view.id.clone(),
                    key: Some(view.key.clone()),
                    subject: format!("OpenSSH {} (key id {:?})", view.cert_type, view.key_id),
                    serial: format!("{:X}", view.serial),
                    not_before: view.valid_after,
                    not_after: view.valid_before,
                    expires: view.expires.clone(),
                    days_left,
                    state: view.state.clone(),
                    sha1_thumbprint: "-".to_owned(),
                    sha256_fingerprint: view.id.clone(),
                    origin: "openssh".to_owned(),
                    superseded_by: None,
                    renewal: self.defaults.renewal.clone(),
                    pem: view.public.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Serves `certs` of stored key `info` beside it, if the agent serves the key now: each
    /// signs with the key's private half under the key's policy, counting into the same usage,
    /// and leaves the key ring when it expires.
    pub(super) fn serve_certs(
        &self,
        info: &KeyInfo,
        certs: &[KeyCert],
    ) -> Result<(), ServiceError> {
        let Some(ring) = &self.keyring else {
            return Ok(());
        };
        let boot_now = self.clock.boot_now();
        let Some(plain) = ring.find(&keys::public_blob(info.public.key_data())?, boot_now) else {
            return Ok(());
        };
        for entry in self.cert_entries(info, &plain, certs)? {
            ring.add(entry).map_err(|_| ServiceError::AgentLocked)?;
        }
        Ok(())
    }

    /// Key-ring entries for the unexpired `certs` of `info`, whose plain entry is `plain`.
    pub(super) fn cert_entries(
        &self,
        info: &KeyInfo,
        plain: &Entry,
        certs: &[KeyCert],
    ) -> Result<Vec<Entry>, ServiceError> {
        let now = self.clock.unix_now();
        let boot_now = self.clock.boot_now();
        let mut out = Vec::new();
        for stored in certs {
            let Ok(parsed) = cert::parse_any(&stored.blob) else {
                tracing::warn!(key = %info.name, "a stored OpenSSH certificate no longer parses");
                continue;
            };
            if parsed.valid_before <= now {
                continue;
            }
            // On the boot clock, as `ssh-add -t` lifetimes; "forever" (and anything beyond the
            // boot clock's range) never leaves.
            let expires = (parsed.valid_before != u64::MAX)
                .then(|| {
                    boot_now.checked_add(std::time::Duration::from_secs(parsed.valid_before - now))
                })
                .flatten();
            let mut entry = Entry::new(
                info.public.key_data(),
                info.comment.clone(),
                SignerSlot::lazy(self.stored_loader(info)?),
                Constraints {
                    expires,
                    confirm: plain.constraints.confirm,
                },
            )?;
            entry.blob.clone_from(&stored.blob);
            // The key's own signer: one decryption, one prepared private key for all of them.
            entry.signer = Arc::clone(&plain.signer);
            if let Some(policy) = &plain.policy {
                entry = entry.with_policy(policy.id, policy.policy.clone(), now);
                if let Some(p) = entry.policy.as_mut() {
                    p.usage = Arc::clone(&policy.usage);
                    p.restrict.clone_from(&policy.restrict);
                }
            }
            out.push(entry);
        }
        Ok(out)
    }
}

/// The type name at the head of a certificate blob.
fn cert_type(blob: &[u8]) -> &str {
    blob.get(..4)
        .and_then(|l| l.try_into().ok())
        .map(|l: [u8; 4]| u32::from_be_bytes(l) as usize)
        .and_then(|n| blob.get(4..4 + n))
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests;
