//! Certificates and key usage under policy: issuing a certificate is a signature with purpose
//! `x509` (refused and audited like any other), a rekeyed renewal keeps the old key's policy,
//! and `max_signatures` counts per key across `ssh-add -d` + `keyward key load` and restarts.

use std::fs;

use serde_json::Value;

use crate::env::{Env, stop};
use crate::policy_hosts::{assert_refuses, assert_signs, audit_records, exe_path, stored_key};
use crate::util::{cli_bin, write_script};

/// The `sign` audit records of key `key`, oldest first.
fn sign_records(env: &Env, key: &str) -> Vec<Value> {
    audit_records(env, Some(key))
        .into_iter()
        .filter(|r| r["action"] == "sign")
        .collect()
}

fn cli_exe() -> String {
    fs::canonicalize(cli_bin())
        .expect("cli path")
        .display()
        .to_string()
}

#[test]
fn certificate_creation_goes_through_the_key_policy() {
    let env = Env::no_passphrase();
    let _agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-t", "rsa", "-n", "tls"]);
    env.kw_ok(&["policy", "set", "tls", "--purpose", "login"]);
    let out = env.kw(&["cert", "create", "--key", "tls", "--days", "30"]);
    out.assert_failure("cert create under a login-only policy");
    assert!(
        out.stderr.contains("purposes") && out.stderr.contains("x509"),
        "names the rule: {out:#?}"
    );
    assert!(env.all_certs().is_empty(), "nothing stored");
    let refused = sign_records(&env, "tls");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["outcome"], "refused");
    assert_eq!(refused[0]["detail"]["purpose"], "x509 certificate CN=tls");
    assert_eq!(refused[0]["detail"]["exe"], cli_exe());
    assert!(
        refused[0]["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("purposes")),
        "{:?}",
        refused[0]
    );

    env.kw_ok(&[
        "policy",
        "set",
        "tls",
        "--purpose",
        "login",
        "--purpose",
        "x509",
    ]);
    let cert = env.create("tls", 90, &[]);
    let records = sign_records(&env, "tls");
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[1]["outcome"], "allowed");
    assert_eq!(records[1]["detail"]["purpose"], "x509 certificate CN=tls");

    // Renewing signs again, under the same rules.
    env.kw_ok(&["policy", "set", "tls", "--purpose", "login"]);
    let id = cert["id"].as_str().expect("id");
    env.kw(&["cert", "renew", id])
        .assert_failure("renewal under a login-only policy");
    let records = sign_records(&env, "tls");
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[2]["outcome"], "refused");
    assert_eq!(env.all_certs().len(), 1, "the old certificate stays, alone");
}

