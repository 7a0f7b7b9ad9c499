//! Framing and message robustness with a raw client: oversized, garbage, truncated and empty
//! frames end (at most) their own connection, unknown and legacy messages get FAILURE on a
//! connection that stays open, and pipelined requests are answered one by one.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use crate::util::{Agent, KeyType, assert_no_identities, keygen};
use crate::wire::{
    Client, MAX_FRAME, Msg, SSH_AGENT_FAILURE, SSH_AGENT_SUCCESS,
    SSH_AGENTC_REMOVE_ALL_RSA_IDENTITIES, SSH2_AGENT_IDENTITIES_ANSWER,
    SSH2_AGENTC_REQUEST_IDENTITIES, SSH2_AGENTC_SIGN_REQUEST,
};

/// The daemon still serves: an existing connection and a fresh `ssh-add -l` both work.
#[track_caller]
fn assert_still_serving(agent: &Agent, survivor: &mut Client) {
    assert_eq!(
        survivor.identities().len(),
        1,
        "the other connection still works"
    );
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("a fresh ssh-add -l");
    assert_eq!(listed.stdout.lines().count(), 1, "{listed:#?}");
}

/// An agent with one key and an already open second connection.
fn agent_with_survivor() -> (Agent, Client) {
    let agent = Agent::start();
    agent.add(&keygen(agent.dir(), "id", KeyType::Ed25519, ""), &[]);
    let mut survivor = Client::connect(agent.socket());
    assert_eq!(survivor.identities().len(), 1);
    (agent, survivor)
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let (agent, mut survivor) = agent_with_survivor();
    let mut big = Client::connect(agent.socket());
    let mut frame = (MAX_FRAME + 1).to_be_bytes().to_vec();
    frame.push(SSH2_AGENTC_SIGN_REQUEST);
    // The agent may close before reading all of this, so a write error is expected here.
    let _ = big.write_raw(&frame);
    let _ = big.write_raw(&vec![0u8; 64 * 1024]);
    big.assert_closed_without_reply();
    assert_still_serving(&agent, &mut survivor);
}

/// A frame of exactly 256 KiB is within the limit and gets an answer.
#[test]
fn frame_of_exactly_256_kib_is_answered() {
    let (agent, mut survivor) = agent_with_survivor();
    let absent = keygen(agent.dir(), "absent", KeyType::Ed25519, "");
    let blob = absent.blob();
    // type(1) + string blob(4 + n) + string data(4 + m) + flags(4) = MAX_FRAME
    let data_len = MAX_FRAME as usize - 1 - (4 + blob.len()) - 4 - 4;
    let msg = Msg::new(SSH2_AGENTC_SIGN_REQUEST)
        .string(&blob)
        .string(vec![0x61; data_len])
        .u32(0);
    assert_eq!(msg.0.len(), MAX_FRAME as usize);
    let mut client = Client::connect(agent.socket());
    assert_eq!(client.request(&msg), vec![SSH_AGENT_FAILURE], "unknown key");
    assert_eq!(client.identities().len(), 1, "connection still open");
    assert_still_serving(&agent, &mut survivor);
}

#[test]
fn garbage_does_not_disturb_the_daemon() {
    let (agent, mut survivor) = agent_with_survivor();
    let mut client = Client::connect(agent.socket());
    let _ = client.write_raw(b"GET / HTTP/1.1\r\nHost: keyward\r\n\r\n");
    client.assert_closed_without_reply();
    assert_still_serving(&agent, &mut survivor);
}

#[test]
fn truncated_frame_does_not_disturb_the_daemon() {
    let (agent, mut survivor) = agent_with_survivor();
    let mut stream = UnixStream::connect(agent.socket()).expect("connect");
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[SSH2_AGENTC_SIGN_REQUEST, 0, 0, 0, 50, 1, 2]);
    std::io::Write::write_all(&mut stream, &partial).expect("write partial frame");
    stream.shutdown(Shutdown::Write).expect("half-close");
    // The agent sees EOF mid-frame; it must not answer with a stray reply.
    let mut client_view = stream;
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client_view, &mut rest);
    assert!(rest.is_empty(), "no reply to a truncated frame: {rest:?}");
    assert_still_serving(&agent, &mut survivor);

    // A connection that stalls mid-frame does not block others either.
    let mut stalled = UnixStream::connect(agent.socket()).expect("connect");
    std::io::Write::write_all(&mut stalled, &partial).expect("write partial frame");
    assert_still_serving(&agent, &mut survivor);
}

