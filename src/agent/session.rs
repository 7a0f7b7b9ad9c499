//! One agent connection: decodes each request from its frame, asks the key ring, encodes the
//! reply. Every malformed or unsupported request gets FAILURE and the connection goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ssh_agent_lib::proto::{Extension, KeyConstraint, Request};
use ssh_encoding::Decode;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::agent::bind::Bindings;
use crate::agent::confirm;
use crate::agent::identity;
use crate::agent::keyring::{Constraints, Entry, Keyring};
use crate::agent::senders::Senders;
use crate::agent::wire::{self, Reply};
use crate::audit::Auditor;
use crate::clock::Clock;
use crate::keys::{self, Signer};
use crate::policy::{self, Decision};
use crate::store::{AuditEvent, AuditOutcome};
use ssh_encoding::Encode;
use ssh_key::private::KeypairData;

/// Why a legacy `ssh-rsa` signature is refused on a forwarded connection (audit reason).
const FORWARDED_SHA1: &str =
    "ssh-rsa (SHA-1) signatures are never made over a forwarded connection";

/// The extensions this agent understands, answered to `query`.
pub const EXTENSIONS: &[&str] = &["query", "session-bind@openssh.com"];

/// Settings every session shares.
pub struct AgentConfig {
    /// The clock lifetimes are measured on.
    pub clock: Arc<dyn Clock>,
    /// The program asked to confirm uses of `-c` keys.
    pub askpass: Option<PathBuf>,
    /// Lifetime given to keys added without one (`keyward-agent -t`).
    pub default_lifetime: Option<Duration>,
    /// One slot per core for private-key operations: signatures queue here in arrival order
    /// instead of piling threads onto the cores (which only lengthens the tail).
    sign_slots: Semaphore,
    /// Where decisions are recorded (absent without a store).
    pub auditor: Option<Auditor>,
    /// What ssh-agent's `-E`, `-P` and `-O` flags set.
    pub compat: super::CompatOptions,
    /// PKCS#11 providers loaded with `ssh-add -s`, each in its own helper process.
    pub tokens: crate::agent::pkcs11::Tokens,
}

impl AgentConfig {
    /// Settings with a signing slot per available core.
    pub fn new(
        clock: Arc<dyn Clock>,
        askpass: Option<PathBuf>,
        default_lifetime: Option<Duration>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            clock,
            askpass,
            default_lifetime,
            sign_slots: Semaphore::new(cores),
            auditor: None,
            compat: super::CompatOptions::new(),
            tokens: crate::agent::pkcs11::Tokens::default(),
        }
    }

    /// Runs PKCS#11 providers with `helper` (OpenSSH's `ssh-pkcs11-helper`), accepting only
    /// providers whose resolved path matches `allowlist` (`keyward-agent -P`).
    #[must_use]
    pub fn with_pkcs11(mut self, helper: PathBuf, allowlist: String) -> Self {
        self.tokens = crate::agent::pkcs11::Tokens::new(helper, allowlist);
        self
    }

    /// Records every decision through `auditor`.
    #[must_use]
    pub fn with_auditor(mut self, auditor: Option<Auditor>) -> Self {
        self.auditor = auditor;
        self
    }

    /// Applies ssh-agent's `-E`, `-P` and `-O` settings.
    #[must_use]
    pub fn with_compat(mut self, compat: super::CompatOptions) -> Self {
        self.compat = compat;
        self
    }
}

/// Who is on the other end of a connection, from the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's pid, where the OS tells it.
    pub pid: Option<i32>,
}

/// The state of one connection.
pub struct Session {
    keyring: Arc<Keyring>,
    config: Arc<AgentConfig>,
    peer: Peer,
    bindings: Bindings,
    /// The connecting process as it was at connect time: compared before every signature with
    /// what that pid runs then, so an exec or exit after connecting is seen.
    connected: Option<policy::peer::Snapshot>,
    /// The peer's process and its parents, read from `/proc` once per connection on its first
    /// signature (the first entry's executable is replaced by a fresh read at each request).
    lineage: std::sync::OnceLock<Arc<Vec<policy::peer::Process>>>,
    /// Who wrote the request being handled, as the kernel reported it.
    senders: Senders,
}

impl Session {
    /// A session for a new connection from `peer`.
    pub fn new(keyring: Arc<Keyring>, config: Arc<AgentConfig>, peer: Peer) -> Self {
        Self {
            keyring,
            config,
            peer,
            bindings: Bindings::default(),
            connected: peer.pid.and_then(policy::peer::Snapshot::read),
            lineage: std::sync::OnceLock::new(),
            senders: Senders::Unknown,
        }
    }

    /// Records who wrote the next request (from [`crate::agent::senders::SenderReader`]).
    pub fn written_by(&mut self, senders: Senders) {
        self.senders = senders;
    }

    /// Handles one request frame and returns the reply payload.
    pub async fn handle(&mut self, frame: &[u8]) -> Reply {
        let Some(&kind) = frame.first() else {
            return Reply::FAILURE;
        };
        // Lock and unlock passwords are read here, into memory that is wiped after use, instead
        // of through ssh-agent-lib's `String`s.
        if kind == wire::LOCK || kind == wire::UNLOCK {
            let action = if kind == wire::LOCK { "lock" } else { "unlock" };
            // The far end of a forwarded agent must not lock the user out with a password the
            // user does not know, nor unlock what the user locked.
            if self.bindings.forwarded() {
                tracing::info!(pid = ?self.peer.pid, action, "refused over a forwarded connection");
                self.audit_refused(action, "over a forwarded connection")
                    .await;
                return Reply::FAILURE;
            }
            let Some(password) = read_password(&frame[1..]) else {
                return Reply::FAILURE;
            };
            let ok = if kind == wire::LOCK {
                self.keyring.lock(&password).await
            } else {
                let now = self.config.clock.boot_now();
                self.keyring.unlock(&password, now).await
            };
            tracing::info!(pid = ?self.peer.pid, ok, action);
            self.audit_plain(action, ok).await;
            return Reply::status(ok);
        }
        // Smartcard messages carry a PIN: read here into memory that is wiped after use.
        if matches!(
            kind,
            crate::agent::pkcs11::ADD
                | crate::agent::pkcs11::REMOVE
                | crate::agent::pkcs11::ADD_CONSTRAINED
        ) {
            return self.smartcard(kind, &frame[1..]).await;
        }
        let message = match decode(kind, frame) {
            Ok(message) => message,
            Err(why) => {
                tracing::info!(message = kind, %why, "refused undecodable request");
                return Reply::FAILURE;
            }
        };
        let now = self.config.clock.boot_now();
        if self.keyring.is_locked() {
            // A locked agent lists nothing and does nothing but unlock.
            return match message {
                Message::Other(Request::RequestIdentities) => {
                    Reply::Owned(wire::identities_answer(std::iter::empty()))
                }
                _ => Reply::FAILURE,
            };
        }
        // Over a forwarded agent, the far host may use the keys (as policies allow) but never
        // change them: adding or removing keys is for the machine the agent runs on.
        if self.bindings.forwarded()
            && let Some(action) = key_change(&message)
        {
            tracing::info!(pid = ?self.peer.pid, action, "refused a key change over a forwarded connection");
            self.audit_refused(action, "over a forwarded connection")
                .await;
            return Reply::FAILURE;
        }
        let request = match message {
            Message::Sign(sign) => return self.sign(sign).await,
            Message::Add(add) => {
                let reply = self.add(add);
                self.audit_plain("add", reply.as_bytes()[0] == wire::SUCCESS)
                    .await;
                return reply;
            }
            Message::Remove(blob) => {
                let ok = self.keyring.remove(&blob).unwrap_or(false);
                self.audit_plain("remove", ok).await;
                return Reply::status(ok);
            }
            Message::Other(request) => request,
        };
        match request {
            Request::RequestIdentities => self.identities(now),
            Request::RemoveAllIdentities => {
                let ok = self.keyring.remove_all().is_ok();
                self.audit_plain("remove_all", ok).await;
                Reply::status(ok)
            }
            Request::Extension(ext) => self.extension(&ext),
            // Smartcard (PKCS#11) messages are read from the raw frame above (for the PIN).
            Request::AddSmartcardKey(_)
            | Request::RemoveSmartcardKey(_)
            | Request::AddSmartcardKeyConstrained(_)
            | Request::SignRequest(_)
            | Request::AddIdentity(_)
            | Request::AddIdConstrained(_)
            | Request::RemoveIdentity(_)
            | Request::Lock(_)
            | Request::Unlock(_) => Reply::FAILURE,
        }
    }

