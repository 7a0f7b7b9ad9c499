//! Cryptography of the store: Argon2id passphrase derivation, the passphrase verifier, wrapping
//! of the master key, and XChaCha20-Poly1305 sealing of private keys bound to their record.
//!
//! Layout: a random 32-byte *master key* encrypts every private key. With a passphrase, Argon2id
//! (salt and parameters in `meta`) gives a key-encryption key (KEK); two SHA-256 values with
//! distinct domain prefixes split it into a *verifier* (stored, compared in constant time) and a
//! *wrapping key* that encrypts the master key. Changing the passphrase therefore rewrites one
//! `meta` record, atomically, instead of re-encrypting every key. Without a passphrase the master
//! key is stored in plain and the store says so.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::error::{Result, StoreError};
use super::types::KeyId;

/// Length of the Argon2id salt.
pub(crate) const SALT_LEN: usize = 16;
/// Length of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;

const AD_PRIVATE: &[u8] = b"keyward/store/private-key/v1\0";
const AD_MASTER: &[u8] = b"keyward/store/master-key/v1\0";
/// Wraps made since audit trails are anchored. Bound into the wrap, so that stripping the key
/// file's `anchored` flag (its checksum is no secret) cannot make a passphrase-protected store
/// look like one that never had an audit anchor.
const AD_MASTER_ANCHORED: &[u8] = b"keyward/store/master-key/v2-anchored\0";
const AD_HIDDEN: &[u8] = b"keyward/store/master-key-locked/v1\0";
const DS_VERIFIER: &[u8] = b"keyward/store/verifier/v1\0";
const DS_WRAP: &[u8] = b"keyward/store/wrap/v1\0";

/// Argon2id cost parameters, stored in `meta` beside the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// The cheapest parameters Argon2id accepts (8 KiB, 1 pass). **For tests only**: a store made
    /// with them falls to offline guessing.
    pub const fn insecure_fast() -> Self {
        Self {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Checks the bounds (also applied to parameters read back from disk, so an edited `meta`
    /// cannot make unsealing allocate without limit).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason| Err(StoreError::InvalidKdfParams { reason });
        if !(1..=16).contains(&self.p_cost) {
            return bad("lanes (p) must be 1..=16");
        }
        if !(1..=64).contains(&self.t_cost) {
            return bad("passes (t) must be 1..=64");
        }
        if self.m_cost_kib < 8 * self.p_cost {
            return bad("memory (m) must be at least 8 KiB per lane");
        }
        if self.m_cost_kib > 4 * 1024 * 1024 {
            return bad("memory (m) must be at most 4 GiB");
        }
        Ok(())
    }
}

impl KdfParams {
    /// Argon2id of `secret` with `salt` under these parameters: 32 bytes, zeroized on drop.
    pub fn derive_key(&self, secret: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.validate()?;
        let p = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(StoreError::Kdf)?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
        let mut raw = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(secret, salt, raw.as_mut())
            .map_err(StoreError::Kdf)?;
        Ok(raw)
    }
}

/// The 32-byte master key. Zeroized on drop, no `Debug`.
pub(crate) struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub(crate) fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Self(k)
    }

    pub(crate) fn from_slice(b: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        if b.len() != 32 {
            return None;
        }
        k.copy_from_slice(b);
        Some(Self(k))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    /// The master key encrypted under the agent's lock key, while the agent is locked.
    pub(crate) fn hide(&self, lock_key: &[u8; 32]) -> Sealed {
        seal(lock_key, AD_HIDDEN, self.expose())
    }

    /// The master key [`hide`](Self::hide) encrypted; `None` under another key.
    pub(crate) fn reveal(lock_key: &[u8; 32], hidden: &Sealed) -> Option<Self> {
        Self::from_slice(&open(lock_key, AD_HIDDEN, hidden)?)
    }
}

