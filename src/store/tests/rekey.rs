//! `change_passphrase` makes a new master key and a new database; a store whose master key was in
//! sled moves it to `master.key` once. Checked the way someone holding a copy of the store
//! directory from before would: every file of the copy taken after is searched for the old master
//! key and the old ciphertexts, and the old passphrase and key are tried on it.

use std::path::{Path, PathBuf};

use super::*;
use crate::store::crypto::{MasterKey, open_private};
use crate::store::keyfile::KeyFile;
use crate::store::records::{KEY_V, KeyRec, Vault as VaultRec, decode, hex_encode};
use crate::store::sled_store::META_VAULT;
use crate::store::{KeyId, KeyStore, StoreError, Vault};

const NEW_PASS: &[u8] = b"a new passphrase entirely";

fn master_of(store: &SledStore) -> [u8; 32] {
    store.with_master(|m| Ok(*m.expose())).unwrap()
}

/// Copies the store directory `from` (closed) to `to`, as `cp -a` would.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` holding `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| contains(&std::fs::read(f).unwrap(), needle))
        .collect()
}

/// Every key record's private ciphertext in the store at `dir` (opened and closed here).
fn ciphertexts(dir: &Path) -> Vec<(KeyId, KeyRec)> {
    let store = SledStore::open(dir).unwrap();
    let d = store.d();
    d.t.keys
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (
                KeyId::from_slice(&k).unwrap(),
                decode(String::new, KEY_V, &v).unwrap(),
            )
        })
        .collect()
}

/// The copy `after` holds nothing `old_master` (or the ciphertexts `before` held) gives away.
fn assert_nothing_old_opens(after: &Path, old_master: &[u8; 32], before: &[(KeyId, KeyRec)]) {
    assert_eq!(holding(after, old_master), Vec::<PathBuf>::new());
    assert_eq!(
        holding(after, hex_encode(old_master).as_bytes()),
        Vec::<PathBuf>::new(),
        "the old master key in hex (as `master_plain` held it)"
    );
    for (_, rec) in before {
        let hex = hex_encode(&rec.private.ciphertext);
        assert_eq!(
            holding(after, &hex.as_bytes()[..64]),
            Vec::<PathBuf>::new(),
            "an old ciphertext is still in the store"
        );
    }
    let old = MasterKey::from_slice(old_master).unwrap();
    for (id, rec) in ciphertexts(after) {
        let sealed = rec.private.to_sealed().unwrap();
        assert!(open_private(&old, id, &rec.public, &sealed).is_none());
    }
}

#[test]
fn setting_a_first_passphrase_makes_a_new_master_key_and_leaves_no_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = SledStore::init(&live, None, cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    // Several writes of the same record, so sled's log holds older values too.
    for i in 0..5 {
        store.set_comment(id, &format!("c{i}"), NOW).unwrap();
    }
    let old_master = master_of(&store);
    drop(store);
    let before = tmp.path().join("before");
    copy_dir(&live, &before);
    assert!(
        !holding(&before, hex_encode(&old_master).as_bytes()).is_empty(),
        "the search finds the plain master key of a passphrase-less store"
    );
    let old_ciphertexts = ciphertexts(&before);

    let store = SledStore::open(&live).unwrap();
    store.change_passphrase(b"", Some(PASS), cheap()).unwrap();
    assert_ne!(master_of(&store), old_master);
    // A key added afterwards, under the new master key only.
    let later = store.put_key(new_key("later", 2), NOW).unwrap();
    drop(store);
    let after = tmp.path().join("after");
    copy_dir(&live, &after);

    assert_nothing_old_opens(&after, &old_master, &old_ciphertexts);
    let copy = SledStore::open(&after).unwrap();
    assert!(copy.is_sealed());
    assert!(matches!(
        copy.unseal(b""),
        Err(StoreError::WrongPassphrase { .. })
    ));
    copy.unseal(PASS).unwrap();
    assert_eq!(copy.private_key(id).unwrap().as_bytes(), distinctive(1, 64));
    assert_eq!(
        copy.private_key(later).unwrap().as_bytes(),
        distinctive(2, 64)
    );
}

