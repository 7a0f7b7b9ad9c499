//! Certificate requests: create from a stored key, import for tracking, list, show, renew (on
//! demand and from the scheduler), renewal policies and the expiry check.

use std::collections::HashMap;

use crate::certs::{Certificate, Subject, create_self_signed};
use crate::control::proto::{CertView, Request, Response};
use crate::keys::Signer;
use crate::keys::generate::{KeySpec, generate};
use crate::rotation::{self, RenewalPolicy};
use crate::service::{Caller, Service, ServiceError};
use crate::store::{
    AuditEvent, AuditOutcome, CertId, CertOrigin, CertRecord, CertState, CertStatus, KeyId,
};

const DAY: u64 = 86_400;

/// What one planning pass of the scheduler found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RenewalPlan {
    /// Certificates whose renewal time has come.
    pub due: Vec<CertId>,
    /// The earliest future renewal time among the certificates looked at, if any.
    pub next: Option<u64>,
}

impl Service {
    pub(super) fn cert_request(
        &self,
        request: Request,
        now: u64,
        caller: &Caller,
    ) -> Result<Response, ServiceError> {
        Ok(match request {
            Request::CertCreate { key, subject, days } => {
                let record = self.create_cert(&key, subject.as_deref(), days, now, caller)?;
                Response::Cert(Box::new(self.cert_view(&record, now)?))
            }
            Request::CertImport { pem } => {
                let cert = Certificate::parse(pem.as_bytes())?;
                let record = CertRecord {
                    id: CertId::random(),
                    key_id: None,
                    subject: cert.info().subject,
                    der: cert.der().to_vec(),
                    not_before: cert.not_before(),
                    not_after: cert.not_after(),
                    origin: CertOrigin::Imported,
                    status: CertStatus::Active,
                    created_at: now,
                };
                self.store()?.put_cert(&record)?;
                self.renewals_changed.notify_one();
                Response::Cert(Box::new(self.cert_view(&record, now)?))
            }
            Request::CertList { all } => {
                let policies = self.policies()?;
                let mut certs = Vec::new();
                for record in self.store()?.list_certs()? {
                    let view = self.cert_view_with(&record, now, &policies)?;
                    if all || view.state == "valid" || view.state == "expiring" {
                        certs.push(view);
                    }
                }
                // Stored keys' OpenSSH certificates are tracked beside them.
                certs.extend(self.key_certs_as_cert_views(None, all, now)?);
                Response::Certs { certs }
            }
            Request::CertShow { cert } => {
                Response::Cert(Box::new(self.cert_view(&self.find_cert(&cert)?, now)?))
            }
            Request::CertRenew { cert } => {
                let old = self.find_cert(&cert)?;
                let new = self.renew_cert_for(old.id, now, "on demand", caller)?;
                Response::Cert(Box::new(self.cert_view(&new, now)?))
            }
            Request::CertPolicy { cert, policy } => {
                let record = self.find_cert(&cert)?;
                if let Some(policy) = policy {
                    policy.validate()?;
                    self.store()?.put_renewal(record.id, &policy.to_json())?;
                    self.renewals_changed.notify_one();
                }
                Response::Cert(Box::new(self.cert_view(&record, now)?))
            }
            Request::CertCheck { within } => {
                let policies = self.policies()?;
                let mut certs = Vec::new();
                for due in self.store()?.due_before(now.saturating_add(within))? {
                    let record = self.store()?.get_cert(due.id)?;
                    certs.push(self.cert_view_with(&record, now, &policies)?);
                }
                certs.extend(self.key_certs_as_cert_views(
                    Some(now.saturating_add(within)),
                    true,
                    now,
                )?);
                Response::Certs { certs }
            }
            other => {
                return Err(ServiceError::Policy(rotation::PolicyError::Stored(
                    format!("not a certificate request: {other:?}"),
                )));
            }
        })
    }

