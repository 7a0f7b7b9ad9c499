//! [`decide`]: the one place where a signature is allowed or refused, as a pure function of the
//! key's policy, what is asked and by whom, and the time.

use std::collections::VecDeque;

use crate::agent::bind::Binding;
use crate::policy::dest::{self, DestRefusal, Destinations};
use crate::policy::request::SignedData;
use crate::policy::tally::{self, SavedUsage, UsageSink};
use crate::policy::{Policy, Purpose};

/// How a key has been used since it was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// When the key was loaded (unix seconds): agent start, unseal or `keyward key load`.
    pub loaded_at: u64,
    /// Signatures made.
    pub signatures: u64,
    /// Times of recent signatures (for the rate limit), oldest first.
    pub recent: VecDeque<u64>,
    /// Signatures reserved in the store (never fewer than `signatures` once a limit is saved).
    pub reserved: u64,
    /// Where the usage of a stored key is saved, so its limits survive unloads and restarts.
    pub sink: Option<UsageSink>,
}

impl Usage {
    /// A key loaded at `now`.
    pub fn loaded(now: u64) -> Self {
        Self {
            loaded_at: now,
            ..Self::default()
        }
    }

    /// Continues the usage `saved` for a key loaded again, saving to `sink` from now on.
    #[must_use]
    pub fn saving_to(mut self, sink: UsageSink, saved: &SavedUsage) -> Self {
        self.signatures = saved.signatures;
        self.reserved = saved.signatures;
        self.recent = saved.recent.iter().copied().collect();
        self.sink = Some(sink);
        self
    }

    /// Saves what a limit of `policy` needs after a signature was counted (see [`tally`]).
    fn save(&mut self, policy: &Policy) {
        let Some(sink) = &self.sink else { return };
        let reserve = policy
            .max_signatures
            .is_some_and(|_| self.signatures > self.reserved);
        if !reserve && policy.rate.is_none() {
            return;
        }
        if let Some(max) = policy.max_signatures
            && reserve
        {
            self.reserved = self
                .signatures
                .saturating_add(tally::batch(max) - 1)
                .min(max)
                .max(self.signatures);
        }
        self.reserved = self.reserved.max(self.signatures);
        let saved = SavedUsage {
            signatures: self.reserved,
            recent: self.recent.iter().copied().collect(),
        };
        if !sink.0.save(&saved, reserve) {
            tracing::error!(
                "cannot save a key's usage: its limits hold only until the agent stops"
            );
        }
    }

    /// Counts a signature made at `now`, keeping only what the rate limit can need.
    pub fn record(&mut self, now: u64, policy: &Policy) {
        self.signatures += 1;
        if let Some(rate) = policy.rate {
            self.recent.push_back(now);
            while self
                .recent
                .front()
                .is_some_and(|&t| t + rate.per_secs <= now)
            {
                self.recent.pop_front();
            }
        }
        self.save(policy);
    }
}

impl Usage {
    /// Takes back a signature that was counted but not made after all.
    pub fn release(&mut self) {
        self.signatures = self.signatures.saturating_sub(1);
        self.recent.pop_back();
    }
}

/// Everything [`decide`] looks at besides the policy.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Now, unix seconds.
    pub now: u64,
    /// The requesting process's uid.
    pub uid: u32,
    /// Its executable, where the OS tells it.
    pub executable: Option<&'a str>,
    /// The connection's session bindings, oldest first.
    pub bindings: &'a [Binding],
    /// Whether a session-bind was refused on the connection.
    pub bind_failed: bool,
    /// The key's `ssh-add -h` constraints, if it was added with any.
    pub restrict: Option<&'a Destinations>,
    /// The blob of the key asked to sign.
    pub key: &'a [u8],
    /// What is to be signed.
    pub data: &'a SignedData,
    /// The signature algorithm asked for (`ssh-rsa` is SHA-1).
    pub algorithm: &'a str,
    /// The key's usage so far.
    pub usage: &'a Usage,
}

/// Why a signature was refused: the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `lifetime`.
    #[error("lifetime: the key expired {0} seconds after it was loaded")]
    Expired(u64),
    /// `max_signatures`.
    #[error("max_signatures: {0} signatures already made")]
    MaxSignatures(u64),
    /// `rate`.
    #[error("rate: {count} signatures in {per_secs} seconds already")]
    Rate {
        /// The limit.
        count: u32,
        /// Its period.
        per_secs: u64,
    },
    /// `allow_sha1`.
    #[error("allow_sha1: legacy ssh-rsa (SHA-1) signatures are off for this key")]
    Sha1,
    /// `hours`.
    #[error("hours: outside the allowed time window")]
    Hours,
    /// `uids`.
    #[error("uids: uid {0} is not allowed")]
    Uid(u32),
    /// `executables`.
    #[error("executables: {0} is not allowed")]
    Executable(String),
    /// `executables`: the connection is no longer held by the process that opened it, as it was.
    #[error("executables: {0}")]
    PeerChanged(String),
    /// `purposes`.
    #[error("purposes: {0} is not an allowed purpose")]
    Purpose(String),
    /// `deny_forwarding`.
    #[error("deny_forwarding: the request came through a forwarded agent")]
    Forwarded,
    /// `destinations` (the stored policy's hosts).
    #[error("destinations: {0}")]
    Destination(DestRefusal),
    /// `ssh-add -h` (the key's destination constraints).
    #[error("ssh-add -h: {0}")]
    Restricted(DestRefusal),
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sign (after asking the user when `confirm`).
    Allow {
        /// Ask through askpass first.
        confirm: bool,
    },
    /// Do not sign.
    Refuse(Refusal),
}

