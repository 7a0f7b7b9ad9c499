//! Purposes and executables: a key limited to `--purpose git` signs `ssh-keygen -Y sign -n git`
//! (and `-Y verify` accepts it) but not `-n file` nor a login; an executable allow-list admits
//! `ssh-keygen` and refuses it when only `ssh` is allowed; `keyward policy test` agrees.

use crate::env::Env;
use crate::policy_hosts::{Hosts, assert_refuses, assert_signs, exe_path, last_sign, stored_key};

#[test]
fn policy_purpose_git_only() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "gitkey", "ed25519");
    let hosts = Hosts::new(env.root(), &[&key.line]);
    env.kw_ok(&["policy", "set", "gitkey", "--purpose", "git"]);

    assert_signs(&agent, &key, "git");
    assert_refuses(&agent, &key, "file");
    let record = last_sign(&env, "gitkey");
    assert_eq!(record["outcome"], "refused", "{record}");
    assert_eq!(
        record["detail"]["purpose"], "sshsig namespace file",
        "{record}"
    );
    let out = hosts.ssh(&agent, &hosts.a, &[], "echo logged-in");
    out.assert_failure("login with a git-only key");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
    let record = last_sign(&env, "gitkey");
    assert_eq!(record["outcome"], "refused", "{record}");
    assert!(
        record["detail"]["purpose"]
            .as_str()
            .is_some_and(|p| p.starts_with("login")),
        "{record}"
    );

    // Control: with login allowed too, the same login works (the refusal was the purpose rule).
    env.kw_ok(&[
        "policy",
        "set",
        "gitkey",
        "--purpose",
        "git",
        "--purpose",
        "login",
    ]);
    let out = hosts.ssh(&agent, &hosts.a, &[], "echo logged-in");
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login with git+login purposes: {out:#?}\nagent log:\n{}",
        agent.log()
    );
    assert_refuses(&agent, &key, "file");
    env.kw_ok(&["policy", "set", "gitkey", "--purpose", "*"]);
    assert_signs(&agent, &key, "file");
}

#[test]
fn policy_executables_allow_list() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "exe", "ed25519");
    let keygen = exe_path("ssh-keygen");
    let ssh = exe_path("ssh");

    env.kw_ok(&["policy", "set", "exe", "--exe", &keygen]);
    assert_signs(&agent, &key, "file");
    let record = last_sign(&env, "exe");
    assert_eq!(record["detail"]["exe"], keygen.as_str(), "{record}");

    env.kw_ok(&["policy", "set", "exe", "--exe", &ssh]);
    assert_refuses(&agent, &key, "file");
    let record = last_sign(&env, "exe");
    let reason = record["detail"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("executables") && reason.contains(&keygen),
        "{record}"
    );

    // The dry run: refused (exit 1) naming the rule, allowed (exit 0).
    let out = env.kw(&[
        "policy",
        "test",
        "exe",
        "--exe",
        &keygen,
        "--purpose",
        "file",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(
        out.stdout.contains("refused") && out.stdout.contains("executables"),
        "{out:#?}"
    );
    let out = env.kw(&["policy", "test", "exe", "--exe", &ssh, "--purpose", "login"]);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert!(out.stdout.starts_with("allowed"), "{out:#?}");

    // Purposes in the dry run too.
    env.kw_ok(&["policy", "set", "exe", "--purpose", "git"]);
    let out = env.kw(&["policy", "test", "exe", "--purpose", "file"]);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.stdout.contains("purposes"), "{out:#?}");
    let out = env.kw(&["policy", "test", "exe", "--purpose", "git"]);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");

    // A relative path is refused at once rather than never matching.
    let out = env.kw(&["policy", "set", "exe", "--exe", "ssh-keygen"]);
    out.assert_failure("policy set --exe with a relative path");
}
