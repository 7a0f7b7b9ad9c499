//! Tests of the key ring: adding, finding, expiring, locking and unlocking.

use super::*;
use crate::keys::Signer;
use ssh_key::PrivateKey;

fn entry(expires: Option<u64>) -> Entry {
    let key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    Entry::new(
        key.public_key().key_data(),
        "c".into(),
        Signer::from_keypair(key.key_data()).unwrap(),
        Constraints {
            expires: expires.map(Duration::from_secs),
            confirm: false,
        },
    )
    .unwrap()
}

const T0: Duration = Duration::from_secs(100);

#[test]
fn add_find_remove_and_cached_answer() {
    let ring = Keyring::new();
    let e = entry(None);
    let blob = e.blob.clone();
    ring.add(e).unwrap();
    let a = ring.identities_answer(T0);
    assert!(
        Arc::ptr_eq(&a, &ring.identities_answer(T0)),
        "answer is cached"
    );
    assert!(ring.find(&blob, T0).is_some());
    assert!(ring.remove(&blob).unwrap());
    assert!(ring.find(&blob, T0).is_none());
    assert_eq!(&ring.identities_answer(T0)[..], &[12, 0, 0, 0, 0]);
}

#[test]
fn expired_keys_vanish_from_list_and_lookup() {
    let ring = Keyring::new();
    let e = entry(Some(102));
    let blob = e.blob.clone();
    ring.add(e).unwrap();
    ring.add(entry(None)).unwrap();
    assert!(ring.find(&blob, Duration::from_secs(101)).is_some());
    assert_eq!(ring.identities_answer(Duration::from_secs(101))[4], 2);
    assert!(ring.find(&blob, Duration::from_secs(102)).is_none());
    assert_eq!(ring.identities_answer(Duration::from_secs(102))[4], 1);
    assert_eq!(ring.purge_expired(Duration::from_secs(103)), None);
    assert_eq!(ring.len(), 1);
}

fn fast_ring() -> Keyring {
    Keyring::new().with_lock_kdf(KdfParams::insecure_fast())
}

#[tokio::test(start_paused = true)]
async fn lock_hides_keys_and_wrong_passwords_are_slowed() {
    let ring = fast_ring();
    let e = entry(None);
    let blob = e.blob.clone();
    ring.add(e).unwrap();
    assert!(ring.lock(b"pw").await);
    assert!(
        !ring.lock(b"pw").await,
        "a locked agent cannot be locked again"
    );
    assert!(ring.find(&blob, T0).is_none());
    assert_eq!(&ring.identities_answer(T0)[..], &[12, 0, 0, 0, 0]);
    assert_eq!(ring.add(entry(None)), Err(KeyringError::Locked));
    let start = tokio::time::Instant::now();
    assert!(!ring.unlock(b"wrong", T0).await);
    assert!(!ring.unlock(b"wrong", T0).await);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(ring.unlock(b"pw", T0).await);
    assert!(ring.find(&blob, T0).is_some());
    assert!(
        !ring.unlock(b"pw", T0).await,
        "unlocking an unlocked agent fails"
    );
}

