//! What the fuzz targets share: one paused-time runtime, the test-only keys committed under
//! `fuzz/keys/`, a [`Session`] holding them, and the check that an agent reply is one well-formed
//! message of the kind its request allows.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyward::agent::frame::MAX_FRAME;
use keyward::agent::keyring::{Constraints, Entry, SignerSlot};
use keyward::agent::session::Peer;
use keyward::agent::wire;
use keyward::agent::{AgentConfig, Keyring, Session};
use keyward::clock::{Clock, ManualClock};
use keyward::keys::Signer;
use keyward::store::KdfParams;
use ssh_encoding::Decode;
use ssh_key::PrivateKey;

/// One current-thread runtime for every input, with paused time: sleeps (a wrong unlock's delay)
/// end at once, so no input waits on the wall clock.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

/// The keys every session starts with: RSA-2048, Ed25519 and ECDSA P-256, made once with
/// ssh-keygen for fuzzing only (the recorder adds the same keys with `ssh-add`, so recorded sign
/// and remove requests name keys the session holds).
pub fn keys() -> &'static [PrivateKey] {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            include_str!("../keys/test-only-rsa"),
            include_str!("../keys/test-only-ed25519"),
            include_str!("../keys/test-only-ecdsa"),
        ]
        .iter()
        .map(|pem| PrivateKey::from_openssh(pem).expect("fixture key parses"))
        .collect()
    })
}

/// A session on a fresh key ring that holds [`keys`]: the RSA key plain, the Ed25519 key with
/// `confirm` (refused: there is no askpass program) and the ECDSA key with a 3 s lifetime. The
/// private halves are prepared on first use, so an input that signs nothing pays no RSA parsing.
pub fn session() -> (Session, Arc<ManualClock>) {
    let boot = Duration::from_secs(1_000);
    let clock = Arc::new(ManualClock::new(boot, 1_700_000_000));
    let config = Arc::new(AgentConfig::new(
        Arc::clone(&clock) as Arc<dyn Clock>,
        None,
        None,
    ));
    // The cheapest Argon2id for the lock key: the code paths are the same, and the real cost
    // (about 45 ms per lock or unlock) would spend most of the fuzzing time in Argon2id.
    let keyring = Arc::new(Keyring::new().with_lock_kdf(KdfParams::insecure_fast()));
    let entries = keys()
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let constraints = Constraints {
                expires: (i == 2).then(|| boot + Duration::from_secs(3)),
                confirm: i == 1,
            };
            let keypair = key.key_data().clone();
            let signer = SignerSlot::lazy(Box::new(move || {
                Signer::from_keypair(&keypair).map_err(|e| e.to_string())
            }));
            Entry::new(
                key.public_key().key_data(),
                key.comment().to_owned(),
                signer,
                constraints,
            )
            .expect("fixture entry")
        })
        .collect();
    keyring.add_all(entries).expect("unlocked key ring");
    (Session::new(keyring, config, Peer::default()), clock)
}

/// Reads an SSH `string` from the front of `rest`.
fn take_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let (s, tail) = (tail.get(..len)?, &tail[len..]);
    *rest = tail;
    Some(s)
}

/// Panics unless `reply` is one well-formed agent message that may answer a request of type
/// `request` (its first byte, if any).
pub fn check_reply(request: Option<u8>, reply: &[u8]) {
    assert!(!reply.is_empty(), "empty reply");
    assert!(reply.len() <= MAX_FRAME, "reply of {} bytes", reply.len());
    let mut rest = &reply[1..];
    match reply[0] {
        wire::FAILURE | wire::SUCCESS => assert!(rest.is_empty(), "status with a body"),
        wire::IDENTITIES_ANSWER => {
            assert_eq!(request, Some(11), "identities answer to {request:?}");
            let (count, tail) = rest.split_first_chunk::<4>().expect("key count");
            rest = tail;
            for i in 0..u32::from_be_bytes(*count) {
                let mut blob = take_string(&mut rest).unwrap_or_else(|| panic!("key blob {i}"));
                ssh_key::public::KeyData::decode(&mut blob).expect("listed blob parses");
                assert!(blob.is_empty(), "trailing bytes in listed blob {i}");
                take_string(&mut rest).unwrap_or_else(|| panic!("comment {i}"));
            }
            assert!(rest.is_empty(), "trailing bytes in identities answer");
        }
        wire::SIGN_RESPONSE => {
            assert_eq!(request, Some(13), "sign response to {request:?}");
            let mut blob = take_string(&mut rest).expect("signature blob");
            assert!(rest.is_empty(), "trailing bytes in sign response");
            let algorithm = take_string(&mut blob).expect("signature algorithm");
            assert!(!algorithm.is_empty(), "empty signature algorithm");
            let signature = take_string(&mut blob).expect("signature bytes");
            assert!(!signature.is_empty() && blob.is_empty(), "signature layout");
        }
        wire::EXTENSION_RESPONSE => {
            assert_eq!(request, Some(27), "extension response to {request:?}");
            while !rest.is_empty() {
                take_string(&mut rest).expect("extension response string");
            }
        }
        other => panic!("reply of unknown type {other}"),
    }
}
