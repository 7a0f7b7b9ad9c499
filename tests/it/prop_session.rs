//! Property test of the agent's per-connection state machine: random sequences of add, sign,
//! remove, remove-all, lock, unlock, list, extension, clock and garbage frames go through an
//! in-process [`Session`] with real keys preloaded, and every reply is checked against a small
//! model (which keys are listed, whether the agent is locked, and that a signature is made exactly
//! when its key is present, unexpired and the agent unlocked; keys whose lifetime ended while the
//! agent was locked are gone once it unlocks).
//!
//! `PROPTEST_CASES` sets the number of sequences (256 by default; `scripts/soak` runs 10,000).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyward::agent::session::Peer;
use keyward::agent::{AgentConfig, Keyring, Session};
use keyward::clock::{Clock, ManualClock};
use keyward::store::KdfParams;
use proptest::prelude::*;
use ssh_agent_lib::proto::{
    AddIdentity, AddIdentityConstrained, Extension, KeyConstraint, PrivateCredential,
    PublicCredential, RemoveIdentity, Request, SignRequest, Unparsed,
};
use ssh_encoding::Encode;
use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};

const FAILURE: u8 = 5;
const SUCCESS: u8 = 6;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_RESPONSE: u8 = 14;
const EXTENSION_RESPONSE: u8 = 29;

/// Keys the model knows: the first [`PRELOADED`] are added before each sequence.
const KEYS: usize = 5;
const PRELOADED: usize = 3;

/// Proptest settings: `cases` sequences unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failure prints its minimal input; no regression files land in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Real key pairs, made once: RSA-2048, two Ed25519 and two ECDSA P-256.
fn keys() -> &'static [(KeypairData, Vec<u8>)] {
    static KEYS_CELL: OnceLock<Vec<(KeypairData, Vec<u8>)>> = OnceLock::new();
    KEYS_CELL.get_or_init(|| {
        let mut rng = rand_core::OsRng;
        let pairs = vec![
            KeypairData::from(RsaKeypair::random(&mut rng, 2048).expect("rsa key")),
            KeypairData::from(Ed25519Keypair::random(&mut rng)),
            KeypairData::from(
                EcdsaKeypair::random(&mut rng, ssh_key::EcdsaCurve::NistP256).expect("ecdsa"),
            ),
            KeypairData::from(Ed25519Keypair::random(&mut rng)),
            KeypairData::from(
                EcdsaKeypair::random(&mut rng, ssh_key::EcdsaCurve::NistP256).expect("ecdsa"),
            ),
        ];
        pairs
            .into_iter()
            .map(|pair| {
                let public = ssh_key::public::KeyData::try_from(&pair).expect("public half");
                let mut blob = Vec::new();
                public.encode(&mut blob).expect("encode blob");
                (pair, blob)
            })
            .collect()
    })
}

fn encode(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(&mut out).expect("encode request");
    out
}

fn public(k: usize) -> ssh_key::public::KeyData {
    ssh_key::public::KeyData::try_from(&keys()[k].0).expect("public half")
}

fn add_frame(k: usize, lifetime: Option<u32>) -> Vec<u8> {
    let identity = AddIdentity {
        credential: PrivateCredential::Key {
            privkey: keys()[k].0.clone(),
            comment: format!("key{k}"),
        },
    };
    match lifetime {
        None => encode(&Request::AddIdentity(identity)),
        Some(secs) => encode(&Request::AddIdConstrained(AddIdentityConstrained {
            identity,
            constraints: vec![KeyConstraint::Lifetime(secs)],
        })),
    }
}

fn sign_frame(k: usize) -> Vec<u8> {
    encode(&Request::SignRequest(SignRequest {
        credential: PublicCredential::Key(public(k)),
        data: b"proptest payload".to_vec(),
        // rsa-sha2-256 for RSA; ignored by the other key types.
        flags: 2,
    }))
}

