//! Database generations: copying the store's records into a fresh sled database, for a new
//! master key (`passwd`) and for the one-time move of a store whose master key was in sled's
//! `meta/vault` to the key file (`master.key`).
//!
//! Why a fresh database: sled keeps superseded values in its log and garbage segments, so old
//! ciphertexts (and an old `meta/vault` with a plain master key) linger in its files after being
//! overwritten. A new database holds only what was copied into it; the old one is deleted whole
//! once the key file names the new one.
//!
//! Crash safety: the new database is written into `<store>/db-<n+1>/` and flushed, then the key
//! file is replaced atomically. Before that rename the store is the old one (the half-written
//! directory is deleted on the next open); after it, the new one (the old directory is deleted
//! on the next open if the process died before deleting it).

use std::fs;
use std::path::Path;

use super::crypto::{MasterKey, open_private, seal_private};
use super::error::{CorruptError, Result, StoreError};
use super::keyfile::{KEY_FILE, KeyFile, LOCK_FILE, db_dir_name, parse_db_dir_name, sync_dir};
use super::records::{KEY_V, KeyRec, SealedRec, Vault, encode, what};
use super::sled_keys::decode_key;
use super::sled_store::{META_SCHEMA, META_VAULT, StoreOptions, Trees, open_db};
use super::types::KeyId;

/// The files sled keeps in its directory: what a store written before the key file has at its
/// top level.
const LEGACY_FILES: [&str; 3] = ["conf", "db", "blobs"];

fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Dir {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies every record of `src` into a new database at `dst` (removed first if a crashed attempt
/// left it), except `meta/vault`. With `reseal = (old, new)`, private keys are decrypted under
/// `old` and encrypted under `new`; one that does not decrypt stops the copy (nothing changes).
/// The new database is flushed when this returns.
pub(crate) fn copy_database(
    src: &Trees,
    dst: &Path,
    opts: StoreOptions,
    reseal: Option<(&MasterKey, &MasterKey)>,
) -> Result<(sled::Db, Trees)> {
    if dst.exists() {
        fs::remove_dir_all(dst).map_err(dir_err(dst))?;
    }
    let db = open_db(dst, opts)?;
    let t = Trees::open(&db)?;
    let copied = (|| -> Result<()> {
        for ((name, from), (_, to)) in src.all().into_iter().zip(t.all()) {
            let mut batch = sled::Batch::default();
            for kv in from {
                let (k, v) = kv?;
                if name == "meta" && k.as_ref() == META_VAULT {
                    continue;
                }
                match (name, reseal) {
                    ("keys", Some((old, new))) => {
                        batch.insert(k.as_ref(), reseal_key(&k, &v, old, new)?);
                    }
                    _ => batch.insert(k, v),
                }
            }
            to.apply_batch(batch)?;
        }
        db.flush()?;
        Ok(())
    })();
    if let Err(e) = copied {
        drop((t, db));
        let _ = fs::remove_dir_all(dst);
        return Err(e);
    }
    if let Some(parent) = dst.parent() {
        sync_dir(parent)?;
    }
    Ok((db, t))
}

/// A key record with its private key re-encrypted from `old` to `new`.
fn reseal_key(k: &[u8], v: &[u8], old: &MasterKey, new: &MasterKey) -> Result<Vec<u8>> {
    let w = || what("keys", k);
    let id = KeyId::from_slice(k).ok_or_else(|| StoreError::corrupt(w(), CorruptError::Index))?;
    let (mut rec, _): (KeyRec, _) = decode_key(id, v)?;
    let sealed = rec
        .private
        .to_sealed()
        .map_err(|r| StoreError::corrupt(w(), r))?;
    let plain = open_private(old, id, &rec.public, &sealed)
        .ok_or_else(|| StoreError::corrupt(w(), CorruptError::Aead))?;
    rec.private = SealedRec::from_sealed(seal_private(new, id, &rec.public, &plain));
    Ok(encode(KEY_V, &rec))
}

/// Deletes every `db-<n>` directory other than `keep`'s.
pub(crate) fn remove_other_generations(dir: &Path, keep: Option<u64>) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(dir_err(dir))? {
        let entry = entry.map_err(dir_err(dir))?;
        let name = entry.file_name();
        let Some(generation) = name.to_str().and_then(parse_db_dir_name) else {
            continue;
        };
        if Some(generation) != keep {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(dir_err(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes sled's files from the top of the store directory, where a store written before the
/// key file kept its database (with the master key in `meta/vault`).
pub(crate) fn remove_legacy_database(dir: &Path) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(dir_err(dir))? {
        let entry = entry.map_err(dir_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(LEGACY_FILES.contains(&name) || name.starts_with("snap.")) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(dir_err(&path))?.is_dir() {
            fs::remove_dir_all(&path).map_err(dir_err(&path))?;
        } else {
            fs::remove_file(&path).map_err(dir_err(&path))?;
        }
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Whether `dir` holds anything besides what an `init` that stopped before writing the key file
/// leaves (the lock file, a temporary key file, a `db-<n>` directory).
pub(crate) fn holds_more_than_init_leftovers(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(std::result::Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        !(name == LOCK_FILE
            || name == format!("{KEY_FILE}.tmp")
            || INIT_LEFTOVERS.contains(&&*name)
            || parse_db_dir_name(&name).is_some())
    })
}

/// What an `init` writes before its key file besides the database: the journal directory and
/// the anchor (empty of records: nothing is audited before the store exists).
const INIT_LEFTOVERS: [&str; 3] = [
    "audit",
    super::audit_key::ANCHOR_FILE,
    super::audit_key::RETAINED_ANCHOR_FILE,
];

/// Removes what an `init` that stopped before writing its key file left (see
/// [`holds_more_than_init_leftovers`]).
pub(crate) fn remove_init_leftovers(dir: &Path) -> Result<()> {
    for name in INIT_LEFTOVERS {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(dir_err(&path)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Moves a store written before the key file existed (sled's files at the top of `dir`, the
/// master key in `meta/vault`) to the current layout: its records copied into `db-1/`, the vault
/// into `master.key` (the commit point), then the old files deleted. The master key stays the
/// same (the store may be sealed: no passphrase is at hand).
pub(crate) fn migrate_to_key_file(dir: &Path, opts: StoreOptions) -> Result<KeyFile> {
    let damaged = || StoreError::Damaged {
        path: dir.to_path_buf(),
    };
    let old_db = open_db(dir, opts)?;
    let old_t = Trees::open(&old_db)?;
    if old_t.meta.get(META_SCHEMA)?.is_none() {
        return Err(damaged());
    }
    let vault = Vault::decode(&old_t.meta.get(META_VAULT)?.ok_or_else(damaged)?)?;
    let generation = 1;
    let (new_db, new_t) = copy_database(&old_t, &dir.join(db_dir_name(generation)), opts, None)?;
    drop((new_t, new_db, old_t, old_db));
    let key_file = KeyFile {
        generation,
        vault,
        audit_keys: None,
        anchored: false,
    };
    key_file.write(dir)?;
    tracing::info!(
        store = %dir.display(),
        "moved the master key out of the database into master.key"
    );
    Ok(key_file)
}
