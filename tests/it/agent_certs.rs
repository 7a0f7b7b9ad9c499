//! OpenSSH certificates made by `ssh-keygen -s` and added with `ssh-add` (key and `-cert.pub`
//! beside it), for every key type, held to OpenSSH's own `ssh-agent` run side by side on the same
//! files: the same `ssh-add -l`/`-L`/`-T`/`-d` commands against both agents give the same output.
//! An agent-only login to an sshd that trusts the CA (`TrustedUserCAKeys`) proves the certificate
//! signs, with its critical options intact.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::sshd::{Host, current_user};
use crate::util::{
    Agent, Key, KeyType, Output, clean_command, keygen, poll_until, require_tool, run,
};
use crate::wire::{Client, Msg, SSH_AGENT_FAILURE, SSH_AGENT_SUCCESS, SSH2_AGENTC_ADD_IDENTITY};

/// OpenSSH's `ssh-agent -D` on its own socket; killed on drop.
struct OpenSshAgent {
    child: Child,
    socket: PathBuf,
}

impl OpenSshAgent {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("openssh-agent.sock");
        let child = clean_command(require_tool("ssh-agent"), dir)
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        assert!(
            poll_until(Duration::from_secs(30), || UnixStream::connect(&socket)
                .is_ok()),
            "ssh-agent never accepted on {}",
            socket.display()
        );
        Self { child, socket }
    }

    fn ssh_add(&self, dir: &Path, args: &[&str]) -> Output {
        run(clean_command(require_tool("ssh-add"), dir)
            .env("SSH_AUTH_SOCK", &self.socket)
            .args(args))
    }
}

impl Drop for OpenSshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs `key`'s public key with `ca` into `KEY-cert.pub`, with `ssh-keygen -s` options `opts`.
fn certify(dir: &Path, ca: &Key, key: &Key, opts: &[&str]) -> PathBuf {
    let out = run(clean_command(require_tool("ssh-keygen"), dir)
        .arg("-q")
        .arg("-s")
        .arg(&ca.private)
        .args(["-I", "keyward-test-cert"])
        .args(opts)
        .arg(&key.public));
    out.assert_success("ssh-keygen -s");
    let cert = PathBuf::from(format!("{}-cert.pub", key.private.display()));
    assert!(cert.is_file(), "no certificate at {}", cert.display());
    cert
}

/// The key types `ssh -Q key` lists that keyward signs with, and their certificate options: one
/// valid forever with critical options and extensions, the others with OpenSSH's defaults.
fn cases() -> Vec<(&'static str, KeyType, Vec<&'static str>)> {
    vec![
        (
            "ed25519",
            KeyType::Ed25519,
            vec![
                "-V",
                "always:forever",
                "-O",
                "force-command=/bin/true",
                "-O",
                "source-address=127.0.0.1/32,::1",
                "-O",
                "no-port-forwarding",
                "-O",
                "extension:custom@keyward.test=value",
                "-n",
                "alice,bob",
            ],
        ),
        ("rsa", KeyType::Rsa(2048), vec!["-n", "alice"]),
        (
            "p256",
            KeyType::Ecdsa(256),
            vec!["-V", "-1d:+52w", "-n", "alice"],
        ),
        ("p384", KeyType::Ecdsa(384), vec!["-V", "always:forever"]),
        (
            "p521",
            KeyType::Ecdsa(521),
            vec!["-V", "always:forever", "-O", "verify-required"],
        ),
        ("dsa", KeyType::Dsa, vec!["-n", "alice"]),
    ]
}

/// Runs the same `ssh-add ARGS` against keyward and ssh-agent; both must give the same status,
/// standard output and standard error (file names are the same for both).
fn same(agent: &Agent, openssh: &OpenSshAgent, args: &[&str]) -> Output {
    let ours = agent.ssh_add(args);
    let theirs = openssh.ssh_add(agent.dir(), args);
    assert_eq!(
        (ours.status.code(), &ours.stdout, &ours.stderr),
        (theirs.status.code(), &theirs.stdout, &theirs.stderr),
        "ssh-add {args:?}: keyward (left) differs from ssh-agent (right)\nagent log:\n{}",
        agent.log()
    );
    ours
}

