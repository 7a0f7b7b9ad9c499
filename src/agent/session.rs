//! One agent connection: decodes each request from its frame, asks the key ring, encodes the
//! reply. Every malformed or unsupported request gets FAILURE and the connection goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ssh_agent_lib::proto::extension::RestrictDestination;
use ssh_agent_lib::proto::{
    AddIdentity, AddIdentityConstrained, Extension, KeyConstraint, PrivateCredential, Request,
    SignRequest,
};
use ssh_encoding::Decode;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::agent::bind::Bindings;
use crate::agent::confirm;
use crate::agent::keyring::{Constraints, Entry, Keyring};
use crate::agent::wire::{self, Reply};
use crate::audit::Auditor;
use crate::clock::Clock;
use crate::keys::{self, Signer};
use crate::policy::{self, Decision};
use crate::store::{AuditEvent, AuditOutcome};

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
        }
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
    /// The peer's process and its parents, read from `/proc` once per connection (a connection's
    /// peer does not change), on its first signature.
    lineage: std::sync::OnceLock<Arc<Vec<policy::peer::Process>>>,
}

impl Session {
    /// A session for a new connection from `peer`.
    pub fn new(keyring: Arc<Keyring>, config: Arc<AgentConfig>, peer: Peer) -> Self {
        Self {
            keyring,
            config,
            peer,
            bindings: Bindings::default(),
            lineage: std::sync::OnceLock::new(),
        }
    }

    /// Handles one request frame and returns the reply payload.
    pub async fn handle(&mut self, frame: &[u8]) -> Reply {
        let Some(&kind) = frame.first() else {
            return Reply::FAILURE;
        };
        // Lock and unlock passwords are read here, into memory that is wiped after use, instead
        // of through ssh-agent-lib's `String`s.
        if kind == wire::LOCK || kind == wire::UNLOCK {
            let Some(password) = read_password(&frame[1..]) else {
                return Reply::FAILURE;
            };
            let (action, ok) = if kind == wire::LOCK {
                ("lock", self.keyring.lock(&password).await)
            } else {
                let now = self.config.clock.boot_now();
                ("unlock", self.keyring.unlock(&password, now).await)
            };
            tracing::info!(pid = ?self.peer.pid, ok, action);
            self.audit_plain(action, ok).await;
            return Reply::status(ok);
        }
        let request = match decode_exact(frame) {
            Ok(request) => request,
            Err(why) => {
                tracing::debug!(message = kind, %why, "refused undecodable request");
                return Reply::FAILURE;
            }
        };
        let now = self.config.clock.boot_now();
        if self.keyring.is_locked() {
            // A locked agent lists nothing and does nothing but unlock.
            return match request {
                Request::RequestIdentities => {
                    Reply::Owned(wire::identities_answer(std::iter::empty()))
                }
                _ => Reply::FAILURE,
            };
        }
        // Over a forwarded agent, the far host may use the keys (as policies allow) but never
        // change them: adding or removing keys is for the machine the agent runs on.
        if self.bindings.forwarded()
            && let Some(action) = key_change(&request)
        {
            tracing::info!(pid = ?self.peer.pid, action, "refused a key change over a forwarded connection");
            self.audit_refused(action, "over a forwarded connection")
                .await;
            return Reply::FAILURE;
        }
        match request {
            Request::RequestIdentities => self.identities(now),
            Request::SignRequest(req) => self.sign(req).await,
            Request::AddIdentity(AddIdentity { credential }) => {
                let reply = self.add(credential, &[]);
                self.audit_plain("add", reply.as_bytes()[0] == wire::SUCCESS)
                    .await;
                reply
            }
            Request::AddIdConstrained(AddIdentityConstrained {
                identity,
                constraints,
            }) => {
                let reply = self.add(identity.credential, &constraints);
                self.audit_plain("add", reply.as_bytes()[0] == wire::SUCCESS)
                    .await;
                reply
            }
            Request::RemoveIdentity(req) => {
                let Ok(blob) = keys::public_blob(req.credential.key_data()) else {
                    return Reply::FAILURE;
                };
                let ok = self.keyring.remove(&blob).unwrap_or(false);
                self.audit_plain("remove", ok).await;
                Reply::status(ok)
            }
            Request::RemoveAllIdentities => {
                let ok = self.keyring.remove_all().is_ok();
                self.audit_plain("remove_all", ok).await;
                Reply::status(ok)
            }
            Request::Extension(ext) => self.extension(&ext),
            // Smartcard (PKCS#11) providers are not supported: no code from a client is loaded.
            Request::AddSmartcardKey(_)
            | Request::RemoveSmartcardKey(_)
            | Request::AddSmartcardKeyConstrained(_)
            | Request::Lock(_)
            | Request::Unlock(_) => Reply::FAILURE,
        }
    }