    fn create_cert(
        &self,
        key: &str,
        subject: Option<&str>,
        days: u32,
        now: u64,
        caller: &Caller,
    ) -> Result<CertRecord, ServiceError> {
        let store = self.store()?;
        let info = store.get_key(key)?;
        let subject = match subject {
            Some(s) => Subject::parse(s)?,
            None => Subject::new(&info.name)?,
        };
        let grant = self.authorize_x509(info.id, &subject, caller, now)?;
        let record = self.issue(info.id, &subject, days, now)?;
        self.audit_x509(info.id, now, grant);
        store.put_cert(&record)?;
        self.audit(
            now,
            Some(info.id),
            "cert.create",
            serde_json::json!({
                "cert": record.id.to_string(), "subject": record.subject, "days": days,
            }),
        );
        self.renewals_changed.notify_one();
        Ok(record)
    }

    /// Signs a new certificate for stored key `key_id` (not yet stored).
    fn issue(
        &self,
        key_id: KeyId,
        subject: &Subject,
        days: u32,
        now: u64,
    ) -> Result<CertRecord, ServiceError> {
        let info = self.store()?.key(key_id)?;
        let private = self.private_key(&info)?;
        let signer = Signer::from_keypair(private.key_data())?;
        let cert = create_self_signed(&signer, subject, days, now)?;
        Ok(CertRecord {
            id: CertId::random(),
            key_id: Some(key_id),
            subject: cert.info().subject,
            not_before: cert.not_before(),
            not_after: cert.not_after(),
            der: cert.der().to_vec(),
            origin: CertOrigin::Issued,
            status: CertStatus::Active,
            created_at: now,
        })
    }

    /// Renews certificate `id`: a new certificate (same key, or a new one with `rekey`), stored
    /// together with the old one marked superseded, then the export targets rewritten and the
    /// hook run. The old certificate stays listed until it expires. The key's policy decides
    /// the signature as one asked for by the agent itself (the scheduler).
    pub fn renew_cert(
        &self,
        id: CertId,
        now: u64,
        reason: &str,
    ) -> Result<CertRecord, ServiceError> {
        self.renew_cert_for(id, now, reason, &Caller::this_process())
    }

