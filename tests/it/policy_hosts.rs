//! Shared by the policy and audit tests: two private `sshd`s (hosts A and B, each with its own
//! host key) that `ssh` runs as its `ProxyCommand` (`sshd -i`, no port, no system config), a
//! `known_hosts` naming both, stored keys made with `keyward key generate`, and `ssh-keygen -Y
//! sign` / `-Y verify` in a chosen namespace through the agent.

use std::fs;
use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::sshd::Host;
use crate::util::{Agent, Output, clean_command, require_tool, run, unique};

/// Hosts A and B, sharing one `authorized_keys`.
pub struct Hosts {
    pub a: Host,
    pub b: Host,
    /// Lists `hostA` and `hostB` with their host keys.
    pub known: PathBuf,
    no_identity: PathBuf,
}

fn quote(arg: &str) -> String {
    assert!(!arg.contains('\''), "cannot quote {arg:?}");
    format!("'{arg}'")
}

impl Hosts {
    /// Two sshds configured under `dir`; `authorized` are the public key lines they accept.
    pub fn new(dir: &Path, authorized: &[&str]) -> Hosts {
        require_tool("ssh");
        let ak = dir.join("authorized_keys");
        fs::write(&ak, format!("{}\n", authorized.join("\n"))).expect("write authorized_keys");
        let make = |alias: &str| Host::new(dir, alias, &ak, "AllowAgentForwarding yes\n");
        let a = make("hostA");
        let b = make("hostB");
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, format!("{}{}", a.known_line, b.known_line))
            .expect("write known_hosts");
        Hosts {
            a,
            b,
            known: known_hosts,
            no_identity: dir.join("no-such-identity"),
        }
    }

    /// `ssh` arguments for a login to `host` with no identity but the agent's, ending with the
    /// host name.
    pub fn options(&self, host: &Host) -> Vec<String> {
        host.ssh_args(&self.known, &self.no_identity, &[])
    }

    /// Runs `ssh EXTRA ... HOST REMOTE` through `agent`.
    pub fn ssh(&self, agent: &Agent, host: &Host, extra: &[&str], remote: &str) -> Output {
        let mut cmd = agent.command("ssh");
        cmd.args(extra).args(self.options(host)).arg(remote);
        run(&mut cmd)
    }

    /// A shell command line that runs `ssh` to `host` with the session's own `SSH_AUTH_SOCK`
    /// (the forwarded agent, when run on the other host).
    pub fn remote_ssh(&self, host: &Host, extra: &[&str], remote: &str) -> String {
        let mut words = vec![require_tool("ssh").display().to_string()];
        words.extend(extra.iter().map(|e| (*e).to_owned()));
        words.extend(self.options(host));
        words.push(remote.to_owned());
        words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
    }
}

/// Whether `ssh -v` output shows the key `fingerprint` listed or offered.
pub fn offered(out: &Output, fingerprint: &str) -> bool {
    out.stderr.lines().any(|l| {
        (l.contains("Offering public key") || l.contains("Will attempt key"))
            && l.contains(fingerprint)
    })
}

/// A key in the store.
pub struct StoredKey {
    pub name: String,
    /// `type base64 comment`.
    pub line: String,
    /// The public key alone in a directory with no private key (for `ssh-keygen -Y sign`).
    pub pub_only: PathBuf,
    pub fingerprint: String,
}

impl StoredKey {
    /// The public key blob as the agent protocol names it.
    pub fn blob(&self) -> Vec<u8> {
        ssh_key::PublicKey::from_openssh(&self.line)
            .expect("parse exported key")
            .to_bytes()
            .expect("encode key blob")
    }
}

