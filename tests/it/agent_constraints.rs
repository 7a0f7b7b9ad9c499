//! Key constraints: lifetimes (`ssh-add -t`, `keyward-agent -t`), confirmation through an askpass
//! program (`ssh-add -c`), and adds with constraints the agent does not know, which must be
//! refused as a whole.

use std::fs;
use std::time::{Duration, Instant};

use ssh_key::private::Ed25519Keypair;

use crate::util::{
    Agent, AgentOpts, KeyType, assert_agent_refuses, assert_agent_signs, keygen, poll_until,
    write_script,
};
use crate::wire::{
    Client, Msg, SSH_AGENT_FAILURE, SSH_AGENT_SUCCESS, SSH2_AGENTC_ADD_ID_CONSTRAINED,
    SSH2_AGENTC_ADD_IDENTITY,
};

/// How long to wait for an expiring key to disappear before calling it a failure (a hang guard,
/// not a timing assertion).
const EXPIRY_GUARD: Duration = Duration::from_secs(30);

fn identity_count(agent: &Agent) -> usize {
    let mut client = Client::connect(agent.socket());
    client.identities().len()
}

/// A key added with `-t 2` signs right after it is added, is still there well before two seconds
/// have passed, and is gone (and refused) afterwards.
#[test]
fn ssh_add_lifetime_expires_key() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    let before_add = Instant::now();
    agent.add(&key, &["-t", "2"]);
    assert_agent_signs(&agent, &key);

    assert!(
        poll_until(EXPIRY_GUARD, || identity_count(&agent) == 0),
        "a key added with -t 2 was still listed after {EXPIRY_GUARD:?}"
    );
    let gone_after = before_add.elapsed();
    assert!(
        gone_after >= Duration::from_millis(1500),
        "a key added with -t 2 vanished after only {gone_after:?}"
    );
    assert_agent_refuses(&agent, &key);
}

/// `keyward-agent -t 2` applies to keys added without a lifetime only.
#[test]
fn agent_default_lifetime_applies_to_keys_without_one() {
    let agent = Agent::start_args(&["-t", "2"]);
    let short = keygen(agent.dir(), "short", KeyType::Ed25519, "");
    let long = keygen(agent.dir(), "long", KeyType::Ecdsa(256), "");
    let before_add = Instant::now();
    agent.add(&short, &[]);
    agent.add(&long, &["-t", "600"]);
    assert_eq!(identity_count(&agent), 2);

    assert!(
        poll_until(EXPIRY_GUARD, || identity_count(&agent) == 1),
        "the key without a lifetime did not expire under -t 2"
    );
    assert!(before_add.elapsed() >= Duration::from_millis(1500));
    assert_agent_refuses(&agent, &short);
    assert_agent_signs(&agent, &long);
}

fn confirm_case(use_env: bool, answer: &str, code: i32, expect_signed: bool) {
    let probe = tempfile::tempdir().expect("temp dir");
    let dir = probe.path();
    let record = dir.join("askpass.record");
    let script = write_script(
        dir,
        "askpass",
        &format!(
            "printf '%s|%s\\n' \"$SSH_ASKPASS_PROMPT\" \"$1\" >> '{}'\nprintf '%s' '{answer}'\nexit {code}",
            record.display()
        ),
    );
    let script = script.to_str().expect("utf-8").to_owned();
    let opts = if use_env {
        AgentOpts {
            args: Vec::new(),
            env: vec![("SSH_ASKPASS".to_owned(), script)],
        }
    } else {
        AgentOpts {
            args: vec!["--askpass".to_owned(), script],
            env: Vec::new(),
        }
    };
    let agent = Agent::start_with(&opts);
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &["-c"]);
    if expect_signed {
        assert_agent_signs(&agent, &key);
    } else {
        assert_agent_refuses(&agent, &key);
    }
    let asked = fs::read_to_string(&record).unwrap_or_default();
    let first = asked.lines().next().unwrap_or_else(|| {
        panic!(
            "the askpass program was never run; agent log:\n{}",
            agent.log()
        )
    });
    let (prompt_kind, prompt) = first.split_once('|').expect("record format");
    assert_eq!(
        prompt_kind, "confirm",
        "SSH_ASKPASS_PROMPT for a confirm key"
    );
    assert!(!prompt.is_empty(), "the prompt is passed as argv[1]");
}