#[test]
fn a_passphrase_change_leaves_nothing_the_old_passphrase_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = SledStore::init(&live, Some(PASS), cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    let old_master = master_of(&store);
    drop(store);
    let before_ciphertexts = ciphertexts(&live);
    let store = SledStore::open(&live).unwrap();
    // Works while sealed: the old passphrase is what unlocks the old master key.
    store
        .change_passphrase(PASS, Some(NEW_PASS), cheap())
        .unwrap();
    assert!(store.is_sealed(), "the sealed state is unchanged");
    drop(store);
    let after = tmp.path().join("after");
    copy_dir(&live, &after);
    assert_nothing_old_opens(&after, &old_master, &before_ciphertexts);
    let copy = SledStore::open(&after).unwrap();
    assert!(matches!(
        copy.unseal(PASS),
        Err(StoreError::WrongPassphrase { .. })
    ));
    copy.unseal(NEW_PASS).unwrap();
    assert_eq!(copy.private_key(id).unwrap().as_bytes(), distinctive(1, 64));
    // Only one database generation is left.
    let dbs: Vec<String> = std::fs::read_dir(&after)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db-"))
        .collect();
    assert_eq!(dbs, ["db-2"]);
}

/// Turns the fresh store in `dir` into the layout written before the key file: sled's files at
/// the top of the directory, the vault in `meta/vault`.
fn make_legacy(dir: &Path) {
    let key_file = KeyFile::read(dir).unwrap().unwrap();
    let from = sled::open(dir.join("db-1")).unwrap();
    let to = sled::open(dir).unwrap();
    for name in from.tree_names() {
        let src = from.open_tree(&name).unwrap();
        let dst = to.open_tree(&name).unwrap();
        for kv in &src {
            let (k, v) = kv.unwrap();
            dst.insert(k, v).unwrap();
        }
    }
    to.open_tree("meta")
        .unwrap()
        .insert(META_VAULT, key_file.vault.encode())
        .unwrap();
    to.flush().unwrap();
    drop((from, to));
    std::fs::remove_dir_all(dir.join("db-1")).unwrap();
    std::fs::remove_file(dir.join("master.key")).unwrap();
}

#[test]
fn a_store_with_its_master_key_in_sled_moves_it_to_the_key_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = SledStore::init(&dir, None, cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    let master = master_of(&store);
    drop(store);
    make_legacy(&dir);
    assert!(dir.join("conf").is_file());
    assert!(!holding(&dir, hex_encode(&master).as_bytes()).is_empty());

    let store = SledStore::open(&dir).unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    assert_eq!(master_of(&store), master, "the migration keeps the key");
    drop(store);
    assert!(!dir.join("conf").exists() && !dir.join("db").exists());
    assert!(matches!(
        KeyFile::read(&dir).unwrap().unwrap().vault,
        VaultRec::Plain(_)
    ));
    // Only the key file holds the (plain) master key now: sled's log no longer does.
    assert_eq!(
        holding(&dir, hex_encode(&master).as_bytes()),
        [dir.join("master.key")]
    );
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
}

#[test]
fn a_rekey_that_stopped_before_its_commit_leaves_the_old_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = SledStore::init(&dir, Some(PASS), cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    drop(store);
    // A half-written next generation (the process died during the copy).
    std::fs::create_dir(dir.join("db-2")).unwrap();
    std::fs::write(dir.join("db-2").join("db"), b"partial").unwrap();
    std::fs::write(dir.join("master.key.tmp"), b"partial").unwrap();
    let store = SledStore::open(&dir).unwrap();
    assert!(!dir.join("db-2").exists(), "the unfinished copy is removed");
    store.unseal(PASS).unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    // The next change still works and moves to a fresh generation.
    store
        .change_passphrase(PASS, Some(NEW_PASS), cheap())
        .unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
}

#[test]
fn an_init_that_stopped_before_its_key_file_can_be_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    drop(SledStore::init(&dir, None, cheap()).unwrap());
    // What an init leaves before its commit point: everything but the key file.
    std::fs::remove_file(dir.join("master.key")).unwrap();
    assert!(matches!(
        SledStore::open(&dir),
        Err(StoreError::NotInitialised { .. })
    ));
    let store = SledStore::init(&dir, Some(PASS), cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    drop(store);
    let store = SledStore::open(&dir).unwrap();
    store.unseal(PASS).unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
}

