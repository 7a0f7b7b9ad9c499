//! A real SSH login with a key that lives in the store: `keyward key generate` through the daemon,
//! its exported public line in `authorized_keys` of a private `sshd -i` (run as `ssh`'s
//! `ProxyCommand`), and `ssh` logs in through the agent with no identity file of its own.

use std::path::Path;

use crate::env::Env;
use crate::sshd::Host;
use crate::util::{Agent, Output};

const HOST: &str = "keyward-store-host";

/// Writes sshd's config, host key, `authorized_keys` (holding `authorized`) and `known_hosts`
/// into `dir`; returns the host.
fn sshd_host(dir: &Path, authorized: &str) -> Host {
    Host::alone(dir, HOST, authorized, "")
}

fn ssh_login(agent: &Agent, dir: &Path, host: &Host) -> Output {
    host.login(agent, dir, &[], "echo logged-in")
}

fn login_case(gen_args: &[&str]) {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let mut args = vec!["key", "generate", "-n", "login", "-C", "login@keyward"];
    args.extend_from_slice(gen_args);
    env.kw_ok(&args);
    let line = env.kw_ok(&["key", "export", "login"]);
    let host = sshd_host(env.root(), &line);
    let out = ssh_login(&agent, env.root(), &host);
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login with the stored key failed: {out:#?}\nagent log:\n{}",
        agent.log()
    );

    // Negative control: unloaded from the agent, the same login is refused; loaded again, it
    // works.
    agent.ssh_add(&["-D"]).assert_success("ssh-add -D");
    let out = ssh_login(&agent, env.root(), &host);
    out.assert_failure("login with the key unloaded");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
    env.kw_ok(&["key", "load", "login"]);
    let out = ssh_login(&agent, env.root(), &host);
    assert!(out.status.success(), "login after key load: {out:#?}");
}

#[test]
fn login_with_stored_rsa_key() {
    login_case(&[]);
}

#[test]
fn login_with_stored_ed25519_key() {
    login_case(&["-t", "ed25519"]);
}
