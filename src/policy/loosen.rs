//! [`loosened`]: which fields of a key's policy a change would loosen. Loosening a policy is a
//! privileged control operation (it needs the store passphrase); tightening needs nothing, so a
//! process that can reach the control socket can only ever make a key harder to use.
//!
//! A change counts as loosening when the new policy allows some request the old one refused, field
//! by field; anything not plainly at least as strict counts as loosening (a rate limit with a
//! higher count but a longer period, a different time window that is not inside the old one).

use crate::policy::{Policy, Purpose, RateLimit, TimeWindow};

/// The fields `new` loosens compared with `old`, in declaration order; empty if it only keeps or
/// tightens them.
pub fn loosened(old: &Policy, new: &Policy) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut flag = |loose: bool, field: &'static str| {
        if loose {
            out.push(field);
        }
    };
    flag(old.confirm && !new.confirm, "confirm");
    flag(
        raised(old.lifetime_secs, new.lifetime_secs),
        "lifetime_secs",
    );
    flag(
        raised(old.max_signatures, new.max_signatures),
        "max_signatures",
    );
    flag(rate_raised(old.rate, new.rate), "rate");
    flag(!old.allow_sha1 && new.allow_sha1, "allow_sha1");
    flag(
        widened(&old.destinations, &new.destinations, |o, n| o == n),
        "destinations",
    );
    flag(
        old.deny_forwarding && !new.deny_forwarding,
        "deny_forwarding",
    );
    flag(widened(&old.uids, &new.uids, |o, n| o == n), "uids");
    flag(
        widened(&old.executables, &new.executables, |o, n| o == n),
        "executables",
    );
    flag(widened(&old.purposes, &new.purposes, covers), "purposes");
    flag(
        hours_widened(old.hours.as_ref(), new.hours.as_ref()),
        "hours",
    );
    out
}

/// A limit (`None`: none) raised or removed.
fn raised(old: Option<u64>, new: Option<u64>) -> bool {
    match (old, new) {
        (Some(_), None) => true,
        (Some(o), Some(n)) => n > o,
        (None, _) => false,
    }
}

/// A rate limit removed, or one that may allow more in some window: tighter only with no more
/// signatures over no shorter a period.
fn rate_raised(old: Option<RateLimit>, new: Option<RateLimit>) -> bool {
    match (old, new) {
        (Some(_), None) => true,
        (Some(o), Some(n)) => n.count > o.count || n.per_secs < o.per_secs,
        (None, _) => false,
    }
}

/// An allow-list (empty: anything) widened: emptied, or given an entry the old one did not cover.
fn widened<T>(old: &[T], new: &[T], covers: impl Fn(&T, &T) -> bool) -> bool {
    if old.is_empty() {
        return false;
    }
    new.is_empty() || new.iter().any(|n| !old.iter().any(|o| covers(o, n)))
}

/// Whether the allowed purpose `old` allows everything `new` does.
fn covers(old: &Purpose, new: &Purpose) -> bool {
    match (old, new) {
        (Purpose::Sshsig(o), Purpose::Sshsig(n)) => o == "*" || o == n,
        (o, n) => o == n,
    }
}

