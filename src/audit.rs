//! The audit trail: every signature decision, key change, lock, unlock and certificate renewal,
//! chained and keyed so that `keyward audit verify` ([`verify`]) finds an edited, removed,
//! re-chained or cut record.
//!
//! Each record carries `detail.chain`:
//! - keyed: `{prev, mac, k}`, where `mac` = HMAC-SHA256 under the store's audit key of epoch `k`
//!   (derived from the master key, see `store::audit_key`) over a label, `prev` and the record's
//!   JSON without `chain`; `prev` is the previous record's `mac` (or `hash`);
//! - unkeyed: `{prev, hash}`, `hash` = SHA-256(`prev` ‖ JSON): written while the store is sealed
//!   (a daemon started without its passphrase still audits what `ssh-add`ed keys sign), and by
//!   keyward before records were keyed. The next keyed record covers them: its MAC includes the
//!   hash of the last one, which depends on all of them.
//!
//! The store's anchor (newest record on disk, `HEAD`, a counter; authenticated, outside the trail
//! directory) catches what a chain alone cannot: a cut tail, a deleted newest segment, a rewritten
//! `HEAD`, an older copy of the trail put back. Retention pruning removes the oldest records, so
//! verification starts at the oldest record kept, which the anchor names.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::{AnchorInfo, AuditEntry, AuditEvent, Store, StoreError};

/// The first record's `prev`.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Prune to this many records every [`PRUNE_EVERY`] appends, unless configured otherwise (the
/// value is set in `config`, the one place).
pub const DEFAULT_RETENTION: usize = crate::config::DEFAULT_AUDIT_MAX_EVENTS;
/// How often to prune.
const PRUNE_EVERY: u64 = 1_000;
/// Domain label of a record's MAC.
const DS_RECORD: &[u8] = b"keyward/audit-record/v1\0";

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.len().is_multiple_of(2))
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
                .collect()
        })
        .flatten()
}

fn digest(prev: &str, json: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(json);
    hex(&hasher.finalize())
}

/// A record's link in the chain.
enum Link {
    Keyed { prev: String, mac: String, k: u64 },
    Unkeyed { prev: String, hash: String },
}

impl Link {
    fn prev(&self) -> &str {
        match self {
            Link::Keyed { prev, .. } | Link::Unkeyed { prev, .. } => prev,
        }
    }

    /// What the next record's `prev` must be.
    fn value(&self) -> &str {
        match self {
            Link::Keyed { mac, .. } => mac,
            Link::Unkeyed { hash, .. } => hash,
        }
    }
}

fn split_chain(event: &AuditEvent) -> (AuditEvent, Option<Link>) {
    let mut bare = event.clone();
    let chain = match &mut bare.detail {
        Value::Object(map) => map.remove("chain"),
        _ => None,
    };
    let link = chain.and_then(|c| {
        let prev = c.get("prev")?.as_str()?.to_owned();
        Some(match (c.get("mac"), c.get("hash")) {
            (Some(mac), _) => Link::Keyed {
                prev,
                mac: mac.as_str()?.to_owned(),
                k: c.get("k")?.as_u64()?,
            },
            (None, Some(hash)) => Link::Unkeyed {
                prev,
                hash: hash.as_str()?.to_owned(),
            },
            (None, None) => return None,
        })
    });
    (bare, link)
}

struct State {
    last: String,
    /// The chain of the retained records (refusals and changes), kept apart.
    retained_last: String,
    appended: u64,
}