    /// Who asks, as of this request: the connecting process's lineage (read once), what the
    /// connecting pid runs now (one readlink and one small read per request), and whether it is
    /// still the process that connected and the one the kernel saw write the request.
    fn caller(&self) -> Caller {
        let lineage = Arc::clone(self.lineage.get_or_init(|| {
            Arc::new(
                self.peer
                    .pid
                    .map(|pid| policy::peer::chain(pid, 8))
                    .unwrap_or_default(),
            )
        }));
        let current = self.peer.pid.and_then(policy::peer::Snapshot::read);
        let continuity =
            match policy::peer::Continuity::of(self.connected.as_ref(), current.as_ref()) {
                policy::peer::Continuity::Same => self
                    .peer
                    .pid
                    .and_then(|pid| self.senders.other_than(pid))
                    .map_or(
                        policy::peer::Continuity::Same,
                        policy::peer::Continuity::OtherWriter,
                    ),
                changed => changed,
            };
        Caller {
            lineage,
            current,
            continuity,
            connected_exe: self.connected.as_ref().and_then(|c| c.exe.clone()),
        }
    }

    async fn sign(&self, req: identity::Sign<'_>) -> Reply {
        let now = self.config.clock.boot_now();
        let Some(entry) = self.keyring.find(req.blob, now) else {
            tracing::debug!("sign request for a key the agent does not hold");
            return Reply::FAILURE;
        };
        if let Some(application) = &entry.sk_application
            && let Some(why) = sk_refusal(
                application,
                self.bindings.forwarded(),
                self.config.compat.restrict_websafe,
                req.data,
            )
        {
            tracing::info!(fingerprint = %entry.fingerprint, pid = ?self.peer.pid, why, "security-key signature refused");
            self.audit_refused("sign", why).await;
            return Reply::FAILURE;
        }
        let flags = req.flags;
        let data = req.data.to_vec();
        let request = Requester::of(
            self.peer,
            self.caller(),
            &self.bindings,
            &data,
            entry.algorithm(flags),
        );
        if !self.authorize(&entry, &request).await {
            return Reply::FAILURE;
        }
        // RSA signing takes a few hundred microseconds: keep it off the I/O threads, one
        // signature per core at a time.
        let Ok(_slot) = self.config.sign_slots.acquire().await else {
            release(&entry);
            return Reply::FAILURE;
        };
        let auditor = self.config.auditor.clone();
        let unix_now = self.config.clock.unix_now();
        let allowed = auditor.as_ref().map(|_| request.detail("allowed"));
        let token = self.config.tokens.find(req.blob);
        let signed = run_signer(move || {
            let signature = match token.map_or_else(
                || {
                    entry
                        .signer
                        .get()
                        .map_err(crate::keys::KeyError::Signing)
                        .and_then(|signer| signer.sign(&data, flags))
                },
                |token| {
                    token
                        .sign(&data, flags)
                        .map_err(|e| crate::keys::KeyError::Signing(e.to_string()))
                },
            ) {
                Ok(signature) => signature,
                Err(e) => {
                    release(&entry);
                    return Err(e);
                }
            };
            // Recorded before the reply; made durable by the store's background flush (within
            // half a second) rather than a disk flush per signature.
            if let (Some(auditor), Some(detail)) = (&auditor, allowed) {
                auditor.record_lazy(event(
                    &entry,
                    unix_now,
                    "sign",
                    AuditOutcome::Allowed,
                    detail,
                ));
            }
            Ok::<_, crate::keys::KeyError>(signature)
        })
        .await;
        match signed {
            Ok(Ok(signature)) => Reply::Owned(wire::sign_response(&signature)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "signing failed");
                Reply::FAILURE
            }
            Err(e) => {
                tracing::error!(error = %e, "signing task failed");
                Reply::FAILURE
            }
        }
    }

    /// Applies the key's policy and confirmation; records refusals.
    async fn authorize(&self, entry: &Entry, request: &Requester<'_>) -> bool {
        // Legacy SHA-1 signatures (made by the `rsa` crate, see deny.toml) are for local peers
        // only, whatever the key's policy: the far end of a forwarded agent never gets one.
        if request.algorithm == "ssh-rsa" && self.bindings.forwarded() {
            tracing::info!(fingerprint = %entry.fingerprint, pid = ?self.peer.pid, "refused an ssh-rsa (SHA-1) signature over a forwarded connection");
            self.audit(
                entry,
                "sign",
                AuditOutcome::Refused,
                request.detail(FORWARDED_SHA1),
            )
            .await;
            return false;
        }
        let mut confirm = entry.constraints.confirm;
        if let Some(stored) = &entry.policy {
            let now = self.config.clock.unix_now();
            let decision = {
                let mut usage = stored
                    .usage
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let decision = match request.distrust() {
                    // An executable rule trusts only the process that connected, still running
                    // the program it ran then.
                    Some(why) if !stored.policy.executables.is_empty() => {
                        Decision::Refuse(policy::Refusal::PeerChanged(why))
                    }
                    _ => policy::decide(&stored.policy, &request.context(now, &usage, entry)),
                };
                // Count the signature under the same lock as the decision, so simultaneous
                // requests cannot all pass a limit; it is given back if no signature is made.
                if matches!(decision, Decision::Allow { .. }) {
                    usage.record(now, &stored.policy);
                }
                decision
            };
            match decision {
                Decision::Allow { confirm: ask } => confirm |= ask,
                Decision::Refuse(refusal) => {
                    tracing::info!(fingerprint = %entry.fingerprint, pid = ?self.peer.pid, %refusal, "signature refused by policy");
                    self.audit(
                        entry,
                        "sign",
                        AuditOutcome::Refused,
                        request.detail(&refusal.to_string()),
                    )
                    .await;
                    return false;
                }
            }
        }
        if confirm {
            let prompt = format!(
                "Allow use of key {}?\nKey fingerprint {}.\nRequested by {}{}.{}",
                entry.comment,
                self.config
                    .compat
                    .fingerprint_hash
                    .fingerprint(&entry.key_blob),
                request.lineage(),
                request
                    .host
                    .as_ref()
                    .map_or_else(String::new, |h| format!(" for host {h}")),
                request
                    .distrust()
                    .map_or_else(String::new, |why| format!("\nWarning: {why}.")),
            );
            if !confirm::confirm(self.config.askpass.as_deref(), &prompt).await {
                release(entry);
                tracing::info!(fingerprint = %entry.fingerprint, pid = ?self.peer.pid, "signature refused by the user");
                self.audit(
                    entry,
                    "sign",
                    AuditOutcome::Refused,
                    request.detail("refused by the user"),
                )
                .await;
                return false;
            }
        }
        true
    }

    /// Records an event about `entry` off the I/O threads.
    async fn audit(
        &self,
        entry: &Entry,
        action: &'static str,
        outcome: AuditOutcome,
        detail: serde_json::Value,
    ) {
        let Some(auditor) = self.config.auditor.clone() else {
            return;
        };
        let event = event(entry, self.config.clock.unix_now(), action, outcome, detail);
        let _ = tokio::task::spawn_blocking(move || auditor.record_or_log(event)).await;
    }

    /// Records a refused request that concerns no single key, with why.
    async fn audit_refused(&self, action: &'static str, reason: &str) {
        let detail =
            serde_json::json!({ "uid": self.peer.uid, "pid": self.peer.pid, "reason": reason });
        self.audit_unkeyed(action, AuditOutcome::Refused, detail)
            .await;
    }

    /// Records an event that concerns no single key.
    async fn audit_plain(&self, action: &'static str, ok: bool) {
        let outcome = if ok {
            AuditOutcome::Allowed
        } else {
            AuditOutcome::Refused
        };
        let detail = serde_json::json!({ "uid": self.peer.uid, "pid": self.peer.pid });
        self.audit_unkeyed(action, outcome, detail).await;
    }

    /// Records an event with no key, off the I/O threads.
    async fn audit_unkeyed(
        &self,
        action: &'static str,
        outcome: AuditOutcome,
        detail: serde_json::Value,
    ) {
        let Some(auditor) = self.config.auditor.clone() else {
            return;
        };
        let event = AuditEvent {
            at: self.config.clock.unix_now(),
            key_id: None,
            action: action.to_owned(),
            outcome,
            detail,
        };
        let _ = tokio::task::spawn_blocking(move || auditor.record_or_log(event)).await;
    }

    /// The identities answer for this connection: on a connection ssh bound to a host (or
    /// whose binding failed), only the keys their policy and destination constraints permit
    /// there ([`policy::visible`]), so servers do not count refused keys as failures.
    fn identities(&self, now: crate::clock::BootInstant) -> Reply {
        let hops = self.bindings.hops();
        if hops.is_empty() && !self.bindings.failed() {
            return Reply::Shared(self.keyring.identities_answer(now));
        }
        let unix_now = self.config.clock.unix_now();
        let failed = self.bindings.failed();
        Reply::Owned(self.keyring.identities_answer_filtered(now, |entry| {
            entry.policy.as_ref().is_none_or(|s| {
                policy::visible(&s.policy, s.restrict.as_ref(), hops, failed, unix_now)
            })
        }))
    }

    fn add(&self, add: identity::Add) -> Reply {
        let (constraints, destinations, provider) = match self.constraints(&add.constraints) {
            Ok(c) => c,
            Err(why) => {
                tracing::info!(%why, "refused to add a key with a constraint we cannot enforce");
                return Reply::FAILURE;
            }
        };
        let identity::Add {
            blob,
            public,
            keypair,
            comment,
            certificate,
            ..
        } = add;
        let signer = match provider {
            Some(provider) => self
                .provider(&keypair, &provider)
                .and_then(|path| Signer::security_key(&keypair, path).map_err(|e| e.to_string())),
            None => Signer::from_keypair(&keypair).map_err(|e| e.to_string()),
        };
        let signer = match signer {
            Ok(signer) => signer,
            Err(why) => {
                tracing::info!(%why, "refused to add a key that cannot be used for signing");
                return Reply::FAILURE;
            }
        };
        drop(keypair);
        let Ok(mut entry) = Entry::new(&public, comment, signer, constraints) else {
            return Reply::FAILURE;
        };
        // A certificate is named by its own blob; its fingerprint is its key's, as in OpenSSH.
        entry.blob = blob;
        let now = self.config.clock.unix_now();
        // A stored key added again keeps its stored policy (and usage); `-h` adds to it.
        let boot_now = self.config.clock.boot_now();
        if let Some(stored) = self.keyring.find(&entry.blob, boot_now).and_then(|old| {
            old.policy
                .as_ref()
                .filter(|p| p.id.is_some())
                .map(|p| (p.id, p.policy.clone(), Arc::clone(&p.usage)))
        }) {
            // The same usage, shared with the certificates served beside the stored key.
            let (id, policy, usage) = stored;
            entry = entry.with_policy(id, policy, now);
            if let Some(p) = entry.policy.as_mut() {
                p.usage = usage;
            }
        } else if destinations.is_some() {
            // ssh-add keys keep OpenSSH's algorithm rules.
            let policy = policy::Policy {
                allow_sha1: true,
                ..policy::Policy::default()
            };
            entry = entry.with_policy(None, policy, now);
        }
        if let Some(p) = entry.policy.as_mut() {
            p.restrict = destinations;
        }
        tracing::info!(fingerprint = %self.config.compat.fingerprint_hash.fingerprint(&entry.key_blob), certificate, pid = ?self.peer.pid, "key added");
        Reply::status(self.keyring.add(entry).is_ok())
    }

    /// The provider library a security key names, as ssh-agent checks it: only for security
    /// keys, by its real path, which the `-P` allow-list must match. The built-in provider is
    /// reached through OpenSSH's `ssh-sk-helper` (keyward does not link libfido2).
    fn provider(&self, keypair: &KeypairData, named: &str) -> Result<PathBuf, String> {
        if !matches!(
            keypair,
            KeypairData::SkEcdsaSha2NistP256(_) | KeypairData::SkEd25519(_)
        ) {
            return Err("a provider was named for a key that is not a security key".into());
        }
        if named.eq_ignore_ascii_case(keys::sk::INTERNAL) {
            // libfido2 is not linked into keyward: OpenSSH's own helper has it.
            return if keys::sk::openssh_helper().is_some() {
                Ok(PathBuf::from(keys::sk::INTERNAL))
            } else {
                Err(
                    "the built-in security-key provider needs OpenSSH's ssh-sk-helper (which \
                     has libfido2), and none is installed: name a provider library (ssh-add -S \
                     PATH)"
                        .into(),
                )
            };
        }
        let real = std::fs::canonicalize(named)
            .map_err(|e| format!("security-key provider {named:?}: {e}"))?;
        let shown = real.to_string_lossy();
        if !self.config.compat.providers.allows(&shown) {
            return Err(format!(
                "security-key provider {shown} is not allowed (keyward-agent -P)"
            ));
        }
        Ok(real)
    }

    /// Turns wire constraints into ours; any constraint we would not enforce refuses the add,
    /// and so does one given twice (as in OpenSSH). Destination constraints (`ssh-add -h`) are
    /// checked with the key's policy by [`policy::decide`].
    fn constraints(
        &self,
        wire: &[KeyConstraint],
    ) -> Result<
        (
            Constraints,
            Option<policy::dest::Destinations>,
            Option<String>,
        ),
        String,
    > {
        let now = self.config.clock.boot_now();
        let mut out = Constraints {
            expires: self.config.default_lifetime.map(|l| now + l),
            confirm: false,
        };
        let mut destinations = None;
        let mut provider = None;
        for constraint in wire {
            match constraint {
                KeyConstraint::Lifetime(secs) => {
                    out.expires = Some(now + Duration::from_secs(u64::from(*secs)));
                }
                KeyConstraint::Confirm => out.confirm = true,
                KeyConstraint::Extension(ext) if ext.name == keys::sk::PROVIDER_EXTENSION => {
                    if provider.is_some() {
                        return Err("security-key provider named twice".into());
                    }
                    let mut details = Vec::new();
                    ext.details
                        .encode(&mut details)
                        .map_err(|e| format!("malformed provider constraint: {e}"))?;
                    let name = String::from_utf8(details)
                        .map_err(|_| "security-key provider path is not UTF-8".to_owned())?;
                    provider = Some(name);
                }
                KeyConstraint::Extension(ext) if ext.name == crate::agent::restrict::NAME => {
                    if destinations.is_some() {
                        return Err("destination constraint given twice".into());
                    }
                    let parsed = crate::agent::restrict::parse(ext.details.as_ref())
                        .map_err(|e| e.to_string())?;
                    destinations = Some(parsed);
                }
                KeyConstraint::Extension(ext) => {
                    return Err(format!("unsupported constraint extension {:?}", ext.name));
                }
            }
        }
        Ok((out, destinations, provider))
    }

    /// `ssh-add -s PROVIDER` / `-e PROVIDER`: only on an unbound local connection (never on
    /// behalf of a forwarded agent: CVE-2023-38408), only from allowed paths, the provider
    /// loaded by a helper process, never by the agent.
    async fn smartcard(&mut self, kind: u8, body: &[u8]) -> Reply {
        let action = if kind == crate::agent::pkcs11::REMOVE {
            "remove_smartcard"
        } else {
            "add_smartcard"
        };
        if self.keyring.is_locked() {
            return Reply::FAILURE;
        }
        if !self.bindings.hops().is_empty() || self.bindings.failed() {
            tracing::info!(pid = ?self.peer.pid, action, "refused a PKCS#11 provider over a forwarded connection");
            self.audit_refused(action, "over a forwarded connection")
                .await;
            return Reply::FAILURE;
        }
        let Some((provider, pin, mut rest)) = crate::agent::pkcs11::read_provider(body) else {
            return Reply::FAILURE;
        };
        let mut wire_constraints = Vec::new();
        if kind == crate::agent::pkcs11::ADD_CONSTRAINED {
            while !rest.is_empty() {
                match KeyConstraint::decode(&mut rest) {
                    Ok(c) => wire_constraints.push(c),
                    Err(_) => return Reply::FAILURE,
                }
            }
        } else if !rest.is_empty() {
            return Reply::FAILURE;
        }
        let ok = if kind == crate::agent::pkcs11::REMOVE {
            match self.config.tokens.remove(&provider) {
                Ok(blobs) => {
                    for blob in blobs {
                        let _ = self.keyring.remove(&blob);
                    }
                    true
                }
                Err(e) => {
                    tracing::info!(error = %e, "ssh-add -e refused");
                    false
                }
            }
        } else {
            self.add_token(&provider, &pin, &wire_constraints).await
        };
        tracing::info!(pid = ?self.peer.pid, provider, ok, action);
        self.audit_plain(action, ok).await;
        Reply::status(ok)
    }

    async fn add_token(&self, provider: &str, pin: &[u8], wire: &[KeyConstraint]) -> bool {
        let (constraints, destinations) = match self.constraints(wire) {
            Ok((constraints, destinations, None)) => (constraints, destinations),
            Ok((_, _, Some(_))) => {
                tracing::info!("refused a token key with a security-key provider constraint");
                return false;
            }
            Err(why) => {
                tracing::info!(%why, "refused a token with a constraint we cannot enforce");
                return false;
            }
        };
        let config = Arc::clone(&self.config);
        let (provider, pin) = (provider.to_owned(), Zeroizing::new(pin.to_vec()));
        let added = tokio::task::spawn_blocking(move || config.tokens.add(&provider, &pin)).await;
        let keys = match added {
            Ok(Ok(keys)) => keys,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "ssh-add -s refused");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "token task failed");
                return false;
            }
        };
        let now = self.config.clock.unix_now();
        for (key, label) in keys {
            let Ok(public) = ssh_key::public::KeyData::decode(&mut key.blob()) else {
                continue;
            };
            let slot = crate::agent::keyring::SignerSlot::lazy(Box::new(|| {
                Err("a token key signs through its helper".to_owned())
            }));
            let Ok(mut entry) = Entry::new(&public, label, slot, constraints.clone()) else {
                continue;
            };
            if let Some(restrict) = destinations.clone() {
                let policy = policy::Policy {
                    allow_sha1: true,
                    ..policy::Policy::default()
                };
                entry = entry.with_policy(None, policy, now);
                if let Some(p) = entry.policy.as_mut() {
                    p.restrict = Some(restrict);
                }
            }
            tracing::info!(fingerprint = %entry.fingerprint, "token key added");
            if self.keyring.add(entry).is_err() {
                return false;
            }
        }
        true
    }

    fn extension(&mut self, ext: &Extension) -> Reply {
        match ext.name.as_str() {
            "query" => Reply::Owned(wire::query_response(EXTENSIONS)),
            "session-bind@openssh.com" => match self.bindings.bind(&ext.details) {
                Ok(()) => Reply::SUCCESS,
                Err(why) => {
                    tracing::info!(%why, pid = ?self.peer.pid, "session-bind refused");
                    Reply::FAILURE
                }
            },
            other => {
                tracing::debug!(extension = other, "unsupported extension");
                Reply::FAILURE
            }
        }
    }

    /// This connection's session bindings.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }
}

