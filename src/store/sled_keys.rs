//! [`KeyStore`](super::KeyStore) for [`SledStore`]: key records in `keys`, their unique names in
//! `key_names`, updated together in one transaction.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, abort};

use super::KeyStore;
use super::crypto::{open_private, seal_private};
use super::error::{CorruptError, Result, StoreError};
use super::records::{KEY_V, KeyRec, SealedRec, decode, encode, what};
use super::sled_store::{SledStore, tx};
use super::types::{KeyId, KeyInfo, NewKey, PrivateKeyBytes};

/// Longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a key name: 1..=128 bytes, no control characters, no leading/trailing whitespace, and
/// not 32 hex digits (which `get_key` would read as an id).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 128 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if name.trim() != name {
        return bad("it starts or ends with whitespace");
    }
    if name.parse::<KeyId>().is_ok() {
        return bad("32 hex digits would be read as a key id");
    }
    Ok(())
}

pub(crate) fn decode_key(id: KeyId, bytes: &[u8]) -> Result<(KeyRec, KeyInfo)> {
    let w = || what("keys", id.as_bytes());
    let rec: KeyRec = decode(w, KEY_V, bytes)?;
    let mut public = ssh_key::PublicKey::from_bytes(&rec.public)
        .map_err(|e| StoreError::corrupt(w(), CorruptError::PublicKey(e)))?;
    public.set_comment(rec.comment.clone());
    let info = KeyInfo {
        id,
        name: rec.name.clone(),
        comment: rec.comment.clone(),
        public,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    };
    Ok((rec, info))
}

fn parse_id(tree: &str, key: &[u8]) -> Result<KeyId> {
    KeyId::from_slice(key).ok_or_else(|| StoreError::corrupt(what(tree, key), CorruptError::Index))
}

/// Inside a transaction: aborts with `e`.
fn fail<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    abort(e)
}

impl SledStore {
    fn load_key(&self, id: KeyId) -> Result<Option<(KeyRec, KeyInfo)>> {
        self.d()
            .t
            .keys
            .get(id.as_bytes())?
            .map(|v| decode_key(id, &v))
            .transpose()
    }

    /// Read-modify-write of one key record.
    fn update_key(&self, id: KeyId, f: impl Fn(&mut KeyRec)) -> Result<()> {
        let d = self.d();
        tx(d.t.keys.transaction(|k| {
            let Some(v) = k.get(id.as_bytes())? else {
                return fail(StoreError::KeyIdNotFound(id));
            };
            let (mut rec, _) = decode_key(id, &v).or_else(fail)?;
            f(&mut rec);
            k.insert(id.as_bytes(), encode(KEY_V, &rec))?;
            Ok(())
        }))?;
        d.flush()
    }
}

impl KeyStore for SledStore {
    fn put_key(&self, key: NewKey, now: u64) -> Result<KeyId> {
        validate_name(&key.name)?;
        let public = key.public.to_bytes().map_err(StoreError::PublicKey)?;
        let id = KeyId::random();
        let sealed =
            self.with_master(|m| Ok(seal_private(m, id, &public, key.private.as_bytes())))?;
        let rec = KeyRec {
            name: key.name.clone(),
            comment: key.comment,
            public,
            private: SealedRec::from_sealed(sealed),
            created_at: now,
            updated_at: now,
        };
        let bytes = encode(KEY_V, &rec);
        // After `with_master`: the state lock is never taken while the database is held.
        let d = self.d();
        tx((&d.t.keys, &d.t.key_names).transaction(|(k, n)| {
            if n.get(key.name.as_bytes())?.is_some() {
                return fail(StoreError::DuplicateName {
                    name: key.name.clone(),
                });
            }
            n.insert(key.name.as_bytes(), id.as_bytes())?;
            k.insert(id.as_bytes(), bytes.as_slice())?;
            Ok(())
        }))?;
        d.flush()?;
        Ok(id)
    }