    async fn sign(&self, req: SignRequest) -> Reply {
        let now = self.config.clock.boot_now();
        let Ok(blob) = keys::public_blob(req.credential.key_data()) else {
            return Reply::FAILURE;
        };
        let Some(entry) = self.keyring.find(&blob, now) else {
            tracing::debug!("sign request for a key the agent does not hold");
            return Reply::FAILURE;
        };
        let flags = req.flags;
        let data = req.data;
        let lineage = Arc::clone(self.lineage.get_or_init(|| {
            Arc::new(
                self.peer
                    .pid
                    .map(|pid| policy::peer::chain(pid, 8))
                    .unwrap_or_default(),
            )
        }));
        let request = Requester::of(
            self.peer,
            lineage,
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
        let signed = run_signer(move || {
            let signature = match entry
                .signer
                .get()
                .map_err(crate::keys::KeyError::Signing)
                .and_then(|signer| signer.sign(&data, flags))
            {
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
        let mut confirm = entry.constraints.confirm;
        if let Some(stored) = &entry.policy {
            let now = self.config.clock.unix_now();
            let decision = {
                let mut usage = stored
                    .usage
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let decision = policy::decide(&stored.policy, &request.context(now, &usage));
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
                "Allow use of key {}?\nKey fingerprint {}.\nRequested by {}{}.",
                entry.comment,
                self.config.compat.fingerprint_hash.fingerprint(&entry.blob),
                request.lineage(),
                request
                    .host
                    .as_ref()
                    .map_or_else(String::new, |h| format!(" for host {h}")),
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

    /// The identities answer for this connection: on a connection ssh bound to a host, only the
    /// keys whose policy allows that host (so servers do not count refused keys as failures).
    fn identities(&self, now: crate::clock::BootInstant) -> Reply {
        let hops = self.bindings.hops();
        let Some(last) = hops.last() else {
            return Reply::Shared(self.keyring.identities_answer(now));
        };
        let host = last
            .host_key
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string();
        let forwarded = hops.iter().any(|h| h.forwarded);
        Reply::Owned(self.keyring.identities_answer_filtered(now, |entry| {
            entry.policy.as_ref().is_none_or(|s| {
                s.policy.allows_host(&host) && !(forwarded && s.policy.deny_forwarding)
            })
        }))
    }

    fn add(&self, credential: PrivateCredential, constraints: &[KeyConstraint]) -> Reply {
        let PrivateCredential::Key { privkey, comment } = credential else {
            tracing::info!("refused to add an OpenSSH certificate identity (not supported yet)");
            return Reply::FAILURE;
        };
        let (constraints, destinations) = match self.constraints(constraints) {
            Ok(c) => c,
            Err(why) => {
                tracing::info!(%why, "refused to add a key with a constraint we cannot enforce");
                return Reply::FAILURE;
            }
        };
        let public = ssh_key::public::KeyData::try_from(&privkey);
        let (Ok(public), Ok(signer)) = (public, Signer::from_keypair(&privkey)) else {
            tracing::info!("refused to add a key that cannot be used for signing");
            return Reply::FAILURE;
        };
        drop(privkey);
        let Ok(mut entry) = Entry::new(&public, comment, signer, constraints) else {
            return Reply::FAILURE;
        };
        if let Some(policy) = destinations {
            entry = entry.with_policy(None, policy, self.config.clock.unix_now());
        }
        tracing::info!(fingerprint = %self.config.compat.fingerprint_hash.fingerprint(&entry.blob), pid = ?self.peer.pid, "key added");
        Reply::status(self.keyring.add(entry).is_ok())
    }

    /// Turns wire constraints into ours; any constraint we would not enforce refuses the add.
    /// Destination constraints (`ssh-add -h`) become a policy enforced like a stored key's.
    fn constraints(
        &self,
        wire: &[KeyConstraint],
    ) -> Result<(Constraints, Option<policy::Policy>), String> {
        let now = self.config.clock.boot_now();
        let mut out = Constraints {
            expires: self.config.default_lifetime.map(|l| now + l),
            confirm: false,
        };
        let mut destinations = None;
        for constraint in wire {
            match constraint {
                KeyConstraint::Lifetime(secs) => {
                    out.expires = Some(now + Duration::from_secs(u64::from(*secs)));
                }
                KeyConstraint::Confirm => out.confirm = true,
                KeyConstraint::Extension(ext) => {
                    match ext.parse_key_constraint::<RestrictDestination>() {
                        Ok(Some(restrict)) => destinations = Some(destination_policy(&restrict)?),
                        Ok(None) => {
                            return Err(format!("unsupported constraint extension {:?}", ext.name));
                        }
                        Err(e) => return Err(format!("malformed destination constraint: {e}")),
                    }
                }
            }
        }
        Ok((out, destinations))
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

/// Who asks for a signature, for what, and where: what [`policy::decide`] and the audit log see.
struct Requester<'a> {
    peer: Peer,
    exe: Option<String>,
    chain: Arc<Vec<policy::peer::Process>>,
    bindings: &'a [crate::agent::bind::Binding],
    host: Option<String>,
    data: policy::request::SignedData,
    algorithm: &'static str,
}

impl<'a> Requester<'a> {
    fn of(
        peer: Peer,
        chain: Arc<Vec<policy::peer::Process>>,
        bindings: &'a Bindings,
        data: &[u8],
        algorithm: &'static str,
    ) -> Self {
        Self {
            peer,
            exe: chain.first().and_then(|p| p.exe.clone()),
            chain,
            bindings: bindings.hops(),
            host: bindings
                .hops()
                .last()
                .map(|b| b.host_key.fingerprint(ssh_key::HashAlg::Sha256).to_string()),
            data: policy::request::classify(data),
            algorithm,
        }
    }

    /// `ssh (pid 12) from bash (pid 10)`: the requesting process and its parents, for prompts.
    fn lineage(&self) -> String {
        if self.chain.is_empty() {
            return "an unknown program".to_owned();
        }
        self.chain
            .iter()
            .take(4)
            .map(|p| {
                let name = p
                    .exe
                    .as_deref()
                    .map_or("?", |e| e.rsplit('/').next().unwrap_or(e));
                format!("{name} (pid {})", p.pid)
            })
            .collect::<Vec<_>>()
            .join(" from ")
    }

    fn context<'b>(&'b self, now: u64, usage: &'b policy::Usage) -> policy::Context<'b> {
        policy::Context {
            now,
            uid: self.peer.uid,
            executable: self.exe.as_deref(),
            bindings: self.bindings,
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
            "parents": *self.chain,
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

/// The policy for a key added with `ssh-add -h`: it may sign logins to the hosts named as hops'
/// destinations (and through the hosts named as their origins), and is used over a forwarded
/// agent only if some hop starts at another host, as in OpenSSH. Host-key certificate
/// authorities and per-hop user names are not supported: such an add is refused.
fn destination_policy(restrict: &RestrictDestination) -> Result<policy::Policy, String> {
    let mut destinations = Vec::new();
    let mut hops_forward = false;
    for hop in &restrict.constraints {
        if !hop.from.hostname.is_empty() || !hop.from.keys.is_empty() {
            hops_forward = true;
        }
        if !hop.to.username.is_empty() {
            return Err("per-user destination constraints are not supported".into());
        }
        for spec in hop.from.keys.iter().chain(&hop.to.keys) {
            if spec.is_ca {
                return Err(
                    "host certificate authorities in destination constraints are not supported"
                        .into(),
                );
            }
            let fingerprint = spec
                .keyblob
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string();
            if !destinations.contains(&fingerprint) {
                destinations.push(fingerprint);
            }
        }
    }
    if destinations.is_empty() {
        return Err("a destination constraint without host keys".into());
    }
    Ok(policy::Policy {
        destinations,
        deny_forwarding: !hops_forward,
        // ssh-add keys keep OpenSSH's algorithm rules.
        allow_sha1: true,
        ..policy::Policy::default()
    })
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
fn key_change(request: &Request) -> Option<&'static str> {
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
    use ssh_agent_lib::proto::{PublicCredential, Unparsed};
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
        let mut login = Vec::new();
        b"sid".encode(&mut login).unwrap();
        login.push(50);
        for part in [&b"me"[..], b"ssh-connection", b"publickey"] {
            part.encode(&mut login).unwrap();
        }
        login.push(1);
        b"ssh-ed25519".encode(&mut login).unwrap();
        b"blob".encode(&mut login).unwrap();
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
