//! The store's record decoders. The first input byte picks a mode:
//!
//! - below 0x80: the rest is decoded as every record kind (must not panic);
//! - from 0x80: a real record (key, certificate, policy, audit event or vault, by the byte modulo
//!   5; written by a real store at start-up) is changed by the rest of the input, read as 3-byte
//!   operations `[op, hi, lo]` (flip bit `hi‖lo`, cut to `hi‖lo` bytes, or append `lo`, each
//!   modulo the record's size). Any record that differs from the original must be rejected.
#![no_main]

use std::sync::OnceLock;

use keyward::store::{
    AuditEvent, AuditLog, AuditOutcome, CertId, CertOrigin, CertRecord, CertStatus, CertStore,
    KdfParams, KeyStore, NewKey, PolicyStore, PrivateKeyBytes, RecordKind, SledStore, check_record,
};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

/// One raw record of each kind, read from the trees of a store that wrote them.
fn records() -> &'static [(RecordKind, Vec<u8>)] {
    static RECORDS: OnceLock<Vec<(RecordKind, Vec<u8>)>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store");
        {
            let store = SledStore::init(&path, Some(b"fuzz"), KdfParams::insecure_fast())
                .expect("new store");
            let key = &keyward_fuzz::keys()[1];
            let private = key.to_bytes().expect("private key bytes");
            let new = NewKey {
                name: "fuzz".to_owned(),
                comment: "fuzz@test".to_owned(),
                public: key.public_key().clone(),
                private: PrivateKeyBytes::new(private),
            };
            let id = store.put_key(new, NOW).expect("put key");
            store
                .put_cert(&CertRecord {
                    id: CertId::random(),
                    key_id: Some(id),
                    subject: "CN=fuzz".to_owned(),
                    der: vec![0x30, 0x82, 1, 2, 3],
                    not_before: NOW,
                    not_after: NOW + 86_400,
                    origin: CertOrigin::Issued,
                    status: CertStatus::Active,
                    created_at: NOW,
                })
                .expect("put cert");
            store
                .put_policy(
                    id,
                    &serde_json::json!({"max_signatures": 3, "hosts": ["a"]}),
                )
                .expect("put policy");
            store
                .append_audit(&AuditEvent {
                    at: NOW,
                    key_id: Some(id),
                    action: "sign".to_owned(),
                    outcome: AuditOutcome::Allowed,
                    detail: serde_json::json!({"uid": 1000}),
                })
                .expect("append audit");
        }
        let (vault, db_dir) =
            keyward::store::raw_vault_record(&path).expect("read the store's key file");
        let db = sled::open(db_dir).expect("reopen the store's sled database");
        let first = |tree: &str| {
            let tree = db.open_tree(tree).expect("tree");
            tree.iter()
                .next()
                .expect("one record")
                .expect("read")
                .1
                .to_vec()
        };
        let records = vec![
            (RecordKind::Key, first("keys")),
            (RecordKind::Cert, first("certs")),
            (RecordKind::Policy, first("policies")),
            (
                RecordKind::Audit,
                keyward::store::raw_audit_records(&path)
                    .expect("read the audit journal")
                    .swap_remove(0)
                    .1,
            ),
            (RecordKind::Vault, vault),
        ];
        for (kind, bytes) in &records {
            check_record(*kind, bytes).expect("a real record decodes");
        }
        records
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 0x80 {
        for kind in RecordKind::ALL {
            let _ = check_record(kind, rest);
        }
        return;
    }
    let (kind, original) = &records()[usize::from(mode) % RecordKind::ALL.len()];
    let mut bytes = original.clone();
    for op in rest.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([op[1], op[2]]));
        match op[0] % 3 {
            0 if !bytes.is_empty() => {
                let bit = at % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            1 => bytes.truncate(at % (original.len() + 1)),
            2 => bytes.push(op[2]),
            _ => {}
        }
    }
    if bytes != *original {
        assert!(
            check_record(*kind, &bytes).is_err(),
            "{kind:?} record accepted after changes: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
});
