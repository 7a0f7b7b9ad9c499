//! Keys, sealing and passphrases.

use super::*;
use crate::store::{KeyStore, PolicyStore, StoreError, Vault};

#[test]
fn key_round_trip_and_reopen() {
    let (dir, store) = new_store();
    let id = store.put_key(new_key("work", 1), NOW).unwrap();
    let info = store.get_key("work").unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.comment, "work@test");
    assert_eq!(info.public.key_data(), public(1).key_data());
    assert_eq!(info.public.comment(), "work@test");
    assert_eq!((info.created_at, info.updated_at), (NOW, NOW));
    assert_eq!(store.get_key(&id.to_string()).unwrap(), info);
    assert_eq!(store.key(id).unwrap(), info);
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    store
        .put_policy(id, &serde_json::json!({"confirm": true}))
        .unwrap();
    drop(store);

    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert!(store.is_sealed());
    assert_eq!(store.list_keys().unwrap(), vec![info]);
    assert_eq!(
        store.get_policy(id).unwrap(),
        Some(serde_json::json!({"confirm": true}))
    );
    store.unseal(PASS).unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    let st = store.status().unwrap();
    assert!(st.passphrase_set && !st.sealed);
    assert_eq!(
        (st.key_count, st.cert_count, st.schema_version),
        (1, 0, crate::store::CURRENT_SCHEMA)
    );
}

#[test]
fn duplicate_name_refused_and_nothing_changed() {
    let (_dir, store) = new_store();
    let a = store.put_key(new_key("a", 1), NOW).unwrap();
    let b = store.put_key(new_key("b", 2), NOW).unwrap();
    let before = store.list_keys().unwrap();
    let err = store.put_key(new_key("a", 3), NOW).unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateName { name } if name == "a"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "a key named 'a' already exists");
    let err = store.rename_key(b, "a", NOW + 1).unwrap_err();
    assert!(matches!(err, StoreError::DuplicateName { .. }));
    assert_eq!(store.list_keys().unwrap(), before);
    assert_eq!(store.get_key("a").unwrap().id, a);
    assert_eq!(store.d().t.key_names.len(), 2);
}

#[test]
fn rename_comment_delete() {
    let (_dir, store) = new_store();
    let id = store.put_key(new_key("old", 1), NOW).unwrap();
    store
        .put_policy(id, &serde_json::json!({"lifetime": 60}))
        .unwrap();
    store.rename_key(id, "new", NOW + 5).unwrap();
    assert!(matches!(
        store.get_key("old"),
        Err(StoreError::KeyNotFound(_))
    ));
    store.set_comment(id, "c2", NOW + 6).unwrap();
    let info = store.get_key("new").unwrap();
    assert_eq!(
        (info.comment.as_str(), info.updated_at, info.created_at),
        ("c2", NOW + 6, NOW)
    );
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    assert_eq!(store.delete_key(id).unwrap().name, "new");
    assert_eq!(store.get_policy(id).unwrap(), None);
    assert!(store.d().t.key_names.is_empty() && store.d().t.keys.is_empty());
    assert!(matches!(
        store.delete_key(id),
        Err(StoreError::KeyIdNotFound(_))
    ));
    assert!(matches!(
        store.put_policy(id, &serde_json::json!({})),
        Err(StoreError::KeyIdNotFound(_))
    ));
}

#[test]
fn invalid_names_refused() {
    let (_dir, store) = new_store();
    for name in [
        "",
        " x",
        "x\n",
        &"n".repeat(129),
        "0123456789abcdef0123456789abcdef",
    ] {
        assert!(
            matches!(
                store.put_key(new_key(name, 1), NOW),
                Err(StoreError::InvalidName { .. })
            ),
            "{name:?}"
        );
    }
}

#[test]
fn sealed_store_refuses_private_material() {
    let (dir, store) = new_store();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert!(store.is_sealed() && store.status().unwrap().sealed);
    let err = store.private_key(id).err().unwrap();
    assert!(matches!(err, StoreError::Sealed { .. }));
    assert!(
        err.to_string().ends_with("is sealed: run `keyward unlock`"),
        "{err}"
    );
    assert!(matches!(
        store.put_key(new_key("k2", 2), NOW),
        Err(StoreError::Sealed { .. })
    ));
    store.unseal(PASS).unwrap();
    store.private_key(id).unwrap();
    store.seal();
    assert!(matches!(
        store.private_key(id),
        Err(StoreError::Sealed { .. })
    ));
}

