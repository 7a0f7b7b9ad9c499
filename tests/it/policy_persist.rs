//! Policies live in the store: they survive a daemon restart (shown the same, read offline, and
//! still enforced), and `--lifetime` makes a key unusable once that long has passed since it was
//! loaded (checked only as a lower bound: refused after at least 3 s of a 2 s lifetime).

use std::time::{Duration, Instant};

use crate::env::{Env, stop};
use crate::policy_hosts::{assert_refuses, assert_signs, exe_path, sign_ns, stored_key};
use crate::util::poll_until;

#[test]
fn policy_survives_restart() {
    let env = Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    let key = stored_key(&env, "kept", "ed25519");
    let keygen = exe_path("ssh-keygen");
    env.kw_ok(&[
        "policy",
        "set",
        "kept",
        "--purpose",
        "git",
        "--exe",
        &keygen,
        "--rate",
        "5/1m",
        "--hours",
        "mon-sun 00:00-24:00 +01:00",
        "--deny-forwarding",
    ]);
    let before = env.kw_json(&["policy", "show", "kept", "--json"]);
    assert_signs(&agent, &key, "git");
    assert_refuses(&agent, &key, "file");
    stop(&mut agent);

    // Offline, the CLI reads the same policy from the store.
    assert_eq!(env.kw_json(&["policy", "show", "kept", "--json"]), before);
    let text = env.kw_ok(&["policy", "show", "kept"]);
    assert!(
        text.contains("sshsig:git") && text.contains(&keygen),
        "{text}"
    );

    let agent = env.start_agent(&[]);
    assert_eq!(env.kw_json(&["policy", "show", "kept", "--json"]), before);
    assert_signs(&agent, &key, "git");
    assert_refuses(&agent, &key, "file");

    // Cleared, the key signs anything again, and that too survives a restart.
    env.kw_ok(&["policy", "clear", "kept"]);
    assert_signs(&agent, &key, "file");
    let mut agent = agent;
    stop(&mut agent);
    let agent = env.start_agent(&[]);
    let cleared = env.kw_json(&["policy", "show", "kept", "--json"]);
    assert_eq!(cleared["purposes"], serde_json::json!([]), "{cleared}");
    assert_signs(&agent, &key, "file");
}

#[test]
fn policy_lifetime_expires() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "brief", "ed25519");
    let set_at = Instant::now();
    env.kw_ok(&["policy", "set", "brief", "--lifetime", "2s"]);
    let shown = env.kw_json(&["policy", "show", "brief", "--json"]);
    assert_eq!(shown["lifetime_secs"], 2, "{shown}");
    assert_signs(&agent, &key, "file");

    let wait = Duration::from_secs(3).saturating_sub(set_at.elapsed());
    std::thread::sleep(wait);
    let refused = poll_until(Duration::from_secs(30), || {
        !sign_ns(&agent, &key, "file").out.status.success()
    });
    assert!(
        refused,
        "still signing long after a 2 s lifetime; log:\n{}",
        agent.log()
    );
    assert!(set_at.elapsed() >= Duration::from_secs(3));
    let record = crate::policy_hosts::last_sign(&env, "brief");
    let reason = record["detail"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("lifetime"), "{record}");
}
