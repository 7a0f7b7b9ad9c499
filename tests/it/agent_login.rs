//! A real SSH login through the agent: `ssh` runs a private `sshd -i` as its `ProxyCommand` (no
//! port, no system config), with a temporary host key and `authorized_keys` file, and the only
//! identity `ssh` can use is the one held by keyward.

use std::fs;
use std::path::Path;

use crate::sshd::Host;
use crate::util::{Agent, Key, KeyType, Output, keygen, require_tool, run};

/// Host key alias used in `known_hosts` and on the `ssh` command line.
const HOST: &str = "keyward-test-host";

/// Writes the sshd config, host key and `known_hosts` into `dir`; returns the host.
fn prepare_sshd(dir: &Path, authorized: &Key, algorithms: &str) -> Host {
    let authorized_keys = dir.join("authorized_keys");
    fs::write(&authorized_keys, format!("{}\n", authorized.public_line()))
        .expect("write authorized_keys");
    let host = Host::new(
        dir,
        HOST,
        &authorized_keys,
        &format!("PubkeyAcceptedAlgorithms {algorithms}\n"),
    );
    fs::write(dir.join("known_hosts"), &host.known_line).expect("write known_hosts");
    host
}

/// Runs `ssh ... HOST echo ok` through the agent, offering only `algorithms` for the user key.
fn login(agent: &Agent, host: &Host, algorithms: &str) -> Output {
    require_tool("ssh");
    let dir = agent.dir();
    let extra = [
        format!("IdentityAgent={}", agent.socket().display()),
        format!("PubkeyAcceptedAlgorithms={algorithms}"),
    ];
    let mut cmd = agent.command("ssh");
    // A file that does not exist, so no default identity file is tried.
    cmd.args(host.ssh_args(
        &dir.join("known_hosts"),
        &dir.join("no-such-identity"),
        &extra,
    ));
    run(cmd.arg("echo ok"))
}

fn login_case(kind: KeyType, algorithms: &str) {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "user", kind, "");
    agent.add(&key, &[]);
    let host = prepare_sshd(agent.dir(), &key, algorithms);
    let out = login(&agent, &host, algorithms);
    assert!(
        out.status.success() && out.stdout.trim() == "ok",
        "login through the agent with {algorithms} failed: {out:#?}\nagent log:\n{}",
        agent.log()
    );
}

#[test]
fn login_rsa_sha2_256() {
    login_case(KeyType::Rsa(2048), "rsa-sha2-256");
}

#[test]
fn login_rsa_sha2_512() {
    login_case(KeyType::Rsa(2048), "rsa-sha2-512");
}

#[test]
fn login_ed25519() {
    login_case(KeyType::Ed25519, "ssh-ed25519");
}

/// Negative control: with the key not in the agent the same login is refused, so the successful
/// logins above really used the agent.
#[test]
fn login_without_agent_key_is_refused() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "user", KeyType::Ed25519, "");
    let host = prepare_sshd(agent.dir(), &key, "ssh-ed25519");
    let out = login(&agent, &host, "ssh-ed25519");
    out.assert_failure("login without the key in the agent");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
}
