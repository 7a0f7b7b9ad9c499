//! [`KeyCertStore`](super::KeyCertStore) for [`SledStore`]: the OpenSSH certificates of stored
//! keys in `key_certs`.
//!
//! Index key: the 16-byte `KeyId` ‖ SHA-256 of the certificate blob, so a key's certificates are
//! one prefix scan and the same certificate is stored once. The blob is kept byte for byte: it is
//! what the agent lists and what the CA signed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use sled::transaction::abort;

use super::KeyCertStore;
use super::error::{CorruptError, Result, StoreError};
use super::records::{decode, encode, hex_bytes, what};
use super::sled_store::{SledStore, tx};
use super::types::KeyId;

/// Version of a key certificate record.
const KEY_CERT_V: u8 = 1;

/// A stored key's OpenSSH certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCert {
    /// The key it certifies.
    pub key_id: KeyId,
    /// SHA-256 of `blob`, its id.
    pub sha256: [u8; 32],
    /// The certificate's wire blob, as the CA signed it.
    pub blob: Vec<u8>,
    /// When it was added (unix seconds).
    pub added_at: u64,
}

#[derive(Serialize, Deserialize)]
struct KeyCertRec {
    #[serde(with = "hex_bytes")]
    blob: Vec<u8>,
    added_at: u64,
}

fn index_key(key: KeyId, sha256: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + 32);
    k.extend_from_slice(key.as_bytes());
    k.extend_from_slice(sha256);
    k
}

fn decode_entry(k: &[u8], v: &[u8]) -> Result<KeyCert> {
    let err = || StoreError::corrupt(what("key_certs", k), CorruptError::Index);
    let (key, sha) = k.split_at_checked(16).ok_or_else(err)?;
    let key_id = KeyId::from_slice(key).ok_or_else(err)?;
    let sha256: [u8; 32] = sha.try_into().map_err(|_| err())?;
    let rec = decode::<KeyCertRec>(|| what("key_certs", k), KEY_CERT_V, v)?;
    if <[u8; 32]>::from(Sha256::digest(&rec.blob)) != sha256 {
        return Err(err());
    }
    Ok(KeyCert {
        key_id,
        sha256,
        blob: rec.blob,
        added_at: rec.added_at,
    })
}

impl KeyCertStore for SledStore {
    fn put_key_cert(&self, key: KeyId, blob: &[u8], now: u64) -> Result<KeyCert> {
        let d = self.d();
        let sha256: [u8; 32] = Sha256::digest(blob).into();
        let k = index_key(key, &sha256);
        let rec = KeyCertRec {
            blob: blob.to_vec(),
            added_at: now,
        };
        let bytes = encode(KEY_CERT_V, &rec);
        let added_at = tx((&d.t.keys, &d.t.key_certs).transaction(|(keys, certs)| {
            if keys.get(key.as_bytes())?.is_none() {
                return abort(StoreError::KeyIdNotFound(key));
            }
            // Adding the same certificate again keeps it as it was.
            if let Some(old) = certs.get(&k)? {
                return Ok(
                    decode::<KeyCertRec>(String::new, KEY_CERT_V, &old).map_or(now, |r| r.added_at)
                );
            }
            certs.insert(k.as_slice(), bytes.as_slice())?;
            Ok(now)
        }))?;
        d.flush()?;
        Ok(KeyCert {
            key_id: key,
            sha256,
            blob: blob.to_vec(),
            added_at,
        })
    }

    fn key_certs(&self, key: Option<KeyId>) -> Result<Vec<KeyCert>> {
        let d = self.d();
        let iter = match key {
            Some(key) => d.t.key_certs.scan_prefix(key.as_bytes()),
            None => d.t.key_certs.iter(),
        };
        iter.map(|kv| {
            let (k, v) = kv?;
            decode_entry(&k, &v)
        })
        .collect()
    }

    fn delete_key_cert(&self, key: KeyId, sha256: &[u8; 32]) -> Result<bool> {
        let d = self.d();
        let existed = d.t.key_certs.remove(index_key(key, sha256))?.is_some();
        d.flush()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KdfParams, KeyStore, NewKey, PrivateKeyBytes, Vault};
    use super::*;

    #[test]
    fn key_certificates_are_kept_per_key_and_survive_a_rekey() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SledStore::init(&dir.path().join("s"), None, KdfParams::insecure_fast()).unwrap();
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let private = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
        let id = store
            .put_key(
                NewKey {
                    name: "k".into(),
                    comment: String::new(),
                    public: key.public_key().clone(),
                    private: PrivateKeyBytes::new(zeroize::Zeroizing::new(
                        private.as_bytes().to_vec(),
                    )),
                },
                1,
            )
            .unwrap();
        let a = store.put_key_cert(id, b"cert a", 10).unwrap();
        assert_eq!(store.put_key_cert(id, b"cert a", 20).unwrap().added_at, 10);
        store.put_key_cert(id, b"cert b", 30).unwrap();
        assert!(matches!(
            store.put_key_cert(KeyId::random(), b"x", 1),
            Err(StoreError::KeyIdNotFound(_))
        ));
        assert_eq!(store.key_certs(Some(id)).unwrap().len(), 2);
        assert!(store.key_certs(Some(KeyId::random())).unwrap().is_empty());

        store
            .change_passphrase(b"", Some(b"new"), KdfParams::insecure_fast())
            .unwrap();
        let all = store.key_certs(None).unwrap();
        assert_eq!(all.len(), 2, "copied by the re-key");
        assert!(all.contains(&a));
        assert!(store.delete_key_cert(id, &a.sha256).unwrap());
        assert!(!store.delete_key_cert(id, &a.sha256).unwrap());
        assert_eq!(store.key_certs(None).unwrap()[0].blob, b"cert b");
        store.delete_key(id).unwrap();
        assert!(
            store.key_certs(None).unwrap().is_empty(),
            "deleted with the key"
        );
    }
}
