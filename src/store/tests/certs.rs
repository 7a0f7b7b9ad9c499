//! Certificates, the expiry index, policies and the audit log.

use std::time::Instant;

use super::*;
use crate::store::{
    AuditEvent, AuditLog, AuditOutcome, CertId, CertOrigin, CertRecord, CertState, CertStatus,
    CertStore, DueCert, KeyStore, StoreError,
};

const DAY: u64 = 86_400;

fn cert(not_after: u64, key_id: Option<crate::store::KeyId>) -> CertRecord {
    CertRecord {
        id: CertId::random(),
        key_id,
        subject: "CN=test".to_owned(),
        der: vec![0x30, 0x82, 1, 2, 3],
        not_before: not_after.saturating_sub(365 * DAY),
        not_after,
        origin: CertOrigin::Issued,
        status: CertStatus::Active,
        created_at: NOW,
    }
}

#[test]
fn expiry_index_returns_exactly_the_due_certs_in_order() {
    let (dir, store) = new_store();
    let key = store.put_key(new_key("k", 1), NOW).unwrap();
    let offsets = [40, 3, 29, 31, 0, 90, 29, 1];
    let certs: Vec<CertRecord> = offsets
        .iter()
        .map(|d| cert(NOW + d * DAY, Some(key)))
        .collect();
    for c in &certs {
        store.put_cert(c).unwrap();
    }
    let superseded = cert(NOW + 2 * DAY, None);
    store.put_cert(&superseded).unwrap();
    store
        .mark_superseded(superseded.id, Some(certs[0].id), NOW)
        .unwrap();
    let t = NOW + 30 * DAY;
    let mut want: Vec<DueCert> = certs
        .iter()
        .filter(|c| c.not_after < t)
        .map(|c| DueCert {
            not_after: c.not_after,
            id: c.id,
        })
        .collect();
    want.sort();
    assert_eq!(store.due_before(t).unwrap(), want);
    assert_eq!(store.next_due().unwrap(), Some(want[0]));
    assert_eq!(store.due_before(NOW).unwrap(), vec![]);
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(store.due_before(t).unwrap(), want);
    assert_eq!(store.list_certs().unwrap().len(), certs.len() + 1);
    let got = store.get_cert(superseded.id).unwrap();
    assert_eq!(
        got.status,
        CertStatus::Superseded {
            by: Some(certs[0].id),
            at: NOW
        }
    );
    assert_eq!(got.state(NOW, 30 * DAY), CertState::Superseded);
    assert_eq!(got.state(NOW + 3 * DAY, 30 * DAY), CertState::Expired);
    assert_eq!(
        store.get_cert(certs[5].id).unwrap().state(NOW, 30 * DAY),
        CertState::Valid
    );
    assert_eq!(
        store.get_cert(certs[3].id).unwrap().state(NOW, 32 * DAY),
        CertState::Expiring
    );
}

#[test]
fn replacing_and_deleting_certs_keeps_the_index_in_step() {
    let (_dir, store) = new_store();
    let mut c = cert(NOW + 10 * DAY, None);
    store.put_cert(&c).unwrap();
    c.not_after = NOW + 100 * DAY;
    store.put_cert(&c).unwrap();
    assert_eq!(store.d().t.expiry.len(), 1);
    assert_eq!(store.due_before(NOW + 50 * DAY).unwrap(), vec![]);
    store.delete_cert(c.id).unwrap();
    assert!(store.d().t.expiry.is_empty() && store.d().t.certs.is_empty());
    assert!(matches!(
        store.delete_cert(c.id),
        Err(StoreError::CertNotFound(_))
    ));
    assert!(matches!(
        store.mark_superseded(c.id, None, NOW),
        Err(StoreError::CertNotFound(_))
    ));
    let orphan = cert(NOW, Some(crate::store::KeyId::random()));
    assert!(matches!(
        store.put_cert(&orphan),
        Err(StoreError::KeyIdNotFound(_))
    ));
    let mut backwards = cert(NOW, None);
    backwards.not_before = NOW + 1;
    assert!(matches!(
        store.put_cert(&backwards),
        Err(StoreError::InvalidCert { .. })
    ));
    assert!(store.d().t.certs.is_empty() && store.d().t.expiry.is_empty());
}

#[test]
fn due_scan_over_10_000_certs_touches_only_due_entries() {
    let (_dir, store) = new_store();
    let mut due = Vec::new();
    let mut all = Vec::new();
    for i in 0..10_000u64 {
        // A few dozen certs expire within the day, the rest between 60 and ~400 days out.
        let not_after = if i % 270 == 0 {
            NOW + (i % 29) * 3600
        } else {
            NOW + 60 * DAY + i * 3000
        };
        let c = cert(not_after, None);
        if not_after < NOW + DAY {
            due.push(DueCert {
                not_after,
                id: c.id,
            });
        }
        all.push(c);
    }
    let start = Instant::now();
    for chunk in all.chunks(1000) {
        store.put_certs(chunk).unwrap();
    }
    let insert = start.elapsed();
    due.sort();
    let start = Instant::now();
    let mut it = store.due_iter(NOW + DAY);
    let got: Vec<DueCert> = it.by_ref().map(Result::unwrap).collect();
    let scan = start.elapsed();
    assert_eq!(got, due);
    assert_eq!(
        it.visited(),
        due.len(),
        "the scan read entries that are not due"
    );
    eprintln!(
        "10,000 certs in 10 put_certs: {insert:?}; due scan of {} entries: {scan:?}",
        due.len()
    );
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        at: NOW + i,
        key_id: None,
        action: "sign".to_owned(),
        outcome: if i.is_multiple_of(2) {
            AuditOutcome::Allowed
        } else {
            AuditOutcome::Refused
        },
        detail: serde_json::json!({"n": i}),
    }
}

#[test]
fn audit_appends_reads_and_prunes() {
    let (dir, store) = new_store();
    let seqs: Vec<u64> = (0..10)
        .map(|i| store.append_audit(&event(i)).unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let all = store.read_audit(0, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(all[3].event, event(3));
    assert_eq!(
        store
            .read_audit(seqs[7], 2)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        &seqs[7..9]
    );
    assert_eq!(store.prune_audit(3).unwrap(), 7);
    assert_eq!(
        store
            .read_audit(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        &seqs[7..]
    );
    assert_eq!(store.prune_audit(3).unwrap(), 0);
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    let next = store.append_audit(&event(99)).unwrap();
    assert!(
        next > seqs[9],
        "sequence numbers never go back after reopen"
    );
    assert_eq!(store.read_audit(0, 100).unwrap().len(), 4);
}
