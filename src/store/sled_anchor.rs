//! The audit side of [`SledStore`]: its audit keys, and the anchors of the audit trail and of the
//! retained records (see `audit_key.rs`) checked against the journals, when the store opens or
//! unseals and when `audit verify` asks.

use super::audit_key::{AnchorCheck, AnchorInfo, AnchorRead, AuditKeys, read_anchor};
use super::error::{Result, StoreError};
use super::sled_store::{JOURNAL_DIR, SledStore};

impl SledStore {
    /// Checks the audit anchor against the journal: what it vouches for, and the first thing
    /// that disagrees.
    pub(crate) fn check_anchor(&self, keys: &AuditKeys, retained: bool) -> Result<AnchorCheck> {
        let jerr = |source| StoreError::Journal {
            path: self.path.join(JOURNAL_DIR),
            source,
        };
        let (journal, anchor_file) = if retained {
            (&self.retained, super::audit_key::RETAINED_ANCHOR_FILE)
        } else {
            (&self.journal, super::audit_key::ANCHOR_FILE)
        };
        let (head, first, last) = journal.bounds()?;
        let anchored = self.key_file()?.anchored || self.anchor_required();
        let mut check = AnchorCheck {
            anchor: None,
            problem: None,
        };
        let problem = |seq: u64, why: String| Some((seq, why));
        match read_anchor(&self.path.join(anchor_file), keys).map_err(jerr)? {
            AnchorRead::Missing => {
                if anchored && last.is_some() {
                    check.problem = problem(
                        last.unwrap_or(0),
                        format!(
                            "{anchor_file} is missing (deleted?): a cut or replaced trail cannot be ruled out"
                        ),
                    );
                }
            }
            AnchorRead::Invalid => {
                check.problem = problem(
                    last.unwrap_or(0),
                    format!(
                        "{anchor_file} does not authenticate under this store's audit keys: it was forged or damaged"
                    ),
                );
            }
            AnchorRead::Found(a) => {
                check.anchor = Some(AnchorInfo {
                    counter: a.counter,
                    head: a.head,
                    seq: a.seq,
                });
                // An anchor of the still empty journal of retained records knows no head yet:
                // its first record sets one.
                let knows_head = !(retained && a.seq == 0);
                check.problem = if knows_head && head > a.head {
                    problem(
                        head,
                        format!(
                            "HEAD says the trail starts at record {head} but the anchor says {}: HEAD was rewritten to drop records",
                            a.head
                        ),
                    )
                } else if let Some(f) = first.filter(|&f| f > head) {
                    problem(
                        f,
                        format!(
                            "records {head}..{} are missing: a segment of the trail was deleted",
                            f - 1
                        ),
                    )
                } else if a.seq > 0 && last.is_none_or(|l| l < a.seq) {
                    problem(
                        a.seq,
                        format!(
                            "the trail ends at record {} but the anchor vouches for record {}: its end was cut, its newest segment deleted, or an older copy restored",
                            last.unwrap_or(0),
                            a.seq
                        ),
                    )
                } else if a.seq > 0 {
                    match journal.envelope(a.seq)? {
                        None => problem(
                            a.seq,
                            format!("record {} that the anchor vouches for is missing", a.seq),
                        ),
                        Some(env) if super::journal::hash(&env) != a.record_hash => problem(
                            a.seq,
                            format!(
                                "record {} is not the one the anchor vouches for: the trail was rewritten or replaced by an older copy",
                                a.seq
                            ),
                        ),
                        Some(_) => None,
                    }
                } else {
                    None
                };
            }
        }
        Ok(check)
    }

    /// Starts anchoring the audit trail with `keys`, unless the anchor on disk disagrees with the
    /// trail: then the anchor is left as it is, as evidence, and `audit verify` reports it
    /// (records are still authenticated).
    pub(crate) fn start_anchoring(&self, keys: &AuditKeys) -> Result<()> {
        for (journal, retained) in [(&self.journal, false), (&self.retained, true)] {
            let check = self.check_anchor(keys, retained)?;
            if let Some((seq, why)) = &check.problem {
                tracing::error!(seq, problem = %why, "the audit trail does not match its anchor; not re-anchoring it");
                continue;
            }
            let counter = check.anchor.map_or(0, |a| a.counter);
            journal.set_anchor_key(Some((keys.epoch, keys.current.clone())), counter)?;
        }
        let mut key_file = self.key_file()?;
        if !key_file.anchored {
            key_file.anchored = true;
            key_file.write(&self.path)?;
        }
        Ok(())
    }
}
