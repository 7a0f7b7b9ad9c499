//! The control channel's trust boundary: which requests are privileged, checking the store
//! passphrase for them (with the back-off of failed unlocks), and recording every request that
//! changes state or reveals a secret, with who asked.
//!
//! Privileged: exporting a private key, deleting or renaming a key, clearing or loosening a
//! policy ([`crate::policy::loosened`]), setting or changing a renewal hook or export target, and
//! changing the passphrase (whose `old` is the check). Adding or removing a stored key's OpenSSH
//! certificate is not (see `key_certs.rs`). Any process of the user can reach
//! `control.sock`, so the agent, not the CLI, asks for the passphrase: without it a same-user
//! process can use keys only as their policies allow, and can only tighten them. A store without a
//! passphrase has nothing to check against: these requests are then allowed, and audited.

use std::sync::Mutex;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::agent::keyring::unlock_delay;
use crate::control::proto::{Request, Response};
use crate::policy::peer::{self, Process};
use crate::service::{Service, ServiceError, error_chain};
use crate::store::{AuditEvent, AuditOutcome, KeyId, StoreError};

/// How many processes of the caller's ancestry are recorded.
const CHAIN_DEPTH: usize = 8;

/// Who sent a control request: from the socket's peer credentials, or the CLI process itself
/// when it runs the service on the store directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its uid.
    pub uid: u32,
    /// Its pid, where the OS tells it.
    pub pid: Option<i32>,
    /// It and its parents, nearest first (executables as full paths).
    pub chain: Vec<Process>,
}

impl Caller {
    /// The peer `pid` of uid `uid`, with its ancestry read now.
    pub fn peer(uid: u32, pid: Option<i32>) -> Self {
        Self {
            uid,
            pid,
            chain: pid.map(|p| peer::chain(p, CHAIN_DEPTH)).unwrap_or_default(),
        }
    }

    /// This process.
    pub fn this_process() -> Self {
        Self::peer(
            nix::unistd::getuid().as_raw(),
            i32::try_from(std::process::id()).ok(),
        )
    }

    pub(super) fn exe(&self) -> Option<&str> {
        self.chain.first().and_then(|p| p.exe.as_deref())
    }

    /// The audit record's view of the caller.
    pub(super) fn detail(&self) -> Value {
        json!({ "uid": self.uid, "pid": self.pid, "exe": self.exe(), "parents": self.chain })
    }

    /// `/usr/bin/keyward (pid 12) from /usr/bin/bash (pid 10)`, for prompts: full paths, so a
    /// copy of some other program named like a trusted one does not pass for it.
    pub(super) fn lineage(&self) -> String {
        peer::describe(&self.chain)
    }
}

/// Serialises passphrase checks (control unlocks, privileged requests, `passwd`) and counts
/// wrong guesses: each one waits [`unlock_delay`] while holding the gate, as failed agent unlocks
/// do, so parallel guessing is no faster than serial guessing.
#[derive(Default)]
pub(super) struct Gate(Mutex<u32>);

/// How a privileged request was authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// Not privileged.
    NotNeeded,
    /// The passphrase was checked.
    Passphrase,
    /// The store has no passphrase: file permissions are the only guard.
    NoPassphraseSet,
}

impl Authority {
    fn label(self) -> &'static str {
        match self {
            Self::NotNeeded => "not needed",
            Self::Passphrase => "checked",
            Self::NoPassphraseSet => "none set",
        }
    }
}

