//! The agent's frame reader on a byte stream as a peer sends it: every frame read is exactly the
//! announced body (never over the 256 KiB cap), writing it back gives the bytes it came from, and
//! `Request` decoding of each body (and re-encoding what decodes) never panics.
#![no_main]

use std::time::Duration;

use keyward::agent::frame::{FrameError, MAX_FRAME, read_frame, write_frame};
use libfuzzer_sys::fuzz_target;
use ssh_agent_lib::proto::Request;
use ssh_encoding::{Decode, Encode};

fuzz_target!(|data: &[u8]| {
    keyward_fuzz::runtime().block_on(async {
        let mut input = data;
        loop {
            let before = input;
            match read_frame(&mut input, Duration::from_secs(10)).await {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_FRAME);
                    let consumed = &before[..before.len() - input.len()];
                    let mut written = Vec::new();
                    write_frame(&mut written, &body)
                        .await
                        .expect("write to a Vec");
                    assert_eq!(written, consumed, "frame does not round-trip");
                    let mut reader = body.as_slice();
                    if let Ok(request) = Request::decode(&mut reader) {
                        let mut out = Vec::new();
                        let _ = request.encode(&mut out);
                    }
                }
                Ok(None) => {
                    assert!(
                        before.is_empty(),
                        "clean end with {} bytes left",
                        before.len()
                    );
                    break;
                }
                Err(FrameError::TooLarge(len)) => {
                    assert!(len > MAX_FRAME);
                    break;
                }
                Err(FrameError::Io(_) | FrameError::Timeout(_)) => break,
            }
        }
    });
});
