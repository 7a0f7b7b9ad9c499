//! Policy and audit requests: set, show and dry-run a key's policy; read and verify the audit
//! trail.

use crate::agent::bind::Binding;
use crate::control::proto::{AuditView, PolicyProbe, Request, Response};
use crate::policy::dest::HostKey;
use crate::policy::request::SignedData;
use crate::policy::{self, Decision, Policy, Usage};
use crate::service::certs::rfc3339;
use crate::service::{Service, ServiceError};
use crate::store::AuditOutcome;

impl Service {
    pub(super) fn policy_request(
        &self,
        request: Request,
        now: u64,
    ) -> Result<Response, ServiceError> {
        let store = self.store()?;
        Ok(match request {
            Request::PolicySet { key, policy } => {
                let info = store.get_key(&key)?;
                match &policy {
                    Some(p) => {
                        p.validate()?;
                        store.put_policy(info.id, &p.to_json())?;
                    }
                    None => {
                        store.delete_policy(info.id)?;
                    }
                }
                // A served key picks up its new policy at once.
                if self.is_loaded(&info)? {
                    self.serve(&info)?;
                }
                Response::Policy {
                    key: info.name,
                    policy: policy.unwrap_or_default(),
                }
            }
            Request::PolicyShow { key } => {
                let info = store.get_key(&key)?;
                Response::Policy {
                    key: info.name,
                    policy: self.key_policy(info.id)?,
                }
            }
            Request::PolicyTest { key, probe } => {
                let info = store.get_key(&key)?;
                let policy = self.key_policy(info.id)?;
                let blob = crate::keys::public_blob(info.public.key_data()).unwrap_or_default();
                let decision = dry_run(&policy, &probe, now, &blob);
                let (allowed, confirm, rule) = match decision {
                    Decision::Allow { confirm } => (true, confirm, None),
                    Decision::Refuse(r) => (false, false, Some(r.to_string())),
                };
                Response::Decision {
                    allowed,
                    confirm,
                    rule,
                }
            }
            Request::AuditRead { since, limit, key } => {
                let key_id = key.map(|k| store.get_key(&k).map(|i| i.id)).transpose()?;
                let names: std::collections::HashMap<_, _> = store
                    .list_keys()?
                    .into_iter()
                    .map(|k| (k.id, k.name))
                    .collect();
                let mut records = Vec::new();
                let mut from = since;
                // Read in pages until `limit` matching records are found.
                while records.len() < limit {
                    let page = store.read_audit(from, 1_000)?;
                    let Some(last) = page.last() else { break };
                    from = last.seq.saturating_add(1);
                    for entry in page {
                        if key_id.is_some() && entry.event.key_id != key_id {
                            continue;
                        }
                        let e = entry.event;
                        records.push(AuditView {
                            seq: entry.seq,
                            at: e.at,
                            time: rfc3339(e.at),
                            key: e.key_id.map(|id| {
                                names.get(&id).cloned().unwrap_or_else(|| id.to_string())
                            }),
                            action: e.action,
                            outcome: match e.outcome {
                                AuditOutcome::Allowed => "allowed",
                                AuditOutcome::Refused => "refused",
                                AuditOutcome::Info => "info",
                            }
                            .to_owned(),
                            detail: e.detail,
                        });
                        if records.len() == limit {
                            break;
                        }
                    }
                }
                Response::Audit { records }
            }
            Request::AuditVerify => Response::Verified(crate::audit::verify(store.as_ref())?),
            other => {
                return Err(ServiceError::KeyPolicy(policy::PolicyError::Invalid(
                    format!("not a policy request: {other:?}"),
                )));
            }
        })
    }

    pub(super) fn key_policy(&self, id: crate::store::KeyId) -> Result<Policy, ServiceError> {
        Ok(match self.store()?.get_policy(id)? {
            Some(value) => Policy::from_json(value)?,
            None => self.defaults.policy.clone(),
        })
    }
}

/// What `policy` decides for the request `probe` describes, at `now`, for a freshly loaded key
/// (`key`, its public blob): the same [`policy::decide`] the agent calls, on the session
/// bindings the probe describes (the `via` hosts as forwarding hops, then the login's host).
fn dry_run(policy: &Policy, probe: &PolicyProbe, now: u64, key: &[u8]) -> Decision {
    let hop = |fingerprint: &str, forwarded: bool| Binding {
        host: HostKey::fingerprint(fingerprint),
        session_id: b"probe".to_vec(),
        forwarded,
    };
    let mut bindings: Vec<Binding> = probe.via.iter().map(|h| hop(h, true)).collect();
    if probe.forwarded && bindings.is_empty() {
        // Forwarded through a host the probe does not name: it matches no destination.
        bindings.push(hop("(an unnamed host)", true));
    }
    if let Some(host) = &probe.host {
        bindings.push(hop(host, false));
    }
    let data = match probe.purpose.as_deref() {
        None | Some("login") => SignedData::Userauth {
            session_id: b"probe".to_vec(),
            user: "probe".into(),
            // The probe's hosts have no key blobs: a forwarded login names the (empty) blob of
            // its last binding, as ssh's host-bound request does.
            host_key: (bindings.len() > 1).then(Vec::new),
            key: key.to_vec(),
        },
        Some("x509") => SignedData::X509 {
            subject: "CN=probe".into(),
        },
        Some(ns) => SignedData::Sshsig {
            namespace: ns.strip_prefix("sshsig:").unwrap_or(ns).to_owned(),
        },
    };
    let usage = Usage::loaded(now);
    let ctx = policy::Context {
        now,
        uid: probe.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
        executable: probe.exe.as_deref(),
        bindings: &bindings,
        bind_failed: false,
        restrict: None,
        key,
        data: &data,
        algorithm: probe.algorithm.as_deref().map_or("rsa-sha2-256", |a| {
            if a == "ssh-rsa" {
                "ssh-rsa"
            } else {
                "rsa-sha2-256"
            }
        }),
        usage: &usage,
    };
    policy::decide(policy, &ctx)
}
