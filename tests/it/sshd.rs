//! Private `sshd`s for login tests: `ssh` runs `sshd -i` as its `ProxyCommand` (no port, no system
//! config), with a temporary host key, and logs in with no identity but the agent's.

use std::fs;
use std::path::Path;

use crate::util::{Agent, KeyType, Output, clean_command, keygen, require_tool, run};

/// One private sshd.
pub struct Host {
    /// The name `ssh` connects to and `known_hosts` lists.
    pub alias: String,
    /// `sshd -i -e -f CONFIG`.
    pub proxy: String,
    /// Its host key's `SHA256:` fingerprint.
    pub fingerprint: String,
    /// Its `known_hosts` line.
    pub known_line: String,
}

impl Host {
    /// Writes a host key and sshd config for `alias` into `dir`: public key logins only, for the
    /// keys in `authorized_keys`, plus the config lines `extra` (each ending in a newline).
    pub fn new(dir: &Path, alias: &str, authorized_keys: &Path, extra: &str) -> Host {
        let sshd = require_tool("sshd");
        // sshd's privilege separation needs its empty chroot directory.
        if !Path::new("/run/sshd").is_dir() {
            fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation dir)");
        }
        let key = keygen(dir, &format!("host-{alias}"), KeyType::Ed25519, "");
        let config = dir.join(format!("sshd_config-{alias}"));
        fs::write(
            &config,
            format!(
                "HostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPidFile none\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin yes\n{extra}LogLevel VERBOSE\n",
                key.private.display(),
                authorized_keys.display()
            ),
        )
        .expect("write sshd_config");
        Host {
            alias: alias.to_owned(),
            proxy: format!("{} -i -e -f {}", sshd.display(), config.display()),
            fingerprint: key
                .public_key()
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string(),
            known_line: format!("{alias} {}\n", key.public_line()),
        }
    }

    /// The only sshd in `dir`: writes its `authorized_keys` (the text `authorized`), host key,
    /// config (with the lines `extra`) and a `known_hosts` naming it alone.
    pub fn alone(dir: &Path, alias: &str, authorized: &str, extra: &str) -> Host {
        let authorized_keys = dir.join("authorized_keys");
        fs::write(&authorized_keys, authorized).expect("write authorized_keys");
        let host = Host::new(dir, alias, &authorized_keys, extra);
        fs::write(dir.join("known_hosts"), &host.known_line).expect("write known_hosts");
        host
    }

    /// Runs `ssh ... HOST REMOTE` through `agent` (the only identity it can use), with the
    /// `known_hosts` in `dir` (see [`Host::alone`]) and the options `extra`.
    pub fn login(&self, agent: &Agent, dir: &Path, extra: &[String], remote: &str) -> Output {
        require_tool("ssh");
        let mut opts = vec![format!("IdentityAgent={}", agent.socket().display())];
        opts.extend_from_slice(extra);
        let mut cmd = agent.command("ssh");
        // A file that does not exist, so no default identity file is tried.
        cmd.args(self.ssh_args(
            &dir.join("known_hosts"),
            &dir.join("no-such-identity"),
            &opts,
        ));
        run(cmd.arg(remote))
    }

    /// `ssh` arguments for a login to this host with no identity but the agent's (`no_identity`
    /// is a file that does not exist), plus the options `extra`, ending with the host name.
    pub fn ssh_args(&self, known: &Path, no_identity: &Path, extra: &[String]) -> Vec<String> {
        let opts = [
            format!("ProxyCommand={}", self.proxy),
            format!("HostKeyAlias={}", self.alias),
            format!("UserKnownHostsFile={}", known.display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "BatchMode=yes".to_owned(),
            format!("IdentityFile={}", no_identity.display()),
            "PasswordAuthentication=no".to_owned(),
            "KbdInteractiveAuthentication=no".to_owned(),
            format!("User={}", current_user()),
        ];
        let mut args = vec!["-F".to_owned(), "/dev/null".to_owned()];
        for opt in opts.iter().chain(extra) {
            args.push("-o".to_owned());
            args.push(opt.clone());
        }
        args.push(self.alias.clone());
        args
    }
}

/// The name of the user the tests run as (sshd logs that user in).
pub fn current_user() -> String {
    let out = run(clean_command("id", Path::new("/")).arg("-un"));
    out.assert_success("id -un");
    out.stdout.trim().to_owned()
}
