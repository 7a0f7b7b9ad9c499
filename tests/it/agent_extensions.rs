//! Agent extensions with a raw client: `query`, `session-bind@openssh.com` (signature checked,
//! at most 16 bindings per connection) and unknown extensions.

use rsa::signature::Signer;
use ssh_key::Signature;
use ssh_key::private::Ed25519Keypair;

use crate::util::Agent;
use crate::wire::{
    Client, Msg, SSH_AGENT_EXTENSION_RESPONSE, SSH_AGENT_SUCCESS, SSH_AGENTC_EXTENSION, is_failure,
};

const SESSION_BIND: &str = "session-bind@openssh.com";

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn query_lists_session_bind() {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    let reply = client.request(&Msg::new(SSH_AGENTC_EXTENSION).string("query"));
    assert!(
        reply[0] == SSH_AGENT_SUCCESS || reply[0] == SSH_AGENT_EXTENSION_RESPONSE,
        "query must succeed: {reply:?}"
    );
    assert!(
        contains(&reply, SESSION_BIND.as_bytes()),
        "query reply must list {SESSION_BIND}: {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(client.identities().is_empty(), "connection stays open");
}

#[test]
fn unknown_extension_fails_and_connection_stays_open() {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    let reply = client.request(
        &Msg::new(SSH_AGENTC_EXTENSION)
            .string("bogus-extension@keyward.test")
            .string("payload"),
    );
    assert!(
        is_failure(reply[0]),
        "unknown extension must fail: {reply:?}"
    );
    assert!(client.identities().is_empty(), "connection stays open");
}

/// A host key and a session-bind request for `session_id` signed by it (or by `signer`).
struct Host {
    key: Ed25519Keypair,
}

impl Host {
    fn new() -> Host {
        Host {
            key: Ed25519Keypair::random(&mut rand_core::OsRng),
        }
    }

    fn blob(&self) -> Vec<u8> {
        Msg::default()
            .string("ssh-ed25519")
            .string(self.key.public.0)
            .0
    }

    fn bind(&self, session_id: &[u8], signer: &Ed25519Keypair, forwarding: bool) -> Msg {
        let signature: Signature = signer.sign(session_id);
        let sig_blob = Msg::default()
            .string("ssh-ed25519")
            .string(signature.as_bytes())
            .0;
        Msg::new(SSH_AGENTC_EXTENSION)
            .string(SESSION_BIND)
            .string(self.blob())
            .string(session_id)
            .string(sig_blob)
            .byte(u8::from(forwarding))
    }
}

#[test]
fn valid_session_bind_succeeds() {
    let agent = Agent::start();
    let host = Host::new();
    let mut client = Client::connect(agent.socket());
    let reply = client.request(&host.bind(&[7u8; 32], &host.key, false));
    assert_eq!(reply, vec![SSH_AGENT_SUCCESS], "valid session-bind");
    assert!(client.identities().is_empty(), "connection stays open");
}

#[test]
fn session_bind_with_a_wrong_signature_fails() {
    let agent = Agent::start();
    let host = Host::new();
    let impostor = Ed25519Keypair::random(&mut rand_core::OsRng);
    let mut client = Client::connect(agent.socket());
    let reply = client.request(&host.bind(&[7u8; 32], &impostor, false));
    assert!(
        is_failure(reply[0]),
        "session-bind signed by another key: {reply:?}"
    );
    assert!(client.identities().is_empty(), "connection stays open");
}

#[test]
fn malformed_session_bind_fails_and_connection_stays_open() {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    let reply = client.request(
        &Msg::new(SSH_AGENTC_EXTENSION)
            .string(SESSION_BIND)
            .raw(b"\x00\x00\x10\x00not a host key"),
    );
    assert!(is_failure(reply[0]), "malformed session-bind: {reply:?}");
    let empty = client.request(&Msg::new(SSH_AGENTC_EXTENSION).string(SESSION_BIND));
    assert!(
        is_failure(empty[0]),
        "session-bind without a body: {empty:?}"
    );
    assert!(client.identities().is_empty(), "connection stays open");
}

/// At most 16 session bindings per connection (OpenSSH's limit); the limit is per connection.
#[test]
fn at_most_16_session_binds_per_connection() {
    let agent = Agent::start();
    let host = Host::new();
    let mut client = Client::connect(agent.socket());
    for i in 0..16u8 {
        let reply = client.request(&host.bind(&[i; 32], &host.key, true));
        assert_eq!(reply, vec![SSH_AGENT_SUCCESS], "session-bind #{}", i + 1);
    }
    let reply = client.request(&host.bind(&[99u8; 32], &host.key, true));
    assert!(
        is_failure(reply[0]),
        "17th session-bind must fail: {reply:?}"
    );
    assert!(client.identities().is_empty(), "connection stays open");

    let mut fresh = Client::connect(agent.socket());
    let reply = fresh.request(&host.bind(&[99u8; 32], &host.key, true));
    assert_eq!(
        reply,
        vec![SSH_AGENT_SUCCESS],
        "a new connection starts with no bindings"
    );
}