#[test]
fn certificates_of_every_type_behave_as_with_ssh_agent() {
    let agent = Agent::start();
    let openssh = OpenSshAgent::start(agent.dir());
    let ca = keygen(agent.dir(), "ca", KeyType::Ed25519, "");
    let mut added = Vec::new();
    for (i, (name, kind, opts)) in cases().into_iter().enumerate() {
        let key = keygen(agent.dir(), name, kind, "");
        let cert = certify(agent.dir(), &ca, &key, &opts);
        let file = key.private.to_str().expect("utf-8 path").to_owned();
        // With and without constraints (-c only where no signature is asked for below).
        let flags: &[&str] = match i % 3 {
            0 => &[],
            1 => &["-t", "3600"],
            _ => &["-c"],
        };
        let mut args = flags.to_vec();
        args.push(&file);
        let out = same(&agent, &openssh, &args);
        assert!(out.stderr.contains("Certificate added"), "{out:#?}");
        added.push((key, cert, flags.contains(&"-c")));
    }
    let listed = same(&agent, &openssh, &["-l"]);
    for kind in [
        "(ED25519-CERT)",
        "(RSA-CERT)",
        "(ECDSA-CERT)",
        "(DSA-CERT)",
        "(ECDSA)",
    ] {
        assert!(listed.stdout.contains(kind), "{kind} listed: {listed:#?}");
    }
    assert_eq!(listed.stdout.lines().count(), 12, "{listed:#?}");
    let public = same(&agent, &openssh, &["-L"]);
    // Each certificate comes back byte for byte as ssh-keygen wrote it (forever validity,
    // critical options and extensions included).
    for (_, cert, _) in &added {
        let text = fs::read_to_string(cert).expect("read cert");
        let mut fields = text.split_whitespace();
        let line = format!(
            "{} {}",
            fields.next().expect("type"),
            fields.next().expect("blob")
        );
        assert!(public.stdout.contains(&line), "{line} in {public:#?}");
    }
    // Locked and unlocked, every certificate still signs (its key was sealed and reopened).
    for flag in ["-x", "-X"] {
        agent.ssh_add_askpass("pw", &[flag]).assert_success(flag);
    }
    for (key, cert, confirm) in &added {
        if !confirm {
            let cert = cert.to_str().expect("utf-8 path");
            same(&agent, &openssh, &["-T", cert]);
            let public = key.public.to_str().expect("utf-8 path");
            same(&agent, &openssh, &["-T", public]);
        }
    }
    // -d of a certificate alone removes just it; -d of a key removes the key and the
    // certificate beside it (ssh-add asks for both).
    let (first, first_cert, _) = &added[0];
    same(
        &agent,
        &openssh,
        &["-d", first_cert.to_str().expect("utf-8 path")],
    );
    let after = same(&agent, &openssh, &["-l"]);
    assert_eq!(after.stdout.lines().count(), 11, "{after:#?}");
    same(
        &agent,
        &openssh,
        &["-d", added[1].0.private.to_str().expect("utf-8 path")],
    );
    let after = same(&agent, &openssh, &["-l"]);
    assert_eq!(after.stdout.lines().count(), 9, "{after:#?}");
    // Removing what is gone fails alike.
    same(
        &agent,
        &openssh,
        &["-d", first_cert.to_str().expect("utf-8 path")],
    );
    same(
        &agent,
        &openssh,
        &["-d", first.private.to_str().expect("utf-8 path")],
    );
    same(&agent, &openssh, &["-D"]);
    same(&agent, &openssh, &["-l"]);
}

/// An add-identity message for an Ed25519 certificate `cert_blob` with the private key `key`.
fn add_cert_msg(cert_blob: &[u8], key: &Key) -> Msg {
    let private = ssh_key::PrivateKey::read_openssh_file(&key.private).expect("read key");
    let ssh_key::private::KeypairData::Ed25519(pair) = private.key_data() else {
        panic!("an Ed25519 key");
    };
    let public = pair.public.0;
    let mut secret = pair.private.to_bytes().to_vec();
    secret.extend_from_slice(&public);
    Msg::new(SSH2_AGENTC_ADD_IDENTITY)
        .string("ssh-ed25519-cert-v01@openssh.com")
        .string(cert_blob)
        .string(public)
        .string(&secret)
        .string("comment")
}

