//! One test per rule, and the combinations that matter.

use super::*;
use crate::policy::{RateLimit, TimeWindow};
use ssh_key::PrivateKey;

/// 2026-11-27 (a Friday) 12:00 UTC.
const NOW: u64 = 1_795_780_800;

const KEY: &[u8] = b"user key blob";

fn host() -> ssh_key::public::KeyData {
    PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .unwrap()
        .public_key()
        .key_data()
        .clone()
}

fn bind(host_key: &ssh_key::public::KeyData, sid: &[u8], forwarded: bool) -> Binding {
    Binding {
        host: crate::policy::dest::HostKey::plain(host_key),
        session_id: sid.to_vec(),
        forwarded,
    }
}

fn login(sid: &[u8]) -> SignedData {
    SignedData::Userauth {
        session_id: sid.to_vec(),
        user: "me".into(),
        host_key: None,
        key: KEY.to_vec(),
    }
}

fn ctx<'a>(data: &'a SignedData, bindings: &'a [Binding], usage: &'a Usage) -> Context<'a> {
    Context {
        now: NOW,
        uid: 1000,
        executable: Some("/usr/bin/ssh"),
        bindings,
        bind_failed: false,
        restrict: None,
        key: KEY,
        data,
        algorithm: "rsa-sha2-256",
        usage,
    }
}

fn refused(policy: &Policy, ctx: &Context<'_>) -> Refusal {
    match decide(policy, ctx) {
        Decision::Refuse(r) => r,
        Decision::Allow { .. } => panic!("allowed under {policy:?}"),
    }
}

#[test]
fn the_default_policy_allows_all_but_sha1() {
    let usage = Usage::loaded(NOW);
    let data = SignedData::Other;
    let c = ctx(&data, &[], &usage);
    assert_eq!(
        decide(&Policy::default(), &c),
        Decision::Allow { confirm: false }
    );
    let sha1 = Context {
        algorithm: "ssh-rsa",
        ..c
    };
    assert_eq!(refused(&Policy::default(), &sha1), Refusal::Sha1);
    let allow = Policy {
        allow_sha1: true,
        ..Policy::default()
    };
    assert!(matches!(decide(&allow, &sha1), Decision::Allow { .. }));
    let confirm = Policy {
        confirm: true,
        ..Policy::default()
    };
    assert_eq!(decide(&confirm, &c), Decision::Allow { confirm: true });
}

#[test]
fn lifetime_max_signatures_and_rate() {
    let data = SignedData::Other;
    let mut usage = Usage::loaded(NOW - 100);
    let lifetime = Policy {
        lifetime_secs: Some(100),
        ..Policy::default()
    };
    assert_eq!(
        refused(&lifetime, &ctx(&data, &[], &usage)),
        Refusal::Expired(100)
    );
    usage.loaded_at = NOW - 99;
    assert!(matches!(
        decide(&lifetime, &ctx(&data, &[], &usage)),
        Decision::Allow { .. }
    ));

    let max = Policy {
        max_signatures: Some(2),
        ..Policy::default()
    };
    let mut usage = Usage::loaded(NOW);
    usage.record(NOW, &max);
    assert!(matches!(
        decide(&max, &ctx(&data, &[], &usage)),
        Decision::Allow { .. }
    ));
    usage.record(NOW, &max);
    assert_eq!(
        refused(&max, &ctx(&data, &[], &usage)),
        Refusal::MaxSignatures(2)
    );

    let rate = Policy {
        rate: Some(RateLimit {
            count: 2,
            per_secs: 60,
        }),
        ..Policy::default()
    };
    let mut usage = Usage::loaded(NOW);
    usage.record(NOW - 61, &rate);
    usage.record(NOW - 30, &rate);
    assert!(
        matches!(
            decide(&rate, &ctx(&data, &[], &usage)),
            Decision::Allow { .. }
        ),
        "one is out of the window"
    );
    usage.record(NOW - 1, &rate);
    assert!(matches!(
        refused(&rate, &ctx(&data, &[], &usage)),
        Refusal::Rate { .. }
    ));
    assert_eq!(usage.recent.len(), 2, "old entries are dropped");
}

