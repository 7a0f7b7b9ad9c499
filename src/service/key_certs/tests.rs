//! Unit tests of stored keys' OpenSSH certificates.

use std::sync::Arc;

use ssh_key::PrivateKey;

use super::*;
use crate::agent::Keyring;
use crate::clock::{Clock as _, SystemClock};
use crate::control::proto::ErrorKind;
use crate::store::{KdfParams, SledStore};

fn service(dir: &std::path::Path, ring: Arc<Keyring>) -> Service {
    let store = SledStore::init(dir, None, KdfParams::insecure_fast()).unwrap();
    Service::new(Some(Arc::new(store)), Some(ring), Arc::new(SystemClock))
}

fn generate(svc: &Service, name: &str) -> ssh_key::PublicKey {
    let Response::Key(view) = svc.handle(Request::KeyGenerate {
        name: name.into(),
        kind: "ed25519".into(),
        bits: None,
        comment: "me@host".into(),
    }) else {
        panic!("generate failed")
    };
    ssh_key::PublicKey::from_openssh(&view.public).unwrap()
}

/// `ca`'s certificate for `key`, valid until `valid_before`, as a `-cert.pub` line.
fn certificate(key: &ssh_key::PublicKey, ca: &PrivateKey, valid_before: u64) -> String {
    let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
        &mut rand_core::OsRng,
        key.key_data().clone(),
        0,
        valid_before,
    )
    .unwrap();
    builder
        .valid_principal("me")
        .unwrap()
        .key_id("test")
        .unwrap();
    builder.sign(ca).unwrap().to_openssh().unwrap()
}

fn add(svc: &Service, key: &str, line: &str) -> Response {
    svc.handle(Request::KeyCertAdd {
        key: key.into(),
        certificate: line.into(),
    })
}

#[test]
fn certificates_share_the_keys_policy_and_leave_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::new());
    let svc = service(&dir.path().join("s"), Arc::clone(&ring));
    let key = generate(&svc, "k");
    let other = generate(&svc, "other");
    let ca = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let line = certificate(&key, &ca, 4_000_000_000);
    let Response::KeyCerts { certs } = add(&svc, "k", &line) else {
        panic!("not added")
    };
    assert_eq!(certs[0].served, Some(true));
    assert_eq!(certs[0].cert_type, "ssh-ed25519-cert-v01@openssh.com");
    assert_eq!(ring.len(), 3);
    let blob = Base64::decode_vec(line.split_whitespace().nth(1).unwrap()).unwrap();
    let now = SystemClock.boot_now();
    let cert = ring.find(&blob, now).expect("served");
    let plain = ring
        .find(&keys::public_blob(key.key_data()).unwrap(), now)
        .unwrap();
    assert_eq!(cert.key_blob, plain.key_blob);
    assert!(Arc::ptr_eq(
        &cert.policy.as_ref().unwrap().usage,
        &plain.policy.as_ref().unwrap().usage
    ));
    assert!(Arc::ptr_eq(&cert.signer, &plain.signer), "one signer");

    // Another key's certificate, an expired one: refused, nothing stored.
    let r = add(&svc, "other", &line);
    assert!(
        matches!(&r, Response::Error { kind: ErrorKind::Invalid, message } if message.contains("not the key other")),
        "{r:?}"
    );
    let r = add(&svc, "other", &certificate(&other, &ca, 1));
    assert!(
        matches!(&r, Response::Error { message, .. } if message.contains("expired")),
        "{r:?}"
    );
    let Response::KeyCerts { certs } = svc.handle(Request::KeyCertList { key: None }) else {
        panic!()
    };
    assert_eq!(certs.len(), 1);

    // Deleting the key takes its certificate along, from the ring and the store.
    svc.handle(Request::KeyDelete { key: "k".into() });
    assert!(ring.find(&blob, now).is_none());
    assert!(svc.store().unwrap().key_certs(None).unwrap().is_empty());
}

#[test]
fn a_certificate_leaves_the_ring_when_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::new());
    let clock = Arc::new(crate::clock::ManualClock::new(
        std::time::Duration::from_secs(1000),
        1_800_000_000,
    ));
    let store = SledStore::init(&dir.path().join("s"), None, KdfParams::insecure_fast()).unwrap();
    let svc = Service::new(
        Some(Arc::new(store)),
        Some(Arc::clone(&ring)),
        Arc::clone(&clock) as Arc<dyn crate::clock::Clock>,
    );
    let key = generate(&svc, "k");
    let ca = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let line = certificate(&key, &ca, 1_800_000_100);
    assert!(matches!(add(&svc, "k", &line), Response::KeyCerts { .. }));
    let blob = Base64::decode_vec(line.split_whitespace().nth(1).unwrap()).unwrap();
    assert!(ring.find(&blob, clock.boot_now()).is_some());
    clock.advance(std::time::Duration::from_secs(99));
    assert!(ring.find(&blob, clock.boot_now()).is_some());
    clock.advance(std::time::Duration::from_secs(1));
    assert!(ring.find(&blob, clock.boot_now()).is_none(), "expired");
    let Response::KeyCerts { certs } = svc.handle(Request::KeyCertList { key: None }) else {
        panic!()
    };
    assert_eq!(certs[0].state, "expired");
    assert_eq!(certs[0].served, Some(false));
    // Tracked, but no longer served after a reload either.
    svc.handle(Request::KeyLoad { key: "k".into() });
    assert!(ring.find(&blob, clock.boot_now()).is_none());
}

#[test]
fn certificate_lines_are_checked() {
    assert!(matches!(
        blob_of_line("ssh-ed25519 AAAA"),
        Err(KeyCertError::Malformed(_))
    ));
    assert!(matches!(
        blob_of_line("ssh-ed25519-cert-v01@openssh.com %%%"),
        Err(KeyCertError::Malformed(_))
    ));
    assert!(matches!(blob_of_line(""), Err(KeyCertError::Malformed(_))));
    assert_eq!(cert_type(b"\0\0\0\x03abcrest"), "abc");
    assert_eq!(cert_type(b"\0\0"), "?");
    assert_eq!(expires(u64::MAX), "forever");
}