    /// [`renew_cert`](Self::renew_cert) on behalf of `caller`.
    fn renew_cert_for(
        &self,
        id: CertId,
        now: u64,
        reason: &str,
        caller: &Caller,
    ) -> Result<CertRecord, ServiceError> {
        let store = self.store()?;
        let old = store.get_cert(id)?;
        if let CertStatus::Superseded { by, .. } = old.status {
            return Err(ServiceError::AlreadyRenewed {
                id: id.to_string(),
                by: by.map_or_else(|| "another certificate".to_owned(), |b| b.to_string()),
            });
        }
        let key_id = old
            .key_id
            .ok_or_else(|| ServiceError::CertWithoutKey(id.to_string()))?;
        let policy = self.policy(id)?;
        // Refuse before anything changes if an export target cannot be written.
        rotation::check_exports(&policy.exports)?;
        let days = policy.validity_days.unwrap_or_else(|| {
            u32::try_from(old.not_after.saturating_sub(old.not_before).div_ceil(DAY))
                .unwrap_or(365)
                .max(1)
        });
        if policy.renew_before_percent.is_none() && u64::from(days) * DAY <= policy.renew_before {
            return Err(ServiceError::RenewalLoop { days });
        }
        let subject = Subject::parse(&old.subject)?;
        // The current key's policy decides, before a new key is made for a rekey (which gets
        // the same policy).
        let mut grant = self.authorize_x509(key_id, &subject, caller, now)?;
        let key_id = if policy.rekey {
            grant["rekeyed_from"] = serde_json::json!(key_id.to_string());
            self.rekey(key_id, now)?
        } else {
            key_id
        };
        let new = self.issue(key_id, &subject, days, now)?;
        self.audit_x509(key_id, now, grant);
        let mut superseded = old.clone();
        superseded.status = CertStatus::Superseded {
            by: Some(new.id),
            at: now,
        };
        // One transaction: never two active certificates, never none.
        store.put_certs(&[new.clone(), superseded])?;
        store.put_renewal(new.id, &policy.to_json())?;
        let cert = Certificate::from_der(new.der.clone())?;
        let info = cert.info();
        let exports = rotation::write_exports(&cert, &policy.exports);
        let mut detail = serde_json::json!({
            "old": id.to_string(), "new": new.id.to_string(), "reason": reason,
            "thumbprint": info.sha1_thumbprint, "not_after": new.not_after, "rekey": policy.rekey,
        });
        match &exports {
            Ok(paths) => {
                detail["exports"] = serde_json::json!(paths);
                if let Some(hook) = &policy.hook {
                    let outcome = rotation::run_hook(
                        hook,
                        &new.id.to_string(),
                        &id.to_string(),
                        &info,
                        paths,
                    );
                    if outcome.exit_code != Some(0) {
                        tracing::warn!(cert = %new.id, exit = ?outcome.exit_code, "renewal hook failed");
                    }
                    detail["hook"] = serde_json::json!(outcome);
                }
            }
            Err(e) => detail["export_error"] = serde_json::json!(super::error_chain(e)),
        }
        self.audit(now, Some(key_id), "cert.renew", detail);
        tracing::info!(old = %id, new = %new.id, reason, "certificate renewed");
        self.renewals_changed.notify_one();
        // The renewal itself is done and recorded; a write that failed after the check above is
        // logged and audited rather than reported as a failed renewal.
        if let Err(e) = exports {
            tracing::error!(cert = %new.id, error = %super::error_chain(&e), "renewed, but an export failed");
        }
        Ok(new)
    }

