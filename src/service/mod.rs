//! The service layer: what every control request does, shared by the daemon (behind
//! `control.sock`) and the CLI (which runs it on the store directly when no daemon runs).
//!
//! It joins the store (persistent keys) and, in the daemon, the agent's key ring (what is served):
//! a key generated or imported is stored and served at once; unsealing serves every stored key;
//! `ssh-add -d` unloads a stored key from the ring but never deletes it from the store.

use std::sync::Arc;

use ssh_key::PrivateKey;
use zeroize::Zeroizing;

mod certs;
mod guard;
mod key_certs;
mod policy;
mod x509;

pub use guard::Caller;
pub use key_certs::KeyCertError;

use crate::agent::Keyring;
use crate::agent::keyring::{Constraints, Entry, SignerLoader, SignerSlot};
use crate::clock::Clock;
use crate::control::proto::{ErrorKind, KeyView, Request, Response, StatusView};
use crate::keys::fingerprint::{self, FingerprintHash};
use crate::keys::{self, KeyError, Signer, generate};
use crate::store::{KeyInfo, NewKey, PrivateKeyBytes, Store, StoreError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored or submitted private key cannot be parsed.
    #[error("private key of {what} is unreadable")]
    BadPrivateKey {
        /// Which key.
        what: String,
        /// Why.
        #[source]
        source: ssh_key::Error,
    },
    /// The agent is locked, and the request needs what locking sealed.
    #[error("the agent is locked: unlock it with `ssh-add -X` first")]
    AgentLocked,
    /// The daemon was started without a store.
    #[error("this agent runs without a store (it was started with --no-store)")]
    NoStore,
    /// The operation needs the running agent.
    #[error("no agent is running to serve the key: start one with `keyward start`")]
    NoAgent,
    /// The key's policy refused to sign.
    #[error("the key's policy refuses: {0}")]
    PolicyRefused(crate::policy::Refusal),
    /// A certificate could not be made, read or used.
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
    /// A renewal policy is invalid.
    #[error(transparent)]
    Policy(#[from] crate::rotation::PolicyError),
    /// An export target could not be written.
    #[error(transparent)]
    Export(#[from] crate::rotation::ExportError),
    /// No certificate matches.
    #[error("no certificate {0} (see `keyward cert list --all`)")]
    CertNotFound(String),
    /// Several certificates match an id prefix.
    #[error("{0} matches several certificates: give more of the id")]
    AmbiguousCert(String),
    /// The certificate was renewed already.
    #[error("certificate {id} was already renewed by {by}: renew that one instead")]
    AlreadyRenewed {
        /// The superseded certificate.
        id: String,
        /// Its successor.
        by: String,
    },
    /// The certificate has no key in the store.
    #[error(
        "certificate {0} was imported without its key: it is tracked, but keyward cannot renew it"
    )]
    CertWithoutKey(String),
    /// A key policy is invalid.
    #[error(transparent)]
    KeyPolicy(#[from] crate::policy::PolicyError),
    /// The request needs the store passphrase.
    #[error(
        "{0} needs the store passphrase: the keyward CLI asks for it (or reads --store-passphrase-file)"
    )]
    PassphraseRequired(String),
    /// The user declined at the confirmation prompt (or no askpass program could ask).
    #[error("{0} was not confirmed (declined at the prompt, or no askpass program to ask)")]
    Declined(String),
    /// An OpenSSH certificate for a stored key is refused.
    #[error(transparent)]
    KeyCert(#[from] KeyCertError),
    /// A renewal would be due again at once.
    #[error(
        "the renewed certificate would be valid for {days} days, not more than renew-before: set a longer validity (`keyward cert policy ID --days N`) or a shorter renew-before"
    )]
    RenewalLoop {
        /// Validity of the next certificate.
        days: u32,
    },
}