#[test]
fn time_windows_in_local_time() {
    let data = SignedData::Other;
    let usage = Usage::loaded(NOW);
    let c = ctx(&data, &[], &usage);
    let weekdays_8_to_20 = |offset| Policy {
        hours: Some(TimeWindow {
            days: vec![0, 1, 2, 3, 4],
            from_minute: 8 * 60,
            to_minute: 20 * 60,
            utc_offset_minutes: offset,
        }),
        ..Policy::default()
    };
    assert!(
        matches!(decide(&weekdays_8_to_20(0), &c), Decision::Allow { .. }),
        "Friday noon"
    );
    // Noon UTC is 21:00 in Tokyo: outside.
    assert_eq!(refused(&weekdays_8_to_20(9 * 60), &c), Refusal::Hours);
    let saturday = Context {
        now: NOW + 86_400,
        ..c
    };
    assert_eq!(refused(&weekdays_8_to_20(0), &saturday), Refusal::Hours);
    let night = Policy {
        hours: Some(TimeWindow {
            days: vec![],
            from_minute: 22 * 60,
            to_minute: 6 * 60,
            utc_offset_minutes: 0,
        }),
        ..Policy::default()
    };
    assert_eq!(refused(&night, &c), Refusal::Hours);
    assert!(
        matches!(
            decide(
                &night,
                &Context {
                    now: NOW + 11 * 3600,
                    ..c
                }
            ),
            Decision::Allow { .. }
        ),
        "23:00"
    );
}

#[test]
fn clients_and_purposes() {
    let usage = Usage::loaded(NOW);
    let git = SignedData::Sshsig {
        namespace: "git".into(),
    };
    let file = SignedData::Sshsig {
        namespace: "file".into(),
    };
    let log = login(b"sid");
    let only_git = Policy {
        purposes: vec![Purpose::Sshsig("git".into())],
        ..Policy::default()
    };
    assert!(matches!(
        decide(&only_git, &ctx(&git, &[], &usage)),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        refused(&only_git, &ctx(&file, &[], &usage)),
        Refusal::Purpose(_)
    ));
    assert!(matches!(
        refused(&only_git, &ctx(&log, &[], &usage)),
        Refusal::Purpose(_)
    ));
    let any_sig = Policy {
        purposes: vec![Purpose::Sshsig("*".into()), Purpose::Login],
        ..Policy::default()
    };
    for d in [&git, &file, &log] {
        assert!(matches!(
            decide(&any_sig, &ctx(d, &[], &usage)),
            Decision::Allow { .. }
        ));
    }
    let exe = Policy {
        executables: vec!["/usr/bin/git".into()],
        ..Policy::default()
    };
    assert_eq!(
        refused(&exe, &ctx(&git, &[], &usage)),
        Refusal::Executable("/usr/bin/ssh".into())
    );
    let unknown = Context {
        executable: None,
        ..ctx(&git, &[], &usage)
    };
    assert!(matches!(refused(&exe, &unknown), Refusal::Executable(_)));
    let uid = Policy {
        uids: vec![0],
        ..Policy::default()
    };
    assert_eq!(refused(&uid, &ctx(&git, &[], &usage)), Refusal::Uid(1000));
}

#[test]
fn destinations_follow_restrict_destination_semantics() {
    use crate::policy::dest::DestRefusal;
    let usage = Usage::loaded(NOW);
    let (a, b) = (host(), host());
    let fp = |k: &ssh_key::public::KeyData| k.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let only_a = Policy {
        destinations: vec![fp(&a)],
        ..Policy::default()
    };
    let data = login(b"s1");
    // Logging in to A, bound by ssh: allowed.
    assert!(matches!(
        decide(&only_a, &ctx(&data, &[bind(&a, b"s1", false)], &usage)),
        Decision::Allow { .. }
    ));
    // To B: refused.
    assert!(matches!(
        refused(&only_a, &ctx(&data, &[bind(&b, b"s1", false)], &usage)),
        Refusal::Destination(DestRefusal::Hop { to, .. }) if to == fp(&b)
    ));
    // Unbound, or not a login: refused.
    assert_eq!(
        refused(&only_a, &ctx(&data, &[], &usage)),
        Refusal::Destination(DestRefusal::Unbound)
    );
    let other = SignedData::Other;
    assert_eq!(
        refused(&only_a, &ctx(&other, &[bind(&a, b"s1", false)], &usage)),
        Refusal::Destination(DestRefusal::NotLogin)
    );
    // A login for another session than the bound one: refused.
    assert_eq!(
        refused(
            &only_a,
            &ctx(&login(b"s2"), &[bind(&a, b"s1", false)], &usage)
        ),
        Refusal::Destination(DestRefusal::SessionMismatch)
    );
    // Hostbound request naming another host key: refused.
    let hostbound = SignedData::Userauth {
        session_id: b"s1".to_vec(),
        user: "me".into(),
        host_key: Some(crate::keys::public_blob(&b).unwrap()),
        key: KEY.to_vec(),
    };
    assert_eq!(
        refused(&only_a, &ctx(&hostbound, &[bind(&a, b"s1", false)], &usage)),
        Refusal::Destination(DestRefusal::HostKeyMismatch)
    );
    // Through A (forwarded) to B: B must be allowed too (and the login host-bound).
    let hops = [bind(&a, b"s0", true), bind(&b, b"s1", false)];
    let to_b = SignedData::Userauth {
        session_id: b"s1".to_vec(),
        user: "me".into(),
        host_key: Some(crate::keys::public_blob(&b).unwrap()),
        key: KEY.to_vec(),
    };
    assert!(matches!(
        refused(&only_a, &ctx(&to_b, &hops, &usage)),
        Refusal::Destination(DestRefusal::Hop { .. })
    ));
    let a_and_b = Policy {
        destinations: vec![fp(&a), fp(&b)],
        ..Policy::default()
    };
    assert!(matches!(
        decide(&a_and_b, &ctx(&to_b, &hops, &usage)),
        Decision::Allow { .. }
    ));
    // ...unless forwarding is denied.
    let no_fwd = Policy {
        deny_forwarding: true,
        ..a_and_b.clone()
    };
    assert_eq!(
        refused(&no_fwd, &ctx(&to_b, &hops, &usage)),
        Refusal::Forwarded
    );
    assert!(matches!(
        decide(&no_fwd, &ctx(&data, &[bind(&a, b"s1", false)], &usage)),
        Decision::Allow { .. }
    ));
    // Listing follows the same walk.
    assert!(visible(&a_and_b, None, &hops[..1], false, NOW));
    assert!(!visible(&no_fwd, None, &hops[..1], false, NOW));
    assert!(!visible(
        &only_a,
        None,
        &[bind(&b, b"s1", true)],
        false,
        NOW
    ));
    assert!(visible(&Policy::default(), None, &hops, false, NOW));
}

