//! [`PolicyStore`](super::PolicyStore) and [`AuditLog`](super::AuditLog) for [`SledStore`]:
//! per-key policy documents in `policies`, and the bounded audit log in the store's
//! [journal](super::journal).

use sled::Transactional;
use sled::transaction::abort;

use super::error::{Result, StoreError};
use super::records::{POLICY_V, decode, encode, what};
use super::sled_store::{SledStore, tx};
use super::types::{AuditEntry, AuditEvent, KeyId};
use super::{AnchorCheck, AuditLog, PolicyStore};

impl PolicyStore for SledStore {
    fn put_policy(&self, key: KeyId, policy: &serde_json::Value) -> Result<()> {
        let d = self.d();
        let bytes = encode(POLICY_V, policy);
        tx((&d.t.keys, &d.t.policies).transaction(|(k, p)| {
            if k.get(key.as_bytes())?.is_none() {
                return abort(StoreError::KeyIdNotFound(key));
            }
            p.insert(key.as_bytes(), bytes.as_slice())?;
            Ok(())
        }))?;
        d.flush()
    }

    fn get_policy(&self, key: KeyId) -> Result<Option<serde_json::Value>> {
        self.d()
            .t
            .policies
            .get(key.as_bytes())?
            .map(|v| decode(|| what("policies", key.as_bytes()), POLICY_V, &v))
            .transpose()
    }

    fn delete_policy(&self, key: KeyId) -> Result<bool> {
        let d = self.d();
        let existed = d.t.policies.remove(key.as_bytes())?.is_some();
        d.flush()?;
        Ok(existed)
    }

    fn put_usage(
        &self,
        key: KeyId,
        usage: Option<&serde_json::Value>,
        durable: bool,
    ) -> Result<()> {
        let d = self.d();
        match usage {
            Some(usage) => {
                d.t.usage.insert(key.as_bytes(), encode(POLICY_V, usage))?;
            }
            None => {
                d.t.usage.remove(key.as_bytes())?;
            }
        }
        if durable { d.flush() } else { Ok(()) }
    }

    fn get_usage(&self, key: KeyId) -> Result<Option<serde_json::Value>> {
        self.d()
            .t
            .usage
            .get(key.as_bytes())?
            .map(|v| decode(|| what("usage", key.as_bytes()), POLICY_V, &v))
            .transpose()
    }
}

impl AuditLog for SledStore {
    /// Sequence numbers are consecutive and never reused (see [`super::journal`]).
    fn append_audit(&self, event: &AuditEvent) -> Result<u64> {
        self.journal.append(event, true)
    }

    fn append_audit_lazy(&self, event: &AuditEvent) -> Result<u64> {
        self.journal.append(event, false)
    }

    fn read_audit(&self, since_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        // Retained records older than the trail's oldest come first: refusals and changes that
        // signatures pushed out of the trail.
        let (head, first, _) = self.journal.bounds()?;
        let oldest = first.unwrap_or(head).max(head);
        let mut out = Vec::new();
        if since_seq < oldest {
            out = self.retained.read(since_seq, limit)?;
            out.retain(|e| e.seq < oldest);
        }
        if out.len() < limit {
            out.extend(self.journal.read(since_seq, limit - out.len())?);
        }
        Ok(out)
    }

    fn append_audit_retained(&self, seq: u64, event: &AuditEvent) -> Result<()> {
        self.retained.append_at(event, false, Some(seq)).map(drop)
    }

    fn read_audit_journal(
        &self,
        retained: bool,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        if retained {
            self.retained.read(since_seq, limit)
        } else {
            self.journal.read(since_seq, limit)
        }
    }

    fn last_audit_retained(&self) -> Result<Option<AuditEntry>> {
        Ok(self.retained.last())
    }

    fn last_audit(&self) -> Result<Option<AuditEntry>> {
        Ok(self.journal.last())
    }

    fn prune_audit(&self, max_count: usize) -> Result<usize> {
        Ok(self.journal.prune(max_count)? + self.retained.prune(max_count)?)
    }

    fn audit_mac(&self, parts: &[&[u8]]) -> Option<(u64, [u8; 32])> {
        self.with_audit_keys(|keys| (keys.epoch, keys.current.mac(parts)))
    }

    fn audit_mac_check(&self, epoch: u64, parts: &[&[u8]], tag: &[u8]) -> Result<Option<bool>> {
        self.with_audit_keys(|keys| keys.get(epoch).map(|k| k.verify(parts, tag)))
            .ok_or_else(|| StoreError::Sealed {
                path: self.path.clone(),
            })
    }

    fn audit_anchor_check(&self, retained: bool) -> Result<AnchorCheck> {
        let keys = self.audit_keys().ok_or_else(|| StoreError::Sealed {
            path: self.path.clone(),
        })?;
        // Records waiting for the background sync are synced and anchored first.
        let journal = if retained {
            &self.retained
        } else {
            &self.journal
        };
        if journal.is_anchoring() {
            journal.anchor_now()?;
        }
        self.check_anchor(&keys, retained)
    }
}

#[cfg(test)]
impl SledStore {
    /// Overwrites audit record `seq` of the (closed) store in `dir`, as an attacker with write
    /// access could: a valid envelope, so only the hash chain can tell.
    pub(crate) fn replace_audit_for_test(dir: &std::path::Path, seq: u64, event: &AuditEvent) {
        let envelope = encode(super::records::AUDIT_V, event);
        super::journal::rewrite_for_test(&dir.join(super::sled_store::JOURNAL_DIR), |s, e| {
            Some(if s == seq { envelope.clone() } else { e })
        });
    }

    /// Deletes audit record `seq` of the (closed) store in `dir`.
    pub(crate) fn remove_audit_for_test(dir: &std::path::Path, seq: u64) {
        super::journal::rewrite_for_test(&dir.join(super::sled_store::JOURNAL_DIR), |s, e| {
            (s != seq).then_some(e)
        });
    }
}
