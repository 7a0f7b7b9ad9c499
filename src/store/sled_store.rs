//! [`SledStore`]: the sled-backed [`Store`](super::Store). This file owns opening and creating
//! the database, its trees, the sealed/unsealed state and the passphrase; the record operations
//! are in `sled_keys.rs`, `sled_certs.rs` and `sled_log.rs`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use sled::transaction::{TransactionError, TransactionResult};

use super::audit_key::AuditKeys;
use super::crypto::{KdfParams, Kek, MasterKey, Sealed, random_salt};
use super::error::{Result, StoreError};
use super::journal::Journal;
use super::keyfile::{KeyFile, StoreLock, db_dir_name};
use super::records::Vault;
use super::types::StoreStatus;
use super::{Vault as VaultTrait, migrate, perms, rekey};

/// `meta` key holding the schema version (`u32`, big-endian).
pub(crate) const META_SCHEMA: &[u8] = b"schema_version";
/// `meta` key that held the vault record before the key file (`master.key`) existed: read once,
/// by the migration to the key file, and never copied into a new database.
pub(crate) const META_VAULT: &[u8] = b"vault";

/// Tuning of the sled database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache bound, in bytes (sled's default is 1 GiB).
    pub cache_capacity: u64,
    /// How long `open` waits for the database lock. sled 0.34 releases its file lock from a
    /// background thread shortly *after* `Db` is dropped (spacejam/sled#1234), so an immediate
    /// reopen (a restarted daemon, the CLI after the daemon stopped) must wait a moment; a lock
    /// held by a live process still ends in [`StoreError::InUse`] after this long.
    pub lock_wait: Duration,
}

impl Default for StoreOptions {
    /// A 4 MiB cache: the store holds at most a few thousand small records.
    fn default() -> Self {
        Self {
            cache_capacity: 4 * 1024 * 1024,
            lock_wait: Duration::from_secs(1),
        }
    }
}

/// The trees of the database.
pub(crate) struct Trees {
    /// `KeyId` → key record.
    pub(crate) keys: sled::Tree,
    /// name (UTF-8) → `KeyId`.
    pub(crate) key_names: sled::Tree,
    /// `CertId` → certificate record.
    pub(crate) certs: sled::Tree,
    /// `not_after` (u64 BE) ‖ `CertId` → empty; active certificates only.
    pub(crate) expiry: sled::Tree,
    /// `KeyId` → policy record.
    pub(crate) policies: sled::Tree,
    /// `CertId` → renewal policy record.
    pub(crate) renewals: sled::Tree,
    /// `KeyId` → usage record (signatures counted against its policy's limits).
    pub(crate) usage: sled::Tree,
    /// `KeyId` ‖ SHA-256 of the blob → OpenSSH certificate of a stored key.
    pub(crate) key_certs: sled::Tree,
    /// sequence (u64 BE) → audit record: schema 1 stores only; their records are moved to the
    /// [`Journal`] on open.
    pub(crate) audit: sled::Tree,
    /// schema version, vault.
    pub(crate) meta: sled::Tree,
}

impl Trees {
    /// Every tree with its name (for copying a database).
    pub(crate) fn all(&self) -> [(&'static str, &sled::Tree); 10] {
        [
            ("keys", &self.keys),
            ("key_names", &self.key_names),
            ("certs", &self.certs),
            ("expiry", &self.expiry),
            ("policies", &self.policies),
            ("renewals", &self.renewals),
            ("usage", &self.usage),
            ("key_certs", &self.key_certs),
            ("audit", &self.audit),
            ("meta", &self.meta),
        ]
    }

    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            keys: db.open_tree("keys")?,
            key_names: db.open_tree("key_names")?,
            certs: db.open_tree("certs")?,
            expiry: db.open_tree("expiry")?,
            policies: db.open_tree("policies")?,
            renewals: db.open_tree("renewals")?,
            usage: db.open_tree("usage")?,
            key_certs: db.open_tree("key_certs")?,
            audit: db.open_tree("audit")?,
            meta: db.open_tree("meta")?,
        })
    }
}