impl ServiceError {
    /// The category reported to the client.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(
                StoreError::KeyNotFound(_)
                | StoreError::KeyIdNotFound(_)
                | StoreError::CertNotFound(_),
            )
            | Self::CertNotFound(_)
            | Self::KeyCert(KeyCertError::NotFound { .. } | KeyCertError::NotX509 { .. }) => {
                ErrorKind::NotFound
            }
            Self::Store(
                StoreError::DuplicateName { .. } | StoreError::AlreadyInitialised { .. },
            ) => ErrorKind::Exists,
            Self::Store(StoreError::Sealed { .. }) => ErrorKind::Sealed,
            Self::Store(StoreError::WrongPassphrase { .. }) => ErrorKind::WrongPassphrase,
            Self::PassphraseRequired(_) => ErrorKind::PassphraseRequired,
            Self::PolicyRefused(_) => ErrorKind::Refused,
            Self::Declined(_) => ErrorKind::Declined,
            Self::Store(StoreError::Locked) | Self::AgentLocked => ErrorKind::Locked,
            Self::Store(StoreError::InvalidName { .. })
            | Self::Key(_)
            | Self::BadPrivateKey { .. }
            | Self::Cert(_)
            | Self::Policy(_)
            | Self::AmbiguousCert(_)
            | Self::CertWithoutKey(_)
            | Self::AlreadyRenewed { .. }
            | Self::KeyPolicy(_)
            | Self::KeyCert(_)
            | Self::RenewalLoop { .. } => ErrorKind::Invalid,
            Self::NoStore | Self::NoAgent => ErrorKind::NoStore,
            Self::Export(_) | Self::Store(_) => ErrorKind::Internal,
        }
    }
}

/// The whole error chain on one line, as the CLI prints it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

/// What applies where nothing more specific was set: the `[policy]`, `[renewal]` and `[audit]`
/// sections of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// The policy of stored keys that have none of their own.
    pub policy: crate::policy::Policy,
    /// The renewal policy of certificates that have none of their own.
    pub renewal: crate::rotation::RenewalPolicy,
    /// How many audit records to keep.
    pub audit_retention: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            policy: crate::policy::Policy::default(),
            renewal: crate::rotation::RenewalPolicy::default(),
            audit_retention: crate::audit::DEFAULT_RETENTION,
        }
    }
}

impl Defaults {
    /// The defaults a configuration file sets.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let p = &config.policy;
        let r = &config.renewal;
        Self {
            policy: crate::policy::Policy {
                confirm: p.confirm,
                lifetime_secs: p.lifetime.as_ref().map(|d| d.0.as_secs()),
                max_signatures: p.max_signatures,
                allow_sha1: p.allow_sha1,
                deny_forwarding: !p.allow_forwarded,
                ..crate::policy::Policy::default()
            },
            renewal: crate::rotation::RenewalPolicy {
                renew_before: r.renew_before.0.as_secs(),
                validity_days: r.validity_days,
                rekey: r.rekey,
                ..crate::rotation::RenewalPolicy::default()
            },
            audit_retention: config.audit.max_events,
        }
    }
}

/// The service.
pub struct Service {
    store: Option<Arc<dyn Store>>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    daemon_pid: Option<u32>,
    /// Woken when certificates or renewal policies change, so the scheduler re-plans.
    pub renewals_changed: tokio::sync::Notify,
    /// The audit trail of the store (shared with the agent sessions).
    auditor: Option<crate::audit::Auditor>,
    /// Configured defaults.
    pub(crate) defaults: Defaults,
    /// Serialises passphrase checks and slows wrong guesses.
    gate: guard::Gate,
    /// The program that confirms private-key exports of keys whose policy says confirm.
    askpass: Option<std::path::PathBuf>,
}

impl Service {
    /// A service for the daemon (with its key ring) or the CLI (`keyring: None`).
    pub fn new(
        store: Option<Arc<dyn Store>>,
        keyring: Option<Arc<Keyring>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let daemon_pid = keyring.as_ref().map(|_| std::process::id());
        let auditor = store.as_ref().and_then(|s| {
            crate::audit::Auditor::new(Arc::clone(s), crate::audit::DEFAULT_RETENTION)
                .map_err(|e| tracing::error!(error = %e, "cannot open the audit trail"))
                .ok()
        });
        Self {
            store,
            keyring,
            clock,
            daemon_pid,
            renewals_changed: tokio::sync::Notify::new(),
            auditor,
            defaults: Defaults::default(),
            gate: guard::Gate::default(),
            askpass: None,
        }
    }

    /// Confirms exports of keys whose policy says confirm through `askpass` (an `SSH_ASKPASS`
    /// program); without one such exports are refused.
    #[must_use]
    pub fn with_askpass(mut self, askpass: Option<std::path::PathBuf>) -> Self {
        self.askpass = askpass;
        self
    }

