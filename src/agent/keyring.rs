//! The keys the agent serves, shared by all connections: add, remove, find, lock, expire.
//!
//! Locking seals every private key in memory under a key derived from the lock password (see
//! [`crate::agent::lock`]) and hides the store's master key under it too; the entries themselves
//! (public key, comment, constraints, policy and usage) stay, so lifetimes keep running and an
//! unlock restores exactly what was there.
//!
//! The encoded identities answer is cached and rebuilt only when the set of keys changes, so
//! listing 1,000 keys costs one copy of a shared buffer. Times are boot-clock instants passed in
//! by the caller (see [`crate::clock`]).

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use zeroize::Zeroizing;

use crate::agent::lock::{LOCK_KDF, Lock, LockKey};
pub use crate::agent::slot::{SignerLoader, SignerSlot};
use crate::agent::wire;
use crate::clock::BootInstant;
use crate::store::{KdfParams, Vault};

/// How a key may be used, from `ssh-add` constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// When the key stops being usable and is removed (boot clock).
    pub expires: Option<BootInstant>,
    /// Ask through askpass before each signature.
    pub confirm: bool,
}

/// One key held by the agent.
#[derive(Debug)]
pub struct Entry {
    /// The public key blob, by which clients name the key.
    pub blob: Vec<u8>,
    /// The plain public key blob: for a certificate, the certified key's, over which fingerprints
    /// are computed (as OpenSSH does); otherwise the same as `blob`.
    pub key_blob: Vec<u8>,
    /// `SHA256:...` of `key_blob`, computed once for logs, prompts and audit.
    pub fingerprint: String,
    /// The comment shown by `ssh-add -l`.
    pub comment: String,
    /// The private half, prepared on first use for keys from the store; shared by a stored key
    /// and the certificates served beside it, so the key is decrypted once for all of them.
    pub signer: Arc<SignerSlot>,
    /// Use constraints.
    pub constraints: Constraints,
    /// The policy the key signs under (stored keys; `ssh-add -h` keys) and its usage.
    pub policy: Option<KeyPolicy>,
    /// Whether it is an RSA key (whose signature algorithm depends on the request's flags).
    pub is_rsa: bool,
    /// For a FIDO security key, its application (`ssh:` for keys made for SSH).
    pub sk_application: Option<String>,
}

/// A key's policy as the agent enforces it.
#[derive(Debug)]
pub struct KeyPolicy {
    /// The key's id in the store (`None` for a key added with `ssh-add -h`).
    pub id: Option<crate::store::KeyId>,
    /// Its policy, decided on by [`crate::policy::decide`] before every signature.
    pub policy: crate::policy::Policy,
    /// Its `ssh-add -h` destination constraints, checked as well.
    pub restrict: Option<crate::policy::dest::Destinations>,
    /// Its use since it was loaded, shared by the key and the certificates served beside it
    /// (`keyward key cert add`), so their signatures count together.
    pub usage: Arc<std::sync::Mutex<crate::policy::Usage>>,
}

impl Entry {
    /// An entry for `public`, whose private half is `signer`.
    pub fn new(
        public: &ssh_key::public::KeyData,
        comment: String,
        signer: impl Into<SignerSlot>,
        constraints: Constraints,
    ) -> Result<Self, crate::keys::KeyError> {
        let signer = Arc::new(signer.into());
        let blob = crate::keys::public_blob(public)?;
        Ok(Self {
            key_blob: blob.clone(),
            blob,
            fingerprint: public.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            comment,
            signer,
            constraints,
            policy: None,
            is_rsa: matches!(public, ssh_key::public::KeyData::Rsa(_)),
            sk_application: match public {
                ssh_key::public::KeyData::SkEcdsaSha2NistP256(k) => Some(k.application().into()),
                ssh_key::public::KeyData::SkEd25519(k) => Some(k.application().into()),
                _ => None,
            },
        })
    }

