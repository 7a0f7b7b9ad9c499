//! Schema migration from a hand-made schema-0 store.

use super::*;
use crate::store::crypto::seal_private;
use crate::store::migrate::KeyRecV0;
use crate::store::records::{SealedRec, encode};
use crate::store::sled_store::META_SCHEMA;
use crate::store::{CURRENT_SCHEMA, KeyId, KeyStore, StoreError, Vault};

/// Rewrites a fresh store into the schema-0 layout with keys `(name, seed)`.
fn make_v0(store: &SledStore, keys: &[(&str, u8)]) -> Vec<KeyId> {
    let ids: Vec<KeyId> = keys.iter().map(|_| KeyId::random()).collect();
    store
        .with_master(|m| {
            for (id, (name, seed)) in ids.iter().zip(keys) {
                let public = public(*seed).to_bytes().unwrap();
                let private = distinctive(u64::from(*seed), 64);
                let rec = KeyRecV0 {
                    name: (*name).to_owned(),
                    comment: format!("v0 {name}"),
                    private: SealedRec::from_sealed(seal_private(m, *id, &public, &private)),
                    public,
                };
                store.d().t.keys.insert(id.as_bytes(), encode(0, &rec))?;
            }
            Ok(())
        })
        .unwrap();
    store
        .d()
        .t
        .meta
        .insert(META_SCHEMA, &0u32.to_be_bytes())
        .unwrap();
    store.flush().unwrap();
    ids
}

#[test]
fn schema_0_store_is_migrated_on_open() {
    let (dir, store) = new_store();
    let ids = make_v0(&store, &[("alpha", 1), ("beta", 2), ("alpha", 3)]);
    assert!(store.d().t.key_names.is_empty());
    drop(store);

    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(store.status().unwrap().schema_version, CURRENT_SCHEMA);
    store.unseal(PASS).unwrap();
    let keys = store.list_keys().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(store.d().t.key_names.len(), 3);
    for (id, seed) in ids.iter().zip([1u8, 2, 3]) {
        let info = store.key(*id).unwrap();
        assert_eq!(info.created_at, 0);
        assert_eq!(store.get_key(&info.name).unwrap().id, *id);
        assert_eq!(
            store.private_key(*id).unwrap().as_bytes(),
            distinctive(u64::from(seed), 64)
        );
    }
    // Of the two keys named "alpha", the one first in id order keeps the name.
    let (keeps, renamed) = if ids[0] < ids[2] {
        (ids[0], ids[2])
    } else {
        (ids[2], ids[0])
    };
    let dup = store.key(renamed).unwrap().name;
    assert_eq!(dup, format!("alpha-{}", &renamed.to_string()[..8]));
    assert_eq!(store.get_key("alpha").unwrap().id, keeps);
    // The migrated store behaves as a current one.
    assert!(matches!(
        store.put_key(new_key("beta", 4), NOW),
        Err(StoreError::DuplicateName { .. })
    ));
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(store.list_keys().unwrap().len(), 3);
}

#[test]
fn newer_schema_is_refused() {
    let (dir, store) = new_store();
    store
        .d()
        .t
        .meta
        .insert(META_SCHEMA, &(CURRENT_SCHEMA + 1).to_be_bytes())
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let err = SledStore::open(&store_dir(&dir)).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, .. } if found == CURRENT_SCHEMA + 1),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("upgrade keyward"));
}
