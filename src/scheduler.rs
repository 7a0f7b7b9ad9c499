//! The renewal scheduler: sleeps until the next certificate is due, renews it, and plans again.
//!
//! It plans with [`Service::plan_renewals`] (a range scan of the expiry index, not a pass over
//! every certificate), wakes early when certificates or policies change, retries a failed renewal
//! with exponential backoff and jitter, and never sleeps more than [`MAX_SLEEP`] at a time:
//! tokio's timers stop while the machine is suspended and certificates expire on the wall clock,
//! so after a suspend (or a clock change) the scheduler catches up within that bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::service::{Service, error_chain};
use crate::store::CertId;

/// The longest single sleep.
pub const MAX_SLEEP: Duration = Duration::from_secs(600);
/// The first retry delay after a failed renewal; doubles per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: u64 = 60;
/// The longest retry delay.
pub const MAX_BACKOFF: u64 = 3_600;

/// Retry state of certificates whose renewal failed.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: HashMap<CertId, (u32, u64)>,
}

impl Backoff {
    /// Records a failure at `now`; returns when to try again.
    pub fn failed(&mut self, id: CertId, now: u64) -> u64 {
        let entry = self.failures.entry(id).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << entry.0.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let jitter = rand_core::RngCore::next_u64(&mut rand_core::OsRng) % (delay / 4 + 1);
        entry.1 = now + delay + jitter;
        entry.1
    }

    /// Forgets a certificate that renewed.
    pub fn succeeded(&mut self, id: CertId) {
        self.failures.remove(&id);
    }

    /// When a failed certificate may be tried again (`None`: now).
    pub fn retry_at(&self, id: CertId) -> Option<u64> {
        self.failures.get(&id).map(|&(_, at)| at)
    }
}

/// One pass: renews what is due (and not backing off); returns when to look again.
pub fn tick(service: &Service, backoff: &mut Backoff, now: u64) -> u64 {
    let plan = match service.plan_renewals(now) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "cannot plan certificate renewals");
            return now + FIRST_BACKOFF;
        }
    };
    let mut next = plan.next.unwrap_or(u64::MAX);
    for id in plan.due {
        if let Some(at) = backoff.retry_at(id).filter(|&at| at > now) {
            next = next.min(at);
            continue;
        }
        match service.renew_cert(id, now, "scheduled") {
            Ok(_) => backoff.succeeded(id),
            Err(e) => {
                let retry = backoff.failed(id, now);
                tracing::warn!(cert = %id, error = %error_chain(&e), retry_at = retry, "certificate renewal failed");
                next = next.min(retry);
            }
        }
    }
    next
}

/// Runs the scheduler until the task is dropped.
pub async fn run(service: Arc<Service>, clock: Arc<dyn Clock>) {
    let mut backoff = Backoff::default();
    loop {
        let changed = service.renewals_changed.notified();
        let now = clock.unix_now();
        let (returned, next) = {
            let service = Arc::clone(&service);
            let mut state = std::mem::take(&mut backoff);
            match tokio::task::spawn_blocking(move || {
                let next = tick(&service, &mut state, now);
                (state, next)
            })
            .await
            {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(error = %e, "renewal pass failed");
                    (Backoff::default(), now + FIRST_BACKOFF)
                }
            }
        };
        backoff = returned;
        let wait = Duration::from_secs(next.saturating_sub(clock.unix_now())).min(MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // A new certificate or policy may fix what failed: try everything again.
            () = changed => backoff = Backoff::default(),
        }
    }
}
