//! Keeping a key's usage (signatures made, recent signature times) between loads, so
//! `max_signatures` and `rate` hold across `ssh-add -d` + `keyward key load` and agent restarts.
//!
//! The count is saved per key id, and only for keys whose policy limits it. For
//! `max_signatures`, signatures are *reserved* in small batches, durably, before the first one of
//! a batch is made: what is stored is never below what was made, so a crash can never give
//! signatures back; it can only count up to a batch less one as made that were not ([`batch`]:
//! 1 for limits up to 127, so those are exact, at most 63 for the largest). The recent times of
//! a `rate` limit are written with each signature but without waiting for the disk: a crash can
//! forget those of the last half second (the store's background flush interval).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What is stored of a key's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedUsage {
    /// Signatures made or reserved.
    pub signatures: u64,
    /// Times of recent signatures (unix seconds), oldest first.
    pub recent: Vec<u64>,
}

/// Where [`SavedUsage`] goes.
pub trait UsageStore: Send + Sync {
    /// Saves `usage`; with `durable`, on disk before returning. False if it could not be saved.
    fn save(&self, usage: &SavedUsage, durable: bool) -> bool;
}

/// A key's [`UsageStore`], carried by its [`Usage`](super::Usage).
#[derive(Clone)]
pub struct UsageSink(pub Arc<dyn UsageStore>);

impl fmt::Debug for UsageSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UsageSink")
    }
}

/// Where usage is saved does not make two usages different.
impl PartialEq for UsageSink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for UsageSink {}

/// How many signatures of a `max_signatures` limit are reserved at once: one in 64 of the limit,
/// at least 1 and at most 64, so the sign path writes to disk at most once per 64 signatures
/// while a crash costs a small key at most nothing and a large one under 2 %.
pub fn batch(max: u64) -> u64 {
    (max / 64).clamp(1, 64)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::policy::{Policy, RateLimit, Usage};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(SavedUsage, bool)>>);

    impl UsageStore for Recorder {
        fn save(&self, usage: &SavedUsage, durable: bool) -> bool {
            self.0.lock().unwrap().push((usage.clone(), durable));
            true
        }
    }

    #[test]
    fn limits_are_reserved_durably_before_they_are_used() {
        let recorder = Arc::new(Recorder::default());
        let mut usage =
            Usage::loaded(0).saving_to(UsageSink(recorder.clone()), &SavedUsage::default());
        let policy = Policy {
            max_signatures: Some(640),
            ..Policy::default()
        };
        assert_eq!(batch(640), 10);
        for t in 0..25 {
            usage.record(t, &policy);
        }
        let saved = recorder.0.lock().unwrap().clone();
        // Reserved at the 1st, 11th and 21st signature, each time for the next ten.
        let reserved: Vec<u64> = saved.iter().map(|(s, _)| s.signatures).collect();
        assert_eq!(reserved, [10, 20, 30]);
        assert!(saved.iter().all(|(_, durable)| *durable));
        // Reloaded after a crash: never fewer than were made.
        let reloaded = Usage::loaded(99).saving_to(UsageSink(recorder.clone()), &saved[2].0);
        assert!(reloaded.signatures >= 25);

        // A small limit is exact: one durable write per signature.
        let exact = Arc::new(Recorder::default());
        let mut usage =
            Usage::loaded(0).saving_to(UsageSink(exact.clone()), &SavedUsage::default());
        let small = Policy {
            max_signatures: Some(3),
            ..Policy::default()
        };
        usage.record(1, &small);
        usage.record(2, &small);
        let saved: Vec<u64> = exact
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.signatures)
            .collect();
        assert_eq!(saved, [1, 2]);
    }

    #[test]
    fn rate_times_are_saved_lazily_and_unlimited_keys_not_at_all() {
        let recorder = Arc::new(Recorder::default());
        let mut usage =
            Usage::loaded(0).saving_to(UsageSink(recorder.clone()), &SavedUsage::default());
        usage.record(1, &Policy::default());
        assert!(recorder.0.lock().unwrap().is_empty(), "no limit, no write");
        let rated = Policy {
            rate: Some(RateLimit {
                count: 5,
                per_secs: 60,
            }),
            ..Policy::default()
        };
        usage.record(2, &rated);
        let saved = recorder.0.lock().unwrap().clone();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].0.recent, [2]);
        assert!(!saved[0].1, "not waiting for the disk");
        let reloaded = Usage::loaded(3).saving_to(UsageSink(recorder.clone()), &saved[0].0);
        assert_eq!(reloaded.recent, [2]);
    }
}