/// The process behind a request, as read at the request.
struct Caller {
    /// The connecting process and its parents (first read on the connection's first signature).
    lineage: Arc<Vec<policy::peer::Process>>,
    /// The connecting pid now, if it still exists.
    current: Option<policy::peer::Snapshot>,
    /// Whether that is still the process that connected, running the same program.
    continuity: policy::peer::Continuity,
    /// What it ran at connect time.
    connected_exe: Option<String>,
}

/// Who asks for a signature, for what, and where: what [`policy::decide`] and the audit log see.
struct Requester<'a> {
    peer: Peer,
    /// What the connecting pid runs now (shown in prompts and the audit trail).
    exe: Option<String>,
    /// The executable rules see: the one above only while it is the program that connected.
    trusted_exe: Option<String>,
    connected_exe: Option<String>,
    continuity: policy::peer::Continuity,
    chain: Vec<policy::peer::Process>,
    bindings: &'a [crate::agent::bind::Binding],
    bind_failed: bool,
    host: Option<String>,
    data: policy::request::SignedData,
    algorithm: &'static str,
}

impl<'a> Requester<'a> {
    fn of(
        peer: Peer,
        caller: Caller,
        bindings: &'a Bindings,
        data: &[u8],
        algorithm: &'static str,
    ) -> Self {
        let exe = caller.current.and_then(|c| c.exe);
        let trusted_exe = (caller.continuity == policy::peer::Continuity::Same)
            .then(|| exe.clone())
            .flatten();
        // The first entry is the connecting pid: show what it runs now.
        let mut chain = caller.lineage.to_vec();
        if let Some(first) = chain.first_mut() {
            first.exe.clone_from(&exe);
        }
        Self {
            peer,
            exe,
            trusted_exe,
            connected_exe: caller.connected_exe,
            continuity: caller.continuity,
            chain,
            bindings: bindings.hops(),
            bind_failed: bindings.failed(),
            host: bindings.hops().last().map(|b| b.host.fingerprint.clone()),
            data: policy::request::classify(data),
            algorithm,
        }
    }

