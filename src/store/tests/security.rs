//! Encryption at rest, record binding, corruption and file modes.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::store::records::{KEY_V, KeyRec, decode, encode};
use crate::store::{CorruptError, KeyStore, StoreError, Vault};

fn raw_key(store: &SledStore, id: crate::store::KeyId) -> KeyRec {
    decode(
        String::new,
        KEY_V,
        &store.d().t.keys.get(id.as_bytes()).unwrap().unwrap(),
    )
    .unwrap()
}

#[test]
fn swapped_ciphertexts_do_not_decrypt() {
    let (_dir, store) = new_store();
    let a = store.put_key(new_key("a", 1), NOW).unwrap();
    let b = store.put_key(new_key("b", 2), NOW).unwrap();
    let (mut ra, mut rb) = (raw_key(&store, a), raw_key(&store, b));
    std::mem::swap(&mut ra.private, &mut rb.private);
    store
        .d()
        .t
        .keys
        .insert(a.as_bytes(), encode(KEY_V, &ra))
        .unwrap();
    store
        .d()
        .t
        .keys
        .insert(b.as_bytes(), encode(KEY_V, &rb))
        .unwrap();
    for id in [a, b] {
        let err = store.private_key(id).err().unwrap();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    reason: CorruptError::Aead,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // Same ciphertext, other public key: also refused.
    let mut ra = raw_key(&store, a);
    std::mem::swap(&mut ra.private, &mut rb.private);
    ra.public = public(9).to_bytes().unwrap();
    store
        .d()
        .t
        .keys
        .insert(a.as_bytes(), encode(KEY_V, &ra))
        .unwrap();
    assert!(matches!(
        store.private_key(a),
        Err(StoreError::Corrupt {
            reason: CorruptError::Aead,
            ..
        })
    ));
    // Two records with the same public key: the id alone binds the ciphertext.
    let c = store.put_key(new_key("c", 1), NOW).unwrap();
    let d = store.put_key(new_key("d", 1), NOW).unwrap();
    let (mut rc, rd) = (raw_key(&store, c), raw_key(&store, d));
    rc.private = rd.private;
    store
        .d()
        .t
        .keys
        .insert(c.as_bytes(), encode(KEY_V, &rc))
        .unwrap();
    assert!(matches!(
        store.private_key(c),
        Err(StoreError::Corrupt {
            reason: CorruptError::Aead,
            ..
        })
    ));
    assert!(store.private_key(d).is_ok());
}

fn found_in_files(dir: &Path, needle: &[u8]) -> bool {
    let windows: HashSet<&[u8]> = needle.windows(32).collect();
    files(dir).iter().any(|f| {
        std::fs::read(f)
            .unwrap()
            .windows(32)
            .any(|w| windows.contains(w))
    })
}

#[test]
fn no_plaintext_private_key_in_store_files() {
    let (dir, store) = new_store();
    let secret = distinctive(0xfeed, 4096);
    let control = distinctive(0xbeef, 64);
    let mut key = new_key("secret", 7);
    key.private = PrivateKeyBytes::from(secret.clone());
    key.comment = String::from_utf8(control.clone()).unwrap();
    store.put_key(key, NOW).unwrap();
    drop(store);
    let path = store_dir(&dir);
    assert!(
        found_in_files(&path, &control),
        "the scan must find a plain value (the comment)"
    );
    assert!(
        !found_in_files(&path, &secret),
        "private key bytes found in plain in the store"
    );
    let store = SledStore::open(&path).unwrap();
    store.unseal(PASS).unwrap();
    let id = store.get_key("secret").unwrap().id;
    assert_eq!(store.private_key(id).unwrap().as_bytes(), secret);
}

#[test]
fn corrupt_records_give_typed_errors() {
    let (_dir, store) = new_store();
    let id = store.put_key(new_key("k", 1), NOW).unwrap();
    let good = store
        .d()
        .t
        .keys
        .get(id.as_bytes())
        .unwrap()
        .unwrap()
        .to_vec();
    for i in [0, 5, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        store.d().t.keys.insert(id.as_bytes(), bad).unwrap();
        let err = store.get_key("k").unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "byte {i}: {err:?}"
        );
        assert!(store.list_keys().is_err());
    }
    store
        .d()
        .t
        .keys
        .insert(id.as_bytes(), encode(7, &raw_key_from(&good)))
        .unwrap();
    let err = store.key(id).unwrap_err();
    assert!(matches!(
        err,
        StoreError::Corrupt {
            reason: CorruptError::UnknownVersion(7),
            ..
        }
    ));
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert_eq!(
        chain,
        format!("record keys/{id} is corrupt: version 7 unknown")
    );
    store.d().t.keys.insert(id.as_bytes(), &b"x"[..]).unwrap();
    assert!(matches!(
        store.key(id),
        Err(StoreError::Corrupt {
            reason: CorruptError::Truncated(1),
            ..
        })
    ));
    store
        .d()
        .t
        .keys
        .insert(
            id.as_bytes(),
            encode(KEY_V, &serde_json::json!({"name": 1})),
        )
        .unwrap();
    assert!(matches!(
        store.key(id),
        Err(StoreError::Corrupt {
            reason: CorruptError::Decode(_),
            ..
        })
    ));
}

fn raw_key_from(bytes: &[u8]) -> KeyRec {
    decode(String::new, KEY_V, bytes).unwrap()
}

#[test]
fn corrupt_key_file_is_reported_on_open() {
    let (dir, store) = new_store();
    drop(store);
    let path = store_dir(&dir).join("master.key");
    let mut v = std::fs::read(&path).unwrap();
    v[3] ^= 0x20;
    std::fs::write(&path, v).unwrap();
    let err = SledStore::open(&store_dir(&dir)).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref what, .. } if what == "master.key"),
        "{err:?}"
    );
}

fn assert_private_modes(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", path.display());
    for e in std::fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap().permissions().mode();
        assert_eq!(m & 0o077, 0, "{} has mode {m:o}", p.display());
        if p.is_dir() {
            assert_private_modes(&p);
        }
    }
}

#[test]
fn directory_and_files_have_no_group_or_other_bits() {
    let (dir, store) = new_store();
    for i in 0..20u8 {
        store.put_key(new_key(&format!("k{i}"), i), NOW).unwrap();
    }
    drop(store);
    let path = store_dir(&dir);
    assert_private_modes(&path);
    // A directory made loose, and a file made readable, are tightened on the next open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        path.join("db-1").join("conf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    drop(SledStore::open(&path).unwrap());
    assert_private_modes(&path);
}

/// A flipped byte in sled's log never panics. (It is not always detected either: sled takes a
/// bad checksum for a torn write and drops the log from there, so records can vanish silently;
/// see DEPENDENCIES.md.)
#[test]
fn flipped_bytes_in_the_database_file_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_dir(&dir);
    let store = SledStore::init(&path, None, cheap()).unwrap();
    for i in 0..10u8 {
        store.put_key(new_key(&format!("k{i}"), i), NOW).unwrap();
    }
    drop(store);
    let db_file = path.join("db-1").join("db");
    let orig = std::fs::read(&db_file).unwrap();
    let used = orig.iter().rposition(|&b| b != 0).unwrap();
    for off in (0..used).step_by(used / 12) {
        let mut bytes = orig.clone();
        bytes[off] ^= 0x40;
        std::fs::write(&db_file, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let store = SledStore::open(&path)?;
            store.list_keys().map(|k| k.len())
        });
        let result = outcome.unwrap_or_else(|_| panic!("opening with byte {off} flipped panicked"));
        if let Ok(n) = result {
            assert!(n <= 10);
        }
    }
}
