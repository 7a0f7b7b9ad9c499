//! Seeds for the `record` fuzz target from a real store: `fuzz/record-corpus` runs this ignored
//! test after the real agent and CLI wrote keys, a policy, a certificate and audit events into
//! `KEYWARD_FUZZ_STORE`; it copies every raw record into `KEYWARD_FUZZ_OUT` in the target's
//! input layout (see `fuzz/fuzz_targets/record.rs`).

use std::path::PathBuf;

use keyward::store::{RecordKind, check_record};

/// Mode byte: decode the rest as every record kind.
const ANY_KIND: u8 = 0x00;
/// Mode byte base: change the target's own record of kind `base + index` by the operations after.
const MUTATE: u8 = 0x80;

#[test]
#[ignore = "run by fuzz/record-corpus on a store it recorded"]
fn fuzz_corpus_store_records() {
    let var =
        |name| PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} unset")));
    let (store, out) = (var("KEYWARD_FUZZ_STORE"), var("KEYWARD_FUZZ_OUT"));
    let db = sled::open(&store).expect("open the recorded store (is its agent stopped?)");
    let trees = [
        ("keys", RecordKind::Key),
        ("certs", RecordKind::Cert),
        ("policies", RecordKind::Policy),
        ("meta", RecordKind::Vault),
    ];
    let mut written = 0;
    for (name, kind) in trees {
        let tree = db.open_tree(name).expect("open tree");
        for (i, entry) in tree.iter().enumerate() {
            let (key, value) = entry.expect("read record");
            if name == "meta" && &*key != b"vault" {
                continue;
            }
            check_record(kind, &value).expect("a recorded record decodes");
            let mut seed = vec![ANY_KIND];
            seed.extend_from_slice(&value);
            std::fs::write(out.join(format!("{name}-{i}")), seed).expect("write seed");
            written += 1;
        }
    }
    for (i, (_, value)) in keyward::store::raw_audit_records(&store)
        .expect("read the audit journal")
        .iter()
        .enumerate()
    {
        check_record(RecordKind::Audit, value).expect("a recorded audit record decodes");
        let mut seed = vec![ANY_KIND];
        seed.extend_from_slice(value);
        std::fs::write(out.join(format!("audit-{i}")), seed).expect("write seed");
        written += 1;
    }
    // One flip and one cut of each of the target's records, for the mutation mode to grow from.
    for (index, kind) in (0u8..).zip(RecordKind::ALL) {
        let seed = [MUTATE + index, 0, 0, 9, 1, 0, 40];
        std::fs::write(out.join(format!("mutate-{kind:?}")), seed).expect("write seed");
    }
    assert!(written >= 5, "only {written} records in the recorded store");
}