    /// `/usr/bin/ssh (pid 12) from /usr/bin/bash (pid 10)`: the requesting process and its
    /// parents with full paths (a copy of another program named `ssh` must not pass as ssh).
    fn lineage(&self) -> String {
        policy::peer::describe(&self.chain)
    }

    /// Why the connection is not (or no longer) held by the process that opened it, if so.
    fn distrust(&self) -> Option<String> {
        self.continuity.distrust()
    }

    fn context<'b>(
        &'b self,
        now: u64,
        usage: &'b policy::Usage,
        entry: &'b Entry,
    ) -> policy::Context<'b> {
        policy::Context {
            now,
            uid: self.peer.uid,
            executable: self.trusted_exe.as_deref(),
            bindings: self.bindings,
            bind_failed: self.bind_failed,
            restrict: entry.policy.as_ref().and_then(|p| p.restrict.as_ref()),
            key: &entry.blob,
            data: &self.data,
            algorithm: self.algorithm,
            usage,
        }
    }

    fn detail(&self, reason: &str) -> serde_json::Value {
        serde_json::json!({
            "uid": self.peer.uid,
            "pid": self.peer.pid,
            "exe": self.exe,
            "connected_exe": self.connected_exe,
            "peer_changed": self.distrust(),
            "parents": self.chain,
            "host": self.host,
            "forwarded": self.bindings.iter().any(|b| b.forwarded),
            "purpose": policy::describe(&self.data),
            "algorithm": self.algorithm,
            "reason": reason,
        })
    }
}

