//! Unit tests of the store, in temporary directories, with the cheapest Argon2id parameters.

mod certs;
mod journal;
mod keys;
mod migrate;
mod rekey;
mod security;

use std::path::Path;

use ssh_key::public::{Ed25519PublicKey, KeyData};
use tempfile::TempDir;

use super::{KdfParams, NewKey, PrivateKeyBytes, SledStore};

pub(super) const PASS: &[u8] = b"correct horse battery staple";
pub(super) const NOW: u64 = 1_750_000_000;

pub(super) fn cheap() -> KdfParams {
    KdfParams::insecure_fast()
}

/// A fresh store with a passphrase, returned unsealed.
pub(super) fn new_store() -> (TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::init(&dir.path().join("store"), Some(PASS), cheap()).unwrap();
    (dir, store)
}

pub(super) fn store_dir(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("store")
}

/// Deterministic, distinctive bytes (letters only, so the same pattern can be used as text).
pub(super) fn distinctive(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + u8::try_from(x % 26).unwrap()
        })
        .collect()
}

pub(super) fn public(seed: u8) -> ssh_key::PublicKey {
    ssh_key::PublicKey::new(KeyData::Ed25519(Ed25519PublicKey([seed; 32])), "")
}

pub(super) fn new_key(name: &str, seed: u8) -> NewKey {
    NewKey {
        name: name.to_owned(),
        comment: format!("{name}@test"),
        public: public(seed),
        private: PrivateKeyBytes::from(distinctive(u64::from(seed), 64)),
    }
}

/// Every regular file under `dir`.
pub(super) fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