/// What a passphrase yields: the verifier (public) and the wrapping key (secret).
pub(crate) struct Kek {
    pub(crate) verifier: [u8; 32],
    wrap: Zeroizing<[u8; 32]>,
}

impl Kek {
    /// Runs Argon2id over `passphrase` and splits the output.
    pub(crate) fn derive(passphrase: &[u8], salt: &[u8], params: &KdfParams) -> Result<Self> {
        let raw = params.derive_key(passphrase, salt)?;
        let verifier: [u8; 32] = Sha256::new()
            .chain_update(DS_VERIFIER)
            .chain_update(raw.as_ref())
            .finalize()
            .into();
        let mut wrap = Zeroizing::new([0u8; 32]);
        let mut h = Sha256::new()
            .chain_update(DS_WRAP)
            .chain_update(raw.as_ref())
            .finalize();
        wrap.copy_from_slice(&h);
        zeroize::Zeroize::zeroize(h.as_mut_slice());
        Ok(Self { verifier, wrap })
    }

    /// Constant-time comparison with the stored verifier.
    pub(crate) fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.verifier.ct_eq(stored))
    }

    pub(crate) fn wrap_master(&self, master: &MasterKey) -> Sealed {
        seal(&self.wrap, AD_MASTER_ANCHORED, master.expose())
    }

    /// The wrap of keyward before audit trails were anchored (tests make such stores).
    #[cfg(test)]
    pub(crate) fn wrap_master_unanchored(&self, master: &MasterKey) -> Sealed {
        seal(&self.wrap, AD_MASTER, master.expose())
    }

    /// The master key, and whether it was wrapped since audit trails are anchored (`false`: an
    /// older wrap, to be redone).
    pub(crate) fn unwrap_master(&self, sealed: &Sealed) -> Option<(MasterKey, bool)> {
        if let Some(pt) = open(&self.wrap, AD_MASTER_ANCHORED, sealed) {
            return MasterKey::from_slice(&pt).map(|m| (m, true));
        }
        let pt = open(&self.wrap, AD_MASTER, sealed)?;
        MasterKey::from_slice(&pt).map(|m| (m, false))
    }
}

/// A random salt.
pub(crate) fn random_salt() -> [u8; SALT_LEN] {
    let mut s = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut s);
    s
}

/// A nonce and ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) ciphertext: Vec<u8>,
}

/// XChaCha20-Poly1305 with a random nonce: the store's records and the agent's lock both use it.
pub(crate) fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.into());
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    Sealed { nonce, ciphertext }
}

/// Opens what [`seal`] sealed with the same key and associated data; `None` if anything differs.
pub(crate) fn open(key: &[u8; 32], ad: &[u8], sealed: &Sealed) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: ad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Associated data binding a private key ciphertext to its record: the key id and the public key
/// blob. A ciphertext copied into another record fails to authenticate.
fn private_ad(id: KeyId, public_blob: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PRIVATE.len() + 16 + 4 + public_blob.len());
    ad.extend_from_slice(AD_PRIVATE);
    ad.extend_from_slice(id.as_bytes());
    let len = u32::try_from(public_blob.len()).unwrap_or(u32::MAX);
    ad.extend_from_slice(&len.to_be_bytes());
    ad.extend_from_slice(public_blob);
    ad
}

/// Encrypts a private key for record `id` with public key `public_blob`.
pub(crate) fn seal_private(
    master: &MasterKey,
    id: KeyId,
    public_blob: &[u8],
    private: &[u8],
) -> Sealed {
    seal(master.expose(), &private_ad(id, public_blob), private)
}

/// Decrypts a private key; `None` if it does not authenticate for this record.
pub(crate) fn open_private(
    master: &MasterKey,
    id: KeyId,
    public_blob: &[u8],
    sealed: &Sealed,
) -> Option<Zeroizing<Vec<u8>>> {
    open(master.expose(), &private_ad(id, public_blob), sealed)
}