    /// Applies configured defaults.
    #[must_use]
    pub fn with_defaults(mut self, defaults: Defaults) -> Self {
        self.auditor = self
            .auditor
            .map(|a| a.with_retention(defaults.audit_retention));
        self.defaults = defaults;
        self
    }

    /// The audit trail, to share with the agent sessions.
    pub fn auditor(&self) -> Option<crate::audit::Auditor> {
        self.auditor.clone()
    }

    /// Answers one request made by this process (the CLI on its own store, the daemon at
    /// start-up); see [`handle_from`](Self::handle_from).
    pub fn handle(&self, request: Request) -> Response {
        self.handle_from(request, &Caller::this_process())
    }

    pub(crate) fn store(&self) -> Result<&Arc<dyn Store>, ServiceError> {
        self.store.as_ref().ok_or(ServiceError::NoStore)
    }

    fn dispatch(&self, request: Request, caller: &Caller) -> Result<Response, ServiceError> {
        let now = self.clock.unix_now();
        Ok(match request {
            Request::Status => Response::Status(self.status()?),
            Request::Unlock { passphrase } => {
                let store = self.store()?;
                self.gated(|| store.unseal(passphrase.as_bytes()))?;
                let loaded = self.load_stored_keys()?;
                tracing::info!(keys = loaded, "store unsealed");
                Response::Ok
            }
            Request::Seal => {
                let store = self.store()?;
                if let Some(ring) = &self.keyring {
                    for info in store.list_keys()? {
                        // Locked or not: the store's keys are no longer served.
                        ring.unload(&keys::public_blob(info.public.key_data())?);
                    }
                    for cert in store.key_certs(None)? {
                        ring.unload(&cert.blob);
                    }
                }
                store.seal();
                Response::Ok
            }
            Request::ChangePassphrase { old, new } => {
                let store = self.store()?;
                self.gated(|| {
                    store.change_passphrase(
                        old.as_bytes(),
                        new.as_ref().map(|n| n.as_bytes()),
                        crate::store::KdfParams::default(),
                    )
                })?;
                Response::Ok
            }
            Request::KeyGenerate {
                name,
                kind,
                bits,
                comment,
            } => {
                let spec = generate::KeySpec::parse(&kind, bits)?;
                let key = generate::generate(spec, &comment)?;
                Response::Key(self.put(&name, &key, now)?)
            }
            Request::KeyImport {
                name,
                comment,
                private_openssh,
            } => {
                let mut key = parse_openssh(&private_openssh, &name)?;
                key.set_comment(comment);
                Response::Key(self.put(&name, &key, now)?)
            }
            cert @ (Request::CertCreate { .. }
            | Request::CertImport { .. }
            | Request::CertList { .. }
            | Request::CertShow { .. }
            | Request::CertRenew { .. }
            | Request::CertPolicy { .. }
            | Request::CertCheck { .. }) => self.cert_request(cert, now, caller)?,
            key_cert @ (Request::KeyCertAdd { .. }
            | Request::KeyCertList { .. }
            | Request::KeyCertRemove { .. }) => self.key_cert_request(key_cert, now)?,
            policy @ (Request::PolicySet { .. }
            | Request::PolicyShow { .. }
            | Request::PolicyTest { .. }
            | Request::AuditRead { .. }
            | Request::AuditVerify) => self.policy_request(policy, now)?,
            Request::Authorized { .. } => {
                return Err(ServiceError::KeyPolicy(
                    crate::policy::PolicyError::Invalid(
                        "an authorised request inside another".into(),
                    ),
                ));
            }
            other => self.key_request(other, now, caller)?,
        })
    }

