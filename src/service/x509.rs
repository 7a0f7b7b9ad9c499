//! Issuing a certificate signs with the key: `cert create` and every renewal (on demand or
//! scheduled) go through the key's policy as a signature with purpose `x509`, counted against its
//! limits, confirmed when the policy says confirm, and audited as a `sign` record like any other.

use serde_json::json;

use crate::certs::Subject;
use crate::policy::request::SignedData;
use crate::policy::{self, Decision};
use crate::service::{Caller, Service, ServiceError};
use crate::store::{AuditOutcome, KeyId};

/// The algorithm recorded for certificate signatures (keyward signs X.509 with SHA-256).
const ALGORITHM: &str = "rsa-sha2-256";

impl Service {
    /// Decides whether stored key `key_id` may sign a certificate for `subject` on behalf of
    /// `caller`: refusals (by policy or at the prompt) are audited and returned as errors; an
    /// allowed signature is counted. Returns the audit detail for [`Self::audit_x509`].
    pub(super) fn authorize_x509(
        &self,
        key_id: KeyId,
        subject: &Subject,
        caller: &Caller,
        now: u64,
    ) -> Result<serde_json::Value, ServiceError> {
        let info = self.store()?.key(key_id)?;
        let policy = self.key_policy(key_id)?;
        let data = SignedData::X509 {
            subject: subject.to_string(),
        };
        let mut detail = caller.detail();
        detail["purpose"] = json!(policy::describe(&data));
        detail["algorithm"] = json!(ALGORITHM);
        detail["fingerprint"] = json!(crate::keys::fingerprint::fingerprint(
            info.public.key_data(),
            crate::keys::fingerprint::FingerprintHash::Sha256,
        )?);
        let key_blob = crate::keys::public_blob(info.public.key_data())?;
        let decision = self.with_usage(&info, now, |usage| {
            let ctx = policy::Context {
                now,
                uid: caller.uid,
                executable: caller.exe(),
                bindings: &[],
                bind_failed: false,
                restrict: None,
                key: &key_blob,
                data: &data,
                algorithm: ALGORITHM,
                usage,
            };
            let decision = policy::decide(&policy, &ctx);
            // Counted under the same lock as the decision, as agent signatures are.
            if matches!(decision, Decision::Allow { .. }) {
                usage.record(now, &policy);
            }
            decision
        })?;
        let refuse = |reason: String, error: ServiceError| {
            let mut detail = detail.clone();
            detail["reason"] = json!(reason);
            self.record(now, Some(key_id), "sign", AuditOutcome::Refused, detail);
            Err(error)
        };
        match decision {
            Decision::Refuse(refusal) => {
                tracing::info!(key = %info.name, %refusal, "certificate signature refused by policy");
                refuse(refusal.to_string(), ServiceError::PolicyRefused(refusal))
            }
            Decision::Allow { confirm: true }
                if !super::guard::ask(
                    self.askpass.as_deref(),
                    &format!(
                        "Allow use of key {} to sign an X.509 certificate for {subject}?\nRequested by {}.",
                        info.name,
                        caller.lineage()
                    ),
                ) =>
            {
                refuse(
                    "refused by the user".into(),
                    ServiceError::Declined(format!("signing a certificate with key {}", info.name)),
                )
            }
            Decision::Allow { .. } => {
                detail["reason"] = json!("allowed");
                Ok(detail)
            }
        }
    }

    /// Records the certificate signature [`authorize_x509`](Self::authorize_x509) allowed.
    pub(super) fn audit_x509(&self, key_id: KeyId, now: u64, detail: serde_json::Value) {
        self.record(now, Some(key_id), "sign", AuditOutcome::Allowed, detail);
    }
}

/// A stored key's usage record in the store.
struct StoredUsage {
    store: std::sync::Arc<dyn crate::store::Store>,
    id: KeyId,
}

impl policy::tally::UsageStore for StoredUsage {
    fn save(&self, usage: &policy::tally::SavedUsage, durable: bool) -> bool {
        let value = serde_json::to_value(usage).unwrap_or_default();
        self.store
            .put_usage(self.id, Some(&value), durable)
            .map_err(|e| tracing::error!(key = %self.id, error = %e, "cannot save key usage"))
            .is_ok()
    }
}

impl Service {
    /// The usage of stored key `id` as last saved, saving to the store from now on: what a key
    /// loaded at `now` starts from.
    pub(super) fn stored_usage(&self, id: KeyId, now: u64) -> Result<policy::Usage, ServiceError> {
        let store = std::sync::Arc::clone(self.store()?);
        let saved = match store.get_usage(id)? {
            Some(value) => serde_json::from_value(value).unwrap_or_else(|e| {
                // Unreadable: counting from zero would hand signatures back; refuse them instead.
                tracing::error!(key = %id, error = %e, "saved usage unreadable: treating the key's limit as used up");
                policy::tally::SavedUsage {
                    signatures: u64::MAX,
                    recent: Vec::new(),
                }
            }),
            None => policy::tally::SavedUsage::default(),
        };
        Ok(policy::Usage::loaded(now).saving_to(
            policy::tally::UsageSink(std::sync::Arc::new(StoredUsage { store, id })),
            &saved,
        ))
    }

    /// Runs `f` on the usage of stored key `info`: the served entry's when the agent holds it,
    /// else the saved one.
    fn with_usage<T>(
        &self,
        info: &crate::store::KeyInfo,
        now: u64,
        f: impl FnOnce(&mut policy::Usage) -> T,
    ) -> Result<T, ServiceError> {
        if let Some(ring) = &self.keyring
            && let Some(entry) = ring.find(
                &crate::keys::public_blob(info.public.key_data())?,
                self.clock.boot_now(),
            )
            && let Some(stored) = &entry.policy
        {
            let mut usage = stored
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return Ok(f(&mut usage));
        }
        let mut usage = self.stored_usage(info.id, now)?;
        Ok(f(&mut usage))
    }
}
