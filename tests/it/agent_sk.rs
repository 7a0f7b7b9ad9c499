//! FIDO security-key keys (`ecdsa-sk`, `ed25519-sk`) and their certificates, made by `ssh-keygen`
//! with OpenSSH's test provider `regress/misc/sk-dummy`, added with `ssh-add -S PROVIDER`, held
//! to OpenSSH's `ssh-agent` side by side, signing through the provider in keyward's helper
//! process (verified by `ssh-keygen -Y verify` and an sshd login).
//!
//! The provider is OpenSSH's, built from the distribution's openssh source: `KEYWARD_SK_DUMMY`
//! names the built `sk-dummy.so` (scripts/test builds it). The tests copy it under
//! `/usr/local/lib` so that the agent's default provider allow-list (ssh-agent's
//! `/usr/lib*/*,/usr/local/lib*/*`) admits it, and also show that a copy elsewhere is refused.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sshd::{Host, current_user};
use crate::util::{
    Agent, Key, Output, assert_agent_signs, clean_command, keygen, require_tool, run,
};

/// Names the built `sk-dummy.so`.
const SK_DUMMY_ENV: &str = "KEYWARD_SK_DUMMY";

/// OpenSSH's test provider, copied where the default allow-list admits it (removed on drop).
struct Provider {
    dir: tempfile::TempDir,
}

impl Provider {
    fn install() -> Self {
        let built = std::env::var_os(SK_DUMMY_ENV).unwrap_or_else(|| {
            panic!(
                "{SK_DUMMY_ENV} must name OpenSSH's regress/misc/sk-dummy/sk-dummy.so \
                 (scripts/test builds it from the openssh source package)"
            )
        });
        fs::create_dir_all("/usr/local/lib").expect("mkdir /usr/local/lib");
        let dir = tempfile::Builder::new()
            .prefix("keyward-sk-test-")
            .tempdir_in("/usr/local/lib")
            .expect("temp dir under /usr/local/lib");
        fs::copy(&built, dir.path().join("sk-dummy.so")).expect("copy sk-dummy.so");
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("sk-dummy.so")
    }
}

/// `ssh-keygen -t TYPE -w PROVIDER` into `DIR/keys/NAME`, unencrypted.
fn sk_keygen(dir: &Path, provider: &Path, name: &str, kind: &str) -> Key {
    let keys = dir.join("keys");
    let pubs = dir.join("pub");
    fs::create_dir_all(&keys).expect("mkdir keys");
    fs::create_dir_all(&pubs).expect("mkdir pub");
    let private = keys.join(name);
    let comment = format!("{name}@keyward-test");
    run(clean_command(require_tool("ssh-keygen"), dir)
        .args(["-q", "-t", kind, "-N", "", "-C", &comment, "-w"])
        .arg(provider)
        .arg("-f")
        .arg(&private))
    .assert_success("ssh-keygen -t sk");
    let public = keys.join(format!("{name}.pub"));
    let pub_only = pubs.join(format!("{name}.pub"));
    fs::copy(&public, &pub_only).expect("copy .pub");
    Key {
        private,
        public,
        pub_only,
        comment,
    }
}

fn certify(dir: &Path, ca: &Key, key: &Key, principal: &str) {
    run(clean_command(require_tool("ssh-keygen"), dir)
        .arg("-q")
        .arg("-s")
        .arg(&ca.private)
        .args(["-I", "sk-cert", "-n", principal, "-V", "always:forever"])
        .arg(&key.public))
    .assert_success("ssh-keygen -s");
}

fn openssh_add(dir: &Path, socket: &Path, args: &[&str]) -> Output {
    run(clean_command(require_tool("ssh-add"), dir)
        .env("SSH_AUTH_SOCK", socket)
        .args(args))
}