#[test]
fn a_rekey_that_stopped_after_its_commit_finishes_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = SledStore::init(&dir, None, cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    drop(store);
    let old = ciphertexts(&dir);
    let old_hex = hex_encode(&old[0].1.private.ciphertext);
    let old_ct = &old_hex.as_bytes()[..64];
    // Keep the old database, as a process killed between the key file's rename and the old
    // directory's deletion leaves it.
    let kept = tmp.path().join("db-1");
    std::fs::rename(dir.join("db-1"), &kept).unwrap();
    let mut copy = std::process::Command::new("cp");
    assert!(
        copy.arg("-a")
            .arg(&kept)
            .arg(dir.join("db-1"))
            .status()
            .unwrap()
            .success()
    );
    let store = SledStore::open(&dir).unwrap();
    store.change_passphrase(b"", Some(PASS), cheap()).unwrap();
    drop(store);
    std::fs::rename(&kept, dir.join("db-1")).unwrap();
    assert!(
        !holding(&dir, old_ct).is_empty(),
        "the old ciphertext is there"
    );
    let store = SledStore::open(&dir).unwrap();
    assert!(
        !dir.join("db-1").exists(),
        "the old generation is deleted on open"
    );
    assert!(holding(&dir, old_ct).is_empty());
    store.unseal(PASS).unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
}

/// Appends `actions` the way keyward chained records before they were keyed: `hash` =
/// SHA-256(`prev` ‖ the record's JSON without `chain`).
fn append_unkeyed(store: &SledStore, actions: &[&str]) {
    use sha2::Digest as _;
    let mut prev = "0".repeat(64);
    for action in actions {
        let mut event = crate::store::AuditEvent {
            at: NOW,
            key_id: None,
            action: (*action).to_owned(),
            outcome: crate::store::AuditOutcome::Refused,
            detail: serde_json::json!({"why": "before keying"}),
        };
        let body = serde_json::to_vec(&event).unwrap();
        let hash = hex_encode(
            &sha2::Sha256::new()
                .chain_update(prev.as_bytes())
                .chain_update(&body)
                .finalize(),
        );
        event.detail["chain"] = serde_json::json!({"prev": prev, "hash": hash});
        crate::store::AuditLog::append_audit(store, &event).unwrap();
        prev = hash;
    }
}

#[test]
fn a_trail_written_before_keying_keeps_verifying_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = SledStore::init(&dir, None, cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    append_unkeyed(&store, &["a", "b", "c"]);
    drop(store);
    // The layout of a store from before keying: master key in sled, no anchors.
    make_legacy(&dir);
    std::fs::remove_file(dir.join("audit.anchor")).unwrap();
    std::fs::remove_file(dir.join("audit-retained.anchor")).unwrap();

    let store: std::sync::Arc<dyn crate::store::Store> =
        std::sync::Arc::new(SledStore::open(&dir).unwrap());
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    let v = crate::audit::verify(store.as_ref()).unwrap();
    assert_eq!(
        (v.records, v.keyed, v.broken.clone()),
        (3, 0, None),
        "{v:?}"
    );
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("records 1..3 predate keying") && n.contains("anchor")),
        "{v:?}"
    );
    // The next record is keyed and covers them.
    let auditor = crate::audit::Auditor::new(std::sync::Arc::clone(&store), 100).unwrap();
    auditor
        .record(crate::store::AuditEvent {
            at: NOW,
            key_id: None,
            action: "d".into(),
            outcome: crate::store::AuditOutcome::Info,
            detail: serde_json::json!({}),
        })
        .unwrap();
    let v = crate::audit::verify(store.as_ref()).unwrap();
    assert_eq!(
        (v.records, v.keyed, v.broken.clone()),
        (4, 1, None),
        "{v:?}"
    );
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("records 1..3 predate keying") && n.contains("keyed records")),
        "{v:?}"
    );
}