/// Every key type is sealed on lock (no signer left) and signs again after the unlock, with
/// its comment, constraints and usage as they were; one that expires meanwhile is gone.
#[tokio::test]
async fn locked_keys_are_sealed_and_come_back_as_they_were() {
    use ssh_key::{Algorithm, EcdsaCurve};
    let ring = fast_ring();
    let algorithms = [
        Algorithm::Rsa { hash: None },
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    ];
    let mut keys = Vec::new();
    for (i, algorithm) in algorithms.into_iter().enumerate() {
        let key = if matches!(algorithm, Algorithm::Rsa { .. }) {
            let kp = ssh_key::private::RsaKeypair::random(&mut rand_core::OsRng, 2048).unwrap();
            PrivateKey::new(kp.into(), "rsa").unwrap()
        } else {
            PrivateKey::random(&mut rand_core::OsRng, algorithm).unwrap()
        };
        let e = Entry::new(
            key.public_key().key_data(),
            format!("key{i}"),
            Signer::from_keypair(key.key_data()).unwrap(),
            Constraints {
                expires: None,
                confirm: i == 1,
            },
        )
        .unwrap()
        .with_policy(None, crate::policy::Policy::default(), 7);
        ring.add(e).unwrap();
        keys.push(key);
    }
    let short = entry(Some(150));
    let short_blob = short.blob.clone();
    ring.add(short).unwrap();
    let held: Vec<Arc<Entry>> = ring.read().entries.clone();
    assert!(ring.lock(b"pw").await);
    for e in &held {
        assert_eq!(format!("{:?}", e.signer), "SignerSlot(sealed)");
        assert_eq!(e.signer.get().unwrap_err(), crate::agent::slot::LOCKED);
    }
    // Lifetimes run on while locked.
    assert_eq!(
        ring.purge_expired(Duration::from_secs(140)),
        Some(Duration::from_secs(150))
    );
    assert!(!ring.unlock(b"wrong", Duration::from_secs(160)).await);
    assert_eq!(ring.len(), 4, "a wrong password changes nothing");
    assert!(ring.unlock(b"pw", Duration::from_secs(160)).await);
    assert_eq!(ring.len(), 3, "the key that expired while locked is gone");
    assert!(ring.find(&short_blob, Duration::from_secs(160)).is_none());
    for (i, key) in keys.iter().enumerate() {
        let blob = crate::keys::public_blob(key.public_key().key_data()).unwrap();
        let e = ring.find(&blob, T0).unwrap();
        assert!(Arc::ptr_eq(&e, &held[i]), "the same entry, usage and all");
        assert_eq!(e.comment, format!("key{i}"));
        assert_eq!(e.constraints.confirm, i == 1);
        let sig = e.signer.get().unwrap().sign(b"data", 2).unwrap();
        let sig = <ssh_key::Signature as ssh_encoding::Decode>::decode(&mut &sig[..]).unwrap();
        signature::Verifier::verify(key.public_key().key_data(), b"data", &sig).unwrap();
    }
}

#[test]
fn add_all_replaces_duplicates_and_lazy_signers_load_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ring = Keyring::new();
    let first = entry(None);
    let blob = first.blob.clone();
    ring.add(first).unwrap();
    let key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&loads);
    let data = key.key_data().clone();
    let lazy = Entry::new(
        key.public_key().key_data(),
        "lazy".into(),
        SignerSlot::lazy(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Signer::from_keypair(&data).map_err(|e| e.to_string())
        })),
        Constraints::default(),
    )
    .unwrap();
    let lazy_blob = lazy.blob.clone();
    let mut again = entry(None);
    again.blob.clone_from(&blob);
    ring.add_all(vec![lazy, again]).unwrap();
    assert_eq!(ring.len(), 2);
    assert_eq!(
        loads.load(Ordering::SeqCst),
        0,
        "listing loads no private key"
    );
    let found = ring.find(&lazy_blob, T0).unwrap();
    found.signer.get().unwrap().sign(b"x", 0).unwrap();
    found.signer.get().unwrap().sign(b"y", 0).unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // Locking drops the decrypted signer: the store decrypts it again after the unlock.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ring = ring.with_lock_kdf(KdfParams::insecure_fast());
    assert!(runtime.block_on(ring.lock(b"pw")));
    assert_eq!(format!("{:?}", found.signer), "SignerSlot(lazy)");
    assert!(runtime.block_on(ring.unlock(b"pw", T0)));
    found.signer.get().unwrap().sign(b"z", 0).unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[test]
fn re_adding_a_key_replaces_its_constraints() {
    let ring = Keyring::new();
    let e = entry(Some(200));
    let blob = e.blob.clone();
    ring.add(e).unwrap();
    let mut again = entry(None);
    again.blob.clone_from(&blob);
    ring.add(again).unwrap();
    assert_eq!(ring.len(), 1);
    assert!(ring.find(&blob, Duration::from_secs(500)).is_some());
}