struct State {
    master: Option<MasterKey>,
    /// The audit keys, while unsealed (kept while the agent is locked: they decrypt nothing).
    audit: Option<AuditKeys>,
    /// The passphrase's wrap says the audit trail is anchored (see `crypto.rs`): a missing
    /// anchor is then reported whatever the key file says.
    anchor_required: bool,
    /// Set while the agent is locked (`master` is `None` meanwhile).
    hidden: Option<Hidden>,
    passphrase_set: bool,
}

/// The master key while the agent is locked.
enum Hidden {
    /// Encrypted under the lock key.
    Master(Sealed),
    /// None: the store was sealed when the agent locked, or was sealed since.
    Sealed,
}

impl State {
    fn refuse_if_locked(&self) -> Result<()> {
        if self.hidden.is_some() {
            return Err(StoreError::Locked);
        }
        Ok(())
    }
}

/// The open sled database of the current generation (`<store>/db-<generation>/`).
pub(crate) struct Db {
    pub(crate) db: sled::Db,
    pub(crate) t: Trees,
}

impl Db {
    /// Flushes sled's log to disk; every write method calls it before returning.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// The sled-backed store. Share it with `Arc`; every method takes `&self`.
///
/// Opened sealed when a passphrase is set ([`unseal`](VaultTrait::unseal) loads the master key);
/// a store without a passphrase is unsealed on open. Every write is flushed before it returns.
pub struct SledStore {
    pub(crate) path: PathBuf,
    /// Replaced whole by a re-key ([`change_passphrase`](VaultTrait::change_passphrase)); every
    /// operation takes the read lock once.
    db: RwLock<Db>,
    opts: StoreOptions,
    _lock: StoreLock,
    /// The audit records, in `<store>/audit/` (see [`Journal`] for why not in sled).
    pub(crate) journal: Journal,
    /// Copies of the records other than allowed signatures (refusals, changes), in
    /// `<store>/audit/retained/`, pruned on their own so a flood of signatures cannot push
    /// them out.
    pub(crate) retained: Journal,
    state: RwLock<State>,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("sealed", &self.is_sealed())
            .finish_non_exhaustive()
    }
}

/// Maps a transaction result to the store's error.
pub(crate) fn tx<T>(r: TransactionResult<T, StoreError>) -> Result<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    })
}