/// Rewrites the key file of the (closed) store in `dir` through `f`.
fn edit_key_file(dir: &Path, f: impl FnOnce(&mut KeyFile)) {
    let mut key_file = KeyFile::read(dir).unwrap().unwrap();
    f(&mut key_file);
    key_file.write(dir).unwrap();
}

#[test]
fn a_deleted_anchor_is_reported_even_with_the_key_file_flag_stripped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store: std::sync::Arc<dyn crate::store::Store> =
        std::sync::Arc::new(SledStore::init(&dir, Some(PASS), cheap()).unwrap());
    let auditor = crate::audit::Auditor::new(std::sync::Arc::clone(&store), 100).unwrap();
    for action in ["a", "b"] {
        auditor
            .record(crate::store::AuditEvent {
                at: NOW,
                key_id: None,
                action: action.into(),
                outcome: crate::store::AuditOutcome::Refused,
                detail: serde_json::json!({}),
            })
            .unwrap();
    }
    drop((auditor, store));
    std::fs::remove_file(dir.join("audit.anchor")).unwrap();
    // The flag is in a file whose checksum anyone can recompute.
    edit_key_file(&dir, |k| k.anchored = false);
    let store = SledStore::open(&dir).unwrap();
    store.unseal(PASS).unwrap();
    let v = crate::audit::verify(&store).unwrap();
    let (_, why) = v.broken.expect("a deleted anchor is reported");
    assert!(why.contains("audit.anchor is missing"), "{why}");
}

#[test]
fn an_older_wrap_is_redone_at_the_unseal_and_then_requires_the_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = SledStore::init(&dir, Some(PASS), cheap()).unwrap();
    let master = store.with_master(|m| Ok(m.duplicate())).unwrap();
    append_unkeyed(&store, &["a"]);
    drop(store);
    // As keyward wrapped it before anchors, with no anchor yet.
    edit_key_file(&dir, |k| {
        let crate::store::records::Vault::Passphrase {
            kdf, salt, wrapped, ..
        } = &mut k.vault
        else {
            panic!("a passphrase vault")
        };
        let kek = crate::store::crypto::Kek::derive(PASS, salt, kdf).unwrap();
        *wrapped = kek.wrap_master_unanchored(&master);
        k.anchored = false;
    });
    std::fs::remove_file(dir.join("audit.anchor")).unwrap();
    let store = SledStore::open(&dir).unwrap();
    store.unseal(PASS).unwrap();
    let v = crate::audit::verify(&store).unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    drop(store);
    let key_file = KeyFile::read(&dir).unwrap().unwrap();
    assert!(key_file.anchored);
    let crate::store::records::Vault::Passphrase {
        kdf, salt, wrapped, ..
    } = &key_file.vault
    else {
        panic!("a passphrase vault")
    };
    let kek = crate::store::crypto::Kek::derive(PASS, salt, kdf).unwrap();
    assert!(kek.unwrap_master(wrapped).unwrap().1, "wrapped anew");
    // From now on a deleted anchor is reported, flag or not.
    std::fs::remove_file(dir.join("audit.anchor")).unwrap();
    edit_key_file(&dir, |k| k.anchored = false);
    let store = SledStore::open(&dir).unwrap();
    store.unseal(PASS).unwrap();
    assert!(crate::audit::verify(&store).unwrap().broken.is_some());
}

#[test]
fn a_passphrase_change_keeps_every_tree_usage_and_policies_included() {
    use crate::store::PolicyStore;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = SledStore::init(&dir, Some(PASS), cheap()).unwrap();
    store.unseal(PASS).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    let usage = serde_json::json!({"signatures": 41});
    let policy = serde_json::json!({"confirm": true});
    store.put_usage(id, Some(&usage), true).unwrap();
    store.put_policy(id, &policy).unwrap();
    store
        .change_passphrase(PASS, Some(NEW_PASS), cheap())
        .unwrap();
    assert_eq!(store.get_usage(id).unwrap(), Some(usage.clone()));
    assert_eq!(store.get_policy(id).unwrap(), Some(policy.clone()));
    drop(store);
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(store.get_usage(id).unwrap(), Some(usage), "after reopening");
    assert_eq!(store.get_policy(id).unwrap(), Some(policy));
}