/// `ssh-add -h` composes with the stored policy: both must permit.
#[test]
fn stored_destinations_and_ssh_add_h_both_apply() {
    use crate::policy::dest::{Constraint, DestRefusal, Destinations, HopSpec, KeyMatch};
    let usage = Usage::loaded(NOW);
    let (a, b) = (host(), host());
    let fp = |k: &ssh_key::public::KeyData| k.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let to = |k: &ssh_key::public::KeyData| Constraint {
        from: HopSpec::default(),
        to: HopSpec {
            user: None,
            hostname: Some("h".into()),
            keys: vec![KeyMatch::Plain(fp(k))],
        },
    };
    let h_a = Destinations {
        constraints: vec![to(&a)],
    };
    let stored_a_b = Policy {
        destinations: vec![fp(&a), fp(&b)],
        ..Policy::default()
    };
    let stored_b = Policy {
        destinations: vec![fp(&b)],
        ..Policy::default()
    };
    let data = login(b"s1");
    let on_a = [bind(&a, b"s1", false)];
    let on_b = [bind(&b, b"s1", false)];
    let with = |bindings, restrict| Context {
        restrict,
        ..ctx(&data, bindings, &usage)
    };
    assert!(matches!(
        decide(&stored_a_b, &with(&on_a, Some(&h_a))),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        refused(&stored_a_b, &with(&on_b, Some(&h_a))),
        Refusal::Restricted(DestRefusal::Hop { .. })
    ));
    assert!(matches!(
        refused(&stored_b, &with(&on_a, Some(&h_a))),
        Refusal::Destination(DestRefusal::Hop { .. })
    ));
    // The -h constraints alone (a plain ssh-add key's default policy).
    assert!(matches!(
        decide(&Policy::default(), &with(&on_a, Some(&h_a))),
        Decision::Allow { .. }
    ));
    assert!(visible(&stored_a_b, Some(&h_a), &on_a, false, NOW));
    assert!(!visible(&stored_a_b, Some(&h_a), &on_b, false, NOW));
    assert!(!visible(&stored_b, Some(&h_a), &on_a, false, NOW));
}

#[test]
fn validation() {
    assert!(Policy::default().validate().is_ok());
    for bad in [
        Policy {
            lifetime_secs: Some(0),
            ..Policy::default()
        },
        Policy {
            rate: Some(RateLimit {
                count: 0,
                per_secs: 1,
            }),
            ..Policy::default()
        },
        Policy {
            destinations: vec!["example.com".into()],
            ..Policy::default()
        },
        Policy {
            executables: vec!["git".into()],
            ..Policy::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let json = serde_json::json!({"confirm": true, "bogus": 1});
    assert!(
        Policy::from_json(json).is_err(),
        "unknown fields are refused"
    );
}