    /// Puts the entry (stored key `id`, if any) under `policy`, loaded at `now` (unix seconds).
    #[must_use]
    pub fn with_policy(
        mut self,
        id: Option<crate::store::KeyId>,
        policy: crate::policy::Policy,
        now: u64,
    ) -> Self {
        self.policy = Some(KeyPolicy {
            id,
            policy,
            restrict: None,
            usage: Arc::new(std::sync::Mutex::new(crate::policy::Usage::loaded(now))),
        });
        self
    }

    /// The signature algorithm a request with `flags` gets (OpenSSH's choice for RSA).
    pub fn algorithm(&self, flags: u32) -> &'static str {
        use crate::keys::signer::{RSA_SHA2_256, RSA_SHA2_512};
        match (self.is_rsa, flags) {
            (true, f) if f & RSA_SHA2_256 != 0 => "rsa-sha2-256",
            (true, f) if f & RSA_SHA2_512 != 0 => "rsa-sha2-512",
            (true, _) => "ssh-rsa",
            (false, _) => "native",
        }
    }
}

/// Why the key ring refused a change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// The agent is locked.
    #[error("the agent is locked")]
    Locked,
}

#[derive(Default)]
struct State {
    entries: Vec<Arc<Entry>>,
    lock: Option<Lock>,
    answer: Option<Arc<[u8]>>,
}

impl State {
    fn changed(&mut self) {
        self.answer = None;
    }

    fn has_expired(&self, now: BootInstant) -> bool {
        self.entries
            .iter()
            .any(|e| e.constraints.expires.is_some_and(|t| t <= now))
    }
}

/// The agent's keys.
pub struct Keyring {
    state: RwLock<State>,
    /// Serialises unlock attempts from every connection and holds the failure count, so guessing
    /// is slowed for all clients together, as in OpenSSH's single-threaded agent.
    unlock_gate: Mutex<u32>,
    changed: Notify,
    /// Argon2id cost of the lock key.
    kdf: KdfParams,
    /// The store whose master key is hidden while the agent is locked (the daemon's).
    vault: Option<Arc<dyn Vault + Send + Sync>>,
}

impl Default for Keyring {
    fn default() -> Self {
        Self::new()
    }
}

/// The delay after the `failures`-th wrong unlock password: 100 ms per failure so far, as
/// OpenSSH's agent does (capped at 10 s).
pub fn unlock_delay(failures: u32) -> Duration {
    Duration::from_millis(100 * u64::from(failures.min(100)))
}

impl Keyring {
    /// An empty, unlocked key ring.
    pub fn new() -> Self {
        Self {
            state: RwLock::new(State::default()),
            unlock_gate: Mutex::new(0),
            changed: Notify::new(),
            kdf: LOCK_KDF,
            vault: None,
        }
    }

    /// Hides `vault`'s master key while the agent is locked.
    #[must_use]
    pub fn with_vault(mut self, vault: Option<Arc<dyn Vault + Send + Sync>>) -> Self {
        self.vault = vault;
        self
    }

    /// Derives lock keys at cost `kdf` instead of [`LOCK_KDF`] (tests use the cheapest).
    #[must_use]
    pub fn with_lock_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the agent is locked.
    pub fn is_locked(&self) -> bool {
        self.read().lock.is_some()
    }

    /// The encoded identities answer (empty while locked).
    pub fn identities_answer(&self, now: BootInstant) -> Arc<[u8]> {
        {
            let state = self.read();
            if state.lock.is_some() {
                return Arc::from(wire::identities_answer(std::iter::empty()));
            }
            if let Some(answer) = &state.answer
                && !state.has_expired(now)
            {
                return Arc::clone(answer);
            }
        }
        let mut state = self.write();
        purge(&mut state, now);
        if state.lock.is_some() {
            return Arc::from(wire::identities_answer(std::iter::empty()));
        }
        let answer: Arc<[u8]> = Arc::from(wire::identities_answer(
            state
                .entries
                .iter()
                .map(|e| (e.blob.as_slice(), e.comment.as_str())),
        ));
        state.answer = Some(Arc::clone(&answer));
        answer
    }

