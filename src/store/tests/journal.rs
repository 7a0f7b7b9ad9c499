//! The audit journal (`<store>/audit/`): torn tails cut off on open, segments rolled and pruned
//! exactly, retention surviving a reopen, and the move of a schema-1 store's audit tree.

use std::fs;

use super::super::journal::{SEGMENT_RECORDS, frame};
use super::super::records::{AUDIT_V, encode};
use super::super::types::{AuditEvent, AuditOutcome};
use super::{new_store, store_dir};
use crate::store::{AuditLog, SledStore};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        at: i,
        key_id: None,
        action: "sign".to_owned(),
        outcome: AuditOutcome::Allowed,
        detail: serde_json::json!({"n": i}),
    }
}

fn seqs(store: &SledStore, since: u64) -> Vec<u64> {
    store
        .read_audit(since, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// A closed store with records 1 to 3 in its one journal segment, and that segment's path.
fn three_records() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, store) = new_store();
    for i in 0..3 {
        store.append_audit(&event(i)).unwrap();
    }
    drop(store);
    let segment = store_dir(&dir)
        .join("audit")
        .join(&segment_files(&store_dir(&dir))[0]);
    (dir, segment)
}

#[test]
fn a_torn_frame_at_the_end_is_cut_off_on_open() {
    let (dir, segment) = three_records();
    let whole = fs::read(&segment).unwrap();
    // Half of a fourth frame, as a power failure during the append would leave.
    let fourth = frame(4, &encode(AUDIT_V, &event(3)));
    let mut torn = whole.clone();
    torn.extend_from_slice(&fourth[..fourth.len() / 2]);
    fs::write(&segment, &torn).unwrap();

    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(
        fs::read(&segment).unwrap(),
        whole,
        "the torn frame is cut off"
    );
    assert_eq!(seqs(&store, 0), [1, 2, 3]);
    assert_eq!(store.last_audit().unwrap().unwrap().event, event(2));
    assert_eq!(store.append_audit(&event(9)).unwrap(), 4);
    assert_eq!(store.read_audit(4, 1).unwrap()[0].event, event(9));
}

#[test]
fn damage_inside_the_journal_is_a_corrupt_record_not_a_panic() {
    let (dir, segment) = three_records();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[20] ^= 0x40; // inside the first record's body
    fs::write(&segment, &bytes).unwrap();
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    let err = store.read_audit(0, 10).unwrap_err().to_string();
    assert!(err.contains("audit/1") && err.contains("corrupt"), "{err}");
    // What is after the damage is still readable.
    assert_eq!(seqs(&store, 2), [2, 3]);
}

#[test]
fn segments_roll_over_and_pruning_is_exact_and_survives_reopen() {
    let (dir, store) = new_store();
    let n = 2 * SEGMENT_RECORDS + 100;
    for i in 0..n {
        store.append_audit_lazy(&event(i)).unwrap();
    }
    assert_eq!(segment_files(&store_dir(&dir)).len(), 3);
    // Records 1 to n: keeping 150 keeps the end of the second segment and the third.
    assert_eq!(
        store.prune_audit(150).unwrap(),
        usize::try_from(n - 150).unwrap()
    );
    assert_eq!(segment_files(&store_dir(&dir)).len(), 2);
    assert_eq!(seqs(&store, 0).len(), 150);
    assert_eq!(store.prune_audit(150).unwrap(), 0);
    // Keeping 50: only the last segment holds kept records, the others are deleted.
    assert_eq!(store.prune_audit(50).unwrap(), 100);
    assert_eq!(segment_files(&store_dir(&dir)).len(), 1);
    let kept = seqs(&store, 0);
    assert_eq!(kept.len(), 50);
    assert_eq!(kept[0], n - 49);
    assert_eq!(store.read_audit(0, 1).unwrap()[0].event, event(n - 50));
    drop(store);

    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(
        seqs(&store, 0),
        kept,
        "the retention point is kept across a reopen"
    );
    assert_eq!(store.append_audit(&event(0)).unwrap(), n + 1);
}

#[test]
fn a_schema_1_audit_tree_moves_into_the_journal_once() {
    let (dir, store) = new_store();
    // A store written before the journal: its records are in the sled tree, with gaps.
    for (seq, i) in [(0u64, 10), (7, 11), (40, 12)] {
        store
            .d()
            .t
            .audit
            .insert(seq.to_be_bytes(), encode(AUDIT_V, &event(i)))
            .unwrap();
    }
    store.flush().unwrap();
    drop(store);

    let store = SledStore::open(&store_dir(&dir)).unwrap();
    let entries = store.read_audit(0, 10).unwrap();
    let events: Vec<_> = entries.iter().map(|e| (e.seq, e.event.clone())).collect();
    assert_eq!(events, [(1, event(10)), (2, event(11)), (3, event(12))]);
    assert!(store.d().t.audit.is_empty(), "the tree is emptied");
    assert_eq!(store.append_audit(&event(13)).unwrap(), 4);

    // A crash after the copy but before the tree was emptied leaves both: no second copy.
    store
        .d()
        .t
        .audit
        .insert(0u64.to_be_bytes(), encode(AUDIT_V, &event(10)))
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(seqs(&store, 0), [1, 2, 3, 4]);
    assert!(store.d().t.audit.is_empty());
}

#[test]
fn an_empty_last_segment_continues_the_chain_of_the_one_before() {
    let (dir, _) = three_records();
    // A crash right after the next segment file was created, before its first record.
    fs::write(
        store_dir(&dir).join("audit").join(format!("{:020}.log", 4)),
        b"",
    )
    .unwrap();
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(store.last_audit().unwrap().unwrap().seq, 3);
    assert_eq!(store.append_audit(&event(3)).unwrap(), 4);
    assert_eq!(seqs(&store, 0), [1, 2, 3, 4]);
}

#[test]
fn retained_records_outlive_pruning_of_the_trail_and_are_bounded_on_their_own() {
    let (dir, store) = new_store();
    // Every fifth record is a refusal kept apart as well.
    for i in 1..=50u64 {
        let seq = store.append_audit_lazy(&event(i)).unwrap();
        if i % 5 == 0 {
            store.append_audit_retained(seq, &event(i)).unwrap();
        }
    }
    store.prune_audit(12).unwrap();
    // The trail keeps 39..=50; the retained records older than that come first.
    let main: Vec<u64> = (39..=50).collect();
    let listed = [vec![5, 10, 15, 20, 25, 30, 35], main.clone()].concat();
    assert_eq!(seqs(&store, 0), listed);
    assert_eq!(seqs(&store, 21), [vec![25, 30, 35], main].concat());
    let retained = |s: &SledStore| -> Vec<u64> {
        s.read_audit_journal(true, 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(retained(&store), [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]);
    // Bounded too, by the same number, and the bound survives a reopen.
    for i in 51..=70u64 {
        let seq = store.append_audit(&event(i)).unwrap();
        store.append_audit_retained(seq, &event(i)).unwrap();
    }
    store.prune_audit(12).unwrap();
    let newest: Vec<u64> = (59..=70).collect();
    assert_eq!(retained(&store), newest);
    drop(store);
    let store = SledStore::open(&store_dir(&dir)).unwrap();
    assert_eq!(retained(&store), newest);
    assert_eq!(seqs(&store, 0), newest);
}
