//! The keys the agent serves, shared by all connections: add, remove, find, lock, expire.
//!
//! The encoded identities answer is cached and rebuilt only when the set of keys changes, so
//! listing 1,000 keys costs one copy of a shared buffer. Times are boot-clock instants passed in
//! by the caller (see [`crate::clock`]).

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, Notify};
use zeroize::Zeroizing;

use crate::agent::wire;
use crate::clock::BootInstant;
use crate::keys::Signer;

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
    /// `SHA256:...`, computed once for logs, prompts and audit.
    pub fingerprint: String,
    /// The comment shown by `ssh-add -l`.
    pub comment: String,
    /// The private half, prepared on first use for keys from the store.
    pub signer: SignerSlot,
    /// Use constraints.
    pub constraints: Constraints,
    /// The policy the key signs under (stored keys; `ssh-add -h` keys) and its usage.
    pub policy: Option<KeyPolicy>,
    /// Whether it is an RSA key (whose signature algorithm depends on the request's flags).
    pub is_rsa: bool,
}

/// A key's policy as the agent enforces it.
#[derive(Debug)]
pub struct KeyPolicy {
    /// The key's id in the store (`None` for a key added with `ssh-add -h`).
    pub id: Option<crate::store::KeyId>,
    /// Its policy, decided on by [`crate::policy::decide`] before every signature.
    pub policy: crate::policy::Policy,
    /// Its use since it was loaded.
    pub usage: std::sync::Mutex<crate::policy::Usage>,
}

/// Loads a stored key's private half when it is first needed.
pub type SignerLoader = Box<dyn Fn() -> Result<Signer, String> + Send + Sync>;

/// A signer that is ready (keys added with `ssh-add`) or is loaded from the store on the first
/// signature, so that serving 10,000 stored keys costs no private-key parsing at start-up.
pub struct SignerSlot {
    ready: std::sync::OnceLock<Signer>,
    loader: Option<SignerLoader>,
}

impl std::fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.ready.get().is_some() {
            "SignerSlot(ready)"
        } else {
            "SignerSlot(lazy)"
        })
    }
}

impl From<Signer> for SignerSlot {
    fn from(signer: Signer) -> Self {
        Self {
            ready: std::sync::OnceLock::from(signer),
            loader: None,
        }
    }
}

impl SignerSlot {
    /// A slot filled by `loader` on first use.
    pub fn lazy(loader: SignerLoader) -> Self {
        Self {
            ready: std::sync::OnceLock::new(),
            loader: Some(loader),
        }
    }

    /// The signer, loading it if needed.
    pub fn get(&self) -> Result<&Signer, String> {
        if let Some(signer) = self.ready.get() {
            return Ok(signer);
        }
        let loader = self.loader.as_ref().ok_or("no private key")?;
        let signer = loader()?;
        // Two threads may race to load; either result is the same key.
        Ok(self.ready.get_or_init(|| signer))
    }
}