fn event(
    entry: &Entry,
    at: u64,
    action: &str,
    outcome: AuditOutcome,
    mut detail: serde_json::Value,
) -> AuditEvent {
    detail["fingerprint"] = serde_json::json!(entry.fingerprint);
    AuditEvent {
        at,
        key_id: entry.policy.as_ref().and_then(|s| s.id),
        action: action.to_owned(),
        outcome,
        detail,
    }
}

/// Why a security key (made for `application`) may not sign `data`, if it may not: a provider is
/// never loaded on behalf of a forwarded connection, and under ssh-agent's restrict-websafe a
/// key made for a web origin signs only SSH logins and SSHSIG data, never a web challenge.
fn sk_refusal(
    application: &str,
    forwarded: bool,
    restrict_websafe: bool,
    data: &[u8],
) -> Option<&'static str> {
    if forwarded {
        return Some("security key over a forwarded connection");
    }
    let web = !application.starts_with("ssh:");
    if restrict_websafe
        && web
        && matches!(
            policy::request::classify(data),
            policy::request::SignedData::Other
        )
    {
        return Some("web security key asked to sign non-SSH data");
    }
    None
}

/// Gives back a signature counted by `authorize` that was not made.
fn release(entry: &Entry) {
    if let Some(stored) = &entry.policy {
        stored
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .release();
    }
}

/// A request, decoded by [`identity`] when it carries a key and by ssh-agent-lib otherwise.
enum Message<'a> {
    Sign(identity::Sign<'a>),
    Add(identity::Add),
    Remove(Vec<u8>),
    Other(Request),
}

/// Decodes the request in `frame` (whose first byte is `kind`).
fn decode(kind: u8, frame: &[u8]) -> Result<Message<'_>, String> {
    match kind {
        identity::SIGN_REQUEST => identity::decode_sign(frame).map(Message::Sign),
        identity::ADD_IDENTITY | identity::ADD_ID_CONSTRAINED => {
            identity::decode_add(frame).map(Message::Add)
        }
        identity::REMOVE_IDENTITY => {
            identity::decode_remove(frame).map(|blob| Message::Remove(blob.to_vec()))
        }
        _ => return decode_exact(frame).map(Message::Other),
    }
    .map_err(|e| e.to_string())
}

/// Decodes a request that must use the whole frame: trailing bytes are an error.
fn decode_exact(frame: &[u8]) -> Result<Request, String> {
    let mut reader = frame;
    let request = Request::decode(&mut reader).map_err(|e| e.to_string())?;
    if reader.is_empty() {
        Ok(request)
    } else {
        Err(format!("{} trailing bytes", reader.len()))
    }
}

/// Reads the single `string password` of a lock or unlock message.
fn read_password(body: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (len, rest) = body.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() == len).then(|| Zeroizing::new(rest.to_vec()))
}

