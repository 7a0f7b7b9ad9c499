//! A key's private half as the key ring holds it: ready to sign, not yet decrypted (stored keys,
//! loaded on their first signature), or sealed under the lock key while the agent is locked.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::agent::lock::LockKey;
use crate::keys::{KeyError, Signer};
use crate::store::Sealed;

/// Loads a stored key's private half when it is first needed.
pub type SignerLoader = Box<dyn Fn() -> Result<Signer, String> + Send + Sync>;

/// A signer that is ready (keys added with `ssh-add`) or is loaded from the store on the first
/// signature, so that serving 10,000 stored keys costs no private-key parsing at start-up.
pub struct SignerSlot {
    state: Mutex<State>,
    loader: Option<SignerLoader>,
}

enum State {
    /// Not decrypted yet (stored keys), or gone.
    Empty,
    Ready(Arc<Signer>),
    /// Sealed under the lock key while the agent is locked (keys added with `ssh-add`).
    Sealed(Sealed),
}

/// What [`SignerSlot::get`] says while the agent is locked.
pub const LOCKED: &str = "the agent is locked";

impl std::fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.state() {
            State::Ready(_) => "SignerSlot(ready)",
            State::Empty => "SignerSlot(lazy)",
            State::Sealed(_) => "SignerSlot(sealed)",
        })
    }
}

impl From<Signer> for SignerSlot {
    fn from(signer: Signer) -> Self {
        Self {
            state: Mutex::new(State::Ready(Arc::new(signer))),
            loader: None,
        }
    }
}

impl SignerSlot {
    /// A slot filled by `loader` on first use.
    pub fn lazy(loader: SignerLoader) -> Self {
        Self {
            state: Mutex::new(State::Empty),
            loader: Some(loader),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The signer, loading it if needed (once: concurrent first uses wait for the one load).
    pub fn get(&self) -> Result<Arc<Signer>, String> {
        let mut state = self.state();
        match &*state {
            State::Ready(signer) => return Ok(Arc::clone(signer)),
            State::Sealed(_) => return Err(LOCKED.into()),
            State::Empty => {}
        }
        let loader = self.loader.as_ref().ok_or("no private key")?;
        let signer = Arc::new(loader()?);
        *state = State::Ready(Arc::clone(&signer));
        Ok(signer)
    }

    /// The agent locks: a key added with `ssh-add` is sealed under `key` (bound to its public
    /// `blob`); a stored key's signer is dropped (the store decrypts it again after the unlock).
    /// Either way the prepared signer is freed here, unless a signature begun before the lock
    /// still holds it. On error the key is gone and the caller drops its entry.
    pub(crate) fn seal(&self, key: &LockKey, blob: &[u8]) -> Result<(), KeyError> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, State::Empty) {
            State::Ready(signer) if self.loader.is_none() => {
                let private = signer.to_wire()?;
                drop(signer);
                *state = State::Sealed(key.seal_key(blob, &private));
            }
            State::Ready(_) | State::Empty => {}
            sealed @ State::Sealed(_) => *state = sealed,
        }
        Ok(())
    }

    /// The agent unlocks with `key`: a sealed key is decrypted and prepared again. On error the
    /// key is gone and the caller drops its entry.
    pub(crate) fn unseal(&self, key: &LockKey, blob: &[u8]) -> Result<(), String> {
        let mut state = self.state();
        let State::Sealed(sealed) = std::mem::replace(&mut *state, State::Empty) else {
            return Ok(());
        };
        let private = key
            .open_key(blob, &sealed)
            .ok_or("the sealed key does not open under the lock key")?;
        let signer = Signer::from_wire(&private).map_err(|e| e.to_string())?;
        *state = State::Ready(Arc::new(signer));
        Ok(())
    }
}