    /// The identities answer for a connection, keeping only the keys `visible` accepts (for a
    /// connection bound to a host: the keys whose policy allows that host).
    pub fn identities_answer_filtered(
        &self,
        now: BootInstant,
        visible: impl Fn(&Entry) -> bool,
    ) -> Vec<u8> {
        let state = self.read();
        if state.lock.is_some() {
            return wire::identities_answer(std::iter::empty());
        }
        let shown: Vec<&Arc<Entry>> = state
            .entries
            .iter()
            .filter(|e| e.constraints.expires.is_none_or(|t| t > now) && visible(e))
            .collect();
        wire::identities_answer(
            shown
                .iter()
                .map(|e| (e.blob.as_slice(), e.comment.as_str())),
        )
    }

    /// The usable key with this blob: none while locked or once expired.
    pub fn find(&self, blob: &[u8], now: BootInstant) -> Option<Arc<Entry>> {
        let state = self.read();
        if state.lock.is_some() {
            return None;
        }
        state
            .entries
            .iter()
            .find(|e| e.blob == blob)
            .filter(|e| e.constraints.expires.is_none_or(|t| t > now))
            .cloned()
    }

    /// Adds a key, or replaces the key with the same blob (new comment and constraints), as
    /// OpenSSH does.
    pub fn add(&self, entry: Entry) -> Result<(), KeyringError> {
        let mut state = self.write();
        if state.lock.is_some() {
            return Err(KeyringError::Locked);
        }
        let entry = Arc::new(entry);
        match state.entries.iter_mut().find(|e| e.blob == entry.blob) {
            Some(slot) => *slot = entry,
            None => state.entries.push(entry),
        }
        state.changed();
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// Adds many keys at once (the stored keys at start-up or unlock): one lock, one rebuild of
    /// the cached answer, one lookup table instead of a scan per key.
    pub fn add_all(&self, entries: Vec<Entry>) -> Result<(), KeyringError> {
        let mut state = self.write();
        if state.lock.is_some() {
            return Err(KeyringError::Locked);
        }
        let mut index: std::collections::HashMap<Vec<u8>, usize> = state
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.blob.clone(), i))
            .collect();
        for entry in entries {
            let entry = Arc::new(entry);
            if let Some(&i) = index.get(&entry.blob) {
                state.entries[i] = entry;
            } else {
                index.insert(entry.blob.clone(), state.entries.len());
                state.entries.push(entry);
            }
        }
        state.changed();
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// Removes the key with this blob; whether it was there.
    pub fn remove(&self, blob: &[u8]) -> Result<bool, KeyringError> {
        let mut state = self.write();
        if state.lock.is_some() {
            return Err(KeyringError::Locked);
        }
        let before = state.entries.len();
        state.entries.retain(|e| e.blob != blob);
        let removed = state.entries.len() != before;
        if removed {
            state.changed();
        }
        Ok(removed)
    }

    /// Removes the key with this blob even while the agent is locked (with its sealed private
    /// half): the store deleted or sealed it. Whether it was there.
    pub fn unload(&self, blob: &[u8]) -> bool {
        let mut state = self.write();
        let before = state.entries.len();
        state.entries.retain(|e| e.blob != blob);
        let removed = state.entries.len() != before;
        if removed {
            state.changed();
        }
        removed
    }

    /// Removes every key; how many there were.
    pub fn remove_all(&self) -> Result<usize, KeyringError> {
        let mut state = self.write();
        if state.lock.is_some() {
            return Err(KeyringError::Locked);
        }
        let n = state.entries.len();
        state.entries.clear();
        state.changed();
        Ok(n)
    }