fn password_frame(kind: u8, password: &[u8]) -> Vec<u8> {
    let mut frame = vec![kind];
    frame.extend_from_slice(&u32::try_from(password.len()).expect("short").to_be_bytes());
    frame.extend_from_slice(password);
    frame
}

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Op {
    Add(usize, Option<u32>),
    Sign(usize),
    Remove(usize),
    RemoveAll,
    /// Legacy SSH-1 "remove all RSA identities" (9): FAILURE, no change.
    LegacyRemoveAll,
    Lock(u8),
    Unlock(u8),
    List,
    Query,
    UnknownExtension,
    Advance(u64),
    /// A frame no request can decode from: a message type that is never valid here, or a strict
    /// prefix of a valid add or sign frame.
    Garbage(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let never_valid = prop_oneof![1u8..=8, Just(10u8), Just(20), Just(21), Just(26), 30u8..];
    prop_oneof![
        4 => (key.clone(), prop::option::of(1u32..4)).prop_map(|(k, l)| Op::Add(k, l)),
        6 => key.clone().prop_map(Op::Sign),
        3 => key.clone().prop_map(Op::Remove),
        1 => Just(Op::RemoveAll),
        1 => Just(Op::LegacyRemoveAll),
        2 => (0u8..2).prop_map(Op::Lock),
        3 => (0u8..2).prop_map(Op::Unlock),
        3 => Just(Op::List),
        1 => Just(Op::Query),
        1 => Just(Op::UnknownExtension),
        2 => (0u64..3).prop_map(Op::Advance),
        2 => (never_valid, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(kind, tail)| {
            let mut frame = vec![kind];
            frame.extend(tail);
            Op::Garbage(frame)
        }),
        2 => (key.clone(), any::<bool>(), any::<prop::sample::Index>()).prop_map(|(k, add, cut)| {
            let whole = if add { add_frame(k, None) } else { sign_frame(k) };
            Op::Garbage(whole[..=cut.index(whole.len() - 1)].to_vec())
        }),
    ]
}

/// What the agent should hold: key index → expiry (boot seconds), and the lock password.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    keys: BTreeMap<usize, Option<u64>>,
    lock: Option<u8>,
}

impl Model {
    fn usable(&self, k: usize) -> bool {
        self.keys
            .get(&k)
            .is_some_and(|e| e.is_none_or(|t| t > self.now))
    }

    /// The reply type the agent must give to `op`, updating the model.
    fn step(&mut self, op: &Op) -> u8 {
        let locked = self.lock.is_some();
        match op {
            Op::Unlock(pw) => match self.lock {
                Some(p) if p == *pw => {
                    self.lock = None;
                    // Lifetimes ran on while locked: keys that ended meanwhile are gone.
                    let now = self.now;
                    self.keys.retain(|_, e| e.is_none_or(|t| t > now));
                    SUCCESS
                }
                _ => FAILURE,
            },
            Op::Lock(pw) => {
                if locked {
                    FAILURE
                } else {
                    self.lock = Some(*pw);
                    SUCCESS
                }
            }
            Op::Advance(_) => unreachable!("not sent"),
            Op::List => {
                if !locked {
                    // Listing purges expired keys.
                    let now = self.now;
                    self.keys.retain(|_, e| e.is_none_or(|t| t > now));
                }
                IDENTITIES_ANSWER
            }
            Op::Garbage(_) | Op::LegacyRemoveAll | Op::UnknownExtension => FAILURE,
            _ if locked => FAILURE,
            Op::Add(k, lifetime) => {
                self.keys
                    .insert(*k, lifetime.map(|l| self.now + u64::from(l)));
                SUCCESS
            }
            Op::Sign(k) => {
                if self.usable(*k) {
                    SIGN_RESPONSE
                } else {
                    FAILURE
                }
            }
            // An expired key that no list has purged yet is still removed.
            Op::Remove(k) => {
                if self.keys.remove(k).is_some() {
                    SUCCESS
                } else {
                    FAILURE
                }
            }
            Op::RemoveAll => {
                self.keys.clear();
                SUCCESS
            }
            Op::Query => EXTENSION_RESPONSE,
        }
    }