impl Service {
    /// Runs `check` (which tests a passphrase) through the gate; a wrong passphrase waits the
    /// back-off before the error is returned.
    pub(super) fn gated<T>(
        &self,
        check: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, ServiceError> {
        let mut failures = self
            .gate
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match check() {
            Ok(value) => {
                *failures = 0;
                Ok(value)
            }
            Err(e @ StoreError::WrongPassphrase { .. }) => {
                *failures = failures.saturating_add(1);
                std::thread::sleep(unlock_delay(*failures));
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `passphrase` is the store's, leaving the store sealed or unsealed as it was.
    fn verify_passphrase(&self, passphrase: &[u8]) -> Result<(), ServiceError> {
        let store = self.store()?;
        self.gated(|| {
            // Unsealing derives the master key from the passphrase and checks it against the
            // stored verifier; an unsealed store just loads the same key again.
            let was_sealed = store.is_sealed();
            store.unseal(passphrase)?;
            if was_sealed {
                store.seal();
            }
            Ok(())
        })
    }

    /// Why `request` needs the store passphrase, if it does.
    fn privilege(&self, request: &Request) -> Result<Option<String>, ServiceError> {
        Ok(match request {
            Request::KeyPrivate { .. } => Some("exporting a private key".into()),
            Request::KeyDelete { .. } => Some("deleting a key".into()),
            Request::KeyRename { .. } => Some("renaming a key".into()),
            Request::PolicySet { policy: None, .. } => Some("clearing a policy".into()),
            Request::PolicySet {
                key,
                policy: Some(new),
            } => {
                let info = self.store()?.get_key(key)?;
                let fields = crate::policy::loosened(&self.key_policy(info.id)?, new);
                (!fields.is_empty()).then(|| format!("loosening a policy ({})", fields.join(", ")))
            }
            Request::CertPolicy {
                cert,
                policy: Some(new),
            } => {
                let current = self.policy(self.find_cert(cert)?.id)?;
                if new.hook.is_some() && new.hook != current.hook {
                    Some("setting a renewal hook".into())
                } else if new.exports.iter().any(|e| !current.exports.contains(e)) {
                    Some("setting an export target".into())
                } else {
                    None
                }
            }
            _ => None,
        })
    }

    /// Checks that `request` may run, given the passphrase sent with it.
    fn authorize(
        &self,
        request: &Request,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<Authority, ServiceError> {
        let why = match request {
            // `passwd` checks its own `old` passphrase, through the gate.
            Request::ChangePassphrase { .. } => {
                return Ok(if self.store()?.status()?.passphrase_set {
                    Authority::Passphrase
                } else {
                    Authority::NoPassphraseSet
                });
            }
            other => self.privilege(other)?,
        };
        let Some(why) = why else {
            return Ok(Authority::NotNeeded);
        };
        if !self.store()?.status()?.passphrase_set {
            return Ok(Authority::NoPassphraseSet);
        }
        match passphrase {
            None => Err(ServiceError::PassphraseRequired(why)),
            Some(p) => self
                .verify_passphrase(p.as_bytes())
                .map(|()| Authority::Passphrase),
        }
    }

    /// Answers one request from `caller`; failures become a typed error response. Requests that
    /// change state or reveal a secret are audited, allowed or refused, with the caller.
    pub fn handle_from(&self, request: Request, caller: &Caller) -> Response {
        let (request, passphrase) = match request {
            Request::Authorized {
                passphrase,
                request,
            } => (*request, Some(passphrase)),
            other => (other, None),
        };
        let summary = summary(&request);
        let key_id = self.target_key(&request);
        let authority = match &request {
            Request::Authorized { .. } => Err(ServiceError::KeyPolicy(
                crate::policy::PolicyError::Invalid("an authorised request inside another".into()),
            )),
            _ => self.authorize(&request, passphrase.as_ref()),
        };
        drop(passphrase);
        let result = authority.and_then(|a| self.dispatch(request, caller).map(|r| (a, r)));
        if let Some(mut summary) = summary {
            let now = self.clock.unix_now();
            summary["caller"] = caller.detail();
            let (outcome, key_id) = match &result {
                Ok((authority, response)) => {
                    summary["passphrase"] = json!(authority.label());
                    let made = match response {
                        Response::Key(view) => view.id.parse().ok(),
                        _ => None,
                    };
                    (AuditOutcome::Allowed, key_id.or(made))
                }
                Err(e) => {
                    summary["error"] = json!(error_chain(e));
                    (AuditOutcome::Refused, key_id)
                }
            };
            let action = format!("control.{}", summary["op"].as_str().unwrap_or("request"));
            self.record(now, key_id, &action, outcome, summary);
        }
        match result {
            Ok((_, response)) => response,
            Err(e) => Response::Error {
                kind: e.kind(),
                message: error_chain(&e),
            },
        }
    }

    /// The stored key a request names, if it names one that exists.
    fn target_key(&self, request: &Request) -> Option<KeyId> {
        let (Request::KeyPrivate { key: name }
        | Request::KeyDelete { key: name }
        | Request::KeyRename { key: name, .. }
        | Request::KeyComment { key: name, .. }
        | Request::KeyLoad { key: name }
        | Request::KeyCertAdd { key: name, .. }
        | Request::KeyCertRemove { key: name, .. }
        | Request::CertCreate { key: name, .. }
        | Request::PolicySet { key: name, .. }) = request
        else {
            return None;
        };
        self.store().ok()?.get_key(name).ok().map(|i| i.id)
    }

    /// Appends one audit record (flushed), logging instead of failing.
    pub(crate) fn record(
        &self,
        at: u64,
        key_id: Option<KeyId>,
        action: &str,
        outcome: AuditOutcome,
        detail: Value,
    ) {
        if let Some(auditor) = &self.auditor {
            auditor.record_or_log(AuditEvent {
                at,
                key_id,
                action: action.to_owned(),
                outcome,
                detail,
            });
        }
    }
}

/// What the audit trail keeps of a request that changes state or reveals a secret (never the
/// secret itself); `None` for read-only requests.
fn summary(request: &Request) -> Option<Value> {
    Some(match request {
        Request::Status
        | Request::KeyList
        | Request::KeyShow { .. }
        | Request::KeyCertList { .. }
        | Request::CertList { .. }
        | Request::CertShow { .. }
        | Request::CertCheck { .. }
        | Request::PolicyShow { .. }
        | Request::PolicyTest { .. }
        | Request::AuditRead { .. }
        | Request::AuditVerify
        | Request::CertPolicy { policy: None, .. } => return None,
        // Built by hand: these carry secrets.
        Request::Unlock { .. } => json!({ "op": "unlock" }),
        Request::ChangePassphrase { new, .. } => {
            json!({ "op": "change_passphrase", "removes_passphrase": new.is_none() })
        }
        Request::KeyImport { name, comment, .. } => {
            json!({ "op": "key_import", "name": name, "comment": comment })
        }
        Request::Authorized { .. } => json!({ "op": "authorized" }),
        Request::CertImport { pem } => json!({ "op": "cert_import", "pem_bytes": pem.len() }),
        // The rest carry no secret: recorded as sent.
        other => serde_json::to_value(other).unwrap_or_else(|_| json!({ "op": "request" })),
    })
}

impl Service {
    /// Asks the user before the private half of a key whose policy says confirm leaves the
    /// agent, through the askpass program that confirms its signatures.
    pub(super) fn confirm_export(
        &self,
        info: &crate::store::KeyInfo,
        caller: &Caller,
    ) -> Result<(), ServiceError> {
        if !self.key_policy(info.id)?.confirm {
            return Ok(());
        }
        let fingerprint = crate::keys::fingerprint::fingerprint(
            info.public.key_data(),
            crate::keys::fingerprint::FingerprintHash::Sha256,
        )?;
        let prompt = format!(
            "Allow EXPORT of the private key {}?\nKey fingerprint {fingerprint}.\nRequested by {}.",
            info.name,
            caller.lineage(),
        );
        if ask(self.askpass.as_deref(), &prompt) {
            Ok(())
        } else {
            Err(ServiceError::Declined(format!(
                "exporting the private key {}",
                info.name
            )))
        }
    }
}

/// Runs the askpass confirmation from the synchronous service, on a thread of its own with a
/// small runtime, so it works wherever the service runs (the daemon's blocking pool, the CLI).
pub(super) fn ask(askpass: Option<&std::path::Path>, prompt: &str) -> bool {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .is_ok_and(|rt| rt.block_on(crate::agent::confirm::confirm(askpass, prompt)))
            })
            .join()
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests;
