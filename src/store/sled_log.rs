//! [`PolicyStore`](super::PolicyStore) and [`AuditLog`](super::AuditLog) for [`SledStore`]:
//! per-key policy documents in `policies`, and the bounded audit log in `audit` keyed by
//! big-endian sequence numbers (so key order is time order and reading a tail is a range scan).

use sled::Transactional;
use sled::transaction::abort;

use super::error::{CorruptError, Result, StoreError};
use super::records::{AUDIT_V, POLICY_V, decode, encode, what};
use super::sled_store::{SledStore, tx};
use super::types::{AuditEntry, AuditEvent, KeyId};
use super::{AuditLog, PolicyStore};

impl PolicyStore for SledStore {
    fn put_policy(&self, key: KeyId, policy: &serde_json::Value) -> Result<()> {
        let bytes = encode(POLICY_V, policy);
        tx((&self.t.keys, &self.t.policies).transaction(|(k, p)| {
            if k.get(key.as_bytes())?.is_none() {
                return abort(StoreError::KeyIdNotFound(key));
            }
            p.insert(key.as_bytes(), bytes.as_slice())?;
            Ok(())
        }))?;
        self.flush()
    }

    fn get_policy(&self, key: KeyId) -> Result<Option<serde_json::Value>> {
        self.t
            .policies
            .get(key.as_bytes())?
            .map(|v| decode(|| what("policies", key.as_bytes()), POLICY_V, &v))
            .transpose()
    }

    fn delete_policy(&self, key: KeyId) -> Result<bool> {
        let existed = self.t.policies.remove(key.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }
}

fn parse_seq(k: &[u8]) -> Result<u64> {
    k.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::corrupt(what("audit", k), CorruptError::Index))
}

impl AuditLog for SledStore {
    /// Sequence numbers come from sled's `generate_id()`: increasing across restarts, with a gap
    /// after a crash (it reserves ranges), never reused.
    fn append_audit(&self, event: &AuditEvent) -> Result<u64> {
        let seq = self.db.generate_id()?;
        self.t
            .audit
            .insert(seq.to_be_bytes(), encode(AUDIT_V, event))?;
        self.flush()?;
        Ok(seq)
    }

    fn append_audit_lazy(&self, event: &AuditEvent) -> Result<u64> {
        let seq = self.db.generate_id()?;
        self.t
            .audit
            .insert(seq.to_be_bytes(), encode(AUDIT_V, event))?;
        Ok(seq)
    }

    fn read_audit(&self, since_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.t
            .audit
            .range(since_seq.to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let seq = parse_seq(&k)?;
                let event = decode(|| what("audit", &k), AUDIT_V, &v)?;
                Ok(AuditEntry { seq, event })
            })
            .collect()
    }

    fn last_audit(&self) -> Result<Option<AuditEntry>> {
        self.t
            .audit
            .last()?
            .map(|(k, v)| {
                Ok(AuditEntry {
                    seq: parse_seq(&k)?,
                    event: decode(|| what("audit", &k), AUDIT_V, &v)?,
                })
            })
            .transpose()
    }

    fn prune_audit(&self, max_count: usize) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for kv in self.t.audit.iter().rev().skip(max_count) {
            let (k, _) = kv?;
            batch.remove(k);
            removed += 1;
        }
        if removed > 0 {
            self.t.audit.apply_batch(batch)?;
            self.flush()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
impl SledStore {
    /// Overwrites an audit record in place, as an attacker with write access could.
    pub(crate) fn replace_audit_for_test(&self, seq: u64, event: &crate::store::AuditEvent) {
        self.t
            .audit
            .insert(seq.to_be_bytes(), encode(AUDIT_V, event))
            .unwrap();
    }

    /// Deletes an audit record, as an attacker with write access could.
    pub(crate) fn remove_audit_for_test(&self, seq: u64) {
        self.t.audit.remove(seq.to_be_bytes()).unwrap();
    }
}