    /// Blobs a list request must return.
    fn listed(&self) -> Vec<Vec<u8>> {
        if self.lock.is_some() {
            return Vec::new();
        }
        let mut out: Vec<Vec<u8>> = (0..KEYS)
            .filter(|k| self.usable(*k))
            .map(|k| keys()[k].1.clone())
            .collect();
        out.sort();
        out
    }
}

fn frame_of(op: &Op) -> Vec<u8> {
    match op {
        Op::Add(k, lifetime) => add_frame(*k, *lifetime),
        Op::Sign(k) => sign_frame(*k),
        Op::Remove(k) => encode(&Request::RemoveIdentity(RemoveIdentity {
            credential: PublicCredential::Key(public(*k)),
        })),
        Op::RemoveAll => vec![19],
        Op::LegacyRemoveAll => vec![9],
        Op::Lock(pw) => password_frame(22, &[b'a' + pw]),
        Op::Unlock(pw) => password_frame(23, &[b'a' + pw]),
        Op::List => vec![11],
        Op::Query => encode(&Request::Extension(Extension {
            name: "query".into(),
            details: Unparsed::from(vec![]),
        })),
        Op::UnknownExtension => encode(&Request::Extension(Extension {
            name: "no-such-extension@keyward.test".into(),
            details: Unparsed::from(vec![1, 2, 3]),
        })),
        Op::Garbage(bytes) => bytes.clone(),
        Op::Advance(_) => unreachable!("not a frame"),
    }
}

/// Blobs in an identities answer, sorted.
fn listed_blobs(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = &reply[1..];
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head.to_vec()
    };
    let count = u32::from_be_bytes(take(4).try_into().expect("4 bytes"));
    let mut blobs = Vec::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4).try_into().expect("4 bytes")) as usize;
        blobs.push(take(len));
        let len = u32::from_be_bytes(take(4).try_into().expect("4 bytes")) as usize;
        take(len);
    }
    assert!(rest.is_empty(), "trailing bytes in identities answer");
    blobs.sort();
    blobs
}

fn run_sequence(ops: &[Op]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Wrong unlocks sleep on the shared delay gate; paused time skips those sleeps.
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let clock = Arc::new(ManualClock::new(Duration::ZERO, 1_700_000_000));
        let config = Arc::new(AgentConfig::new(
            Arc::clone(&clock) as Arc<dyn Clock>,
            None,
            None,
        ));
        // The cheapest lock key: this tests the state machine, not Argon2id's cost.
        let keyring = Keyring::new().with_lock_kdf(KdfParams::insecure_fast());
        let mut session = Session::new(Arc::new(keyring), config, Peer::default());
        let mut model = Model::default();
        for k in 0..PRELOADED {
            let op = Op::Add(k, None);
            let reply = session.handle(&frame_of(&op)).await;
            prop_assert_eq!(reply.as_bytes(), &[model.step(&op)][..]);
        }
        for (i, op) in ops.iter().enumerate() {
            if let Op::Advance(secs) = op {
                clock.advance(Duration::from_secs(*secs));
                model.now += secs;
                continue;
            }
            let reply = session.handle(&frame_of(op)).await;
            let bytes = reply.as_bytes();
            let expected = model.step(op);
            prop_assert_eq!(bytes[0], expected, "step {} {:?}; model {:?}", i, op, model);
            match op {
                Op::List => {
                    prop_assert_eq!(listed_blobs(bytes), model.listed(), "step {} list", i);
                }
                Op::Sign(_) if expected == SIGN_RESPONSE => {
                    prop_assert!(bytes.len() > 20, "a signature is in the reply");
                }
                _ if expected != EXTENSION_RESPONSE => {
                    prop_assert_eq!(bytes.len(), 1, "step {} {:?}: a bare status", i, op);
                }
                _ => {}
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn session_follows_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_sequence(&ops)?;
    }
}
