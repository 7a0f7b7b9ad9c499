//! Pipelined requests whose replies are never read: a client writes list and sign requests
//! without reading a byte, while the agent holds enough keys that each list answer is tens of KiB.
//! The daemon must stop reading once its replies stop draining (the client's writes then block)
//! instead of buffering replies without bound; other clients are served meanwhile; and when the
//! client finally reads, every reply is there, well-formed and in order.
//!
//! `KEYWARD_PIPELINE_REQUESTS` sets the requests written (2,000 by default; `scripts/soak` uses
//! 20,000) and `KEYWARD_PIPELINE_HOLD_SECS` how long nothing is read (3 s; soak 20 s). The figures
//! are printed on one `pipelined:` line.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, VerifyingKey};
use ssh_key::private::Ed25519Keypair;

use crate::procstat::{Memory, env_size, p99_and_max};
use crate::util::{Agent, HANG_GUARD};
use crate::wire::{
    Client, MAX_FRAME, Msg, SSH_AGENT_SUCCESS, SSH2_AGENTC_ADD_IDENTITY,
    SSH2_AGENTC_REQUEST_IDENTITIES, SSH2_AGENTC_SIGN_REQUEST, parse_sign_response,
};

/// Keys loaded, each with a long comment, so a list answer is about 60 KiB.
const KEYS: usize = 200;
const COMMENT_LEN: usize = 200;

/// Every `SIGN_EVERY`-th request is a sign request over `SIGN_DATA_LEN` bytes (the rest are
/// lists), so the requests alone overflow the socket buffers and a daemon that stops reading
/// blocks the writer.
const SIGN_EVERY: usize = 4;
const SIGN_DATA_LEN: usize = 1024;

/// Resident growth allowed while replies go unread: a few replies in flight take well under a MiB;
/// the unread replies themselves are tens of MiB or more.
const UNREAD_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// Resident growth allowed at any time, read-back included: when the replies drain, thousands of
/// signatures run on the blocking pool (its threads and their allocator arenas), which is
/// bounded by the pool, not by the replies (784 MiB of them at soak size).
const TOTAL_GROWTH_BOUND_KIB: u64 = 64 * 1024;

fn keypair(i: usize) -> Ed25519Keypair {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Ed25519Keypair::from_seed(&seed)
}

fn add_key(client: &mut Client, i: usize) {
    let pair = keypair(i);
    let comment = format!("pipelined-{i:04}-{}", "c".repeat(COMMENT_LEN));
    let add = Msg::new(SSH2_AGENTC_ADD_IDENTITY)
        .string("ssh-ed25519")
        .string(pair.public.0)
        .string(pair.to_bytes())
        .string(comment);
    assert_eq!(client.request(&add), vec![SSH_AGENT_SUCCESS], "add key {i}");
}

fn public_blob(i: usize) -> Vec<u8> {
    Msg::default()
        .string("ssh-ed25519")
        .string(keypair(i).public.0)
        .0
}

/// What request `i` signs.
fn sign_data(i: usize) -> Vec<u8> {
    let mut data = format!("pipelined request {i} ").into_bytes();
    data.resize(SIGN_DATA_LEN, b'.');
    data
}

/// Request `i` as a frame: a sign request with key `i / SIGN_EVERY % KEYS`, or a list.
fn request(i: usize) -> Vec<u8> {
    let msg = if i.is_multiple_of(SIGN_EVERY) {
        Msg::new(SSH2_AGENTC_SIGN_REQUEST)
            .string(public_blob(i / SIGN_EVERY % KEYS))
            .string(sign_data(i))
            .u32(0)
    } else {
        Msg::new(SSH2_AGENTC_REQUEST_IDENTITIES)
    };
    let mut frame = u32::try_from(msg.0.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&msg.0);
    frame
}

fn read_frame(stream: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("read a reply header");
    let len = u32::from_be_bytes(len);
    assert!(len <= MAX_FRAME, "oversized reply frame ({len})");
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).expect("read a reply body");
    body
}