#[test]
fn wrong_passphrase_refused() {
    let (dir, store) = new_store();
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    let err = store.unseal(b"not it").unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err:?}");
    assert!(err.to_string().starts_with("wrong passphrase"));
    assert!(store.is_sealed());
    assert!(matches!(
        store.change_passphrase(b"not it", Some(b"x"), cheap()),
        Err(StoreError::WrongPassphrase { .. })
    ));
}

#[test]
fn change_and_remove_passphrase() {
    let (dir, store) = new_store();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    store
        .change_passphrase(PASS, Some(b"new pass"), cheap())
        .unwrap();
    assert!(!store.is_sealed());
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert!(matches!(
        store.unseal(PASS),
        Err(StoreError::WrongPassphrase { .. })
    ));
    store.unseal(b"new pass").unwrap();
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    store.change_passphrase(b"new pass", None, cheap()).unwrap();
    drop(store);
    reopen_without_passphrase(&dir, id);
}

/// Reopens the store in `dir`, which must have no passphrase: unsealed at once, key `id` (made
/// by `new_key(_, 1)`) readable.
fn reopen_without_passphrase(dir: &tempfile::TempDir, id: crate::store::KeyId) -> SledStore {
    let store = SledStore::open(&store_dir(dir)).unwrap();
    let st = store.status().unwrap();
    assert!(!st.passphrase_set && !st.sealed);
    assert_eq!(
        store.private_key(id).unwrap().as_bytes(),
        distinctive(1, 64)
    );
    store
}

#[test]
fn store_without_passphrase_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::init(&store_dir(&dir), None, cheap()).unwrap();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    drop(store);
    let store = reopen_without_passphrase(&dir, id);
    let key_file = crate::store::keyfile::KeyFile::read(store.path())
        .unwrap()
        .unwrap();
    let raw = key_file.vault.encode();
    assert!(raw.windows(19).any(|w| w == b"\"passphrase\":false,"));
}

#[test]
fn open_and_init_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_dir(&dir);
    assert!(matches!(
        SledStore::open(&path),
        Err(StoreError::NotInitialised { .. })
    ));
    assert!(
        !path.join("conf").exists(),
        "open must not create a database"
    );
    let store = SledStore::init(&path, Some(PASS), cheap()).unwrap();
    let quick = crate::store::StoreOptions {
        lock_wait: std::time::Duration::ZERO,
        ..Default::default()
    };
    let err = SledStore::open_with_options(&path, quick).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    drop(store);
    assert!(matches!(
        SledStore::init(&path, None, cheap()),
        Err(StoreError::AlreadyInitialised { .. })
    ));
    // A directory with sled files but no metadata is reported as damaged, not as empty.
    let other = dir.path().join("other");
    drop(sled::open(&other).unwrap());
    assert!(matches!(
        SledStore::open(&other),
        Err(StoreError::Damaged { .. })
    ));
    assert!(matches!(
        SledStore::init(&other, None, cheap()),
        Err(StoreError::AlreadyInitialised { .. })
    ));
    let bad = KdfParams {
        m_cost_kib: 1,
        t_cost: 1,
        p_cost: 1,
    };
    assert!(matches!(
        SledStore::init(&dir.path().join("s2"), Some(PASS), bad),
        Err(StoreError::InvalidKdfParams { .. })
    ));
}

#[test]
fn store_is_object_safe_and_shareable() {
    let (_dir, store) = new_store();
    let s: std::sync::Arc<dyn crate::store::Store> = std::sync::Arc::new(store);
    let s2 = std::sync::Arc::clone(&s);
    let h = std::thread::spawn(move || s2.put_key(new_key("t", 1), NOW).unwrap());
    let id = h.join().unwrap();
    assert_eq!(s.get_key("t").unwrap().id, id);
}
