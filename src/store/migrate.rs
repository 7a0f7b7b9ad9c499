//! Schema versions and the migrations run by `SledStore::open`.
//!
//! `meta/schema_version` (big-endian `u32`) names the layout. Each step `n → n+1` rewrites what
//! changed and bumps the version in the same transaction, so a crash leaves either the old or the
//! new layout, and the next open resumes.
//!
//! | schema | layout |
//! |---|---|
//! | 0 | pre-release: key records version 0 (no timestamps), no `key_names` index |
//! | 1 | key records version 1 (`created_at`, `updated_at`), unique names in `key_names` |
//!
//! No released keyward wrote schema 0; it is kept so the migration path is exercised from the
//! first release, and as the pattern for the next step.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::error::{CorruptError, Result, StoreError};
use super::records::{KEY_V, KeyRec, SealedRec, decode, encode, hex_bytes, hex_encode, what};
use super::sled_store::{META_SCHEMA, Trees, tx};

/// The schema this build writes.
pub const CURRENT_SCHEMA: u32 = 1;

/// Key record, version 0 (schema 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecV0 {
    pub(crate) name: String,
    pub(crate) comment: String,
    #[serde(with = "hex_bytes")]
    pub(crate) public: Vec<u8>,
    pub(crate) private: SealedRec,
}

/// Brings the store from schema `found` to [`CURRENT_SCHEMA`].
pub(crate) fn migrate(path: &Path, db: &sled::Db, t: &Trees, found: u32) -> Result<()> {
    if found > CURRENT_SCHEMA {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: CURRENT_SCHEMA,
        });
    }
    let mut v = found;
    while v < CURRENT_SCHEMA {
        match v {
            0 => v0_to_v1(t)?,
            _ => unreachable!("every schema below CURRENT_SCHEMA has a step"),
        }
        v += 1;
        db.flush()?;
    }
    Ok(())
}

/// Schema 0 → 1: key records gain timestamps (0: unknown), names get the unique index (a
/// duplicate name gets the id's first 8 hex digits appended).
fn v0_to_v1(t: &Trees) -> Result<()> {
    let mut rewritten = Vec::new();
    let mut names = HashSet::new();
    for kv in &t.keys {
        let (k, v) = kv?;
        let old: KeyRecV0 = decode(|| what("keys", &k), 0, &v)?;
        let mut name = old.name;
        if !names.insert(name.clone()) {
            name = format!("{name}-{}", &hex_encode(&k)[..8]);
            if !names.insert(name.clone()) {
                return Err(StoreError::corrupt(what("keys", &k), CorruptError::Index));
            }
        }
        let rec = KeyRec {
            name,
            comment: old.comment,
            public: old.public,
            private: old.private,
            created_at: 0,
            updated_at: 0,
        };
        rewritten.push((k, rec));
    }
    tx((&t.keys, &t.key_names, &t.meta).transaction(|(k, n, m)| {
        for (id, rec) in &rewritten {
            k.insert(id, encode(KEY_V, rec))?;
            n.insert(rec.name.as_bytes(), id)?;
        }
        m.insert(META_SCHEMA, &1u32.to_be_bytes())?;
        Ok(())
    }))
}