#[test]
fn confirm_approved_by_askpass_flag() {
    confirm_case(false, "yes", 0, true);
}

#[test]
fn confirm_approved_by_silent_askpass() {
    confirm_case(false, "", 0, true);
}

#[test]
fn confirm_approved_by_env_askpass() {
    confirm_case(true, "yes", 0, true);
}

#[test]
fn confirm_denied_by_exit_status() {
    confirm_case(false, "", 1, false);
}

#[test]
fn confirm_denied_by_answer_other_than_yes() {
    confirm_case(false, "no", 0, false);
}

#[test]
fn confirm_refused_when_askpass_missing() {
    let agent = Agent::start_args(&["--askpass", "/nonexistent/keyward-askpass"]);
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &["-c"]);
    assert_agent_refuses(&agent, &key);
}

/// An Ed25519 key encoded for an add request, and its public blob.
fn ed25519_add_body() -> (Msg, Vec<u8>) {
    let keypair = Ed25519Keypair::random(&mut rand_core::OsRng);
    let public = keypair.public.0;
    let body = Msg::default()
        .string("ssh-ed25519")
        .string(public)
        .string(keypair.to_bytes())
        .string("raw@keyward-test");
    let blob = Msg::default().string("ssh-ed25519").string(public).0;
    (body, blob)
}

fn add_message(kind: u8, body: &Msg, constraints: &[u8]) -> Msg {
    Msg::new(kind).raw(&body.0).raw(constraints)
}

/// A raw add with no constraint and one with a lifetime succeed: the encoding is right.
#[test]
fn raw_add_plain_and_with_lifetime() {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    let (body, blob) = ed25519_add_body();
    let reply = client.request(&add_message(SSH2_AGENTC_ADD_IDENTITY, &body, &[]));
    assert_eq!(reply, vec![SSH_AGENT_SUCCESS]);
    let (constrained_body, constrained_blob) = ed25519_add_body();
    let lifetime = Msg::default().byte(1).u32(600).0;
    let reply = client.request(&add_message(
        SSH2_AGENTC_ADD_ID_CONSTRAINED,
        &constrained_body,
        &lifetime,
    ));
    assert_eq!(reply, vec![SSH_AGENT_SUCCESS]);
    let listed: Vec<Vec<u8>> = client.identities().into_iter().map(|(b, _)| b).collect();
    assert!(
        listed.contains(&blob) && listed.contains(&constrained_blob),
        "both keys listed"
    );
}

fn assert_add_refused(constraints: &[u8], what: &str) {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    let (body, _blob) = ed25519_add_body();
    let reply = client.request(&add_message(
        SSH2_AGENTC_ADD_ID_CONSTRAINED,
        &body,
        constraints,
    ));
    assert_eq!(
        reply,
        vec![SSH_AGENT_FAILURE],
        "add with {what} must be refused"
    );
    assert!(client.identities().is_empty(), "key added despite {what}");
}

#[test]
fn add_with_unknown_extension_constraint_is_refused() {
    let constraint = Msg::default()
        .byte(255)
        .string("unknown-constraint@keyward.test")
        .string("details")
        .0;
    assert_add_refused(&constraint, "an unknown extension constraint (255)");
}

#[test]
fn add_with_unknown_extension_after_a_known_constraint_is_refused() {
    let constraints = Msg::default()
        .byte(1)
        .u32(600)
        .byte(255)
        .string("unknown-constraint@keyward.test")
        .0;
    assert_add_refused(
        &constraints,
        "lifetime then an unknown extension constraint",
    );
}

#[test]
fn add_with_unknown_constraint_byte_is_refused() {
    assert_add_refused(&[42, 0, 0, 0, 1], "an unknown constraint type (42)");
}