/// The audit action of a request that adds or removes keys (smartcard providers included).
fn key_change(message: &Message<'_>) -> Option<&'static str> {
    let request = match message {
        Message::Add(_) => return Some("add"),
        Message::Remove(_) => return Some("remove"),
        Message::Sign(_) => return None,
        Message::Other(request) => request,
    };
    match request {
        Request::AddIdentity(_) | Request::AddIdConstrained(_) => Some("add"),
        Request::RemoveIdentity(_) => Some("remove"),
        Request::RemoveAllIdentities => Some("remove_all"),
        Request::AddSmartcardKey(_) | Request::AddSmartcardKeyConstrained(_) => {
            Some("add_smartcard")
        }
        Request::RemoveSmartcardKey(_) => Some("remove_smartcard"),
        _ => None,
    }
}

/// Runs a signature off the I/O duties. On the multi-threaded runtime the current worker becomes
/// a blocking thread for the duration ([`tokio::task::block_in_place`]: its other tasks move to
/// another worker at once), so the reply is written without waiting for a thread hand-off in
/// either direction; elsewhere (current-thread runtimes in tests) on the blocking pool.
async fn run_signer<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        Ok(tokio::task::block_in_place(f))
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use ssh_agent_lib::proto::extension::SessionBind;
    use ssh_agent_lib::proto::{
        AddIdentity, AddIdentityConstrained, PrivateCredential, PublicCredential, SignRequest,
        Unparsed,
    };
    use ssh_encoding::Encode;
    use ssh_key::PrivateKey;

    struct Fixture {
        clock: Arc<ManualClock>,
        session: Session,
    }

    fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_000), 1_700_000_000));
        let config = Arc::new(AgentConfig::new(
            Arc::clone(&clock) as Arc<dyn Clock>,
            None,
            None,
        ));
        let session = Session::new(Arc::new(Keyring::new()), config, Peer::default());
        Fixture { clock, session }
    }

    fn encode(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        request.encode(&mut out).unwrap();
        out
    }

    fn ed25519() -> PrivateKey {
        PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap()
    }

    fn add(key: &PrivateKey, constraints: Vec<KeyConstraint>) -> Vec<u8> {
        let identity = AddIdentity {
            credential: PrivateCredential::Key {
                privkey: key.key_data().clone(),
                comment: "test".into(),
            },
        };
        encode(&Request::AddIdConstrained(AddIdentityConstrained {
            identity,
            constraints,
        }))
    }

    fn sign(key: &PrivateKey) -> Vec<u8> {
        encode(&Request::SignRequest(SignRequest {
            credential: PublicCredential::Key(key.public_key().key_data().clone()),
            data: b"data".to_vec(),
            flags: 0,
        }))
    }

    /// The data of user "me"'s `publickey` login for session "sid" with `algorithm` and
    /// `key_blob`, as ssh asks the agent to sign it.
    fn login_data(algorithm: &[u8], key_blob: &[u8]) -> Vec<u8> {
        let mut login = Vec::new();
        b"sid".encode(&mut login).unwrap();
        login.push(50);
        for part in [&b"me"[..], b"ssh-connection", b"publickey"] {
            part.encode(&mut login).unwrap();
        }
        login.push(1);
        algorithm.encode(&mut login).unwrap();
        key_blob.encode(&mut login).unwrap();
        login
    }

    async fn send(session: &mut Session, frame: &[u8]) -> u8 {
        session.handle(frame).await.as_bytes()[0]
    }

    #[tokio::test]
    async fn add_sign_and_lifetime() {
        let mut f = fixture();
        let key = ed25519();
        assert_eq!(
            send(&mut f.session, &add(&key, vec![KeyConstraint::Lifetime(2)])).await,
            wire::SUCCESS
        );
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::SIGN_RESPONSE);
        f.clock.advance(Duration::from_secs(2));
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::FAILURE);
        let list = f.session.handle(&[11]).await;
        assert_eq!(list.as_bytes(), &[12, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn unknown_constraint_refuses_the_whole_add() {
        let mut f = fixture();
        let key = ed25519();
        let bogus = KeyConstraint::Extension(Extension {
            name: "bogus@example.com".into(),
            details: Unparsed::from(vec![]),
        });
        let frame = add(&key, vec![KeyConstraint::Confirm, bogus]);
        assert_eq!(send(&mut f.session, &frame).await, wire::FAILURE);
        assert_eq!(f.session.handle(&[11]).await.as_bytes(), &[12, 0, 0, 0, 0]);
        // An unknown constraint byte does not even decode.
        let mut frame = add(&key, vec![]);
        frame.push(42);
        assert_eq!(send(&mut f.session, &frame).await, wire::FAILURE);
        assert_eq!(f.session.keyring.len(), 0);
    }

    #[tokio::test]
    async fn confirm_without_askpass_refuses() {
        let mut f = fixture();
        let key = ed25519();
        send(&mut f.session, &add(&key, vec![KeyConstraint::Confirm])).await;
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::FAILURE);
    }

    #[tokio::test]
    async fn malformed_and_legacy_messages_fail_without_harm() {
        let mut f = fixture();
        for frame in [
            &[][..],
            &[9],
            &[1],
            &[13, 0, 0],
            &[22, 0, 0, 0, 9, 1],
            &[11, 0],
            &[200],
        ] {
            assert_eq!(
                send(&mut f.session, frame).await,
                wire::FAILURE,
                "{frame:?}"
            );
        }
    }

    #[tokio::test]
    async fn lock_with_raw_password() {
        let mut f = fixture();
        let key = ed25519();
        send(&mut f.session, &add(&key, vec![])).await;
        assert_eq!(
            send(&mut f.session, &[22, 0, 0, 0, 2, b'p', b'w']).await,
            wire::SUCCESS
        );
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::FAILURE);
        assert_eq!(
            send(&mut f.session, &add(&ed25519(), vec![])).await,
            wire::FAILURE
        );
        assert_eq!(
            send(&mut f.session, &[23, 0, 0, 0, 2, b'p', b'w']).await,
            wire::SUCCESS
        );
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::SIGN_RESPONSE);
    }

    #[tokio::test]
    async fn forwarded_connections_cannot_lock_or_unlock() {
        let mut f = fixture();
        let key = ed25519();
        send(&mut f.session, &add(&key, vec![])).await;
        let mut forwarded = fixture();
        forwarded.session.keyring = Arc::clone(&f.session.keyring);
        let host = ed25519();
        assert_eq!(
            send(
                &mut forwarded.session,
                &bind_frame(&host, b"sid", true, false)
            )
            .await,
            wire::SUCCESS
        );
        let lock = [22, 0, 0, 0, 2, b'p', b'w'];
        let unlock = [23, 0, 0, 0, 2, b'p', b'w'];
        assert_eq!(send(&mut forwarded.session, &lock).await, wire::FAILURE);
        assert!(!f.session.keyring.is_locked());
        assert_eq!(send(&mut f.session, &lock).await, wire::SUCCESS);
        assert_eq!(send(&mut forwarded.session, &unlock).await, wire::FAILURE);
        assert!(f.session.keyring.is_locked());
        assert_eq!(send(&mut f.session, &unlock).await, wire::SUCCESS);
        assert_eq!(
            send(&mut forwarded.session, &sign(&key)).await,
            wire::SIGN_RESPONSE
        );
    }

    fn bind_frame(host: &PrivateKey, session_id: &[u8], forwarding: bool, tamper: bool) -> Vec<u8> {
        let mut signature = signature::Signer::try_sign(host, session_id).unwrap();
        if tamper {
            let mut bytes = signature.as_bytes().to_vec();
            bytes[0] ^= 1;
            signature = ssh_key::Signature::new(signature.algorithm(), bytes).unwrap();
        }
        let bind = SessionBind {
            host_key: host.public_key().key_data().clone(),
            session_id: session_id.to_vec(),
            signature,
            is_forwarding: forwarding,
        };
        encode(&Request::Extension(Extension::new_message(bind).unwrap()))
    }

    #[tokio::test]
    async fn session_bind_is_verified_and_recorded() {
        let mut f = fixture();
        let host = ed25519();
        assert_eq!(
            send(&mut f.session, &bind_frame(&host, b"sid1", true, true)).await,
            wire::FAILURE
        );
        assert_eq!(
            send(&mut f.session, &bind_frame(&host, b"sid1", true, false)).await,
            wire::SUCCESS
        );
        // The same session bound again to another host key is refused.
        assert_eq!(
            send(
                &mut f.session,
                &bind_frame(&ed25519(), b"sid1", true, false)
            )
            .await,
            wire::FAILURE
        );
        assert_eq!(
            send(&mut f.session, &bind_frame(&host, b"sid2", false, false)).await,
            wire::SUCCESS
        );
        // After a binding for authentication, no further hop may be added.
        assert_eq!(
            send(&mut f.session, &bind_frame(&host, b"sid3", true, false)).await,
            wire::FAILURE
        );
        assert_eq!(f.session.bindings().hops().len(), 2);
    }

    #[tokio::test]
    async fn at_most_sixteen_bindings() {
        let mut f = fixture();
        let host = ed25519();
        for i in 0..MAX {
            let sid = format!("sid{i}");
            assert_eq!(
                send(
                    &mut f.session,
                    &bind_frame(&host, sid.as_bytes(), true, false)
                )
                .await,
                wire::SUCCESS
            );
        }
        assert_eq!(
            send(&mut f.session, &bind_frame(&host, b"one-more", true, false)).await,
            wire::FAILURE
        );
    }

    const MAX: usize = crate::agent::bind::MAX_BINDINGS;

    /// `ssh-add -h`: the key signs only a login on a connection bound to the allowed host.
    #[tokio::test]
    async fn destination_constrained_keys_follow_their_constraint() {
        use ssh_agent_lib::proto::extension::{
            DestinationConstraint, HostTuple, KeySpec, RestrictDestination,
        };
        let mut f = fixture();
        let key = ed25519();
        let (a, b) = (ed25519(), ed25519());
        let hop = |to: &PrivateKey| DestinationConstraint {
            from: HostTuple {
                username: String::new(),
                hostname: String::new(),
                keys: vec![],
            },
            to: HostTuple {
                username: String::new(),
                hostname: "a".into(),
                keys: vec![KeySpec {
                    keyblob: to.public_key().key_data().clone(),
                    is_ca: false,
                }],
            },
        };
        let restrict = RestrictDestination {
            constraints: vec![hop(&a)],
        };
        let ext = Extension::new_key_constraint(restrict).unwrap();
        assert_eq!(
            send(
                &mut f.session,
                &add(&key, vec![KeyConstraint::Extension(ext)])
            )
            .await,
            wire::SUCCESS
        );
        // Unbound: refused (and plain data is never signed).
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::FAILURE);
        // A login on a connection bound to A, for A's session: signed.
        assert_eq!(
            send(&mut f.session, &bind_frame(&a, b"sid", false, false)).await,
            wire::SUCCESS
        );
        let login = login_data(
            b"ssh-ed25519",
            &crate::keys::public_blob(key.public_key().key_data()).unwrap(),
        );
        let request = |data: Vec<u8>| {
            encode(&Request::SignRequest(SignRequest {
                credential: PublicCredential::Key(key.public_key().key_data().clone()),
                data,
                flags: 0,
            }))
        };
        assert_eq!(
            send(&mut f.session, &request(login.clone())).await,
            wire::SIGN_RESPONSE
        );
        // On a connection bound to B: not listed, not signed.
        let mut other = fixture();
        other.session.keyring = Arc::clone(&f.session.keyring);
        assert_eq!(
            send(&mut other.session, &bind_frame(&b, b"sid", false, false)).await,
            wire::SUCCESS
        );
        assert_eq!(
            other.session.handle(&[11]).await.as_bytes(),
            &[12, 0, 0, 0, 0]
        );
        assert_eq!(
            send(&mut other.session, &request(login)).await,
            wire::FAILURE
        );
    }

    #[test]
    fn security_keys_never_sign_for_forwarded_connections_or_the_web() {
        // The key blob starts with the key's type, as a login's must.
        let mut key_blob = Vec::new();
        b"sk-ssh-ed25519@openssh.com".encode(&mut key_blob).unwrap();
        let login = login_data(b"sk-ssh-ed25519@openssh.com", &key_blob);
        assert_eq!(sk_refusal("ssh:", false, true, b"anything"), None);
        assert!(sk_refusal("ssh:", true, true, &login).is_some());
        assert!(sk_refusal("https://example.com", false, true, b"challenge").is_some());
        assert_eq!(sk_refusal("https://example.com", false, true, &login), None);
        assert_eq!(
            sk_refusal("https://example.com", false, false, b"challenge"),
            None
        );
    }

    /// A host certificate for `host` from `ca`, valid around the fixture's clock, for "hostc".
    fn host_certificate(host: &PrivateKey, ca: &PrivateKey) -> ssh_key::Certificate {
        let now = 1_700_000_000;
        let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut rand_core::OsRng,
            host.public_key().key_data().clone(),
            now - 60,
            now + 3600,
        )
        .unwrap();
        builder
            .cert_type(ssh_key::certificate::CertType::Host)
            .unwrap()
            .valid_principal("hostc")
            .unwrap();
        builder.sign(ca).unwrap()
    }

    /// A session-bind whose host key blob is `cert_blob`, signed by `host`.
    fn cert_bind_frame(
        host: &PrivateKey,
        cert_blob: &[u8],
        sid: &[u8],
        forwarding: bool,
    ) -> Vec<u8> {
        let signature = signature::Signer::try_sign(host, sid).unwrap();
        let mut details = Vec::new();
        cert_blob.encode(&mut details).unwrap();
        sid.encode(&mut details).unwrap();
        let mut sig = Vec::new();
        signature.encode(&mut sig).unwrap();
        sig.encode(&mut details).unwrap();
        details.push(u8::from(forwarding));
        encode(&Request::Extension(Extension {
            name: "session-bind@openssh.com".into(),
            details: Unparsed::from(details),
        }))
    }

    /// A session-bind whose host key is a host certificate: accepted when the CA's signature
    /// and the session signature verify; a `-h` constraint naming the CA (`@cert-authority`)
    /// lets the key sign for that host, one naming another host does not.
    #[tokio::test]
    async fn session_bind_with_a_host_certificate() {
        use ssh_agent_lib::proto::extension::RestrictDestination;
        use ssh_agent_lib::proto::extension::{DestinationConstraint, HostTuple, KeySpec};
        let (host, ca) = (ed25519(), ed25519());
        let frame = |cert_blob: &[u8], sid: &[u8], forwarding: bool| {
            cert_bind_frame(&host, cert_blob, sid, forwarding)
        };
        let cert = host_certificate(&host, &ca);
        let blob = cert.to_bytes().unwrap();
        let mut forged = blob.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mut f = fixture();
        assert_eq!(
            send(&mut f.session, &frame(&forged, b"sid", false)).await,
            wire::FAILURE,
            "a certificate whose CA signature does not verify"
        );
        // Truncated anywhere: malformed, never a crash.
        for cut in (0..blob.len()).step_by(7) {
            let mut f = fixture();
            assert_eq!(
                send(&mut f.session, &frame(&blob[..cut], b"sid", false)).await,
                wire::FAILURE,
                "cut at {cut}"
            );
        }
        let mut f = fixture();
        assert_eq!(
            send(&mut f.session, &frame(&blob, b"sid", false)).await,
            wire::SUCCESS
        );
        assert_eq!(f.session.bindings().hops()[0].host.blob, blob);

        let key = ed25519();
        let to = |name: &str| DestinationConstraint {
            from: HostTuple {
                username: String::new(),
                hostname: String::new(),
                keys: vec![],
            },
            to: HostTuple {
                username: String::new(),
                hostname: name.into(),
                keys: vec![KeySpec {
                    keyblob: ca.public_key().key_data().clone(),
                    is_ca: true,
                }],
            },
        };
        let login = login_data(
            b"ssh-ed25519",
            &crate::keys::public_blob(key.public_key().key_data()).unwrap(),
        );
        let sign_login = encode(&Request::SignRequest(SignRequest {
            credential: PublicCredential::Key(key.public_key().key_data().clone()),
            data: login,
            flags: 0,
        }));
        for (name, want) in [("hostc", wire::SIGN_RESPONSE), ("hostd", wire::FAILURE)] {
            let restrict = RestrictDestination {
                constraints: vec![to(name)],
            };
            let ext = Extension::new_key_constraint(restrict).unwrap();
            assert_eq!(
                send(
                    &mut f.session,
                    &add(&key, vec![KeyConstraint::Extension(ext)])
                )
                .await,
                wire::SUCCESS
            );
            assert_eq!(send(&mut f.session, &sign_login).await, want, "-h {name}");
        }
    }

    /// A stored key added again with `ssh-add -h` keeps its stored policy and usage, and gets
    /// the constraints too: both apply.
    #[tokio::test]
    async fn re_adding_a_stored_key_keeps_its_policy() {
        use ssh_agent_lib::proto::extension::RestrictDestination;
        use ssh_agent_lib::proto::extension::{DestinationConstraint, HostTuple, KeySpec};
        let mut f = fixture();
        let key = ed25519();
        let id: crate::store::KeyId = "00112233445566778899aabbccddeeff".parse().unwrap();
        let stored = policy::Policy {
            max_signatures: Some(5),
            ..policy::Policy::default()
        };
        let entry = Entry::new(
            key.public_key().key_data(),
            "stored".into(),
            Signer::from_keypair(key.key_data()).unwrap(),
            Constraints::default(),
        )
        .unwrap()
        .with_policy(Some(id), stored.clone(), 0);
        f.session.keyring.add(entry).unwrap();
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::SIGN_RESPONSE);
        let restrict = RestrictDestination {
            constraints: vec![DestinationConstraint {
                from: HostTuple {
                    username: String::new(),
                    hostname: String::new(),
                    keys: vec![],
                },
                to: HostTuple {
                    username: String::new(),
                    hostname: "a".into(),
                    keys: vec![KeySpec {
                        keyblob: ed25519().public_key().key_data().clone(),
                        is_ca: false,
                    }],
                },
            }],
        };
        let ext = Extension::new_key_constraint(restrict).unwrap();
        assert_eq!(
            send(
                &mut f.session,
                &add(&key, vec![KeyConstraint::Extension(ext)])
            )
            .await,
            wire::SUCCESS
        );
        let blob = crate::keys::public_blob(key.public_key().key_data()).unwrap();
        let entry = f.session.keyring.find(&blob, f.clock.boot_now()).unwrap();
        let kept = entry.policy.as_ref().unwrap();
        assert_eq!(kept.id, Some(id));
        assert_eq!(kept.policy, stored);
        assert_eq!(
            kept.usage.lock().unwrap().signatures,
            1,
            "usage carried over"
        );
        assert!(kept.restrict.is_some());
        // The -h constraint now refuses the unbound signature the stored policy allowed.
        assert_eq!(send(&mut f.session, &sign(&key)).await, wire::FAILURE);
    }

    /// After a refused session-bind with nothing bound, a destination-constrained key is
    /// neither listed nor used on that connection (as in OpenSSH); other keys still are.
    #[tokio::test]
    async fn failed_bind_hides_constrained_keys() {
        use ssh_agent_lib::proto::extension::RestrictDestination;
        use ssh_agent_lib::proto::extension::{DestinationConstraint, HostTuple, KeySpec};
        let mut f = fixture();
        let (key, free, a) = (ed25519(), ed25519(), ed25519());
        let restrict = RestrictDestination {
            constraints: vec![DestinationConstraint {
                from: HostTuple {
                    username: String::new(),
                    hostname: String::new(),
                    keys: vec![],
                },
                to: HostTuple {
                    username: String::new(),
                    hostname: "a".into(),
                    keys: vec![KeySpec {
                        keyblob: a.public_key().key_data().clone(),
                        is_ca: false,
                    }],
                },
            }],
        };
        let ext = Extension::new_key_constraint(restrict).unwrap();
        send(
            &mut f.session,
            &add(&key, vec![KeyConstraint::Extension(ext)]),
        )
        .await;
        send(&mut f.session, &add(&free, vec![])).await;
        let count = |reply: &[u8]| u32::from_be_bytes(reply[1..5].try_into().unwrap());
        assert_eq!(count(f.session.handle(&[11]).await.as_bytes()), 2);
        assert_eq!(
            send(&mut f.session, &bind_frame(&a, b"sid", false, true)).await,
            wire::FAILURE
        );
        assert_eq!(count(f.session.handle(&[11]).await.as_bytes()), 1);
    }

    #[tokio::test]
    async fn query_lists_session_bind() {
        let mut f = fixture();
        let frame = encode(&Request::Extension(Extension {
            name: "query".into(),
            details: Unparsed::from(vec![]),
        }));
        let reply = f.session.handle(&frame).await;
        assert_eq!(reply.as_bytes()[0], wire::EXTENSION_RESPONSE);
        let text = String::from_utf8_lossy(reply.as_bytes()).into_owned();
        assert!(text.contains("session-bind@openssh.com"));
    }
}
