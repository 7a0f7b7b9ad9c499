//! Adding, listing and removing keys with the real `ssh-add`, compared against what
//! `ssh-keygen` says about the same key files.

use crate::util::{Agent, KeyType, assert_no_identities, clean_command, keygen, run};
use crate::wire::{
    Client, Msg, SSH_AGENT_FAILURE, SSH_AGENT_SUCCESS, SSH_AGENTC_REMOVE_ALL_RSA_IDENTITIES,
    SSH2_AGENTC_REMOVE_ALL_IDENTITIES,
};

const PASSPHRASE: &str = "correct horse battery staple";

/// `ssh-keygen [-E md5] -lf FILE`, trimmed.
fn keygen_fingerprint(agent: &Agent, file: &std::path::Path, md5: bool) -> String {
    let mut cmd = clean_command("ssh-keygen", agent.dir());
    if md5 {
        cmd.args(["-E", "md5"]);
    }
    let out = run(cmd.arg("-lf").arg(file));
    out.assert_success("ssh-keygen -lf");
    out.stdout.trim().to_owned()
}

/// Bits, fingerprint and `(TYPE)` of a fingerprint line; the comment may differ in spacing.
fn fingerprint_fields(line: &str) -> (String, String, String) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() >= 3, "unexpected fingerprint line {line:?}");
    (
        fields[0].to_owned(),
        fields[1].to_owned(),
        fields[fields.len() - 1].to_owned(),
    )
}

/// The key type and base64 blob of a public key line.
fn key_fields(line: &str) -> (String, String) {
    let mut it = line.split_whitespace();
    (
        it.next().expect("key type").to_owned(),
        it.next().expect("key blob").to_owned(),
    )
}

/// Adds one key of `kind` (encrypted when `passphrase` is non-empty) and checks `-l`, `-E md5
/// -l` and `-L` against `ssh-keygen`.
fn add_and_list(kind: KeyType, passphrase: &str) {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", kind, passphrase);
    let file = key.private.to_str().expect("utf-8 path");
    let added = if passphrase.is_empty() {
        agent.ssh_add(&[file])
    } else {
        agent.ssh_add_askpass(passphrase, &[file])
    };
    added.assert_success("ssh-add");

    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l");
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one identity expected: {listed:#?}");
    let expected = keygen_fingerprint(&agent, &key.public, false);
    assert_eq!(fingerprint_fields(lines[0]), fingerprint_fields(&expected));
    assert!(
        lines[0].contains(&key.comment),
        "comment kept: {}",
        lines[0]
    );

    let md5 = agent.ssh_add(&["-E", "md5", "-l"]);
    md5.assert_success("ssh-add -E md5 -l");
    let expected_md5 = keygen_fingerprint(&agent, &key.public, true);
    assert!(expected_md5.contains("MD5:"), "{expected_md5}");
    assert_eq!(
        fingerprint_fields(md5.stdout.trim()),
        fingerprint_fields(&expected_md5)
    );

    let public = agent.ssh_add(&["-L"]);
    public.assert_success("ssh-add -L");
    assert_eq!(
        key_fields(public.stdout.trim()),
        key_fields(&key.public_line())
    );
}

#[test]
fn add_rsa_2048() {
    add_and_list(KeyType::Rsa(2048), "");
}

#[test]
fn add_rsa_3072() {
    add_and_list(KeyType::Rsa(3072), "");
}

#[test]
fn add_rsa_4096() {
    add_and_list(KeyType::Rsa(4096), "");
}

#[test]
fn add_ed25519() {
    add_and_list(KeyType::Ed25519, "");
}

#[test]
fn add_ecdsa_p256() {
    add_and_list(KeyType::Ecdsa(256), "");
}

#[test]
fn add_ecdsa_p384() {
    add_and_list(KeyType::Ecdsa(384), "");
}

#[test]
fn add_encrypted_rsa_2048() {
    add_and_list(KeyType::Rsa(2048), PASSPHRASE);
}

#[test]
fn add_encrypted_rsa_4096() {
    add_and_list(KeyType::Rsa(4096), PASSPHRASE);
}

#[test]
fn add_encrypted_ed25519() {
    add_and_list(KeyType::Ed25519, PASSPHRASE);
}

#[test]
fn add_encrypted_ecdsa_p256() {
    add_and_list(KeyType::Ecdsa(256), PASSPHRASE);
}

#[test]
fn empty_agent_lists_no_identities() {
    let agent = Agent::start();
    assert_no_identities(&agent);
}

#[test]
fn remove_one_key_keeps_the_others() {
    let agent = Agent::start();
    let a = keygen(agent.dir(), "a", KeyType::Ed25519, "");
    let b = keygen(agent.dir(), "b", KeyType::Rsa(2048), "");
    agent.add(&a, &[]);
    agent.add(&b, &[]);
    assert_eq!(agent.ssh_add(&["-l"]).stdout.lines().count(), 2);

    agent
        .ssh_add(&["-d", a.public.to_str().expect("utf-8")])
        .assert_success("ssh-add -d");
    let listed = agent.ssh_add(&["-L"]);
    listed.assert_success("ssh-add -L");
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{listed:#?}");
    assert_eq!(key_fields(lines[0]), key_fields(&b.public_line()));

    // Removing a key that is not loaded fails.
    agent
        .ssh_add(&["-d", a.public.to_str().expect("utf-8")])
        .assert_failure("ssh-add -d of a key that is gone");
}

#[test]
fn remove_all_with_ssh_add() {
    let agent = Agent::start();
    for (name, kind) in [("a", KeyType::Ed25519), ("b", KeyType::Ecdsa(256))] {
        agent.add(&keygen(agent.dir(), name, kind, ""), &[]);
    }
    let out = agent.ssh_add(&["-D"]);
    out.assert_success("ssh-add -D");
    assert!(
        out.stderr.contains("All identities removed"),
        "ssh-add -D output: {out:#?}"
    );
    assert_no_identities(&agent);
}

/// `ssh-add -D` sends message 19 and then the legacy message 9 on one connection: both must be
/// answered and the connection must stay usable.
#[test]
fn remove_all_then_legacy_remove_all_on_one_connection() {
    let agent = Agent::start();
    agent.add(&keygen(agent.dir(), "a", KeyType::Ed25519, ""), &[]);

    let mut client = Client::connect(agent.socket());
    assert_eq!(client.identities().len(), 1);
    let reply = client.request(&Msg::new(SSH2_AGENTC_REMOVE_ALL_IDENTITIES));
    assert_eq!(reply, vec![SSH_AGENT_SUCCESS], "reply to message 19");
    let legacy = client.request(&Msg::new(SSH_AGENTC_REMOVE_ALL_RSA_IDENTITIES));
    assert!(
        legacy == vec![SSH_AGENT_FAILURE] || legacy == vec![SSH_AGENT_SUCCESS],
        "reply to legacy message 9: {legacy:?}"
    );
    assert!(client.identities().is_empty(), "all keys removed");
}