    fn key_request(
        &self,
        request: Request,
        now: u64,
        caller: &Caller,
    ) -> Result<Response, ServiceError> {
        Ok(match request {
            Request::KeyList => Response::Keys {
                keys: self
                    .store()?
                    .list_keys()?
                    .iter()
                    .map(|k| self.view(k))
                    .collect::<Result<_, _>>()?,
            },
            Request::KeyShow { key } => Response::Key(self.view(&self.store()?.get_key(&key)?)?),
            Request::KeyPrivate { key } => {
                let store = self.store()?;
                let info = store.get_key(&key)?;
                self.confirm_export(&info, caller)?;
                let private = self.private_key(&info)?;
                let openssh = private
                    .to_openssh(ssh_key::LineEnding::LF)
                    .map_err(|source| ServiceError::BadPrivateKey {
                        what: info.name.clone(),
                        source,
                    })?;
                Response::Private {
                    openssh: Zeroizing::new(openssh.to_string()),
                }
            }
            Request::KeyDelete { key } => {
                let store = self.store()?;
                let info = store.get_key(&key)?;
                let view = self.view(&info)?;
                let certs = store.key_certs(Some(info.id))?;
                // Deleted with the key, in the store's transaction.
                store.delete_key(info.id)?;
                if let Some(ring) = &self.keyring {
                    for cert in &certs {
                        ring.unload(&cert.blob);
                    }
                }
                if let Err(e) = store.put_usage(info.id, None, false) {
                    tracing::warn!(key = %info.name, error = %e, "cannot forget a deleted key's usage");
                }
                if let Some(ring) = &self.keyring {
                    ring.unload(&keys::public_blob(info.public.key_data())?);
                }
                Response::Key(view)
            }
            Request::KeyRename { key, new_name } => {
                let store = self.store()?;
                let info = store.get_key(&key)?;
                store.rename_key(info.id, &new_name, now)?;
                Response::Key(self.view(&store.key(info.id)?)?)
            }
            Request::KeyComment { key, comment } => {
                let store = self.store()?;
                let info = store.get_key(&key)?;
                store.set_comment(info.id, &comment, now)?;
                let info = store.key(info.id)?;
                // A served key shows its new comment at once.
                if self.is_loaded(&info)? {
                    self.serve(&info)?;
                }
                Response::Key(self.view(&info)?)
            }
            Request::KeyLoad { key } => {
                if self.keyring.is_none() {
                    return Err(ServiceError::NoAgent);
                }
                let info = self.store()?.get_key(&key)?;
                self.serve(&info)?;
                Response::Key(self.view(&info)?)
            }
            other => unreachable!("dispatch handles {other:?}"),
        })
    }

    fn status(&self) -> Result<StatusView, ServiceError> {
        let status = self.store()?.status()?;
        Ok(StatusView {
            daemon: self.keyring.is_some(),
            pid: self.daemon_pid,
            store: status.path.display().to_string(),
            passphrase_set: status.passphrase_set,
            sealed: status.sealed,
            key_count: status.key_count,
            cert_count: status.cert_count,
            schema_version: status.schema_version,
            agent_keys: self.keyring.as_ref().map(|r| r.len()),
        })
    }

    /// Stores a new key and, in the daemon, serves it.
    pub(crate) fn put(
        &self,
        name: &str,
        key: &PrivateKey,
        now: u64,
    ) -> Result<KeyView, ServiceError> {
        self.put_with_policy(name, key, now, None)
    }

    /// Stores a new key with policy document `policy` (if any) and, in the daemon, serves it
    /// under that policy.
    pub(crate) fn put_with_policy(
        &self,
        name: &str,
        key: &PrivateKey,
        now: u64,
        policy: Option<&serde_json::Value>,
    ) -> Result<KeyView, ServiceError> {
        // Refuse keys the agent could not sign with before they are stored.
        Signer::from_keypair(key.key_data())?;
        let private = key.to_openssh(ssh_key::LineEnding::LF).map_err(|source| {
            ServiceError::BadPrivateKey {
                what: name.to_owned(),
                source,
            }
        })?;
        let store = self.store()?;
        let id = store.put_key(
            NewKey {
                name: name.to_owned(),
                comment: key.comment().to_owned(),
                public: key.public_key().clone(),
                private: PrivateKeyBytes::new(Zeroizing::new(private.as_bytes().to_vec())),
            },
            now,
        )?;
        if let Some(policy) = policy
            && let Err(e) = store.put_policy(id, policy)
        {
            // Never leave the key stored without the policy it was meant to have.
            let _ = store.delete_key(id);
            return Err(e.into());
        }
        let info = store.key(id)?;
        if self.keyring.is_some() {
            self.serve(&info)?;
        }
        self.view(&info)
    }

    pub(crate) fn private_key(&self, info: &KeyInfo) -> Result<PrivateKey, ServiceError> {
        let bytes = self.store()?.private_key(info.id)?;
        let text = std::str::from_utf8(bytes.as_bytes()).unwrap_or_default();
        let mut key = parse_openssh(text, &info.name)?;
        key.set_comment(info.comment.clone());
        Ok(key)
    }