    fn get_key(&self, name_or_id: &str) -> Result<KeyInfo> {
        let by_name = self.d().t.key_names.get(name_or_id.as_bytes())?;
        if let Some(idb) = by_name {
            let index_err = || {
                StoreError::corrupt(
                    what("key_names", name_or_id.as_bytes()),
                    CorruptError::Index,
                )
            };
            let id = KeyId::from_slice(&idb).ok_or_else(index_err)?;
            return match self.load_key(id)? {
                Some((_, info)) => Ok(info),
                None => Err(index_err()),
            };
        }
        if let Ok(id) = name_or_id.parse::<KeyId>()
            && let Some((_, info)) = self.load_key(id)?
        {
            return Ok(info);
        }
        Err(StoreError::KeyNotFound(name_or_id.to_owned()))
    }

    fn key(&self, id: KeyId) -> Result<KeyInfo> {
        self.load_key(id)?
            .map(|(_, i)| i)
            .ok_or(StoreError::KeyIdNotFound(id))
    }

    fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let d = self.d();
        let mut out = Vec::new();
        for kv in &d.t.keys {
            let (k, v) = kv?;
            out.push(decode_key(parse_id("keys", &k)?, &v)?.1);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn private_key(&self, id: KeyId) -> Result<PrivateKeyBytes> {
        self.with_master(|m| {
            let (rec, _) = self.load_key(id)?.ok_or(StoreError::KeyIdNotFound(id))?;
            let w = || what("keys", id.as_bytes());
            let sealed = rec
                .private
                .to_sealed()
                .map_err(|r| StoreError::corrupt(w(), r))?;
            let pt = open_private(m, id, &rec.public, &sealed)
                .ok_or_else(|| StoreError::corrupt(w(), CorruptError::Aead))?;
            Ok(PrivateKeyBytes::new(pt))
        })
    }

    fn rename_key(&self, id: KeyId, new_name: &str, now: u64) -> Result<()> {
        let d = self.d();
        validate_name(new_name)?;
        tx((&d.t.keys, &d.t.key_names).transaction(|(k, n)| {
            let Some(v) = k.get(id.as_bytes())? else {
                return fail(StoreError::KeyIdNotFound(id));
            };
            let (mut rec, _) = decode_key(id, &v).or_else(fail)?;
            if rec.name == new_name {
                return Ok(());
            }
            if n.get(new_name.as_bytes())?.is_some() {
                return fail(StoreError::DuplicateName {
                    name: new_name.to_owned(),
                });
            }
            n.remove(rec.name.as_bytes())?;
            n.insert(new_name.as_bytes(), id.as_bytes())?;
            new_name.clone_into(&mut rec.name);
            rec.updated_at = now;
            k.insert(id.as_bytes(), encode(KEY_V, &rec))?;
            Ok(())
        }))?;
        d.flush()
    }

    fn set_comment(&self, id: KeyId, comment: &str, now: u64) -> Result<()> {
        self.update_key(id, |rec| {
            comment.clone_into(&mut rec.comment);
            rec.updated_at = now;
        })
    }

    fn delete_key(&self, id: KeyId) -> Result<KeyInfo> {
        let d = self.d();
        // The key's OpenSSH certificates go with it (a transaction cannot scan a prefix; a
        // certificate added meanwhile is refused, as its key is gone, or left to the next delete).
        let certs =
            d.t.key_certs
                .scan_prefix(id.as_bytes())
                .keys()
                .collect::<std::result::Result<Vec<_>, _>>()?;
        let info = tx(
            (&d.t.keys, &d.t.key_names, &d.t.policies, &d.t.key_certs).transaction(
                |(k, n, p, c)| {
                    let Some(v) = k.remove(id.as_bytes())? else {
                        return fail(StoreError::KeyIdNotFound(id));
                    };
                    let (rec, info) = decode_key(id, &v).or_else(fail)?;
                    n.remove(rec.name.as_bytes())?;
                    p.remove(id.as_bytes())?;
                    for cert in &certs {
                        c.remove(cert)?;
                    }
                    Ok(info)
                },
            ),
        )?;
        d.flush()?;
        Ok(info)
    }
}