/// Decides one signature.
pub fn decide(policy: &Policy, ctx: &Context<'_>) -> Decision {
    match check(policy, ctx) {
        Ok(()) => Decision::Allow {
            confirm: policy.confirm,
        },
        Err(refusal) => Decision::Refuse(refusal),
    }
}

fn check(policy: &Policy, ctx: &Context<'_>) -> Result<(), Refusal> {
    if let Some(lifetime) = policy.lifetime_secs
        && ctx.now >= ctx.usage.loaded_at.saturating_add(lifetime)
    {
        return Err(Refusal::Expired(lifetime));
    }
    if let Some(max) = policy.max_signatures
        && ctx.usage.signatures >= max
    {
        return Err(Refusal::MaxSignatures(ctx.usage.signatures));
    }
    if let Some(rate) = policy.rate {
        let recent = ctx
            .usage
            .recent
            .iter()
            .filter(|&&t| t + rate.per_secs > ctx.now)
            .count();
        if recent >= rate.count as usize {
            return Err(Refusal::Rate {
                count: rate.count,
                per_secs: rate.per_secs,
            });
        }
    }
    if ctx.algorithm == "ssh-rsa" && !policy.allow_sha1 {
        return Err(Refusal::Sha1);
    }
    if let Some(window) = &policy.hours
        && !in_window(window, ctx.now)
    {
        return Err(Refusal::Hours);
    }
    if !policy.uids.is_empty() && !policy.uids.contains(&ctx.uid) {
        return Err(Refusal::Uid(ctx.uid));
    }
    if !policy.executables.is_empty() {
        let exe = ctx.executable.unwrap_or("(unknown)");
        if !policy.executables.iter().any(|e| e == exe) {
            return Err(Refusal::Executable(exe.to_owned()));
        }
    }
    if !policy.purposes.is_empty() {
        let allowed = policy.purposes.iter().any(|p| match (p, ctx.data) {
            (Purpose::Login, SignedData::Userauth { .. })
            | (Purpose::X509, SignedData::X509 { .. }) => true,
            (Purpose::Sshsig(want), SignedData::Sshsig { namespace }) => {
                want == "*" || want == namespace
            }
            _ => false,
        });
        if !allowed {
            return Err(Refusal::Purpose(describe(ctx.data)));
        }
    }
    if policy.deny_forwarding && ctx.bindings.iter().any(|b| b.forwarded) {
        return Err(Refusal::Forwarded);
    }
    if !policy.destinations.is_empty() {
        let stored = Destinations::from_fingerprints(&policy.destinations, !policy.deny_forwarding);
        check_destination(&stored, ctx).map_err(Refusal::Destination)?;
    }
    if let Some(restrict) = ctx.restrict {
        check_destination(restrict, ctx).map_err(Refusal::Restricted)?;
    }
    Ok(())
}

fn check_destination(dests: &Destinations, ctx: &Context<'_>) -> Result<(), DestRefusal> {
    dest::sign_permitted(
        dests,
        ctx.bindings,
        ctx.bind_failed,
        ctx.data,
        ctx.key,
        ctx.now,
    )
}

/// Whether a key is listed on a connection with these bindings: its stored policy's
/// destinations and forwarding rule and its `ssh-add -h` constraints must all permit it (as
/// OpenSSH's agent hides a key where its constraints do not permit it).
pub fn visible(
    policy: &Policy,
    restrict: Option<&Destinations>,
    bindings: &[Binding],
    bind_failed: bool,
    now: u64,
) -> bool {
    if policy.deny_forwarding && bindings.iter().any(|b| b.forwarded) {
        return false;
    }
    if !policy.destinations.is_empty() {
        let stored = Destinations::from_fingerprints(&policy.destinations, !policy.deny_forwarding);
        if dest::identity_permitted(&stored, bindings, bind_failed, None, now).is_err() {
            return false;
        }
    }
    restrict.is_none_or(|r| dest::identity_permitted(r, bindings, bind_failed, None, now).is_ok())
}

/// A short description of what is to be signed, for refusals and the audit log.
pub fn describe(data: &SignedData) -> String {
    match data {
        SignedData::Userauth { user, .. } => format!("login as {user}"),
        SignedData::Sshsig { namespace } => format!("sshsig namespace {namespace}"),
        SignedData::X509 { subject } => format!("x509 certificate {subject}"),
        SignedData::Other => "other data".to_owned(),
    }
}

pub(super) fn in_window(window: &crate::policy::TimeWindow, now: u64) -> bool {
    let local = i64::try_from(now).unwrap_or(i64::MAX) + i64::from(window.utc_offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    let weekday = u8::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
    let minute = u16::try_from(local.rem_euclid(86_400) / 60).unwrap_or(0);
    if !window.days.is_empty() && !window.days.contains(&weekday) {
        return false;
    }
    if window.from_minute <= window.to_minute {
        (window.from_minute..window.to_minute).contains(&minute)
    } else {
        minute >= window.from_minute || minute < window.to_minute
    }
}

#[cfg(test)]
mod tests;