/// `keyward key generate -t KIND -n NAME` (through the running daemon) and its public half.
pub fn stored_key(env: &Env, name: &str, kind: &str) -> StoredKey {
    let comment = format!("{name}@policy-test");
    env.kw_ok(&["key", "generate", "-t", kind, "-n", name, "-C", &comment]);
    let line = env.kw_ok(&["key", "export", name]).trim().to_owned();
    let dir = env.root().join("pub");
    fs::create_dir_all(&dir).expect("mkdir pub");
    let pub_only = dir.join(format!("{name}.pub"));
    fs::write(&pub_only, format!("{line}\n")).expect("write .pub");
    let fingerprint = ssh_key::PublicKey::from_openssh(&line)
        .expect("parse exported key")
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    StoredKey {
        name: name.to_owned(),
        line,
        pub_only,
        fingerprint,
    }
}

/// A signature attempt: the data file and `ssh-keygen`'s output.
pub struct Signed {
    pub data: PathBuf,
    pub out: Output,
}

/// `ssh-keygen -Y sign -n NAMESPACE` of a fresh file with `key` through `agent`.
pub fn sign_ns(agent: &Agent, key: &StoredKey, namespace: &str) -> Signed {
    let data = agent.dir().join(format!("data-{}.txt", unique()));
    fs::write(&data, b"keyward policy test payload\n").expect("write data");
    let out = run(agent
        .command("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(&key.pub_only)
        .arg(&data));
    Signed { data, out }
}

/// `ssh-keygen -Y verify -n NAMESPACE` of a [`sign_ns`] signature.
pub fn verify_ns(key: &StoredKey, namespace: &str, signed: &Signed) -> Output {
    let dir = signed.data.parent().expect("data dir");
    let signers = dir.join(format!("allowed_signers-{}", unique()));
    fs::write(&signers, format!("signer@keyward {}\n", key.line)).expect("write allowed_signers");
    let mut sig = signed.data.clone().into_os_string();
    sig.push(".sig");
    run(clean_command(require_tool("ssh-keygen"), dir)
        .args([
            "-Y",
            "verify",
            "-n",
            namespace,
            "-I",
            "signer@keyward",
            "-f",
        ])
        .arg(&signers)
        .arg("-s")
        .arg(sig)
        .stdin(fs::File::open(&signed.data).expect("open data")))
}

/// Asserts that `ssh-keygen -Y sign -n NAMESPACE` with `key` works and verifies.
#[track_caller]
pub fn assert_signs(agent: &Agent, key: &StoredKey, namespace: &str) {
    let signed = sign_ns(agent, key, namespace);
    signed.out.assert_success(&format!(
        "ssh-keygen -Y sign -n {namespace} with {}; agent log:\n{}",
        key.name,
        agent.log()
    ));
    verify_ns(key, namespace, &signed).assert_success("ssh-keygen -Y verify");
}

/// Asserts that the agent refuses `ssh-keygen -Y sign -n NAMESPACE` with `key`.
#[track_caller]
pub fn assert_refuses(agent: &Agent, key: &StoredKey, namespace: &str) {
    let signed = sign_ns(agent, key, namespace);
    signed.out.assert_failure(&format!(
        "ssh-keygen -Y sign -n {namespace} with {}",
        key.name
    ));
    let mut sig = signed.data.into_os_string();
    sig.push(".sig");
    assert!(!Path::new(&sig).exists(), "no signature may be written");
}

/// The canonical path of a tool, as `/proc/PID/exe` shows it.
pub fn exe_path(tool: &str) -> String {
    fs::canonicalize(require_tool(tool))
        .expect("canonicalize tool path")
        .display()
        .to_string()
}

/// `keyward audit --json [--key KEY]`: one record per line.
pub fn audit_records(env: &Env, key: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "--json"];
    if let Some(key) = key {
        args.extend(["--key", key]);
    }
    env.kw_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// The latest `sign` record of `key`.
#[track_caller]
pub fn last_sign(env: &Env, key: &str) -> serde_json::Value {
    audit_records(env, Some(key))
        .into_iter()
        .rev()
        .find(|r| r["action"] == "sign")
        .unwrap_or_else(|| panic!("no sign record for {key}"))
}
