//! Property tests of the record decoders: real records, read raw from a store that wrote a key, a
//! certificate, a policy, an audit event and its vault, must be rejected with an error after any
//! bit flips or truncation (never accepted, never a panic), and arbitrary bytes must never panic.
//!
//! `PROPTEST_CASES` sets the number of cases (256 by default; `scripts/soak` runs 10,000).

use std::sync::OnceLock;

use proptest::prelude::*;

use super::records::{RecordKind as Kind, check_record as decode_as};
use super::tests::{NOW, new_key, new_store};
use super::types::{AuditEvent, AuditOutcome, CertId, CertOrigin, CertRecord, CertStatus};
use super::{AuditLog, CertStore, KeyStore, PolicyStore};

/// Raw records written by a real store (with a passphrase), read back from its trees and
/// audit journal.
fn records() -> &'static [(Kind, Vec<u8>)] {
    static RECORDS: OnceLock<Vec<(Kind, Vec<u8>)>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let (_dir, store) = new_store();
        let key = store.put_key(new_key("prop", 9), NOW).unwrap();
        let cert = CertRecord {
            id: CertId::random(),
            key_id: Some(key),
            subject: "CN=proptest".to_owned(),
            der: vec![0x30, 0x82, 1, 2, 3],
            not_before: NOW,
            not_after: NOW + 86_400,
            origin: CertOrigin::Issued,
            status: CertStatus::Active,
            created_at: NOW,
        };
        store.put_cert(&cert).unwrap();
        store
            .put_policy(
                key,
                &serde_json::json!({"max_signatures": 3, "hosts": ["a"]}),
            )
            .unwrap();
        store
            .append_audit(&AuditEvent {
                at: NOW,
                key_id: Some(key),
                action: "sign".to_owned(),
                outcome: AuditOutcome::Allowed,
                detail: serde_json::json!({"uid": 1000}),
            })
            .unwrap();
        let first = |tree: &sled::Tree| tree.iter().next().unwrap().unwrap().1.to_vec();
        let vault = super::keyfile::KeyFile::read(store.path())
            .unwrap()
            .unwrap()
            .vault
            .encode();
        let mut audit = None;
        super::journal::rewrite_for_test(store.journal.dir(), |_, envelope| {
            audit.get_or_insert_with(|| envelope.clone());
            Some(envelope)
        });
        vec![
            (Kind::Key, first(&store.d().t.keys)),
            (Kind::Cert, first(&store.d().t.certs)),
            (Kind::Policy, first(&store.d().t.policies)),
            (Kind::Audit, audit.expect("an audit record")),
            (Kind::Vault, vault),
        ]
    })
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn real_records_decode() {
    for (kind, bytes) in records() {
        assert!(decode_as(*kind, bytes).is_ok(), "{kind:?} record decodes");
    }
}

proptest! {
    #![proptest_config(config())]

    /// One to eight distinct bits flipped anywhere (version, body or checksum): rejected.
    #[test]
    fn bit_flips_are_rejected(
        which in 0usize..5,
        bits in prop::collection::vec(any::<prop::sample::Index>(), 1..=8),
    ) {
        let (kind, original) = &records()[which];
        let mut bytes = original.clone();
        let total = bytes.len() * 8;
        let mut flipped = std::collections::BTreeSet::new();
        for bit in bits {
            flipped.insert(bit.index(total));
        }
        for bit in &flipped {
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        prop_assert!(
            decode_as(*kind, &bytes).is_err(),
            "{:?} record accepted with bits {:?} flipped", kind, flipped
        );
    }

    /// Every strict prefix, and the record with bytes appended: rejected.
    #[test]
    fn truncations_and_extensions_are_rejected(
        which in 0usize..5,
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let (kind, original) = &records()[which];
        let prefix = &original[..cut.index(original.len())];
        prop_assert!(decode_as(*kind, prefix).is_err(), "{:?} prefix of {} accepted", kind, prefix.len());
        let mut longer = original.clone();
        longer.extend(tail);
        prop_assert!(decode_as(*kind, &longer).is_err(), "{:?} record with a tail accepted", kind);
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        for kind in Kind::ALL {
            let _ = decode_as(kind, &bytes);
        }
    }
}
