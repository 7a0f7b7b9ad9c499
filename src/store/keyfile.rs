//! The store's key file, `<store>/master.key`, and its lock file, `<store>/lock`.
//!
//! The key file holds the vault (the master key, wrapped under the passphrase or in plain) and
//! the *generation*: the name of the sled database directory (`db-<generation>`) whose records
//! that master key encrypts. It lives outside sled because sled keeps superseded values in its
//! log and garbage: a master key written there cannot be erased. The file is only ever replaced
//! whole (temporary file created `0600`, synced, renamed, directory synced), so a crash leaves
//! either the old key file naming the old database or the new one naming the new database: the
//! rename is the commit point of a re-key (see `rekey.rs`).
//!
//! The lock file is `flock`ed for as long as a [`super::SledStore`] is open, so two processes
//! never work on one store (sled's own lock is per database directory, and the directory changes
//! on a re-key).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::Sealed;
use super::error::{CorruptError, Result, StoreError};
use super::records::{SealedRec, Vault, VaultRec, encode, unwrap_envelope};

/// The key file's name in the store directory.
pub(crate) const KEY_FILE: &str = "master.key";
const KEY_TMP: &str = "master.key.tmp";
/// The lock file's name in the store directory.
pub(crate) const LOCK_FILE: &str = "lock";
/// Version of the key file record.
const KEYFILE_V: u8 = 1;

/// The sled directory of `generation`.
pub(crate) fn db_dir_name(generation: u64) -> String {
    format!("db-{generation}")
}

/// The generation a directory name `db-<n>` names.
pub(crate) fn parse_db_dir_name(name: &str) -> Option<u64> {
    let n = name.strip_prefix("db-")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

#[derive(Deserialize)]
struct KeyFileRec<'a> {
    generation: u64,
    /// The vault, as `meta/vault` held it before the key file.
    #[serde(borrow)]
    vault: VaultRec<'a>,
    /// The audit keys of earlier generations, sealed under this generation's master key.
    #[serde(default)]
    audit_keys: Option<SealedRec>,
    /// Whether the audit anchor has been written: from then on a missing one is reported.
    #[serde(default)]
    anchored: bool,
}

/// What the key file says.
pub(crate) struct KeyFile {
    pub(crate) generation: u64,
    pub(crate) vault: Vault,
    /// Audit keys of earlier generations, sealed under this generation's master key.
    pub(crate) audit_keys: Option<Sealed>,
    /// Whether the audit anchor has been written.
    pub(crate) anchored: bool,
}

impl KeyFile {
    /// Reads `<dir>/master.key`; `None` if there is none.
    pub(crate) fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(KEY_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Dir { path, source }),
        };
        let corrupt = |reason| StoreError::corrupt(KEY_FILE, reason);
        let (v, body) = unwrap_envelope(&bytes).map_err(corrupt)?;
        if v != KEYFILE_V {
            return Err(corrupt(CorruptError::UnknownVersion(v)));
        }
        let rec: KeyFileRec<'_> =
            serde_json::from_slice(body).map_err(|e| corrupt(CorruptError::Decode(e)))?;
        Ok(Some(Self {
            generation: rec.generation,
            vault: Vault::from_rec(rec.vault).map_err(corrupt)?,
            audit_keys: rec
                .audit_keys
                .map(|s| s.to_sealed())
                .transpose()
                .map_err(corrupt)?,
            anchored: rec.anchored,
        }))
    }

    /// Replaces `<dir>/master.key` atomically and durably.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let bytes = Zeroizing::new(self.vault.with_rec(|vault| {
            // `VaultRec` is not `Clone`: serialize through a borrowing wrapper.
            #[derive(Serialize)]
            struct Out<'r, 'a> {
                generation: u64,
                vault: &'r VaultRec<'a>,
                #[serde(skip_serializing_if = "Option::is_none")]
                audit_keys: Option<SealedRec>,
                anchored: bool,
            }
            encode(
                KEYFILE_V,
                &Out {
                    generation: self.generation,
                    vault,
                    audit_keys: self.audit_keys.clone().map(SealedRec::from_sealed),
                    anchored: self.anchored,
                },
            )
        }));
        let err = |path: PathBuf| move |source| StoreError::Dir { path, source };
        let tmp = dir.join(KEY_TMP);
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err(tmp.clone()))?;
        file.write_all(&bytes).map_err(err(tmp.clone()))?;
        file.sync_all().map_err(err(tmp.clone()))?;
        drop(file);
        fs::rename(&tmp, dir.join(KEY_FILE)).map_err(err(dir.join(KEY_FILE)))?;
        sync_dir(dir)
    }
}

/// The vault record of the store in `store_dir` as `meta/vault` held it (envelope and all), and
/// the directory of its sled database: for tools that read raw records, such as the fuzzers'
/// seed recorder.
pub fn raw_vault_record(store_dir: &Path) -> Result<(Vec<u8>, PathBuf)> {
    let key_file = KeyFile::read(store_dir)?.ok_or_else(|| StoreError::NotInitialised {
        path: store_dir.to_path_buf(),
    })?;
    Ok((
        key_file.vault.encode(),
        store_dir.join(db_dir_name(key_file.generation)),
    ))
}

/// Syncs a directory, so a rename or removal in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })
}

/// The store's lock: held (an exclusive `flock`) until dropped.
pub(crate) struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

impl StoreLock {
    /// Takes the lock on the store in `dir`, waiting up to `wait` for another holder (a daemon
    /// that just stopped) to let go; [`StoreError::InUse`] if it does not.
    pub(crate) fn acquire(dir: &Path, wait: Duration) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Dir {
                path: path.clone(),
                source,
            })?;
        // Counted attempts rather than a deadline: the store reads no clock.
        let step = Duration::from_millis(10);
        let mut attempts = wait.as_millis() / step.as_millis();
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Self { _lock: lock }),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if attempts > 0 => {
                    file = f;
                    attempts -= 1;
                    std::thread::sleep(step);
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(StoreError::InUse {
                        path: dir.to_path_buf(),
                    });
                }
                Err((_, e)) => {
                    return Err(StoreError::Dir {
                        path,
                        source: io::Error::from(e),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_dir_names_round_trip_and_reject_others() {
        assert_eq!(parse_db_dir_name(&db_dir_name(7)), Some(7));
        for bad in ["db-", "db-x", "db", "conf", "db-1.tmp"] {
            assert_eq!(parse_db_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_second_lock_on_one_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreLock::acquire(dir.path(), Duration::ZERO).unwrap();
        assert!(matches!(
            StoreLock::acquire(dir.path(), Duration::ZERO),
            Err(StoreError::InUse { .. })
        ));
        drop(first);
        StoreLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