    /// Puts a stored key into the agent's key ring.
    pub(crate) fn serve(&self, info: &KeyInfo) -> Result<(), ServiceError> {
        let Some(ring) = &self.keyring else {
            return Ok(());
        };
        let entry = self.stored_entry(info)?;
        // Re-serving a key (a new policy, a new comment) keeps its usage: a policy change must not
        // hand a key its signatures or its lifetime back.
        if let (Some(old), Some(new)) =
            (ring.find(&entry.blob, self.clock.boot_now()), &entry.policy)
            && let Some(old_policy) = &old.policy
        {
            let usage = old_policy
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            *new.usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = usage;
        }
        let certs = self.cert_entries(info, &entry, &self.store()?.key_certs(Some(info.id))?)?;
        // A locked agent refuses: nothing is served that an unlock would not restore as it was.
        ring.add(entry).map_err(|_| ServiceError::AgentLocked)?;
        for cert in certs {
            ring.add(cert).map_err(|_| ServiceError::AgentLocked)?;
        }
        Ok(())
    }

    /// A key-ring entry for a stored key whose private half is decrypted and parsed on its first
    /// signature, not now: listing needs only the public key.
    fn stored_entry(&self, info: &KeyInfo) -> Result<Entry, ServiceError> {
        let loader = self.stored_loader(info)?;
        let policy = match self.store()?.get_policy(info.id)? {
            Some(value) => crate::policy::Policy::from_json(value)?,
            None => self.defaults.policy.clone(),
        };
        let now = self.clock.unix_now();
        let entry = Entry::new(
            info.public.key_data(),
            info.comment.clone(),
            SignerSlot::lazy(loader),
            Constraints::default(),
        )?
        .with_policy(Some(info.id), policy, now);
        // Limits count per key, across unloads and restarts.
        if let Some(stored) = &entry.policy {
            *stored
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                self.stored_usage(info.id, now)?;
        }
        Ok(entry)
    }

    /// Decrypts and parses stored key `info` when it first signs.
    fn stored_loader(&self, info: &KeyInfo) -> Result<SignerLoader, ServiceError> {
        let store = Arc::clone(self.store()?);
        let (id, name) = (info.id, info.name.clone());
        Ok(Box::new(move || {
            let bytes = store.private_key(id).map_err(|e| error_chain(&e))?;
            let text = std::str::from_utf8(bytes.as_bytes())
                .map_err(|_| format!("stored key {name} is not OpenSSH text"))?;
            let key =
                PrivateKey::from_openssh(text).map_err(|e| format!("stored key {name}: {e}"))?;
            Signer::from_keypair(key.key_data()).map_err(|e| error_chain(&e))
        }))
    }

    pub(crate) fn is_loaded(&self, info: &KeyInfo) -> Result<bool, ServiceError> {
        Ok(match &self.keyring {
            Some(ring) => ring
                .find(
                    &keys::public_blob(info.public.key_data())?,
                    self.clock.boot_now(),
                )
                .is_some(),
            None => false,
        })
    }

    /// Serves every stored key (at start-up when unsealed, and after an unlock); returns how many.
    pub fn load_stored_keys(&self) -> Result<usize, ServiceError> {
        let store = self.store()?;
        if store.is_sealed() || self.keyring.is_none() {
            return Ok(0);
        }
        let mut entries = Vec::new();
        for info in store.list_keys()? {
            match self.stored_entry(&info) {
                Ok(entry) => {
                    // Its OpenSSH certificates are served beside it.
                    let certs = store
                        .key_certs(Some(info.id))
                        .map_err(ServiceError::from)
                        .and_then(|certs| self.cert_entries(&info, &entry, &certs))
                        .unwrap_or_else(|e| {
                            tracing::warn!(key = %info.name, error = %error_chain(&e), "cannot serve a stored key's certificates");
                            Vec::new()
                        });
                    entries.push(entry);
                    entries.extend(certs);
                }
                Err(e) => {
                    tracing::warn!(key = %info.name, error = %error_chain(&e), "cannot serve stored key");
                }
            }
        }
        let n = entries.len();
        if let Some(ring) = &self.keyring {
            let _ = ring.add_all(entries);
        }
        Ok(n)
    }