impl Entry {
    /// An entry for `public`, whose private half is `signer`.
    pub fn new(
        public: &ssh_key::public::KeyData,
        comment: String,
        signer: impl Into<SignerSlot>,
        constraints: Constraints,
    ) -> Result<Self, crate::keys::KeyError> {
        let signer = signer.into();
        Ok(Self {
            blob: crate::keys::public_blob(public)?,
            fingerprint: public.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            comment,
            signer,
            constraints,
            policy: None,
            is_rsa: matches!(public, ssh_key::public::KeyData::Rsa(_)),
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
            usage: std::sync::Mutex::new(crate::policy::Usage::loaded(now)),
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

struct LockSecret {
    salt: [u8; 16],
    hash: Zeroizing<[u8; 64]>,
}

impl LockSecret {
    fn new(password: &[u8]) -> Self {
        let mut salt = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        let hash = Self::digest(&salt, password);
        Self { salt, hash }
    }

    fn digest(salt: &[u8; 16], password: &[u8]) -> Zeroizing<[u8; 64]> {
        let mut hasher = Sha512::new();
        hasher.update(salt);
        hasher.update(password);
        Zeroizing::new(hasher.finalize().into())
    }

    fn matches(&self, password: &[u8]) -> bool {
        Self::digest(&self.salt, password)
            .as_slice()
            .ct_eq(self.hash.as_slice())
            .into()
    }
}

#[derive(Default)]
struct State {
    entries: Vec<Arc<Entry>>,
    lock: Option<LockSecret>,
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
        }
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

    /// Locks the agent with `password`; false if it was locked already.
    pub fn lock(&self, password: &[u8]) -> bool {
        let mut state = self.write();
        if state.lock.is_some() {
            return false;
        }
        state.lock = Some(LockSecret::new(password));
        true
    }

    /// Unlocks the agent if `password` is the one it was locked with.
    ///
    /// A wrong password waits [`unlock_delay`] while holding the gate every connection's unlock
    /// goes through, so parallel guessing is no faster than serial guessing.
    pub async fn unlock(&self, password: &[u8]) -> bool {
        let mut failures = self.unlock_gate.lock().await;
        let ok = {
            let mut state = self.write();
            match &state.lock {
                Some(secret) if secret.matches(password) => {
                    state.lock = None;
                    true
                }
                Some(_) => false,
                // Not locked: nothing to unlock, and nothing to guess.
                None => return false,
            }
        };
        if ok {
            *failures = 0;
        } else {
            *failures = failures.saturating_add(1);
            tokio::time::sleep(unlock_delay(*failures)).await;
        }
        ok
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
mod tests {
    use super::*;
    use ssh_key::PrivateKey;

    fn entry(expires: Option<u64>) -> Entry {
        let key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        Entry::new(
            key.public_key().key_data(),
            "c".into(),
            Signer::from_keypair(key.key_data()).unwrap(),
            Constraints {
                expires: expires.map(Duration::from_secs),
                confirm: false,
            },
        )
        .unwrap()
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn add_find_remove_and_cached_answer() {
        let ring = Keyring::new();
        let e = entry(None);
        let blob = e.blob.clone();
        ring.add(e).unwrap();
        let a = ring.identities_answer(T0);
        assert!(
            Arc::ptr_eq(&a, &ring.identities_answer(T0)),
            "answer is cached"
        );
        assert!(ring.find(&blob, T0).is_some());
        assert!(ring.remove(&blob).unwrap());
        assert!(ring.find(&blob, T0).is_none());
        assert_eq!(&ring.identities_answer(T0)[..], &[12, 0, 0, 0, 0]);
    }

    #[test]
    fn expired_keys_vanish_from_list_and_lookup() {
        let ring = Keyring::new();
        let e = entry(Some(102));
        let blob = e.blob.clone();
        ring.add(e).unwrap();
        ring.add(entry(None)).unwrap();
        assert!(ring.find(&blob, Duration::from_secs(101)).is_some());
        assert_eq!(ring.identities_answer(Duration::from_secs(101))[4], 2);
        assert!(ring.find(&blob, Duration::from_secs(102)).is_none());
        assert_eq!(ring.identities_answer(Duration::from_secs(102))[4], 1);
        assert_eq!(ring.purge_expired(Duration::from_secs(103)), None);
        assert_eq!(ring.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lock_hides_keys_and_wrong_passwords_are_slowed() {
        let ring = Keyring::new();
        let e = entry(None);
        let blob = e.blob.clone();
        ring.add(e).unwrap();
        assert!(ring.lock(b"pw"));
        assert!(!ring.lock(b"pw"), "a locked agent cannot be locked again");
        assert!(ring.find(&blob, T0).is_none());
        assert_eq!(&ring.identities_answer(T0)[..], &[12, 0, 0, 0, 0]);
        assert_eq!(ring.add(entry(None)), Err(KeyringError::Locked));
        let start = tokio::time::Instant::now();
        assert!(!ring.unlock(b"wrong").await);
        assert!(!ring.unlock(b"wrong").await);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert!(ring.unlock(b"pw").await);
        assert!(ring.find(&blob, T0).is_some());
        assert!(
            !ring.unlock(b"pw").await,
            "unlocking an unlocked agent fails"
        );
    }

    #[test]
    fn add_all_replaces_duplicates_and_lazy_signers_load_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ring = Keyring::new();
        let first = entry(None);
        let blob = first.blob.clone();
        ring.add(first).unwrap();
        let key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&loads);
        let data = key.key_data().clone();
        let lazy = Entry::new(
            key.public_key().key_data(),
            "lazy".into(),
            SignerSlot::lazy(Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Signer::from_keypair(&data).map_err(|e| e.to_string())
            })),
            Constraints::default(),
        )
        .unwrap();
        let lazy_blob = lazy.blob.clone();
        let mut again = entry(None);
        again.blob.clone_from(&blob);
        ring.add_all(vec![lazy, again]).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(
            loads.load(Ordering::SeqCst),
            0,
            "listing loads no private key"
        );
        let found = ring.find(&lazy_blob, T0).unwrap();
        found.signer.get().unwrap().sign(b"x", 0).unwrap();
        found.signer.get().unwrap().sign(b"y", 0).unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn re_adding_a_key_replaces_its_constraints() {
        let ring = Keyring::new();
        let e = entry(Some(200));
        let blob = e.blob.clone();
        ring.add(e).unwrap();
        let mut again = entry(None);
        again.blob.clone_from(&blob);
        ring.add(again).unwrap();
        assert_eq!(ring.len(), 1);
        assert!(ring.find(&blob, Duration::from_secs(500)).is_some());
    }
}
