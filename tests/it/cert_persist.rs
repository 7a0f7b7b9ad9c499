//! Persistence of certificates and renewal policies: they survive a daemon restart (and are read
//! by the CLI offline in between), and a renewal that fell due while no daemon ran is made when
//! the daemon starts (catch-up), once.

use std::fs;
use std::time::Instant;

use serde_json::Value;

use crate::cert_renew::{HOOK, assert_exported, assert_hook, hook_runs, successor};
use crate::env::{Env, RENEW_GUARD, stop, text};
use crate::util::poll_until;

/// What must not change across a restart, per certificate, sorted by id.
fn durable(env: &Env) -> Vec<Value> {
    let mut certs: Vec<Value> = env
        .all_certs()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "id": c["id"], "key": c["key"], "subject": c["subject"], "serial": c["serial"],
                "not_after": c["not_after"], "state": c["state"], "origin": c["origin"],
                "superseded_by": c["superseded_by"], "renewal": c["renewal"], "pem": c["pem"],
            })
        })
        .collect();
    certs.sort_by_key(|c| c["id"].as_str().unwrap_or_default().to_owned());
    certs
}

#[test]
fn certificates_and_policies_survive_restart() {
    let env = Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-n", "mgmt"]);
    let a = text(
        &env.create("mgmt", 365, &["--subject", "CN=a,OU=Ops"]),
        "id",
    );
    let b = text(&env.create("mgmt", 120, &[]), "id");
    env.kw_ok(&[
        "cert",
        "policy",
        &a,
        "--days",
        "200",
        "--renew-before",
        "20d",
        "--rekey",
        "--export",
        &env.path("a.pem"),
        "--hook",
        "true",
    ]);
    env.kw_ok(&["cert", "renew", &b]);
    let before = durable(&env);
    assert_eq!(before.len(), 3, "{before:#?}");
    let policy = env.cert_show(&a)["renewal"].clone();
    assert_eq!(
        policy["renew_before"].as_u64(),
        Some(20 * 86_400),
        "{policy}"
    );
    assert_eq!(policy["validity_days"].as_u64(), Some(200), "{policy}");
    assert_eq!(policy["rekey"], Value::Bool(true), "{policy}");
    assert_eq!(policy["hook"].as_str(), Some("true"), "{policy}");

    stop(&mut agent);
    assert_eq!(
        durable(&env),
        before,
        "the CLI reads the same store offline"
    );
    let _agent = env.start_agent(&[]);
    assert_eq!(durable(&env), before, "after a restart");
    assert_eq!(env.cert_show(&a)["renewal"], policy);
}

#[test]
fn missed_renewal_is_made_at_start() {
    let env = Env::no_passphrase();
    // No daemon: the CLI works on the store directly.
    env.kw_ok(&["key", "generate", "-n", "mgmt"]);
    let first = env.create("mgmt", 10, &[]);
    let first_id = text(&first, "id");
    fs::create_dir(env.root().join("out")).expect("mkdir out");
    let log = env.path("hook.log");
    let hook = format!("{HOOK}'{log}'");
    let (pem, cer) = (env.path("out/a.pem"), env.path("out/a.cer"));
    env.kw_ok(&[
        "cert", "policy", &first_id, "--days", "90", "--export", &pem, "--export", &cer, "--hook",
        &hook,
    ]);
    // Due now, but nothing renews without the daemon.
    assert_eq!(env.all_certs().len(), 1);
    assert_eq!(env.cert_show(&first_id)["state"].as_str(), Some("expiring"));
    assert!(!env.root().join("out/a.pem").exists());
    let check = env.kw(&["cert", "check", "--within", "30d"]);
    assert_eq!(check.status.code(), Some(3), "{check:#?}");

    let started = Instant::now();
    let mut agent = env.start_agent(&[]);
    let caught_up = poll_until(RENEW_GUARD, || {
        successor(&env, &first_id).is_some() && !hook_runs(&log).is_empty()
    });
    assert!(
        caught_up,
        "no catch-up renewal; agent log:\n{}",
        agent.log()
    );
    eprintln!(
        "catch-up renewal seen {:?} after agent start",
        started.elapsed()
    );
    let second = successor(&env, &first_id).expect("successor");
    assert_eq!(second["state"].as_str(), Some("valid"), "{second}");
    let span = second["not_after"].as_u64().unwrap() - second["not_before"].as_u64().unwrap();
    assert_eq!(span, 90 * 86_400);
    assert_exported(&env, &second);
    let runs = hook_runs(&log);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_hook(&env, &runs[0], &first_id, &second);
    let check = env.kw(&["cert", "check", "--within", "30d"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "nothing left to renew: {check:#?}"
    );

    // A second restart renews nothing more: the renewal was recorded.
    let before = durable(&env);
    stop(&mut agent);
    let _agent = env.start_agent(&[]);
    env.kw_ok(&["cert", "list"]);
    assert_eq!(durable(&env), before);
    assert_eq!(hook_runs(&log).len(), 1);
}