    fn view(&self, info: &KeyInfo) -> Result<KeyView, ServiceError> {
        let data = info.public.key_data();
        let mut public = info.public.clone();
        public.set_comment(info.comment.clone());
        Ok(KeyView {
            id: info.id.to_string(),
            name: info.name.clone(),
            comment: info.comment.clone(),
            key_type: fingerprint::type_label(data).to_owned(),
            bits: fingerprint::bits(data),
            sha256: fingerprint::fingerprint(data, FingerprintHash::Sha256)?,
            md5: fingerprint::fingerprint(data, FingerprintHash::Md5)?,
            public: public
                .to_openssh()
                .map_err(|source| ServiceError::BadPrivateKey {
                    what: info.name.clone(),
                    source,
                })?,
            created_at: info.created_at,
            loaded: self
                .keyring
                .as_ref()
                .map(|_| self.is_loaded(info))
                .transpose()?,
        })
    }
}

fn parse_openssh(text: &str, what: &str) -> Result<PrivateKey, ServiceError> {
    let key = PrivateKey::from_openssh(text).map_err(|source| ServiceError::BadPrivateKey {
        what: what.to_owned(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(ServiceError::Key(KeyError::Unsupported(
            "an encrypted private key here (decrypt it first)".into(),
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{KdfParams, SledStore};

    fn service(dir: &std::path::Path, ring: Option<Arc<Keyring>>) -> Service {
        let store = SledStore::init(dir, None, KdfParams::insecure_fast()).unwrap();
        Service::new(Some(Arc::new(store)), ring, Arc::new(SystemClock))
    }

    fn generate(name: &str) -> Request {
        Request::KeyGenerate {
            name: name.into(),
            kind: "ed25519".into(),
            bits: None,
            comment: "me@host".into(),
        }
    }

    #[test]
    fn generated_keys_are_stored_served_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::new());
        let svc = service(&dir.path().join("s"), Some(Arc::clone(&ring)));
        let Response::Key(view) = svc.handle(generate("work")) else {
            panic!("generate failed")
        };
        assert_eq!(view.loaded, Some(true));
        assert!(view.public.starts_with("ssh-ed25519 ") && view.public.ends_with(" me@host"));
        assert_eq!(ring.len(), 1);
        let Response::Error { kind, message } = svc.handle(generate("work")) else {
            panic!("duplicate accepted")
        };
        assert_eq!(kind, ErrorKind::Exists);
        assert!(message.contains("work"), "{message}");
        let Response::Private { openssh } = svc.handle(Request::KeyPrivate { key: "work".into() })
        else {
            panic!("no private key")
        };
        assert!(openssh.contains("BEGIN OPENSSH PRIVATE KEY"));
        assert!(matches!(
            svc.handle(Request::KeyDelete { key: "work".into() }),
            Response::Key(_)
        ));
        assert_eq!(ring.len(), 0);
        let Response::Error { kind, .. } = svc.handle(Request::KeyShow { key: "work".into() })
        else {
            panic!("deleted key still shown")
        };
        assert_eq!(kind, ErrorKind::NotFound);
    }

    #[test]
    fn configured_defaults_apply_to_keys_without_a_policy() {
        assert_eq!(
            Defaults::from_config(&crate::config::Config::default()).policy,
            crate::policy::Policy::default(),
            "the shipped configuration means the built-in defaults"
        );
        let dir = tempfile::tempdir().unwrap();
        let defaults = Defaults {
            policy: crate::policy::Policy {
                confirm: true,
                ..crate::policy::Policy::default()
            },
            ..Defaults::default()
        };
        let svc = service(&dir.path().join("s"), None).with_defaults(defaults);
        svc.handle(generate("k"));
        let Response::Policy { policy, .. } = svc.handle(Request::PolicyShow { key: "k".into() })
        else {
            panic!("no policy")
        };
        assert!(policy.confirm);
    }

    #[test]
    fn bad_imports_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(&dir.path().join("s"), None);
        let r = svc.handle(Request::KeyImport {
            name: "x".into(),
            comment: String::new(),
            private_openssh: Zeroizing::new("garbage".into()),
        });
        assert!(
            matches!(
                r,
                Response::Error {
                    kind: ErrorKind::Invalid,
                    ..
                }
            ),
            "{r:?}"
        );
        let Response::Keys { keys } = svc.handle(Request::KeyList) else {
            panic!()
        };
        assert!(keys.is_empty());
    }
}