/// The time window removed, or a minute of the week allowed now that was not before.
fn hours_widened(old: Option<&TimeWindow>, new: Option<&TimeWindow>) -> bool {
    match (old, new) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(o), Some(n)) if o == n => false,
        (Some(o), Some(n)) => {
            // 1970-01-05 was a Monday; one week of minutes covers every weekday and time of day in
            // both windows' zones (the offsets only shift where the week starts).
            const MONDAY: u64 = 4 * 86_400;
            (0..2 * 7 * 1440u64).any(|m| {
                let t = MONDAY + m * 60;
                super::decide::in_window(n, t) && !super::decide::in_window(o, t)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut policy = Policy::default();
        f(&mut policy);
        policy
    }

    fn window(from: u16, to: u16, days: &[u8]) -> TimeWindow {
        TimeWindow {
            days: days.to_vec(),
            from_minute: from,
            to_minute: to,
            utc_offset_minutes: 0,
        }
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table
    fn each_field_loosens_and_tightens_as_documented() {
        let git = Purpose::Sshsig("git".into());
        let any = Purpose::Sshsig("*".into());
        let rate = |count, per_secs| Some(RateLimit { count, per_secs });
        // (old, new, loosened fields)
        let cases: Vec<(Policy, Policy, Vec<&str>)> = vec![
            (Policy::default(), Policy::default(), vec![]),
            (p(|x| x.confirm = true), Policy::default(), vec!["confirm"]),
            (Policy::default(), p(|x| x.confirm = true), vec![]),
            (
                p(|x| x.lifetime_secs = Some(60)),
                p(|x| x.lifetime_secs = Some(61)),
                vec!["lifetime_secs"],
            ),
            (
                p(|x| x.lifetime_secs = Some(60)),
                Policy::default(),
                vec!["lifetime_secs"],
            ),
            (
                p(|x| x.lifetime_secs = Some(60)),
                p(|x| x.lifetime_secs = Some(30)),
                vec![],
            ),
            (
                p(|x| x.max_signatures = Some(5)),
                p(|x| x.max_signatures = Some(6)),
                vec!["max_signatures"],
            ),
            (
                p(|x| x.max_signatures = Some(5)),
                Policy::default(),
                vec!["max_signatures"],
            ),
            (Policy::default(), p(|x| x.max_signatures = Some(5)), vec![]),
            (p(|x| x.rate = rate(5, 60)), Policy::default(), vec!["rate"]),
            (
                p(|x| x.rate = rate(5, 60)),
                p(|x| x.rate = rate(6, 120)),
                vec!["rate"],
            ),
            (
                p(|x| x.rate = rate(5, 60)),
                p(|x| x.rate = rate(5, 30)),
                vec!["rate"],
            ),
            (
                p(|x| x.rate = rate(5, 60)),
                p(|x| x.rate = rate(4, 60)),
                vec![],
            ),
            (
                Policy::default(),
                p(|x| x.allow_sha1 = true),
                vec!["allow_sha1"],
            ),
            (p(|x| x.allow_sha1 = true), Policy::default(), vec![]),
            (
                p(|x| x.destinations = vec!["SHA256:a".into()]),
                Policy::default(),
                vec!["destinations"],
            ),
            (
                p(|x| x.destinations = vec!["SHA256:a".into()]),
                p(|x| x.destinations = vec!["SHA256:a".into(), "SHA256:b".into()]),
                vec!["destinations"],
            ),
            (
                p(|x| x.destinations = vec!["SHA256:a".into(), "SHA256:b".into()]),
                p(|x| x.destinations = vec!["SHA256:b".into()]),
                vec![],
            ),
            (
                Policy::default(),
                p(|x| x.destinations = vec!["SHA256:a".into()]),
                vec![],
            ),
            (
                p(|x| x.deny_forwarding = true),
                Policy::default(),
                vec!["deny_forwarding"],
            ),
            (Policy::default(), p(|x| x.deny_forwarding = true), vec![]),
            (p(|x| x.uids = vec![1000]), Policy::default(), vec!["uids"]),
            (
                p(|x| x.uids = vec![1000]),
                p(|x| x.uids = vec![1000, 0]),
                vec!["uids"],
            ),
            (
                p(|x| x.executables = vec!["/usr/bin/ssh".into()]),
                Policy::default(),
                vec!["executables"],
            ),
            (
                p(|x| x.executables = vec!["/usr/bin/ssh".into()]),
                p(|x| x.executables = vec!["/usr/bin/python3".into()]),
                vec!["executables"],
            ),
            (
                Policy::default(),
                p(|x| x.executables = vec!["/usr/bin/ssh".into()]),
                vec![],
            ),
            (
                p(|x| x.purposes = vec![git.clone()]),
                p(|x| x.purposes = vec![any.clone()]),
                vec!["purposes"],
            ),
            (
                p(|x| x.purposes = vec![any.clone()]),
                p(|x| x.purposes = vec![git.clone()]),
                vec![],
            ),
            (
                p(|x| x.purposes = vec![Purpose::Login]),
                p(|x| x.purposes = vec![Purpose::Login, Purpose::X509]),
                vec!["purposes"],
            ),
            (
                p(|x| x.purposes = vec![Purpose::Login]),
                Policy::default(),
                vec!["purposes"],
            ),
            (
                p(|x| x.hours = Some(window(540, 1020, &[0, 1, 2, 3, 4]))),
                Policy::default(),
                vec!["hours"],
            ),
            (
                p(|x| x.hours = Some(window(540, 1020, &[0, 1, 2, 3, 4]))),
                p(|x| x.hours = Some(window(600, 960, &[0, 2]))),
                vec![],
            ),
            (
                p(|x| x.hours = Some(window(540, 1020, &[0, 1, 2, 3, 4]))),
                p(|x| x.hours = Some(window(540, 1020, &[5]))),
                vec!["hours"],
            ),
            (
                p(|x| x.hours = Some(window(540, 1020, &[]))),
                p(|x| x.hours = Some(window(1320, 60, &[]))),
                vec!["hours"],
            ),
            (
                p(|x| {
                    x.confirm = true;
                    x.deny_forwarding = true;
                    x.executables = vec!["/usr/bin/ssh".into()];
                }),
                Policy::default(),
                vec!["confirm", "deny_forwarding", "executables"],
            ),
        ];
        for (old, new, want) in cases {
            assert_eq!(loosened(&old, &new), want, "{old:?} -> {new:?}");
        }
    }
}