    /// A new key like `old` for a rekeyed renewal, stored (and served) as `<name>-<date>`.
    fn rekey(&self, old: KeyId, now: u64) -> Result<KeyId, ServiceError> {
        let store = self.store()?;
        let info = store.key(old)?;
        let bits = crate::keys::fingerprint::bits(info.public.key_data());
        let key = generate(KeySpec::Rsa(bits), &info.comment)?;
        let date = time::OffsetDateTime::from_unix_timestamp(i64::try_from(now).unwrap_or(0))
            .map(|t| format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()))
            .unwrap_or_default();
        let mut name = format!("{}-{date}", info.name);
        let mut n = 2;
        while store.get_key(&name).is_ok() {
            name = format!("{}-{date}-{n}", info.name);
            n += 1;
        }
        // The new key is stored with the old key's policy (confirm, --exe, forwarding, limits)
        // before it is served, so it is never usable under a looser one.
        let policy = store.get_policy(old)?;
        let view = self.put_with_policy(&name, &key, now, policy.as_ref())?;
        Ok(store.get_key(&view.id)?.id)
    }

    /// Which certificates are due for renewal at `now`: a range scan of the expiry index up to
    /// `now` + the largest renew-before in force, so it reads only certificates that expire
    /// within that window. Certificates without a key (imported) are tracked, not renewed.
    pub fn plan_renewals(&self, now: u64) -> Result<RenewalPlan, ServiceError> {
        let policies = self.policies()?;
        let window = policies
            .values()
            .map(RenewalPolicy::max_lead)
            .max()
            .unwrap_or(0)
            .max(self.defaults.renewal.max_lead());
        let policy_of = |id: &CertId| policies.get(id).unwrap_or(&self.defaults.renewal);
        let mut plan = RenewalPlan::default();
        // `due_before` is exclusive; a certificate whose renewal time is exactly now is due.
        for due in self
            .store()?
            .due_before(now.saturating_add(window).saturating_add(1))?
        {
            let record = self.store()?.get_cert(due.id)?;
            let renew_at = policy_of(&due.id).renew_at(record.not_before, record.not_after);
            if renew_at > now {
                plan.next = Some(plan.next.map_or(renew_at, |n: u64| n.min(renew_at)));
                continue;
            }
            if record.key_id.is_some() {
                plan.due.push(due.id);
            }
        }
        // The first certificate beyond the window may be due before any inside it.
        let edge = now.saturating_add(window).saturating_add(1);
        if let Some(first) = self.store()?.first_due_from(edge)? {
            let record = self.store()?.get_cert(first.id)?;
            let renew_at = policy_of(&first.id).renew_at(record.not_before, record.not_after);
            plan.next = Some(plan.next.map_or(renew_at, |n| n.min(renew_at)));
        }
        Ok(plan)
    }

    fn policies(&self) -> Result<HashMap<CertId, RenewalPolicy>, ServiceError> {
        self.store()?
            .renewals()?
            .into_iter()
            .map(|(id, value)| Ok((id, RenewalPolicy::from_json(value)?)))
            .collect()
    }

    pub(super) fn policy(&self, id: CertId) -> Result<RenewalPolicy, ServiceError> {
        Ok(match self.store()?.get_renewal(id)? {
            Some(value) => RenewalPolicy::from_json(value)?,
            None => self.defaults.renewal.clone(),
        })
    }

    /// A certificate by full id or unique id prefix.
    pub(super) fn find_cert(&self, wanted: &str) -> Result<CertRecord, ServiceError> {
        let store = self.store()?;
        if let Ok(id) = wanted.parse::<CertId>() {
            return store.get_cert(id).map_err(|_| self.not_x509(wanted));
        }
        let wanted_lc = wanted.to_ascii_lowercase();
        let mut matches = store
            .list_certs()?
            .into_iter()
            .filter(|c| !wanted_lc.is_empty() && c.id.to_string().starts_with(&wanted_lc));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Ok(one),
            (Some(_), Some(_)) => Err(ServiceError::AmbiguousCert(wanted.to_owned())),
            (None, _) => Err(self.not_x509(wanted)),
        }
    }

    fn cert_view(&self, record: &CertRecord, now: u64) -> Result<CertView, ServiceError> {
        let mut policies = HashMap::new();
        policies.insert(record.id, self.policy(record.id)?);
        self.cert_view_with(record, now, &policies)
    }

    fn cert_view_with(
        &self,
        record: &CertRecord,
        now: u64,
        policies: &HashMap<CertId, RenewalPolicy>,
    ) -> Result<CertView, ServiceError> {
        let cert = Certificate::from_der(record.der.clone())?;
        let info = cert.info();
        let renewal = policies
            .get(&record.id)
            .cloned()
            .unwrap_or_else(|| self.defaults.renewal.clone());
        let state = match record.state(now, renewal.lead(record.not_before, record.not_after)) {
            CertState::Valid => "valid",
            CertState::Expiring => "expiring",
            CertState::Expired => "expired",
            CertState::Superseded => "superseded",
        };
        let key = match record.key_id {
            Some(id) => self.store()?.key(id).ok().map(|k| k.name),
            None => None,
        };
        Ok(CertView {
            id: record.id.to_string(),
            key,
            subject: info.subject,
            serial: info.serial_hex,
            not_before: record.not_before,
            not_after: record.not_after,
            expires: rfc3339(record.not_after),
            days_left: cert.days_left(now),
            state: state.to_owned(),
            sha1_thumbprint: info.sha1_thumbprint,
            sha256_fingerprint: info.sha256_fingerprint,
            origin: match record.origin {
                CertOrigin::Issued => "issued",
                CertOrigin::Imported => "imported",
            }
            .to_owned(),
            superseded_by: match record.status {
                CertStatus::Superseded { by, .. } => by.map(|b| b.to_string()),
                CertStatus::Active => None,
            },
            renewal,
            pem: cert.to_pem()?,
        })
    }

    /// Records an event; a failure to audit is logged, never fatal to the operation.
    pub(crate) fn audit(
        &self,
        at: u64,
        key_id: Option<KeyId>,
        action: &str,
        detail: serde_json::Value,
    ) {
        if let Some(auditor) = &self.auditor {
            auditor.record_or_log(AuditEvent {
                at,
                key_id,
                action: action.to_owned(),
                outcome: AuditOutcome::Info,
                detail,
            });
        }
    }
}

