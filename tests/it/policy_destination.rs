//! Destination policies with the real `ssh` and two `sshd`s with different host keys: a stored
//! key restricted to host A (by fingerprint, or by name through `known_hosts`) logs in to A and
//! is neither offered nor usable on B; `ssh-add -h` does the same for an in-memory key.

use crate::env::Env;
use crate::policy_hosts::{Hosts, assert_refuses, offered, stored_key};
use crate::util::{KeyType, keygen};

#[test]
fn policy_destination_fingerprint_allows_a_only() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let dest = stored_key(&env, "dest", "ed25519");
    // Control: a key without a policy is listed on every host.
    let free = stored_key(&env, "free", "ed25519");
    let hosts = Hosts::new(env.root(), &[&dest.line]);
    env.kw_ok(&[
        "policy",
        "set",
        "dest",
        "--destination",
        &hosts.a.fingerprint,
    ]);

    let out = hosts.ssh(&agent, &hosts.a, &["-v"], "echo logged-in");
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login to A with the A-restricted key: {out:#?}\nagent log:\n{}",
        agent.log()
    );
    assert!(offered(&out, &dest.fingerprint), "offered on A: {out:#?}");

    let out = hosts.ssh(&agent, &hosts.b, &["-v"], "echo logged-in");
    out.assert_failure("login to B with the A-restricted key");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
    assert!(
        !offered(&out, &dest.fingerprint),
        "the A-restricted key must not be listed on a connection bound to B: {}",
        out.stderr
    );
    assert!(
        offered(&out, &free.fingerprint),
        "the unrestricted key is still listed on B: {}",
        out.stderr
    );

    // Outside a login bound by ssh (no session-bind), a destination-restricted key never signs.
    assert_refuses(&agent, &dest, "file");
}

#[test]
fn policy_destination_host_name_from_known_hosts() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let dest = stored_key(&env, "named", "ed25519");
    let hosts = Hosts::new(env.root(), &[&dest.line]);
    let kh = hosts.known.to_str().expect("utf-8 path");
    env.kw_ok(&[
        "policy",
        "set",
        "named",
        "--destination",
        "hostA",
        "--known-hosts",
        kh,
    ]);
    let shown = env.kw_json(&["policy", "show", "named", "--json"]);
    assert_eq!(
        shown["destinations"],
        serde_json::json!([hosts.a.fingerprint]),
        "hostA resolved to its host key: {shown}"
    );
    // An unknown name is an error, not an empty (unrestricted) list.
    let out = env.kw(&[
        "policy",
        "set",
        "named",
        "--destination",
        "hostC",
        "--known-hosts",
        kh,
    ]);
    out.assert_failure("--destination with a host not in known_hosts");
    assert!(out.stderr.contains("hostC"), "{out:#?}");

    let out = hosts.ssh(&agent, &hosts.a, &[], "echo logged-in");
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login to A: {out:#?}\nagent log:\n{}",
        agent.log()
    );
    let out = hosts.ssh(&agent, &hosts.b, &["-v"], "echo logged-in");
    out.assert_failure("login to B");
    assert!(!offered(&out, &dest.fingerprint), "{}", out.stderr);

    // The dry run agrees, by name and by fingerprint.
    let test = |host: &str| {
        env.kw(&[
            "policy",
            "test",
            "named",
            "--host",
            host,
            "--known-hosts",
            kh,
        ])
    };
    let out = test("hostA");
    out.assert_success("policy test --host hostA");
    assert!(out.stdout.starts_with("allowed"), "{out:#?}");
    let out = test("hostB");
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(
        out.stdout.contains("refused") && out.stdout.contains("destinations"),
        "{out:#?}"
    );
    assert!(out.stdout.contains(&hosts.b.fingerprint), "{out:#?}");
    assert_eq!(test(&hosts.a.fingerprint).status.code(), Some(0));
}

/// `ssh-add -h hostA` (OpenSSH's destination constraint) on an in-memory key: the issue asks
/// for it to be honoured like a stored key's destination policy.
#[test]
fn policy_destination_ssh_add_h_in_memory_key() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = keygen(agent.dir(), "mem", KeyType::Ed25519, "");
    let hosts = Hosts::new(env.root(), &[&key.public_line()]);
    let kh = hosts.known.to_str().expect("utf-8 path");
    let file = key.private.to_str().expect("utf-8 path");
    let out = agent.ssh_add(&["-H", kh, "-h", "hostA", file]);
    assert!(
        out.status.success(),
        "ssh-add -h hostA was refused by the agent: {out:#?}\nagent log:\n{}",
        agent.log()
    );
    let fingerprint = key
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let out = hosts.ssh(&agent, &hosts.a, &[], "echo logged-in");
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login to A with the ssh-add -h hostA key: {out:#?}\nagent log:\n{}",
        agent.log()
    );
    let out = hosts.ssh(&agent, &hosts.b, &["-v"], "echo logged-in");
    out.assert_failure("login to B with the ssh-add -h hostA key");
    assert!(!offered(&out, &fingerprint), "{}", out.stderr);
}