/// Starts OpenSSH's `ssh-agent -D` on `DIR/openssh.sock`.
fn openssh_agent(dir: &Path) -> (std::process::Child, PathBuf) {
    let socket = dir.join("openssh.sock");
    let child = clean_command(require_tool("ssh-agent"), dir)
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ssh-agent");
    assert!(
        crate::util::poll_until(std::time::Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "ssh-agent never accepted"
    );
    (child, socket)
}

#[test]
fn security_keys_and_their_certificates_sign_through_the_provider() {
    let provider = Provider::install();
    let agent = Agent::start();
    let (mut openssh, openssh_socket) = openssh_agent(agent.dir());
    let ca = keygen(agent.dir(), "ca", crate::util::KeyType::Ed25519, "");
    let user = current_user();
    let mut keys = Vec::new();
    for (name, kind) in [("ecdsa-sk", "ecdsa-sk"), ("ed25519-sk", "ed25519-sk")] {
        let key = sk_keygen(agent.dir(), &provider.path(), name, kind);
        certify(agent.dir(), &ca, &key, &user);
        let file = key.private.to_str().expect("utf-8 path").to_owned();
        let provider_arg = provider.path().to_str().expect("utf-8 path").to_owned();
        let args = ["-S", provider_arg.as_str(), file.as_str()];
        let ours = agent.ssh_add(&args);
        let theirs = openssh_add(agent.dir(), &openssh_socket, &args);
        assert_eq!(
            (ours.status.code(), &ours.stderr),
            (theirs.status.code(), &theirs.stderr),
            "ssh-add -S: keyward (left) and ssh-agent (right)\nagent log:\n{}",
            agent.log()
        );
        ours.assert_success("ssh-add -S");
        assert!(ours.stderr.contains("Certificate added"), "{ours:#?}");
        keys.push(key);
    }
    for args in [&["-l"][..], &["-L"]] {
        let ours = agent.ssh_add(args);
        let theirs = openssh_add(agent.dir(), &openssh_socket, args);
        assert_eq!(ours.stdout, theirs.stdout, "ssh-add {args:?}");
        assert_eq!(ours.stdout.lines().count(), 4, "{ours:#?}");
    }
    let listed = agent.ssh_add(&["-l"]);
    for kind in [
        "(ECDSA-SK)",
        "(ECDSA-SK-CERT)",
        "(ED25519-SK)",
        "(ED25519-SK-CERT)",
    ] {
        assert!(listed.stdout.contains(kind), "{kind}: {listed:#?}");
    }
    // Signatures made through the provider, verified by OpenSSH.
    for key in &keys {
        assert_agent_signs(&agent, key);
    }
    // Locking seals the keys with their provider; after the unlock they sign again.
    agent
        .ssh_add_askpass("pw", &["-x"])
        .assert_success("ssh-add -x");
    agent
        .ssh_add_askpass("pw", &["-X"])
        .assert_success("ssh-add -X");
    assert_agent_signs(&agent, &keys[1]);
    // An agent-only login with each certificate, to an sshd that trusts the CA.
    let host = Host::alone(
        agent.dir(),
        "keyward-sk-host",
        "",
        &format!("TrustedUserCAKeys {}\n", ca.public.display()),
    );
    let out = host.login(&agent, agent.dir(), &[], "echo ok");
    assert!(
        out.status.success() && out.stdout.trim() == "ok",
        "security-key certificate login: {out:#?}\nagent log:\n{}",
        agent.log()
    );
    let _ = openssh.kill();
    let _ = openssh.wait();
}

#[test]
fn providers_outside_the_allow_list_are_refused() {
    let provider = Provider::install();
    let agent = Agent::start();
    let key = sk_keygen(agent.dir(), &provider.path(), "sk", "ed25519-sk");
    let file = key.private.to_str().expect("utf-8 path");
    // The same library outside the allowed directories.
    let elsewhere = agent.dir().join("sk-dummy.so");
    fs::copy(provider.path(), &elsewhere).expect("copy provider");
    let out = agent.ssh_add(&["-S", elsewhere.to_str().expect("utf-8 path"), file]);
    out.assert_failure("ssh-add -S with a provider outside the allow-list");
    assert!(agent.log().contains("is not allowed"), "{}", agent.log());
    // A symbolic link inside an allowed directory to a library outside it: the real path counts.
    let link = provider.dir.path().join("link.so");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
    let out = agent.ssh_add(&["-S", link.to_str().expect("utf-8 path"), file]);
    out.assert_failure("ssh-add -S through a symlink out of the allow-list");
    crate::util::assert_no_identities(&agent);
    // Positive control: the allowed path adds.
    agent.add(&key, &["-S", provider.path().to_str().expect("utf-8 path")]);
}

/// The built-in provider (ssh-add's default) is OpenSSH's libfido2 code in its `ssh-sk-helper`:
/// keyward runs that helper, so a key added without `-S` behaves as with ssh-agent. This machine
/// has no security key plugged in, so both agents take the key and neither can sign; keyward's
/// log shows the answer came from libfido2 through the helper ("no security key device found").
#[test]
fn the_builtin_provider_goes_through_openssh_ssh_sk_helper() {
    let provider = Provider::install();
    let agent = Agent::start();
    let (mut openssh, openssh_socket) = openssh_agent(agent.dir());
    let key = sk_keygen(agent.dir(), &provider.path(), "sk", "ecdsa-sk");
    let file = key.private.to_str().expect("utf-8 path");
    let ours = agent.ssh_add(&[file]);
    let theirs = openssh_add(agent.dir(), &openssh_socket, &[file]);
    assert_eq!(
        (ours.status.code(), &ours.stderr),
        (theirs.status.code(), &theirs.stderr)
    );
    ours.assert_success("ssh-add with the built-in provider");
    let data = crate::util::data_file(agent.dir());
    let sign = |socket: &Path| {
        run(clean_command(require_tool("ssh-keygen"), agent.dir())
            .env("SSH_AUTH_SOCK", socket)
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&key.pub_only)
            .arg(&data))
    };
    let ours = sign(agent.socket());
    let theirs = sign(&openssh_socket);
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "{ours:#?} {theirs:#?}"
    );
    ours.assert_failure("signing with no security key present");
    assert!(
        agent.log().contains("no security key device found"),
        "{}",
        agent.log()
    );
    let _ = openssh.kill();
    let _ = openssh.wait();
}
