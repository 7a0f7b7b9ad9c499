//! A real SSH login through the agent: `ssh` runs a private `sshd -i` as its `ProxyCommand` (no
//! port, no system config), with a temporary host key and `authorized_keys` file, and the only
//! identity `ssh` can use is the one held by keyward.

use std::path::Path;

use crate::sshd::Host;
use crate::util::{Agent, Key, KeyType, Output, keygen};

/// Host key alias used in `known_hosts` and on the `ssh` command line.
const HOST: &str = "keyward-test-host";

/// Writes the sshd config, host key and `known_hosts` into `dir`; returns the host.
fn prepare_sshd(dir: &Path, authorized: &Key, algorithms: &str) -> Host {
    Host::alone(
        dir,
        HOST,
        &format!("{}\n", authorized.public_line()),
        &format!("PubkeyAcceptedAlgorithms {algorithms}\n"),
    )
}

/// Runs `ssh ... HOST echo ok` through the agent, offering only `algorithms` for the user key.
fn login(agent: &Agent, host: &Host, algorithms: &str) -> Output {
    let extra = [format!("PubkeyAcceptedAlgorithms={algorithms}")];
    host.login(agent, agent.dir(), &extra, "echo ok")
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
