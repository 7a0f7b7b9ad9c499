//! The far end of a forwarded agent (the real `ssh -A` into a test sshd) may not LOCK the agent
//! with a password the user does not know, nor UNLOCK what the user locked, and never gets a
//! legacy SHA-1 `ssh-rsa` signature (the `rsa` crate's code, RUSTSEC-2023-0071), even of an
//! `ssh-add`ed RSA key that gets one locally; an `rsa-sha2-256` signature of the same key still
//! works over the forwarded agent. The refusals are audited with the reason.

use crate::env::Env;
use crate::policy_exe_fork::hex;
use crate::policy_hosts::{Hosts, audit_records, exe_path, stored_key};
use crate::util::{KeyType, keygen};
use crate::wire::{Client, SSH_AGENT_SUCCESS, SSH2_AGENT_SIGN_RESPONSE, parse_sign_response};

/// Run on host A: speaks the agent protocol to the forwarded socket (`SSH_AUTH_SOCK`) and to
/// the local agent socket directly (`argv[1]`, the same machine: what the user does locally),
/// printing `step=REPLY_TYPE` for each step.
const REMOTE: &str = r#"
import os, socket, struct, sys

def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s

def request(s, body):
    s.sendall(struct.pack(">I", len(body)) + body)
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL)

def string(b):
    return struct.pack(">I", len(b)) + b

def sign(s, flags):
    return request(s, bytes([13]) + string(blob) + string(b"far end") + struct.pack(">I", flags))[0]

local, blob = sys.argv[1], bytes.fromhex(sys.argv[2])
far = connect(os.environ["SSH_AUTH_SOCK"])
near = connect(local)
print("far_lock=%d" % request(far, bytes([22]) + string(b"not-the-users"))[0])
print("near_sha1=%d" % sign(near, 0))
print("far_sha1=%d" % sign(far, 0))
print("far_sha256=%d" % sign(far, 2))
print("near_lock=%d" % request(near, bytes([22]) + string(b"users-password"))[0])
print("far_unlock=%d" % request(far, bytes([23]) + string(b"users-password"))[0])
print("near_unlock=%d" % request(near, bytes([23]) + string(b"users-password"))[0])
"#;

#[test]
fn forwarded_connection_cannot_lock_unlock_or_get_sha1() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let login = stored_key(&env, "login", "ed25519");
    let hosts = Hosts::new(env.root(), &[&login.line]);
    let rsa = keygen(env.root(), "legacy", KeyType::Rsa(2048), "");
    agent.add(&rsa, &[]);
    let blob = rsa.blob();

    let script = env.root().join("far-end.py");
    std::fs::write(&script, REMOTE).expect("write remote script");
    let remote = format!(
        "{python} {script} {local} {blob}",
        python = exe_path("python3"),
        script = script.display(),
        local = env.socket().display(),
        blob = hex(&blob),
    );
    let out = hosts.ssh(&agent, &hosts.a, &["-A"], &remote);
    let step = |name: &str| -> u8 {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} step: {out:#?}\nagent log:\n{}", agent.log()))
    };
    let (ok, failure, signed) = (SSH_AGENT_SUCCESS, 5, SSH2_AGENT_SIGN_RESPONSE);
    assert_eq!(step("far_lock"), failure, "{out:#?}");
    assert_eq!(
        step("near_sha1"),
        signed,
        "local peers keep ssh-rsa: {out:#?}"
    );
    assert_eq!(step("far_sha1"), failure, "{out:#?}");
    assert_eq!(step("far_sha256"), signed, "{out:#?}");
    assert_eq!(step("near_lock"), ok, "{out:#?}");
    assert_eq!(step("far_unlock"), failure, "{out:#?}");
    assert_eq!(step("near_unlock"), ok, "{out:#?}");

    // The user lost nothing: not locked, both keys served, SHA-1 still signed locally.
    let mut client = Client::connect(agent.socket());
    assert_eq!(client.identities().len(), 2);
    let (alg, _) = parse_sign_response(&client.sign(&blob, b"local", 0));
    assert_eq!(alg, "ssh-rsa");

    let records = audit_records(&env, None);
    for action in ["lock", "unlock"] {
        let refused = records
            .iter()
            .find(|r| r["action"] == action && r["outcome"] == "refused")
            .unwrap_or_else(|| panic!("no refused {action} record: {records:#?}"));
        assert_eq!(
            refused["detail"]["reason"], "over a forwarded connection",
            "{refused}"
        );
    }
    let sha1 = records
        .iter()
        .find(|r| {
            r["action"] == "sign"
                && r["outcome"] == "refused"
                && r["detail"]["algorithm"] == "ssh-rsa"
        })
        .unwrap_or_else(|| panic!("no refused ssh-rsa record: {records:#?}"));
    assert_eq!(sha1["detail"]["forwarded"], true, "{sha1}");
    assert!(
        sha1["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("forwarded")),
        "{sha1}"
    );
}