/// Panics unless `reply` answers request `i`: the list everyone gets, or a signature that
/// verifies over exactly request `i`'s data (Ed25519 is deterministic, so a reply out of order
/// fails).
fn check_reply(i: usize, reply: &[u8], list: &[u8]) {
    if !i.is_multiple_of(SIGN_EVERY) {
        assert!(reply == list, "reply {i} is not the identities answer");
        return;
    }
    let (alg, sig) = parse_sign_response(reply);
    assert_eq!(alg, "ssh-ed25519", "reply {i}");
    let key =
        VerifyingKey::from_bytes(&keypair(i / SIGN_EVERY % KEYS).public.0).expect("public key");
    let sig = Signature::from_slice(&sig).expect("64-byte signature");
    key.verify_strict(&sign_data(i), &sig)
        .unwrap_or_else(|e| panic!("reply {i} does not sign request {i}'s data: {e}"));
}

#[test]
fn unread_pipelined_replies_do_not_grow_memory() {
    let requests = env_size("KEYWARD_PIPELINE_REQUESTS", 2_000);
    let hold = Duration::from_secs(env_size("KEYWARD_PIPELINE_HOLD_SECS", 3) as u64);
    let agent = Agent::start();
    let pid = agent.pid();
    let mut other = Client::connect(agent.socket());
    for i in 0..KEYS {
        add_key(&mut other, i);
    }
    let list = other.request(&Msg::new(SSH2_AGENTC_REQUEST_IDENTITIES));
    assert_eq!(other.identities().len(), KEYS);
    let lists = requests - requests.div_ceil(SIGN_EVERY);
    let unread_mib = (lists * (list.len() + 4)) >> 20;
    let before = Memory::of(pid);

    let mut reader = UnixStream::connect(agent.socket()).expect("connect");
    reader
        .set_read_timeout(Some(HANG_GUARD))
        .expect("read timeout");
    let mut writer = reader.try_clone().expect("clone the stream");
    let written = Arc::new(AtomicUsize::new(0));
    let writing = {
        let written = Arc::clone(&written);
        thread::spawn(move || {
            for i in 0..requests {
                writer.write_all(&request(i)).expect("write a request");
                written.store(i + 1, Ordering::Relaxed);
            }
        })
    };

    // Nothing is read for `hold`: memory is sampled and another client is served.
    let mut peak = Memory::of(pid);
    let mut latencies = Vec::new();
    let unread_since = Instant::now();
    while unread_since.elapsed() < hold {
        let started = Instant::now();
        assert_eq!(other.identities().len(), KEYS, "a list answered meanwhile");
        latencies.push(started.elapsed());
        peak = peak.max(Memory::of(pid));
        thread::sleep(Duration::from_millis(20));
    }
    let blocked_at = written.load(Ordering::Relaxed);
    let unread_peak = peak;
    assert!(
        blocked_at < requests,
        "all {requests} requests were written with no reply read: the daemon read them all, \
         so it holds their replies (about {unread_mib} MiB) instead of waiting for the client"
    );

    let reading = Instant::now();
    for i in 0..requests {
        let reply = read_frame(&mut reader);
        check_reply(i, &reply, &list);
    }
    let read_time = reading.elapsed();
    writing.join().expect("writer thread");
    let after = Memory::of(pid);
    peak = peak.max(after);
    assert_eq!(other.identities().len(), KEYS, "a list answered afterwards");

    let (p99, max) = p99_and_max(&mut latencies);
    let unread_growth = unread_peak.hwm.saturating_sub(before.rss);
    let growth = peak.hwm.saturating_sub(before.rss);
    eprintln!(
        "pipelined: {requests} requests ({lists} lists of {} bytes, about {unread_mib} MiB of \
         replies), writer blocked after {blocked_at} while nothing was read for {hold:?}; all \
         replies read back in order in {read_time:?}; memory before {before}, peak while \
         unread {unread_peak}, peak {peak}, after {after}; growth while unread \
         {unread_growth} KiB (bound {UNREAD_GROWTH_BOUND_KIB}), peak growth {growth} KiB \
         (bound {TOTAL_GROWTH_BOUND_KIB}); other client's {} lists p99 {p99:?} max {max:?}",
        list.len(),
        latencies.len()
    );
    assert!(
        unread_growth < UNREAD_GROWTH_BOUND_KIB,
        "the daemon grew by {unread_growth} KiB while {blocked_at} pipelined requests went \
         unanswered"
    );
    assert!(
        growth < TOTAL_GROWTH_BOUND_KIB,
        "the daemon grew by {growth} KiB answering {requests} pipelined requests"
    );
}
