//! Property tests of the decoders a peer can reach: the agent frame reader, `Request` decoding
//! (directly and through a [`Session`] holding keys), and the control protocol's JSON envelope.
//! Arbitrary bytes and mutations of valid messages must give an error or a well-formed answer,
//! never a panic.
//!
//! `PROPTEST_CASES` sets the number of cases (256 by default).

use std::sync::Arc;
use std::time::Duration;

use keyward::agent::frame::{FrameError, MAX_FRAME, read_frame};
use keyward::agent::session::Peer;
use keyward::agent::{AgentConfig, Keyring, Session};
use keyward::clock::{Clock, ManualClock};
use keyward::control::proto::RequestEnvelope;
use proptest::prelude::*;
use ssh_agent_lib::proto::Request;
use ssh_encoding::Decode;

use crate::prop_session::config;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Valid agent messages to mutate: list, sign, add (Ed25519, with a lifetime), remove, lock,
/// unlock, query and a session-bind-shaped extension.
fn valid_frames() -> Vec<Vec<u8>> {
    let key = ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]);
    let public = key.public.0;
    let string = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&u32::try_from(s.len()).expect("short").to_be_bytes());
        out.extend_from_slice(s);
    };
    let mut blob = Vec::new();
    string(&mut blob, b"ssh-ed25519");
    string(&mut blob, &public);
    let mut sign = vec![13];
    string(&mut sign, &blob);
    string(&mut sign, b"data");
    sign.extend_from_slice(&0u32.to_be_bytes());
    let mut add = vec![25];
    string(&mut add, b"ssh-ed25519");
    string(&mut add, &public);
    string(&mut add, &key.to_bytes());
    string(&mut add, b"comment");
    add.extend_from_slice(&[1, 0, 0, 0, 60]);
    let mut remove = vec![18];
    string(&mut remove, &blob);
    let mut lock = vec![22];
    string(&mut lock, b"pw");
    let mut unlock = vec![23];
    string(&mut unlock, b"pw");
    let mut query = vec![27];
    string(&mut query, b"query");
    let mut bind = vec![27];
    string(&mut bind, b"session-bind@openssh.com");
    string(&mut bind, &blob);
    string(&mut bind, b"session-id");
    string(&mut bind, &[0; 64]);
    bind.push(0);
    vec![vec![11], sign, add, remove, lock, unlock, query, bind]
}

/// A valid frame with some bytes flipped, cut short or extended.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    let frames = valid_frames();
    (
        prop::sample::select(frames),
        prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(mut frame, flips, cut, tail)| {
            for (at, mask) in flips {
                let i = at.index(frame.len());
                frame[i] ^= mask;
            }
            frame.truncate(1 + cut.index(frame.len()));
            frame.extend(tail);
            frame
        })
}

fn keyed_session() -> Session {
    let clock = Arc::new(ManualClock::new(Duration::ZERO, 1_700_000_000));
    let config = Arc::new(AgentConfig::new(clock as Arc<dyn Clock>, None, None));
    Session::new(Arc::new(Keyring::new()), config, Peer::default())
}

/// Sends `frame` to a session that holds a key and checks the reply is one well-formed message.
fn session_survives(frame: &[u8]) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let mut session = keyed_session();
        let add = &valid_frames()[2];
        let added = session.handle(add).await;
        prop_assert_eq!(added.as_bytes(), &[6u8][..]);
        let reply = session.handle(frame).await;
        let bytes = reply.as_bytes();
        prop_assert!(!bytes.is_empty(), "empty reply");
        prop_assert!(bytes.len() <= MAX_FRAME, "oversized reply");
        // The session still answers afterwards.
        let listed = session.handle(&[11]).await;
        prop_assert_eq!(listed.as_bytes()[0], 12u8);
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary bytes: an error, a clean end, or exactly the announced body.
    #[test]
    fn frame_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let result = runtime().block_on(async {
            let mut input = bytes.as_slice();
            read_frame(&mut input, Duration::from_secs(10)).await
        });
        match result {
            Ok(None) => prop_assert!(bytes.is_empty()),
            Ok(Some(body)) => {
                let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
                prop_assert!(len <= MAX_FRAME);
                prop_assert_eq!(&body[..], &bytes[4..4 + len]);
            }
            Err(FrameError::TooLarge(len)) => prop_assert!(len > MAX_FRAME),
            Err(FrameError::Io(_) | FrameError::Timeout(_)) => {}
        }
    }

    /// Frames written back to back are read back one at a time, each exactly.
    #[test]
    fn frames_round_trip_one_at_a_time(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend_from_slice(&u32::try_from(p.len()).expect("short").to_be_bytes());
            stream.extend_from_slice(p);
        }
        let read = runtime().block_on(async {
            let mut input = stream.as_slice();
            let mut out = Vec::new();
            while let Some(frame) = read_frame(&mut input, Duration::from_secs(10)).await.expect("frame") {
                out.push(frame);
            }
            out
        });
        prop_assert_eq!(read, payloads);
    }

    /// ssh-agent-lib's `Request` decoder on arbitrary bytes and on mutated valid messages.
    #[test]
    fn request_decoding_never_panics(
        random in prop::collection::vec(any::<u8>(), 0..300),
        mutated in mutated_frame(),
    ) {
        for bytes in [&random, &mutated] {
            let mut reader = bytes.as_slice();
            let _ = Request::decode(&mut reader);
        }
    }

    /// A session holding a key answers arbitrary and mutated frames and goes on serving.
    #[test]
    fn session_answers_any_frame(
        random in prop::collection::vec(any::<u8>(), 0..300),
        mutated in mutated_frame(),
    ) {
        session_survives(&random)?;
        session_survives(&mutated)?;
    }

    /// The control server's JSON envelope decoder on arbitrary bytes and mutated requests.
    #[test]
    fn control_json_decoding_never_panics(
        random in prop::collection::vec(any::<u8>(), 0..300),
        which in 0usize..5,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
        cut in any::<prop::sample::Index>(),
    ) {
        let _ = serde_json::from_slice::<RequestEnvelope>(&random);
        let valid = [
            r#"{"version":1,"request":{"op":"status"}}"#,
            r#"{"version":1,"request":{"op":"key_show","key":"k"}}"#,
            r#"{"version":1,"request":{"op":"unlock","passphrase":"secret"}}"#,
            r#"{"version":1,"request":{"op":"key_generate","name":"n","kind":"ed25519","bits":null,"comment":"c"}}"#,
            r#"{"version":1,"request":{"op":"change_passphrase","old":"a","new":"b"}}"#,
        ];
        let mut bytes = valid[which].as_bytes().to_vec();
        prop_assert!(serde_json::from_slice::<RequestEnvelope>(&bytes).is_ok(), "fixture {} decodes", which);
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = serde_json::from_slice::<RequestEnvelope>(&bytes);
    }
}
