//! What locking the agent (`ssh-add -x`) keeps: a lock key derived from the lock password with
//! Argon2id, under which every private key held in memory is sealed with XChaCha20-Poly1305, so a
//! locked agent holds no usable key material. Unlocking *is* decrypting: a password that does not
//! open the lock's check value is wrong, and nothing changes.

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::store::{KdfParams, Sealed, StoreError, aead_open, aead_seal};

/// Argon2id cost of the lock key: 32 MiB, 2 passes, one lane. Locking derives the key once and
/// unlocking once more: about 47 ms each, 90 ms together, measured on a loaded 2-core machine
/// (`lock_kdf_cost` below prints it), well inside the 300 ms a person waits for `ssh-add -x`/`-X`
/// without noticing, while every guess at a lock read from memory costs the same 32 MiB.
pub const LOCK_KDF: KdfParams = KdfParams {
    m_cost_kib: 32 * 1024,
    t_cost: 2,
    p_cost: 1,
};

const AD_CHECK: &[u8] = b"keyward/agent/lock-check/v1\0";
const AD_KEY: &[u8] = b"keyward/agent/locked-key/v1\0";

/// The key everything is sealed under while the agent is locked. Zeroized on drop, no `Debug`.
pub(crate) struct LockKey(Zeroizing<[u8; 32]>);

impl LockKey {
    /// The raw key, for the store's master key.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The cipher copies the plaintext into a buffer sized for the tag and encrypts it in place:
    /// no plaintext copy outlives this call.
    fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Sealed {
        aead_seal(&self.0, ad, plaintext)
    }

    /// The tag is checked before anything is decrypted.
    fn open(&self, ad: &[u8], sealed: &Sealed) -> Option<Zeroizing<Vec<u8>>> {
        aead_open(&self.0, ad, sealed)
    }

    /// Seals the private key (wire form) of the key whose public blob is `blob`.
    pub(crate) fn seal_key(&self, blob: &[u8], private: &[u8]) -> Sealed {
        self.seal(&key_ad(blob), private)
    }

    /// Opens what [`seal_key`](Self::seal_key) sealed for `blob`; `None` for another key or blob.
    pub(crate) fn open_key(&self, blob: &[u8], sealed: &Sealed) -> Option<Zeroizing<Vec<u8>>> {
        self.open(&key_ad(blob), sealed)
    }
}

/// Binds a sealed private key to its public key: a ciphertext moved to another entry does not
/// open.
fn key_ad(blob: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_KEY.len() + blob.len());
    ad.extend_from_slice(AD_KEY);
    ad.extend_from_slice(blob);
    ad
}

/// A locked agent's lock: the salt and cost to derive the key again, and a check value sealed
/// under it, so a password is tested even when no key is held.
pub(crate) struct Lock {
    salt: [u8; 16],
    params: KdfParams,
    check: Sealed,
}

impl Lock {
    /// A new lock for `password` with a fresh salt, and its key.
    pub(crate) fn new(password: &[u8], params: KdfParams) -> Result<(Self, LockKey), StoreError> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let key = LockKey(params.derive_key(password, &salt)?);
        let check = key.seal(AD_CHECK, &[]);
        Ok((
            Self {
                salt,
                params,
                check,
            },
            key,
        ))
    }

    /// The lock key if `password` is the lock's. Runs Argon2id: call it off the I/O threads.
    pub(crate) fn open(&self, password: &[u8]) -> Option<LockKey> {
        let key = LockKey(self.params.derive_key(password, &self.salt).ok()?);
        key.open(AD_CHECK, &self.check).map(|_| key)
    }

    /// Whether this is the lock `other` was copied from.
    pub(crate) fn same(&self, other: &Lock) -> bool {
        self.salt == other.salt
    }

    /// A copy to test a password against without holding the key ring.
    pub(crate) fn copy(&self) -> Self {
        Self {
            salt: self.salt,
            params: self.params,
            check: Sealed {
                nonce: self.check.nonce,
                ciphertext: self.check.ciphertext.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_password_opens_the_lock_and_keys_open_only_for_their_blob() {
        let (lock, key) = Lock::new(b"pw", KdfParams::insecure_fast()).unwrap();
        assert!(lock.open(b"wrong").is_none());
        let again = lock.open(b"pw").expect("right password");
        let sealed = key.seal_key(b"blob", b"private");
        assert_eq!(
            again.open_key(b"blob", &sealed).unwrap().as_slice(),
            b"private"
        );
        assert!(again.open_key(b"other", &sealed).is_none());
        let (_, other) = Lock::new(b"pw", KdfParams::insecure_fast()).unwrap();
        assert!(
            other.open_key(b"blob", &sealed).is_none(),
            "a fresh salt gives a fresh key"
        );
    }

    /// Lock and unlock each derive the key once; prints what that costs here.
    #[test]
    fn lock_kdf_cost() {
        let started = std::time::Instant::now();
        let (lock, _) = Lock::new(b"pw", LOCK_KDF).unwrap();
        let locked = started.elapsed();
        assert!(lock.open(b"pw").is_some());
        eprintln!(
            "lock key derivation: lock {locked:?}, lock + unlock {:?}",
            started.elapsed()
        );
    }
}