#[test]
fn a_rekeyed_renewal_keeps_the_old_key_policy() {
    let env = Env::no_passphrase();
    let record = env.root().join("askpass.record");
    let askpass = write_script(
        env.root(),
        "askpass",
        &format!("echo \"$1\" >> '{}'", record.display()),
    );
    let agent = env.start_agent(&["--askpass", askpass.to_str().expect("utf-8")]);
    env.kw_ok(&["key", "generate", "-t", "rsa", "-n", "svc"]);
    let cli = cli_exe();
    let ssh = exe_path("ssh");
    env.kw_ok(&[
        "policy",
        "set",
        "svc",
        "--confirm",
        "--deny-forwarding",
        "--exe",
        &cli,
        "--exe",
        &ssh,
    ]);
    let before = env.kw_json(&["policy", "show", "svc", "--json"]);
    let cert = env.create("svc", 90, &[]);
    let id = cert["id"].as_str().expect("id").to_owned();
    env.kw_ok(&["cert", "policy", &id, "--rekey"]);
    let renewed: Value =
        serde_json::from_str(&env.kw_ok(&["cert", "renew", &id, "--json"])).expect("json");
    let new_key = renewed["key"].as_str().expect("renewed key").to_owned();
    assert_ne!(new_key, "svc", "{renewed}");
    let after = env.kw_json(&["policy", "show", &new_key, "--json"]);
    assert_eq!(after, before, "the new key has the old key's policy");
    assert_eq!(after["confirm"], true);
    assert_eq!(after["deny_forwarding"], true);
    let asked = fs::read_to_string(&record).expect("askpass asked");
    assert_eq!(
        asked.matches("to sign an X.509 certificate").count(),
        2,
        "create and renewal were both confirmed: {asked}"
    );
    // The agent serves the new key under that policy: ssh-keygen is not an allowed executable.
    let line = env.kw_ok(&["key", "export", &new_key]).trim().to_owned();
    let pub_only = env.root().join("rekeyed.pub");
    fs::write(&pub_only, format!("{line}\n")).expect("write pub");
    let key = crate::policy_hosts::StoredKey {
        name: new_key.clone(),
        line,
        pub_only,
        fingerprint: String::new(),
    };
    assert_refuses(&agent, &key, "file");
    let refused = sign_records(&env, &new_key);
    let last = refused.last().expect("refusal audited");
    assert!(
        last["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("executables")),
        "{last}"
    );
}

#[test]
fn max_signatures_survive_unload_load_and_restart() {
    let env = Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    let key = stored_key(&env, "few", "ed25519");
    env.kw_ok(&["policy", "set", "few", "--max-signatures", "3"]);
    assert_signs(&agent, &key, "file");

    // Unloaded and loaded again: the count goes on.
    let pub_path = key.pub_only.to_str().expect("utf-8").to_owned();
    agent
        .ssh_add(&["-d", &pub_path])
        .assert_success("ssh-add -d");
    env.kw_ok(&["key", "load", "few"]);
    assert_signs(&agent, &key, "file");

    // And across a restart.
    stop(&mut agent);
    let mut agent = env.start_agent(&[]);
    assert_signs(&agent, &key, "file");
    assert_refuses(&agent, &key, "file");
    agent
        .ssh_add(&["-d", &pub_path])
        .assert_success("ssh-add -d");
    env.kw_ok(&["key", "load", "few"]);
    assert_refuses(&agent, &key, "file");
    // A crash gives nothing back either: SIGKILL, then start again.
    agent.signal_and_wait(libc::SIGKILL);
    let agent = env.start_agent(&[]);
    assert_refuses(&agent, &key, "file");
    let refusals: Vec<Value> = sign_records(&env, "few")
        .into_iter()
        .filter(|r| r["outcome"] == "refused")
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:#?}");
    assert!(
        refusals
            .iter()
            .all(|r| r["detail"]["reason"] == "max_signatures: 3 signatures already made"),
        "{refusals:#?}"
    );
}

#[test]
fn a_scheduled_renewal_is_refused_by_the_key_policy_and_audited_as_the_agent() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-t", "rsa", "-n", "sched"]);
    let cert = env.create("sched", 10, &[]);
    let id = cert["id"].as_str().expect("id").to_owned();
    env.kw_ok(&["policy", "set", "sched", "--purpose", "login"]);
    // Now due: the scheduler tries, and the key's policy refuses.
    env.kw_ok(&["cert", "policy", &id, "--days", "90"]);
    let agent_exe = fs::canonicalize(crate::util::agent_bin())
        .expect("agent path")
        .display()
        .to_string();
    let refused = crate::util::poll_until(crate::env::RENEW_GUARD, || {
        sign_records(&env, "sched").iter().any(|r| {
            r["outcome"] == "refused"
                && r["detail"]["exe"] == agent_exe
                && r["detail"]["purpose"] == "x509 certificate CN=sched"
        })
    });
    assert!(
        refused,
        "no refused scheduled renewal; log:\n{}",
        agent.log()
    );
    assert_eq!(env.all_certs().len(), 1, "nothing was renewed");
}
