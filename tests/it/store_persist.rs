//! Persistence of the store across daemon restarts, and its passphrase: a protected store starts
//! sealed, `keyward unlock` unseals it (a wrong passphrase changes nothing), `keyward-agent
//! --passphrase-file` unseals at start, and `keyward passwd` changes the passphrase.

use serde_json::Value;

use crate::env::{Env, STORE_PASS, assert_clean_error, stop};
use crate::util::{Agent, assert_no_identities};

/// The `ssh-add -l` output, which must list exactly the fingerprints `want`.
#[track_caller]
fn assert_serves(agent: &Agent, want: &[String]) {
    let out = agent.ssh_add(&["-l"]);
    out.assert_success("ssh-add -l");
    assert_eq!(out.stdout.lines().count(), want.len(), "{out:#?}");
    for fp in want {
        assert!(
            out.stdout.contains(fp.as_str()),
            "{fp} not served: {out:#?}"
        );
    }
}

fn fingerprints(env: &Env, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| env.show(n)["sha256"].as_str().expect("sha256").to_owned())
        .collect()
}

#[test]
fn keys_survive_restart() {
    let env = Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-n", "rsa", "-C", "r@x"]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "ed", "-C", "e@x"]);
    env.kw_ok(&["key", "generate", "-t", "ecdsa", "-n", "ec", "-C", "c@x"]);
    let fps = fingerprints(&env, &["rsa", "ed", "ec"]);
    assert_serves(&agent, &fps);
    // Unloaded with ssh-add -D: served again after a restart.
    agent.ssh_add(&["-D"]).assert_success("ssh-add -D");
    stop(&mut agent);
    // Offline, the CLI opens the same store.
    assert_eq!(env.key_names(), ["ec", "ed", "rsa"]);

    let agent = env.start_agent(&[]);
    assert_serves(&agent, &fps);
    assert_eq!(env.key_names(), ["ec", "ed", "rsa"]);
}

#[test]
fn sealed_store_unlock() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let mut agent = env.start_agent(&["--passphrase-file", &pass]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "k", "-C", "k@x"]);
    let fps = fingerprints(&env, &["k"]);
    assert_serves(&agent, &fps);
    stop(&mut agent);

    let agent = env.start_agent(&[]);
    assert_no_identities(&agent);
    let status = env.kw_json(&["status", "--json"]);
    assert_eq!(status["sealed"], Value::Bool(true), "{status}");
    assert_eq!(status["passphrase_set"], Value::Bool(true), "{status}");
    assert_eq!(status["key_count"].as_u64(), Some(1), "{status}");
    let text = env.kw_ok(&["status"]);
    assert!(text.contains("sealed:     yes"), "{text}");
    // Listing works sealed: public data is readable.
    assert_eq!(env.key_names(), ["k"]);
    // The private key is not: exporting it needs the store unsealed.
    let out = env.kw(&[
        "key",
        "export",
        "k",
        "--private",
        "--out",
        &env.path("id_k"),
    ]);
    assert_clean_error(&out, "private export from a sealed daemon");
    assert!(!env.root().join("id_k").exists());
    // Nor can a key be added while sealed; the store is unchanged.
    let out = env.kw(&["key", "generate", "-t", "ed25519", "-n", "new"]);
    assert_clean_error(&out, "generate on a sealed daemon");
    assert!(out.stderr.contains("unlock"), "say how to unseal: {out:#?}");
    assert_eq!(env.key_names(), ["k"]);

    let wrong = env.pass_file("not the passphrase");
    let out = env.kw(&["unlock", "--passphrase-file", &wrong]);
    assert_clean_error(&out, "unlock with a wrong passphrase");
    assert!(out.stderr.contains("wrong passphrase"), "{out:#?}");
    assert_no_identities(&agent);
    assert_eq!(
        env.kw_json(&["status", "--json"])["sealed"],
        Value::Bool(true)
    );

    let out = env.kw(&["unlock", "--passphrase-file", &pass]);
    out.assert_success("unlock");
    assert_serves(&agent, &fps);
    let status = env.kw_json(&["status", "--json"]);
    assert_eq!(status["sealed"], Value::Bool(false), "{status}");
    assert_eq!(status["agent_keys"].as_u64(), Some(1), "{status}");

    // `keyward seal` stops serving until the next unlock.
    env.kw_ok(&["seal"]);
    assert_no_identities(&agent);
    env.kw_ok(&["unlock", "--passphrase-file", &pass]);
    assert_serves(&agent, &fps);
}

#[test]
fn agent_passphrase_file_unseals_at_start() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let mut agent = env.start_agent(&["--passphrase-file", &pass]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "k"]);
    let fps = fingerprints(&env, &["k"]);
    stop(&mut agent);

    let agent = env.start_agent(&["--passphrase-file", &pass]);
    assert_serves(&agent, &fps);
    assert_eq!(
        env.kw_json(&["status", "--json"])["sealed"],
        Value::Bool(false)
    );
}

#[test]
fn passwd_changes_the_passphrase() {
    let env = Env::with_passphrase();
    let old = env.pass_file(STORE_PASS);
    let new = env.pass_file("a brand new passphrase");
    let wrong = env.pass_file("wrong");
    let mut agent = env.start_agent(&["--passphrase-file", &old]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "k"]);
    let fps = fingerprints(&env, &["k"]);

    let out = env.kw(&[
        "passwd",
        "--old-passphrase-file",
        &wrong,
        "--new-passphrase-file",
        &new,
    ]);
    assert_clean_error(&out, "passwd with a wrong current passphrase");
    env.kw_ok(&[
        "passwd",
        "--old-passphrase-file",
        &old,
        "--new-passphrase-file",
        &new,
    ]);
    assert_serves(&agent, &fps);
    stop(&mut agent);

    // The old passphrase no longer opens the store: the daemon refuses to start with it.
    let agent_dir = tempfile::tempdir().expect("temp dir");
    let out = crate::util::run(
        crate::util::clean_command(crate::util::agent_bin(), agent_dir.path())
            .arg("--socket")
            .arg(env.socket())
            .arg("--store")
            .arg(env.store())
            .arg("--passphrase-file")
            .arg(&old),
    );
    out.assert_failure("keyward-agent with the old passphrase");
    assert!(
        out.stderr.contains("wrong passphrase"),
        "the agent must say why it refuses: {out:#?}"
    );

    let mut agent = env.start_agent(&[]);
    env.kw(&["unlock", "--passphrase-file", &old])
        .assert_failure("unlock with the old passphrase");
    env.kw_ok(&["unlock", "--passphrase-file", &new]);
    assert_serves(&agent, &fps);
    stop(&mut agent);

    let mut agent = env.start_agent(&["--passphrase-file", &new]);
    assert_serves(&agent, &fps);

    // `passwd --remove`: the store then starts unsealed, and says it has no passphrase.
    env.kw_ok(&["passwd", "--remove", "--old-passphrase-file", &new]);
    stop(&mut agent);
    let agent = env.start_agent(&[]);
    assert_serves(&agent, &fps);
    let status = env.kw_json(&["status", "--json"]);
    assert_eq!(status["passphrase_set"], Value::Bool(false), "{status}");
    assert_eq!(status["sealed"], Value::Bool(false), "{status}");
    assert!(env.kw_ok(&["status"]).contains("NO PASSPHRASE"));
}