#[test]
fn zero_length_frame_does_not_disturb_the_daemon() {
    let (agent, mut survivor) = agent_with_survivor();
    let mut client = Client::connect(agent.socket());
    client.write_raw(&[0, 0, 0, 0]).expect("write empty frame");
    match client.read_frame().expect("read after an empty frame") {
        None => {}
        Some(reply) => {
            assert_eq!(reply, vec![SSH_AGENT_FAILURE], "reply to an empty frame");
            assert_eq!(client.identities().len(), 1, "connection still usable");
        }
    }
    assert_still_serving(&agent, &mut survivor);
}

/// A known message type whose body is cut short is a decode error: FAILURE (or a hang-up), never a
/// crash.
#[test]
fn malformed_sign_request_does_not_disturb_the_daemon() {
    let (agent, mut survivor) = agent_with_survivor();
    let mut client = Client::connect(agent.socket());
    client.send(&Msg::new(SSH2_AGENTC_SIGN_REQUEST).u32(1000).raw(b"short"));
    match client.read_frame().expect("read") {
        None => {}
        Some(reply) => assert_eq!(reply, vec![SSH_AGENT_FAILURE]),
    }
    assert_still_serving(&agent, &mut survivor);
}

#[test]
fn ssh1_messages_get_failure_and_connection_stays_open() {
    let (agent, _survivor) = agent_with_survivor();
    let mut client = Client::connect(agent.socket());
    for kind in 1..SSH_AGENTC_REMOVE_ALL_RSA_IDENTITIES {
        let reply = client.request(&Msg::new(kind).raw(&[0, 0, 0, 0]));
        assert_eq!(
            reply,
            vec![SSH_AGENT_FAILURE],
            "reply to SSH-1 message {kind}"
        );
        assert_eq!(
            client.identities().len(),
            1,
            "still open after message {kind}"
        );
    }
}

#[test]
fn smartcard_and_unknown_messages_get_failure_and_connection_stays_open() {
    let (agent, _survivor) = agent_with_survivor();
    let mut client = Client::connect(agent.socket());
    let smartcard = Msg::default().string("/usr/lib/pkcs11.so").string("1234").0;
    for kind in [20u8, 21, 26, 0, 10, 15, 100, 200, 255] {
        let reply = client.request(&Msg::new(kind).raw(&smartcard));
        assert_eq!(reply, vec![SSH_AGENT_FAILURE], "reply to message {kind}");
        assert_eq!(
            client.identities().len(),
            1,
            "still open after message {kind}"
        );
    }
}

/// Two requests in one write are two frames: each gets its own answer, in order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let (agent, _survivor) = agent_with_survivor();
    let mut client = Client::connect(agent.socket());
    let mut bytes = Vec::new();
    for msg in [
        Msg::new(SSH2_AGENTC_REQUEST_IDENTITIES),
        Msg::new(200),
        Msg::new(SSH2_AGENTC_REQUEST_IDENTITIES),
    ] {
        bytes.extend_from_slice(&u32::try_from(msg.0.len()).expect("short").to_be_bytes());
        bytes.extend_from_slice(&msg.0);
    }
    client.write_raw(&bytes).expect("write pipelined frames");
    let first = client.read_frame().expect("read").expect("first reply");
    let second = client.read_frame().expect("read").expect("second reply");
    let third = client.read_frame().expect("read").expect("third reply");
    assert_eq!(first[0], SSH2_AGENT_IDENTITIES_ANSWER);
    assert_eq!(second, vec![SSH_AGENT_FAILURE]);
    assert_eq!(first, third, "same identities answer twice");
}

#[test]
fn many_concurrent_connections_are_served() {
    let agent = Agent::start();
    let mut clients: Vec<Client> = (0..32).map(|_| Client::connect(agent.socket())).collect();
    for client in &mut clients {
        assert!(client.identities().is_empty());
    }
    let mut last = clients.pop().expect("a client");
    let reply = last.request(&Msg::new(19));
    assert_eq!(reply, vec![SSH_AGENT_SUCCESS]);
    drop(clients);
    assert_no_identities(&agent);
}
