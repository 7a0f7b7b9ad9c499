//! The audit trail: every signature decision, key change, lock, unlock and certificate renewal,
//! hash-chained so that an edited or removed record is detected by [`verify`].
//!
//! Each record carries `detail.chain = {prev, hash}`, where `hash` = SHA-256(`prev` ‖ the record's
//! JSON without `chain`). Retention pruning removes the oldest records, so verification starts at
//! the oldest record kept: records cut from the head are indistinguishable from pruned ones.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::{AuditEntry, AuditEvent, Store, StoreError};

/// The first record's `prev`.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Prune to this many records every [`PRUNE_EVERY`] appends, unless configured otherwise.
pub const DEFAULT_RETENTION: usize = 100_000;
/// How often to prune.
const PRUNE_EVERY: u64 = 1_000;

fn digest(prev: &str, event: &AuditEvent) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(serde_json::to_vec(event).unwrap_or_default());
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

fn split_chain(event: &AuditEvent) -> (AuditEvent, Option<(String, String)>) {
    let mut bare = event.clone();
    let chain = match &mut bare.detail {
        Value::Object(map) => map.remove("chain"),
        _ => None,
    };
    let link = chain.and_then(|c| {
        Some((
            c.get("prev")?.as_str()?.to_owned(),
            c.get("hash")?.as_str()?.to_owned(),
        ))
    });
    (bare, link)
}

struct State {
    last: String,
    appended: u64,
}

/// Appends chained records; one per store, shared by the agent and the service.
#[derive(Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
    state: Arc<Mutex<State>>,
    retention: usize,
}

impl Auditor {
    /// An auditor continuing the chain already in `store`.
    pub fn new(store: Arc<dyn Store>, retention: usize) -> Result<Self, StoreError> {
        let last = store
            .last_audit()?
            .and_then(|e| split_chain(&e.event).1)
            .map_or_else(|| GENESIS.to_owned(), |(_, hash)| hash);
        Ok(Self {
            store,
            state: Arc::new(Mutex::new(State { last, appended: 0 })),
            retention,
        })
    }

    /// Keeps at most `retention` records.
    #[must_use]
    pub fn with_retention(mut self, retention: usize) -> Self {
        self.retention = retention.max(1);
        self
    }

    /// Appends `event` (flushed before returning); returns its sequence number.
    pub fn record(&self, event: AuditEvent) -> Result<u64, StoreError> {
        self.append(event, true)
    }

    /// Appends `event`, durable within the store's background flush interval: for the record of
    /// each allowed signature, which would otherwise cost a disk flush per signature. Refusals and
    /// changes use [`record`](Self::record).
    pub fn record_lazy(&self, event: AuditEvent) {
        if let Err(e) = self.append(event, false) {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }

    fn append(&self, mut event: AuditEvent, flush: bool) -> Result<u64, StoreError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !event.detail.is_object() {
            event.detail = json!({ "value": event.detail });
        }
        // `chain` is ours: a caller's field of that name would be lost and break verification.
        if let Some(previous) = event.detail.as_object_mut().and_then(|m| m.remove("chain")) {
            event.detail["caller_chain"] = previous;
        }
        let hash = digest(&state.last, &event);
        event.detail["chain"] = json!({ "prev": state.last, "hash": hash });
        let seq = if flush {
            self.store.append_audit(&event)?
        } else {
            self.store.append_audit_lazy(&event)?
        };
        state.last = hash;
        state.appended += 1;
        if state.appended.is_multiple_of(PRUNE_EVERY) {
            self.store.prune_audit(self.retention)?;
        }
        Ok(seq)
    }

    /// Like [`record`](Self::record), logging instead of failing: auditing must not stop the
    /// operation it records... except that a refused write is itself logged loudly.
    pub fn record_or_log(&self, event: AuditEvent) {
        if let Err(e) = self.record(event) {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    /// Records checked.
    pub records: usize,
    /// The first broken record's sequence number and why, if any.
    pub broken: Option<(u64, String)>,
}

/// Checks the whole chain.
pub fn verify(store: &dyn Store) -> Result<Verification, StoreError> {
    let mut prev: Option<String> = None;
    let mut records = 0;
    let mut since = 0;
    loop {
        let batch: Vec<AuditEntry> = store.read_audit(since, 1_000)?;
        if batch.is_empty() {
            break;
        }
        for entry in &batch {
            records += 1;
            let (bare, link) = split_chain(&entry.event);
            let Some((claimed_prev, hash)) = link else {
                return Ok(broken(records, entry.seq, "no chain field"));
            };
            if let Some(expected) = &prev
                && *expected != claimed_prev
            {
                return Ok(broken(
                    records,
                    entry.seq,
                    "a record before it was removed or changed",
                ));
            }
            if digest(&claimed_prev, &bare) != hash {
                return Ok(broken(records, entry.seq, "the record was edited"));
            }
            prev = Some(hash);
        }
        since = batch.last().map_or(u64::MAX, |e| e.seq.saturating_add(1));
    }
    Ok(Verification {
        records,
        broken: None,
    })
}

fn broken(records: usize, seq: u64, why: &str) -> Verification {
    Verification {
        records,
        broken: Some((seq, why.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditOutcome, KdfParams, SledStore};

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            at: 1,
            key_id: None,
            action: action.into(),
            outcome: AuditOutcome::Allowed,
            detail: json!({"why": "test"}),
        }
    }

    #[test]
    fn a_chain_verifies_and_edits_or_removals_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SledStore::init(&dir.path().join("s"), None, KdfParams::insecure_fast()).unwrap(),
        );
        let auditor = Auditor::new(Arc::clone(&store), 100).unwrap();
        let seqs: Vec<u64> = ["a", "b", "c", "d"]
            .iter()
            .map(|a| auditor.record(event(a)).unwrap())
            .collect();
        assert_eq!(
            verify(store.as_ref()).unwrap(),
            Verification {
                records: 4,
                broken: None
            }
        );
        // A new auditor continues the same chain.
        let again = Auditor::new(Arc::clone(&store), 100).unwrap();
        again.record(event("e")).unwrap();
        assert!(verify(store.as_ref()).unwrap().broken.is_none());

        // Edit record "b" in place (as someone with write access to the store could).
        let entries = store.read_audit(0, 10).unwrap();
        let mut edited = entries[1].event.clone();
        edited.action = "nothing to see".into();
        store.prune_audit(10).unwrap();
        let db_dir = dir.path().join("s");
        drop(again);
        drop(auditor);
        drop(store);
        SledStore::replace_audit_for_test(&db_dir, seqs[1], &edited);
        let v = verify(&SledStore::open(&db_dir).unwrap()).unwrap();
        assert_eq!(v.broken.map(|b| b.0), Some(seqs[1]));
        SledStore::remove_audit_for_test(&db_dir, seqs[1]);
        let v = verify(&SledStore::open(&db_dir).unwrap()).unwrap();
        assert_eq!(
            v.broken.map(|b| (b.0, b.1.contains("removed"))),
            Some((seqs[2], true))
        );
    }
}