pub(crate) fn open_db(dir: &Path, opts: StoreOptions) -> Result<sled::Db> {
    perms::prepare_dir(dir)?;
    let cfg = sled::Config::new()
        .path(dir)
        .cache_capacity(opts.cache_capacity);
    // Counted attempts rather than a deadline: the store reads no clock.
    let step = Duration::from_millis(10);
    let mut attempts = opts.lock_wait.as_millis() / step.as_millis();
    let db = loop {
        match perms::with_private_umask(|| cfg.open()) {
            Ok(db) => break db,
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                if attempts == 0 {
                    return Err(StoreError::InUse {
                        path: dir.to_path_buf(),
                    });
                }
                attempts -= 1;
                std::thread::sleep(step);
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    };
    perms::tighten_tree(dir)?;
    Ok(db)
}

/// The audit journal's directory inside the store.
pub(crate) const JOURNAL_DIR: &str = "audit";
/// The retained records' journal, inside [`JOURNAL_DIR`].
pub(crate) const RETAINED_DIR: &str = "retained";

/// Opens the audit journal and the journal of retained records.
fn open_journals(dir: &Path) -> Result<(Journal, Journal)> {
    let journal = Journal::open(
        &dir.join(JOURNAL_DIR),
        &dir.join(super::audit_key::ANCHOR_FILE),
        false,
    )?;
    let retained = Journal::open(
        &dir.join(JOURNAL_DIR).join(RETAINED_DIR),
        &dir.join(super::audit_key::RETAINED_ANCHOR_FILE),
        true,
    )?;
    Ok((journal, retained))
}

/// Moves the audit records of a store written before the journal existed out of the sled tree:
/// copied into the empty journal all at once (a synced, renamed file), then removed from sled.
/// A crash in between leaves both; the copy is complete then, so only the removal is redone.
fn move_audit_tree(db: &sled::Db, t: &Trees, journal: &Journal) -> Result<()> {
    if t.audit.is_empty() {
        return Ok(());
    }
    if journal.is_empty() {
        let values = t
            .audit
            .iter()
            .values()
            .map(|v| v.map(|v| v.to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let moved = journal.import(values)?;
        tracing::info!(
            records = moved,
            "moved the audit records into the audit journal"
        );
    }
    t.audit.clear()?;
    db.flush()?;
    Ok(())
}

fn read_schema(path: &Path, meta: &sled::Tree) -> Result<Option<u32>> {
    let Some(v) = meta.get(META_SCHEMA)? else {
        return Ok(None);
    };
    let b: [u8; 4] = v.as_ref().try_into().map_err(|_| {
        StoreError::corrupt(
            format!("meta/schema_version in {}", path.display()),
            super::CorruptError::Truncated(v.len()),
        )
    })?;
    Ok(Some(u32::from_be_bytes(b)))
}

impl SledStore {
    /// Creates a store in `dir` (made `0700`). With a passphrase, the master key is wrapped under
    /// Argon2id(`passphrase`, random salt, `kdf`) and the store is returned unsealed; without one,
    /// the master key is stored in plain and `status` reports `passphrase_set: false`.
    pub fn init(dir: &Path, passphrase: Option<&[u8]>, kdf: KdfParams) -> Result<Self> {
        Self::init_with_options(dir, passphrase, kdf, StoreOptions::default())
    }

    /// [`init`](Self::init) with explicit [`StoreOptions`].
    pub fn init_with_options(
        dir: &Path,
        passphrase: Option<&[u8]>,
        kdf: KdfParams,
        opts: StoreOptions,
    ) -> Result<Self> {
        kdf.validate()?;
        // Only into an absent or empty directory: never over a store sled could not read. What
        // an `init` that crashed before writing the key file left is not a store yet.
        if rekey::holds_more_than_init_leftovers(dir) {
            return Err(StoreError::AlreadyInitialised {
                path: dir.to_path_buf(),
            });
        }
        perms::prepare_dir(dir)?;
        let lock = StoreLock::acquire(dir, opts.lock_wait)?;
        if rekey::holds_more_than_init_leftovers(dir) {
            return Err(StoreError::AlreadyInitialised {
                path: dir.to_path_buf(),
            });
        }
        rekey::remove_other_generations(dir, None)?;
        rekey::remove_init_leftovers(dir)?;
        let generation = 1;
        let db = open_db(&dir.join(db_dir_name(generation)), opts)?;
        let t = Trees::open(&db)?;
        let master = MasterKey::random();
        let vault = make_vault(&master, passphrase, kdf)?;
        t.meta
            .insert(META_SCHEMA, &migrate::CURRENT_SCHEMA.to_be_bytes())?;
        db.flush()?;
        let (journal, retained) = open_journals(dir)?;
        let keys = AuditKeys::open(&master, generation, None).expect("no sealed keys to open");
        journal.set_anchor_key(Some((generation, keys.current.clone())), 0)?;
        retained.set_anchor_key(Some((generation, keys.current.clone())), 0)?;
        // The key file is written last: it is what makes the directory a store.
        KeyFile {
            generation,
            vault,
            audit_keys: None,
            anchored: true,
        }
        .write(dir)?;
        let state = State {
            master: Some(master),
            audit: Some(keys),
            anchor_required: passphrase.is_some(),
            hidden: None,
            passphrase_set: passphrase.is_some(),
        };
        Ok(Self {
            path: dir.to_path_buf(),
            db: RwLock::new(Db { db, t }),
            opts,
            _lock: lock,
            journal,
            retained,
            state: RwLock::new(state),
        })
    }

    /// Opens an existing store, running migrations from older schema versions. Sealed if it has a
    /// passphrase.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_options(dir, StoreOptions::default())
    }

    /// [`open`](Self::open) with explicit [`StoreOptions`].
    pub fn open_with_options(dir: &Path, opts: StoreOptions) -> Result<Self> {
        let legacy = dir.join("conf").is_file();
        if !legacy && !dir.join(super::keyfile::KEY_FILE).is_file() {
            return Err(StoreError::NotInitialised {
                path: dir.to_path_buf(),
            });
        }
        perms::prepare_dir(dir)?;
        let lock = StoreLock::acquire(dir, opts.lock_wait)?;
        let key_file = match KeyFile::read(dir)? {
            Some(k) => k,
            None => rekey::migrate_to_key_file(dir, opts)?,
        };
        // Leftovers of a re-key or migration that stopped before or after its commit point.
        rekey::remove_other_generations(dir, Some(key_file.generation))?;
        rekey::remove_legacy_database(dir)?;
        let generation = key_file.generation;
        let db_dir = dir.join(db_dir_name(generation));
        if !db_dir.is_dir() {
            return Err(StoreError::Damaged {
                path: dir.to_path_buf(),
            });
        }
        let db = open_db(&db_dir, opts)?;
        let t = Trees::open(&db)?;
        let Some(schema) = read_schema(dir, &t.meta)? else {
            return Err(StoreError::Damaged {
                path: dir.to_path_buf(),
            });
        };
        migrate::migrate(dir, &db, &t, schema)?;
        let state = match key_file.vault {
            Vault::Plain(k) => State {
                audit: Some(audit_keys(
                    dir,
                    &k,
                    generation,
                    key_file.audit_keys.as_ref(),
                )?),
                master: Some(k),
                anchor_required: false,
                hidden: None,
                passphrase_set: false,
            },
            Vault::Passphrase { .. } => State {
                master: None,
                audit: None,
                anchor_required: false,
                hidden: None,
                passphrase_set: true,
            },
        };
        let (journal, retained) = open_journals(dir)?;
        move_audit_tree(&db, &t, &journal)?;
        let store = Self {
            path: dir.to_path_buf(),
            db: RwLock::new(Db { db, t }),
            opts,
            _lock: lock,
            journal,
            retained,
            state: RwLock::new(state),
        };
        let keys = store.state().audit.clone();
        if let Some(keys) = keys {
            store.start_anchoring(&keys)?;
        }
        Ok(store)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current database. Take it once per operation: a re-key waits for every holder.
    pub(crate) fn d(&self) -> RwLockReadGuard<'_, Db> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Flushes sled's log to disk.
    #[cfg(test)]
    pub(crate) fn flush(&self) -> Result<()> {
        self.d().flush()
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with the master key, or fails with `Locked` or `Sealed`.
    pub(crate) fn with_master<T>(&self, f: impl FnOnce(&MasterKey) -> Result<T>) -> Result<T> {
        let st = self.state();
        st.refuse_if_locked()?;
        let m = st.master.as_ref().ok_or_else(|| StoreError::Sealed {
            path: self.path.clone(),
        })?;
        f(m)
    }

    pub(crate) fn key_file(&self) -> Result<KeyFile> {
        KeyFile::read(&self.path)?.ok_or_else(|| StoreError::Damaged {
            path: self.path.clone(),
        })
    }

    /// The audit keys while unsealed (kept while locked).
    pub(crate) fn audit_keys(&self) -> Option<AuditKeys> {
        self.state().audit.clone()
    }

    /// Whether a missing audit anchor must be reported even if the key file says the trail was
    /// never anchored (a passphrase-protected store since anchors exist).
    pub(crate) fn anchor_required(&self) -> bool {
        self.state().anchor_required
    }

    /// Runs `f` with the audit keys, if the store has them (no copy of the keys is made).
    pub(crate) fn with_audit_keys<T>(&self, f: impl FnOnce(&AuditKeys) -> T) -> Option<T> {
        self.state().audit.as_ref().map(f)
    }

    /// Checks `passphrase` against `vault` and unwraps the master key; with an older wrap, also
    /// the vault wrapped anew (same passphrase) for the key file.
    fn unlock_vault(&self, vault: Vault, passphrase: &[u8]) -> Result<(MasterKey, Option<Vault>)> {
        match vault {
            Vault::Plain(k) => Ok((k, None)),
            Vault::Passphrase {
                kdf,
                salt,
                verifier,
                wrapped,
            } => {
                let kek = Kek::derive(passphrase, &salt, &kdf)?;
                if !kek.matches(&verifier) {
                    return Err(StoreError::WrongPassphrase {
                        path: self.path.clone(),
                    });
                }
                let (master, current) = kek.unwrap_master(&wrapped).ok_or_else(|| {
                    StoreError::corrupt(super::keyfile::KEY_FILE, super::CorruptError::Aead)
                })?;
                let rewrapped = (!current).then(|| Vault::Passphrase {
                    kdf,
                    salt,
                    verifier,
                    wrapped: kek.wrap_master(&master),
                });
                Ok((master, rewrapped))
            }
        }
    }

    /// Replaces the master key by `new_master` (protected by `new_vault`): copies every record
    /// into a fresh database of the next generation, private keys re-encrypted from `old_master`,
    /// then replaces the key file (the commit point) and deletes the old database, whose sled
    /// log still holds the old ciphertexts. Every other operation waits meanwhile.
    fn rekey(
        &self,
        old_master: &MasterKey,
        new_master: &MasterKey,
        new_key_file: &KeyFile,
    ) -> Result<()> {
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = new_key_file.generation;
        let (new_db, new_t) = rekey::copy_database(
            &db.t,
            &self.path.join(db_dir_name(generation)),
            self.opts,
            Some((old_master, new_master)),
        )?;
        new_key_file.write(&self.path)?;
        let old = std::mem::replace(
            &mut *db,
            Db {
                db: new_db,
                t: new_t,
            },
        );
        drop(db);
        drop(old);
        rekey::remove_other_generations(&self.path, Some(generation))
    }
}

/// The audit keys of a store at `generation` with master key `master`.
fn audit_keys(
    dir: &Path,
    master: &MasterKey,
    generation: u64,
    sealed: Option<&Sealed>,
) -> Result<AuditKeys> {
    AuditKeys::open(master, generation, sealed).ok_or_else(|| {
        StoreError::corrupt(
            format!("{}/{}", dir.display(), super::keyfile::KEY_FILE),
            super::CorruptError::Aead,
        )
    })
}

fn make_vault(master: &MasterKey, passphrase: Option<&[u8]>, kdf: KdfParams) -> Result<Vault> {
    Ok(match passphrase {
        None => Vault::Plain(master.duplicate()),
        Some(p) => {
            let salt = random_salt();
            let kek = Kek::derive(p, &salt, &kdf)?;
            Vault::Passphrase {
                kdf,
                salt: salt.to_vec(),
                verifier: kek.verifier.to_vec(),
                wrapped: kek.wrap_master(master),
            }
        }
    })
}

impl VaultTrait for SledStore {
    fn status(&self) -> Result<StoreStatus> {
        let st = self.state();
        let d = self.d();
        Ok(StoreStatus {
            path: self.path.clone(),
            passphrase_set: st.passphrase_set,
            sealed: st.master.is_none(),
            key_count: d.t.keys.len(),
            cert_count: d.t.certs.len(),
            schema_version: read_schema(&self.path, &d.t.meta)?.unwrap_or(0),
        })
    }

    fn is_sealed(&self) -> bool {
        self.state().master.is_none()
    }

    fn unseal(&self, passphrase: &[u8]) -> Result<()> {
        // Even a store without a passphrase stays closed while the agent is locked.
        self.state().refuse_if_locked()?;
        let mut key_file = self.key_file()?;
        let (master, rewrapped) = self.unlock_vault(key_file.vault, passphrase)?;
        let keys = audit_keys(
            &self.path,
            &master,
            key_file.generation,
            key_file.audit_keys.as_ref(),
        )?;
        {
            let mut st = self.state_mut();
            st.refuse_if_locked()?;
            st.master = Some(master);
            st.audit = Some(keys.clone());
            // An older wrap: the store is anchored from now on, not required to be already.
            st.anchor_required = rewrapped.is_none();
        }
        self.start_anchoring(&keys)?;
        if let Some(vault) = rewrapped {
            // Re-read: anchoring may have just set `anchored`.
            let current = self.key_file()?;
            key_file = KeyFile { vault, ..current };
            key_file.write(&self.path)?;
            self.state_mut().anchor_required = true;
        }
        Ok(())
    }

    fn seal(&self) {
        // What was written so far is anchored before the key goes.
        for journal in [&self.journal, &self.retained] {
            if journal.is_anchoring()
                && let Err(e) = journal.anchor_now()
            {
                tracing::error!(error = %e, "cannot anchor the audit trail before sealing");
            }
            if let Err(e) = journal.set_anchor_key(None, 0) {
                tracing::error!(error = %e, "cannot stop anchoring the audit trail");
            }
        }
        let mut st = self.state_mut();
        st.master = None;
        st.audit = None;
        // Sealed while locked: it stays sealed after the unlock.
        if st.hidden.is_some() {
            st.hidden = Some(Hidden::Sealed);
        }
    }

    fn change_passphrase(&self, old: &[u8], new: Option<&[u8]>, kdf: KdfParams) -> Result<()> {
        kdf.validate()?;
        self.state().refuse_if_locked()?;
        let key_file = self.key_file()?;
        let (old_master, _) = self.unlock_vault(key_file.vault, old)?;
        let old_keys = audit_keys(
            &self.path,
            &old_master,
            key_file.generation,
            key_file.audit_keys.as_ref(),
        )?;
        // A new master key, so that nothing an older copy of the store (or the old passphrase)
        // opens decrypts what the store holds from now on. The audit keys so far go along,
        // sealed under it, so the trail written before still verifies.
        let new_master = MasterKey::random();
        let new_key_file = KeyFile {
            generation: key_file.generation + 1,
            vault: make_vault(&new_master, new, kdf)?,
            audit_keys: Some(
                old_keys
                    .seal_all(&new_master)
                    .to_sealed()
                    .map_err(|r| StoreError::corrupt(super::keyfile::KEY_FILE, r))?,
            ),
            anchored: key_file.anchored,
        };
        let new_keys = audit_keys(
            &self.path,
            &new_master,
            new_key_file.generation,
            new_key_file.audit_keys.as_ref(),
        )?;
        let mut st = self.state_mut();
        st.refuse_if_locked()?;
        self.rekey(&old_master, &new_master, &new_key_file)?;
        st.passphrase_set = new.is_some();
        st.anchor_required = new.is_some();
        if st.master.is_some() || new.is_none() {
            st.master = Some(new_master);
            st.audit = Some(new_keys.clone());
            drop(st);
            if self.journal.is_anchoring() || self.retained.is_anchoring() {
                for journal in [&self.journal, &self.retained] {
                    if journal.is_anchoring() {
                        journal
                            .set_anchor_key(Some((new_keys.epoch, new_keys.current.clone())), 0)?;
                    }
                }
            } else {
                self.start_anchoring(&new_keys)?;
            }
        }
        Ok(())
    }

    fn hide_master(&self, lock_key: &[u8; 32]) {
        let mut st = self.state_mut();
        if st.hidden.is_some() {
            return;
        }
        let hidden = match st.master.take() {
            Some(master) => Hidden::Master(master.hide(lock_key)),
            None => Hidden::Sealed,
        };
        st.hidden = Some(hidden);
    }

    fn reveal_master(&self, lock_key: &[u8; 32]) -> bool {
        let mut st = self.state_mut();
        let master = match &st.hidden {
            None => return true,
            Some(Hidden::Sealed) => None,
            Some(Hidden::Master(sealed)) => match MasterKey::reveal(lock_key, sealed) {
                Some(master) => Some(master),
                None => return false,
            },
        };
        st.master = master;
        st.hidden = None;
        true
    }
}