/// A certificate whose CA signature does not verify, or that certifies another key than the one
/// sent with it, is refused as OpenSSH's agent refuses it, and leaves nothing behind. (`ssh-add`
/// itself would not send such a certificate, so the messages are written here.)
#[test]
fn broken_or_mismatched_certificates_are_refused_as_by_ssh_agent() {
    let agent = Agent::start();
    let openssh = OpenSshAgent::start(agent.dir());
    let ca = keygen(agent.dir(), "ca", KeyType::Ed25519, "");
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    let other = keygen(agent.dir(), "other", KeyType::Ed25519, "");
    let cert = certify(agent.dir(), &ca, &key, &["-n", "alice"]);
    let text = fs::read_to_string(&cert).expect("read cert");
    let blob = base64_decode(text.split_whitespace().nth(1).expect("blob"));
    let mut tampered = blob.clone();
    // The key id is signed: flip a bit in it.
    let at = tampered
        .windows(17)
        .position(|w| w == b"keyward-test-cert")
        .expect("key id in blob");
    tampered[at] ^= 1;
    for (msg, expected) in [
        (add_cert_msg(&tampered, &key), SSH_AGENT_FAILURE),
        (add_cert_msg(&blob, &other), SSH_AGENT_FAILURE),
        (
            add_cert_msg(&blob[..blob.len() - 1], &key),
            SSH_AGENT_FAILURE,
        ),
        (add_cert_msg(&blob, &key), SSH_AGENT_SUCCESS),
    ] {
        let ours = Client::connect(agent.socket()).request(&msg);
        let theirs = Client::connect(&openssh.socket).request(&msg);
        assert_eq!(ours, theirs, "keyward (left) and ssh-agent (right) differ");
        assert_eq!(ours, [expected], "agent log:\n{}", agent.log());
    }
    assert!(agent.log().contains("CA signature"), "{}", agent.log());
    let listed = same(&agent, &openssh, &["-L"]);
    assert_eq!(
        listed.stdout.lines().count(),
        1,
        "the good certificate only"
    );
    assert!(
        listed
            .stdout
            .contains(text.split_whitespace().nth(1).expect("blob"))
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64ct::Encoding;
    base64ct::Base64::decode_vec(text).expect("base64")
}

/// An sshd that accepts users certified by `ca` (and no `authorized_keys`), allowing DSA.
fn ca_host(dir: &Path, ca: &Key) -> Host {
    Host::alone(
        dir,
        "keyward-cert-host",
        "",
        &format!(
            "TrustedUserCAKeys {}\nPubkeyAcceptedAlgorithms +ssh-dss,ssh-dss-cert-v01@openssh.com\n",
            ca.public.display()
        ),
    )
}

/// An agent-only login with each type's certificate; the forced command of the forever
/// certificate runs instead of the one asked for, so its critical options reached sshd intact.
#[test]
fn certificates_log_in_to_an_sshd_that_trusts_the_ca() {
    let agent = Agent::start();
    let ca = keygen(agent.dir(), "ca", KeyType::Ed25519, "");
    let user = current_user();
    let host = ca_host(agent.dir(), &ca);
    let extra = ["PubkeyAcceptedAlgorithms=+ssh-dss,ssh-dss-cert-v01@openssh.com".to_owned()];
    for (name, kind, forced) in [
        ("ed25519", KeyType::Ed25519, true),
        ("rsa", KeyType::Rsa(2048), false),
        ("p256", KeyType::Ecdsa(256), false),
        ("p521", KeyType::Ecdsa(521), true),
        ("dsa", KeyType::Dsa, false),
    ] {
        let key = keygen(agent.dir(), name, kind, "");
        let mut opts = vec!["-n", &user];
        if forced {
            opts.extend(["-V", "always:forever", "-O", "force-command=echo forced"]);
        }
        certify(agent.dir(), &ca, &key, &opts);
        // The plain key alone is not authorized: denied.
        let file = key.private.to_str().expect("utf-8 path");
        agent.ssh_add(&["-k", file]).assert_success("ssh-add -k");
        let out = host.login(&agent, agent.dir(), &extra, "echo ok");
        out.assert_failure("login with the plain key only");
        // With its certificate: logged in.
        agent.ssh_add(&[file]).assert_success("ssh-add");
        let out = host.login(&agent, agent.dir(), &extra, "echo ok");
        let expected = if forced { "forced" } else { "ok" };
        assert!(
            out.status.success() && out.stdout.trim() == expected,
            "{name} certificate login: {out:#?}\nagent log:\n{}",
            agent.log()
        );
        agent.ssh_add(&["-D"]).assert_success("ssh-add -D");
    }
}