/// `2027-11-27T12:00:00Z`.
pub fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{KdfParams, SledStore};
    use std::sync::Arc;
    use std::time::Duration;

    const T0: u64 = 1_800_000_000;

    fn fixture(dir: &std::path::Path) -> (Service, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1), T0));
        let store = SledStore::init(dir, None, KdfParams::insecure_fast()).unwrap();
        let service = Service::new(
            Some(Arc::new(store)),
            None,
            Arc::clone(&clock) as Arc<dyn crate::clock::Clock>,
        );
        (service, clock)
    }

    fn request(service: &Service, request: Request) -> Response {
        match service.handle(request) {
            Response::Error { message, .. } => panic!("{message}"),
            other => other,
        }
    }

    fn rsa_key(service: &Service, name: &str) {
        request(
            service,
            Request::KeyGenerate {
                name: name.into(),
                kind: "rsa".into(),
                bits: None,
                comment: "c".into(),
            },
        );
    }

    /// An RSA key `web` and a certificate of it valid for `days`.
    fn web_cert(service: &Service, days: u32) -> CertView {
        rsa_key(service, "web");
        let Response::Cert(cert) = request(
            service,
            Request::CertCreate {
                key: "web".into(),
                subject: None,
                days,
            },
        ) else {
            panic!("no certificate")
        };
        *cert
    }

    #[test]
    fn renews_when_the_clock_crosses_the_renewal_point() {
        let dir = tempfile::tempdir().unwrap();
        let (service, clock) = fixture(&dir.path().join("s"));
        let cert = web_cert(&service, 365);
        assert_eq!(cert.subject, "CN=web");
        let plan = service.plan_renewals(T0).unwrap();
        assert!(plan.due.is_empty());
        let renew_at = cert.not_after - rotation::DEFAULT_RENEW_BEFORE;
        assert_eq!(plan.next, Some(renew_at));
        clock.advance(Duration::from_secs(renew_at - T0 - 1));
        assert!(
            service
                .plan_renewals(clock_now(&clock))
                .unwrap()
                .due
                .is_empty()
        );
        clock.advance(Duration::from_secs(1));
        let now = clock_now(&clock);
        let plan = service.plan_renewals(now).unwrap();
        assert_eq!(plan.due.len(), 1);
        let mut backoff = crate::scheduler::Backoff::default();
        crate::scheduler::tick(&service, &mut backoff, now);
        let Response::Certs { certs } = request(&service, Request::CertList { all: true }) else {
            panic!()
        };
        let states: Vec<&str> = certs.iter().map(|c| c.state.as_str()).collect();
        assert_eq!(states, ["superseded", "valid"], "{certs:#?}");
        assert_eq!(
            certs[0].superseded_by.as_deref(),
            Some(certs[1].id.as_str())
        );
        assert!(
            service.plan_renewals(now).unwrap().due.is_empty(),
            "renewed once, not twice"
        );
    }

    fn clock_now(clock: &ManualClock) -> u64 {
        crate::clock::Clock::unix_now(clock)
    }

    #[test]
    fn rekey_makes_a_new_key_and_imported_certs_are_only_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let (service, _clock) = fixture(&dir.path().join("s"));
        rsa_key(&service, "web");
        let Response::Cert(cert) = request(
            &service,
            Request::CertCreate {
                key: "web".into(),
                subject: Some("CN=a,O=b".into()),
                days: 100,
            },
        ) else {
            panic!()
        };
        let policy = RenewalPolicy {
            rekey: true,
            ..RenewalPolicy::default()
        };
        request(
            &service,
            Request::CertPolicy {
                cert: cert.id[..8].into(),
                policy: Some(policy),
            },
        );
        let Response::Cert(new) = request(
            &service,
            Request::CertRenew {
                cert: cert.id.clone(),
            },
        ) else {
            panic!()
        };
        assert_ne!(new.key.as_deref(), Some("web"));
        assert!(new.key.as_deref().unwrap().starts_with("web-"));
        assert_eq!(new.subject, "CN=a, O=b");
        assert!(
            new.renewal.rekey,
            "the policy follows the renewed certificate"
        );
        // An imported certificate (no key) is listed and checked but never planned for renewal.
        let imported = CertRecord {
            id: CertId::random(),
            key_id: None,
            origin: CertOrigin::Imported,
            ..service
                .store()
                .unwrap()
                .get_cert(new.id.parse().unwrap())
                .unwrap()
        };
        service.store().unwrap().put_cert(&imported).unwrap();
        let far = imported.not_after;
        assert!(
            !service
                .plan_renewals(far - 1)
                .unwrap()
                .due
                .contains(&imported.id)
        );
        let Response::Error { message, .. } = service.handle(Request::CertRenew {
            cert: imported.id.to_string(),
        }) else {
            panic!()
        };
        assert!(message.contains("imported"), "{message}");
    }

    #[test]
    fn bad_input_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (service, _clock) = fixture(&dir.path().join("s"));
        rsa_key(&service, "web");
        request(
            &service,
            Request::KeyGenerate {
                name: "ed".into(),
                kind: "ed25519".into(),
                bits: None,
                comment: String::new(),
            },
        );
        for bad in [
            Request::CertCreate {
                key: "web".into(),
                subject: None,
                days: 0,
            },
            Request::CertCreate {
                key: "web".into(),
                subject: None,
                days: 100_000,
            },
            Request::CertCreate {
                key: "ed".into(),
                subject: None,
                days: 30,
            },
            Request::CertCreate {
                key: "missing".into(),
                subject: None,
                days: 30,
            },
            Request::CertCreate {
                key: "web".into(),
                subject: Some("XX=1".into()),
                days: 30,
            },
            Request::CertImport {
                pem: "not a certificate".into(),
            },
        ] {
            assert!(matches!(service.handle(bad), Response::Error { .. }));
        }
        assert!(service.store().unwrap().list_certs().unwrap().is_empty());
    }

    /// With 10,000 certificates stored, planning reads only the index entries inside the window.
    #[test]
    fn planning_touches_only_due_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (service, _clock) = fixture(&dir.path().join("s"));
        let cert = web_cert(&service, 365);
        let base = service
            .store()
            .unwrap()
            .get_cert(cert.id.parse().unwrap())
            .unwrap();
        let store = service.store().unwrap();
        let records: Vec<CertRecord> = (0..10_000u64)
            .map(|i| CertRecord {
                id: CertId::random(),
                not_after: T0 + 40 * DAY + i * 60,
                ..base.clone()
            })
            .collect();
        for chunk in records.chunks(1_000) {
            store.put_certs(chunk).unwrap();
        }
        // At day 11 the due certificates are those expiring by day 41: the first 1,441.
        let now = T0 + 11 * DAY;
        let plan = service.plan_renewals(now).unwrap();
        let due_by_scan = store
            .due_before(now + rotation::DEFAULT_RENEW_BEFORE + 1)
            .unwrap()
            .len();
        assert_eq!(plan.due.len(), due_by_scan);
        // One day of certificates (one a minute), both ends included.
        assert_eq!(plan.due.len(), 1_441);
        assert_eq!(
            plan.next,
            Some(T0 + 40 * DAY + 1_441 * 60 - rotation::DEFAULT_RENEW_BEFORE)
        );
    }
}
