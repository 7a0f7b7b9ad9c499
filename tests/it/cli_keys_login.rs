//! A real SSH login with a key that lives in the store: `keyward key generate` through the daemon,
//! its exported public line in `authorized_keys` of a private `sshd -i` (run as `ssh`'s
//! `ProxyCommand`), and `ssh` logs in through the agent with no identity file of its own.

use std::fs;
use std::path::Path;

use crate::env::Env;
use crate::util::{Agent, KeyType, Output, clean_command, keygen, require_tool, run};

const HOST: &str = "keyward-store-host";

/// Writes sshd's config, host key, `authorized_keys` (holding `authorized`) and `known_hosts`
/// into `dir`; returns the `ProxyCommand`.
fn sshd_proxy(dir: &Path, authorized: &str) -> String {
    let sshd = require_tool("sshd");
    if !Path::new("/run/sshd").is_dir() {
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation dir)");
    }
    let host = keygen(dir, "hostkey", KeyType::Ed25519, "");
    let ak = dir.join("authorized_keys");
    fs::write(&ak, authorized).expect("write authorized_keys");
    fs::write(
        dir.join("known_hosts"),
        format!("{HOST} {}\n", host.public_line()),
    )
    .expect("write known_hosts");
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "HostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPidFile none\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin yes\nLogLevel VERBOSE\n",
            host.private.display(),
            ak.display()
        ),
    )
    .expect("write sshd_config");
    format!("{} -i -e -f {}", sshd.display(), config.display())
}

fn ssh_login(agent: &Agent, dir: &Path, proxy: &str) -> Output {
    require_tool("ssh");
    let user = run(clean_command("id", dir).arg("-un"));
    user.assert_success("id -un");
    let opts = [
        format!("ProxyCommand={proxy}"),
        format!("HostKeyAlias={HOST}"),
        format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "BatchMode=yes".to_owned(),
        format!("IdentityAgent={}", agent.socket().display()),
        format!("IdentityFile={}", dir.join("no-such-identity").display()),
        "PasswordAuthentication=no".to_owned(),
        "KbdInteractiveAuthentication=no".to_owned(),
        format!("User={}", user.stdout.trim()),
    ];
    let mut cmd = agent.command("ssh");
    cmd.args(["-F", "/dev/null"]);
    for opt in &opts {
        cmd.arg("-o").arg(opt);
    }
    run(cmd.arg(HOST).arg("echo logged-in"))
}

fn login_case(gen_args: &[&str]) {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let mut args = vec!["key", "generate", "-n", "login", "-C", "login@keyward"];
    args.extend_from_slice(gen_args);
    env.kw_ok(&args);
    let line = env.kw_ok(&["key", "export", "login"]);
    let proxy = sshd_proxy(env.root(), &line);
    let out = ssh_login(&agent, env.root(), &proxy);
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login with the stored key failed: {out:#?}\nagent log:\n{}",
        agent.log()
    );

    // Negative control: unloaded from the agent, the same login is refused; loaded again, it
    // works.
    agent.ssh_add(&["-D"]).assert_success("ssh-add -D");
    let out = ssh_login(&agent, env.root(), &proxy);
    out.assert_failure("login with the key unloaded");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
    env.kw_ok(&["key", "load", "login"]);
    let out = ssh_login(&agent, env.root(), &proxy);
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
