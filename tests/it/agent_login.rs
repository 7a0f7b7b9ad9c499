//! A real SSH login through the agent: `ssh` runs a private `sshd -i` as its `ProxyCommand` (no
//! port, no system config), with a temporary host key and `authorized_keys` file, and the only
//! identity `ssh` can use is the one held by keyward.

use std::fs;
use std::path::Path;

use crate::util::{Agent, Key, KeyType, Output, clean_command, keygen, require_tool, run};

/// Host key alias used in `known_hosts` and on the `ssh` command line.
const HOST: &str = "keyward-test-host";

/// The name of the user the tests run as (sshd logs that user in).
fn current_user() -> String {
    let out = run(clean_command("id", Path::new("/")).arg("-un"));
    out.assert_success("id -un");
    out.stdout.trim().to_owned()
}

/// Writes the sshd config, host key and `known_hosts` into `dir`; returns the `ProxyCommand`.
fn prepare_sshd(dir: &Path, authorized: &Key, algorithms: &str) -> String {
    let sshd = require_tool("sshd");
    // sshd's privilege separation needs its empty chroot directory.
    if !Path::new("/run/sshd").is_dir() {
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (tests run as root in CI)");
    }
    let host = keygen(dir, "host", KeyType::Ed25519, "");
    let authorized_keys = dir.join("authorized_keys");
    fs::write(&authorized_keys, format!("{}\n", authorized.public_line()))
        .expect("write authorized_keys");
    fs::write(
        dir.join("known_hosts"),
        format!("{HOST} {}\n", host.public_line()),
    )
    .expect("write known_hosts");
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "HostKey {host}\nAuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin yes\nPidFile none\n\
             PubkeyAcceptedAlgorithms {algorithms}\nLogLevel VERBOSE\n",
            host = host.private.display(),
            ak = authorized_keys.display(),
        ),
    )
    .expect("write sshd_config");
    format!("{} -i -e -f {}", sshd.display(), config.display())
}

/// Runs `ssh ... HOST echo ok` through the agent, offering only `algorithms` for the user key.
fn login(agent: &Agent, proxy: &str, algorithms: &str) -> Output {
    require_tool("ssh");
    let dir = agent.dir();
    let opts = [
        format!("ProxyCommand={proxy}"),
        format!("HostKeyAlias={HOST}"),
        format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "BatchMode=yes".to_owned(),
        format!("IdentityAgent={}", agent.socket().display()),
        // A file that does not exist, so no default identity file is tried.
        format!("IdentityFile={}", dir.join("no-such-identity").display()),
        format!("PubkeyAcceptedAlgorithms={algorithms}"),
        "PasswordAuthentication=no".to_owned(),
        "KbdInteractiveAuthentication=no".to_owned(),
        format!("User={}", current_user()),
    ];
    let mut cmd = agent.command("ssh");
    cmd.args(["-F", "/dev/null"]);
    for opt in &opts {
        cmd.arg("-o").arg(opt);
    }
    run(cmd.arg(HOST).arg("echo ok"))
}

fn login_case(kind: KeyType, algorithms: &str) {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "user", kind, "");
    agent.add(&key, &[]);
    let proxy = prepare_sshd(agent.dir(), &key, algorithms);
    let out = login(&agent, &proxy, algorithms);
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
    let proxy = prepare_sshd(agent.dir(), &key, "ssh-ed25519");
    let out = login(&agent, &proxy, "ssh-ed25519");
    out.assert_failure("login without the key in the agent");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
}