    /// The number of keys held (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the agent with `password`; false if it was locked already (or the lock key could
    /// not be derived). Every private key is sealed under the lock key and its prepared signer
    /// dropped; stored keys go back to not yet decrypted, with the store's master key hidden.
    pub async fn lock(&self, password: &[u8]) -> bool {
        if self.is_locked() {
            return false;
        }
        let password = Zeroizing::new(password.to_vec());
        let kdf = self.kdf;
        // Argon2id takes tens of milliseconds: off the I/O threads.
        let made = tokio::task::spawn_blocking(move || Lock::new(&password, kdf)).await;
        let (lock, key) = match made {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot derive the lock key: agent not locked");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "lock key task failed: agent not locked");
                return false;
            }
        };
        let mut state = self.write();
        if state.lock.is_some() {
            return false;
        }
        // The master key first, so no stored key can be decrypted again meanwhile.
        if let Some(vault) = &self.vault {
            vault.hide_master(key.expose());
        }
        let before = state.entries.len();
        state.entries.retain(|e| match e.signer.seal(&key, &e.blob) {
            Ok(()) => true,
            Err(why) => {
                tracing::error!(fingerprint = %e.fingerprint, error = %why, "cannot seal a key: removed it");
                false
            }
        });
        if state.entries.len() != before {
            state.changed();
        }
        state.lock = Some(lock);
        true
    }

    /// Unlocks the agent if `password` is the one it was locked with: the lock key it derives
    /// must open the lock. Keys whose lifetime ended while locked (at `now`) are gone; the others
    /// are decrypted and prepared again, and the store's master key restored.
    ///
    /// A wrong password waits [`unlock_delay`] while holding the gate every connection's unlock
    /// goes through, so parallel guessing is no faster than serial guessing.
    pub async fn unlock(&self, password: &[u8], now: BootInstant) -> bool {
        let mut failures = self.unlock_gate.lock().await;
        // Not locked: nothing to unlock, and nothing to guess.
        let Some(lock) = self.read().lock.as_ref().map(Lock::copy) else {
            return false;
        };
        let password = Zeroizing::new(password.to_vec());
        let opened = tokio::task::spawn_blocking(move || lock.open(&password).map(|k| (lock, k)))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "unlock task failed");
                None
            });
        let ok = match opened {
            Some((lock, key)) => self.open_with(&lock, &key, now),
            None => false,
        };
        if ok {
            *failures = 0;
        } else {
            *failures = failures.saturating_add(1);
            tokio::time::sleep(unlock_delay(*failures)).await;
        }
        ok
    }

    /// Unlocks with the right key (of `lock`); false if the agent is no longer under that lock.
    fn open_with(&self, lock: &Lock, key: &LockKey, now: BootInstant) -> bool {
        let mut state = self.write();
        if !state.lock.as_ref().is_some_and(|l| l.same(lock)) {
            return false;
        }
        if let Some(vault) = &self.vault
            && !vault.reveal_master(key.expose())
        {
            tracing::error!("the store's master key does not open under the lock key");
        }
        purge(&mut state, now);
        state.entries.retain(|e| match e.signer.unseal(key, &e.blob) {
            Ok(()) => true,
            Err(why) => {
                tracing::error!(fingerprint = %e.fingerprint, error = %why, "cannot unseal a key: removed it");
                false
            }
        });
        state.lock = None;
        state.changed();
        drop(state);
        self.changed.notify_one();
        true
    }

    /// Drops expired keys; returns when the next key expires, if any.
    pub fn purge_expired(&self, now: BootInstant) -> Option<BootInstant> {
        let mut state = self.write();
        purge(&mut state, now);
        state
            .entries
            .iter()
            .filter_map(|e| e.constraints.expires)
            .min()
    }

    /// Completes when a key was added (so the expiry task can recompute its deadline).
    pub async fn added(&self) {
        self.changed.notified().await;
    }
}

fn purge(state: &mut State, now: BootInstant) {
    if state.has_expired(now) {
        // Dropping the last Arc zeroizes the key material (the signers zeroize on drop).
        state
            .entries
            .retain(|e| e.constraints.expires.is_none_or(|t| t > now));
        state.changed();
    }
}

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