fn last_link(entry: Option<AuditEntry>) -> String {
    entry
        .and_then(|e| split_chain(&e.event).1)
        .map_or_else(|| GENESIS.to_owned(), |link| link.value().to_owned())
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
        let last = last_link(store.last_audit()?);
        let retained_last = last_link(store.last_audit_retained()?);
        Ok(Self {
            store,
            state: Arc::new(Mutex::new(State {
                last,
                retained_last,
                appended: 0,
            })),
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
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let bare = flush.then(|| event.clone());
        let (chain, value) = self.link(&state.last, &body);
        event.detail["chain"] = chain;
        let seq = if flush {
            self.store.append_audit(&event)?
        } else {
            self.store.append_audit_lazy(&event)?
        };
        state.last = value;
        // Everything but allowed signatures (the flushed records) is also kept apart, on its own
        // chain, so that a flood of signatures cannot push it out of retention.
        if let Some(mut copy) = bare {
            let (chain, value) = self.link(&state.retained_last, &body);
            copy.detail["chain"] = chain;
            self.store.append_audit_retained(seq, &copy)?;
            state.retained_last = value;
        }
        state.appended += 1;
        if state.appended.is_multiple_of(PRUNE_EVERY) {
            self.store.prune_audit(self.retention)?;
        }
        Ok(seq)
    }

    /// The chain link of a record whose JSON is `body` after `prev`: keyed when the store has
    /// its audit key, else hashed (sealed: keyed by the first keyed record after the unseal).
    fn link(&self, prev: &str, body: &[u8]) -> (Value, String) {
        if let Some((k, mac)) = self.store.audit_mac(&[DS_RECORD, prev.as_bytes(), body]) {
            let mac = hex(&mac);
            (json!({ "prev": prev, "mac": mac, "k": k }), mac)
        } else {
            let hash = digest(prev, body);
            (json!({ "prev": prev, "hash": hash }), hash)
        }
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
    /// Records authenticated by their own MAC.
    #[serde(default)]
    pub keyed: usize,
    /// The store's anchor, if it has one.
    #[serde(default)]
    pub anchor: Option<AnchorInfo>,
    /// What a person should know about an intact trail: records that predate keying, records
    /// not keyed yet, a store without a passphrase.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Checks the whole trail: every record's link and MAC (or hash), consecutive sequence numbers,
/// and the anchor; then the retained records (refusals and changes kept apart) and their
/// anchor. Needs the audit key: [`StoreError::Sealed`] while the store is sealed.
pub fn verify(store: &dyn Store) -> Result<Verification, StoreError> {
    let check = store.audit_anchor_check(false)?;
    let trail = walk(store, false)?;
    let mut v = Verification {
        records: trail.records,
        broken: trail.broken.clone().or(check.problem),
        keyed: trail.keyed,
        anchor: check.anchor,
        notes: Vec::new(),
    };
    let retained_check = store.audit_anchor_check(true)?;
    let retained = walk(store, true)?;
    if v.broken.is_none() {
        v.broken = retained
            .broken
            .clone()
            .or(retained_check.problem)
            .map(|(seq, why)| (seq, format!("retained refusals and changes: {why}")));
    }
    if v.broken.is_none() {
        notes(&mut v, store, &trail)?;
        if retained.records > 0 {
            v.notes.push(format!(
                "{} refusals and changes are also kept apart from allowed signatures (intact)",
                retained.records
            ));
        }
    }
    Ok(v)
}

/// What walking one journal found.
#[derive(Clone, Default)]
struct Walk {
    records: usize,
    keyed: usize,
    broken: Option<(u64, String)>,
    /// Unkeyed records before the first keyed one (they predate keying).
    legacy: Option<(u64, u64)>,
    /// Unkeyed records since the last keyed one.
    pending: Vec<u64>,
}

/// Checks the links of one journal (the trail: consecutive sequence numbers too).
fn walk(store: &dyn Store, retained: bool) -> Result<Walk, StoreError> {
    let mut w = Walk::default();
    let mut prev: Option<(u64, String)> = None;
    let mut since = 0;
    loop {
        let batch: Vec<AuditEntry> = store.read_audit_journal(retained, since, 1_000)?;
        if batch.is_empty() {
            break;
        }
        for entry in &batch {
            w.records += 1;
            if let Err(why) = step(store, &mut w, &mut prev, entry, !retained)? {
                w.broken = Some((entry.seq, why));
                return Ok(w);
            }
        }
        since = batch.last().map_or(u64::MAX, |e| e.seq.saturating_add(1));
    }
    Ok(w)
}

/// Checks one record after `prev`; `Err` says what is wrong with it.
fn step(
    store: &dyn Store,
    w: &mut Walk,
    prev: &mut Option<(u64, String)>,
    entry: &AuditEntry,
    consecutive: bool,
) -> Result<Result<(), String>, StoreError> {
    let seq = entry.seq;
    let (bare, link) = split_chain(&entry.event);
    let Some(link) = link else {
        return Ok(Err("no chain field".into()));
    };
    if let Some((p, value)) = prev.as_ref() {
        if consecutive && seq != p + 1 {
            return Ok(Err(format!("records {}..{} are missing", p + 1, seq - 1)));
        }
        if value != link.prev() {
            return Ok(Err("a record before it was removed or changed".into()));
        }
    }
    let body = serde_json::to_vec(&bare).unwrap_or_default();
    match &link {
        Link::Keyed { prev: p, mac, k } => {
            let tag = unhex(mac).unwrap_or_default();
            match store.audit_mac_check(*k, &[DS_RECORD, p.as_bytes(), &body], &tag)? {
                Some(true) => {}
                Some(false) => {
                    return Ok(Err("the record was edited (its MAC does not match)".into()));
                }
                None => {
                    return Ok(Err(format!(
                        "keyed with audit key {k}, which this store never had"
                    )));
                }
            }
            w.keyed += 1;
            w.pending.clear();
        }
        Link::Unkeyed { prev: p, hash } => {
            if digest(p, &body) != *hash {
                return Ok(Err("the record was edited".into()));
            }
            if w.keyed == 0 {
                w.legacy = Some((w.legacy.map_or(seq, |l| l.0), seq));
            } else {
                w.pending.push(seq);
            }
        }
    }
    *prev = Some((seq, link.value().to_owned()));
    Ok(Ok(()))
}

fn notes(v: &mut Verification, store: &dyn Store, trail: &Walk) -> Result<(), StoreError> {
    let (legacy, pending) = (trail.legacy, &trail.pending);
    let anchored = v.anchor.map_or(0, |a| a.seq);
    if let Some((a, b)) = legacy {
        let covered = if v.keyed > 0 {
            "covered by the keyed records after them"
        } else if anchored >= b {
            "covered by the anchor"
        } else {
            "NOT covered by a key yet"
        };
        v.notes.push(format!(
            "records {a}..{b} predate keying (plain SHA-256 chain), {covered}"
        ));
    }
    let loose: Vec<u64> = pending.iter().copied().filter(|&s| s > anchored).collect();
    if let (Some(first), Some(last)) = (loose.first(), loose.last()) {
        v.notes.push(format!(
            "records {first}..{last} were written while the store was sealed and are not keyed yet: they are covered from the next keyed record on"
        ));
    }
    if v.anchor.is_none() {
        v.notes
            .push("the trail has no anchor yet: its end is not protected".into());
    }
    if !store.status()?.passphrase_set {
        v.notes.push(
            "the store has no passphrase: anyone who can read its files can compute the audit key and rewrite the trail; file permissions are the only guard"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditOutcome, KdfParams, SledStore, Vault as _};

    const PASS: &[u8] = b"pass";

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            at: 1,
            key_id: None,
            action: action.into(),
            outcome: AuditOutcome::Allowed,
            detail: json!({"why": "test"}),
        }
    }

    fn record(store: &Arc<dyn Store>, actions: &[&str]) -> Vec<u64> {
        let auditor = Auditor::new(Arc::clone(store), 100).unwrap();
        actions
            .iter()
            .map(|a| auditor.record(event(a)).unwrap())
            .collect()
    }

    fn open(dir: &std::path::Path) -> Arc<dyn Store> {
        let store = SledStore::open(dir).unwrap();
        if store.is_sealed() {
            store.unseal(PASS).unwrap();
        }
        Arc::new(store)
    }

    fn broken(dir: &std::path::Path) -> Option<(u64, String)> {
        verify(open(dir).as_ref()).unwrap().broken
    }

    #[test]
    fn a_keyed_chain_verifies_and_edits_or_removals_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store: Arc<dyn Store> =
            Arc::new(SledStore::init(&path, None, KdfParams::insecure_fast()).unwrap());
        let seqs = record(&store, &["a", "b", "c", "d"]);
        let v = verify(store.as_ref()).unwrap();
        assert_eq!((v.records, v.keyed, v.broken.clone()), (4, 4, None));
        assert!(v.notes.iter().any(|n| n.contains("no passphrase")), "{v:?}");
        // A new auditor continues the same chain.
        record(&store, &["e"]);
        assert!(verify(store.as_ref()).unwrap().broken.is_none());

        let entries = store.read_audit(0, 10).unwrap();
        let mut edited = entries[1].event.clone();
        edited.action = "nothing to see".into();
        drop(store);
        SledStore::replace_audit_for_test(&path, seqs[1], &edited);
        assert_eq!(broken(&path).map(|b| b.0), Some(seqs[1]));
        SledStore::remove_audit_for_test(&path, seqs[1]);
        let b = broken(&path).unwrap();
        assert_eq!(b.0, seqs[2]);
        assert!(b.1.contains("missing"), "{b:?}");
    }

    #[test]
    fn records_written_while_sealed_are_covered_by_the_first_keyed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = SledStore::init(&path, Some(PASS), KdfParams::insecure_fast()).unwrap();
        drop(store);
        let sealed: Arc<dyn Store> = Arc::new(SledStore::open(&path).unwrap());
        assert!(sealed.is_sealed());
        record(&sealed, &["a", "b"]);
        assert!(matches!(
            verify(sealed.as_ref()),
            Err(StoreError::Sealed { .. })
        ));
        sealed.unseal(PASS).unwrap();
        let v = verify(sealed.as_ref()).unwrap();
        assert_eq!(
            (v.records, v.keyed, v.broken.clone()),
            (2, 0, None),
            "{v:?}"
        );
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("records 1..2 predate keying") && n.contains("anchor")),
            "{v:?}"
        );
        record(&sealed, &["c"]);
        let v = verify(sealed.as_ref()).unwrap();
        assert_eq!(
            (v.records, v.keyed, v.broken.clone()),
            (3, 1, None),
            "{v:?}"
        );
        drop(sealed);
        // An unkeyed record rewritten (and re-chained) before the keyed one breaks its link.
        let entries = open(&path).read_audit(0, 10).unwrap();
        let mut forged = entries[0].event.clone();
        forged.action = "forged".into();
        let (bare, _) = split_chain(&forged);
        let body = serde_json::to_vec(&bare).unwrap();
        forged.detail["chain"] = json!({"prev": GENESIS, "hash": digest(GENESIS, &body)});
        SledStore::replace_audit_for_test(&path, entries[0].seq, &forged);
        assert_eq!(broken(&path).map(|b| b.0), Some(entries[1].seq));
    }

    #[test]
    fn the_anchor_catches_a_cut_tail_and_an_older_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store: Arc<dyn Store> =
            Arc::new(SledStore::init(&path, None, KdfParams::insecure_fast()).unwrap());
        record(&store, &["a", "b", "c"]);
        drop(store);
        let older = dir.path().join("older-audit");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(path.join("audit"))
            .arg(&older)
            .status()
            .unwrap();
        assert!(status.success());
        let seqs = record(&open(&path), &["d", "e"]);
        // The newest record cut off (and its chain is still whole).
        SledStore::remove_audit_for_test(&path, seqs[1]);
        let b = broken(&path).unwrap();
        assert!(b.1.contains("anchor"), "{b:?}");
        // The older copy of the trail put back: a valid chain, but not what the anchor says.
        std::fs::remove_dir_all(path.join("audit")).unwrap();
        std::fs::rename(&older, path.join("audit")).unwrap();
        let b = broken(&path).unwrap();
        assert!(b.1.contains("anchor vouches for record 5"), "{b:?}");
    }
}
