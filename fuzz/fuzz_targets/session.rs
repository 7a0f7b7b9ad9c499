//! A whole agent connection: the input is the byte stream a client sends (length-prefixed
//! frames, as recorded from `ssh-add` and `ssh`), read with the agent's frame reader and handed to
//! a [`keyward::agent::Session`] that holds real RSA, Ed25519 and ECDSA keys. Every reply must be
//! one well-formed message of a type the request allows; the clock moves a second per frame so
//! lifetimes expire. A connection ends at the first framing error, as in the daemon.
#![no_main]

use std::time::Duration;

use keyward::agent::frame::read_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mut session, clock) = keyward_fuzz::session();
    keyward_fuzz::runtime().block_on(async {
        let mut input = data;
        while let Ok(Some(frame)) = read_frame(&mut input, Duration::from_secs(10)).await {
            let reply = session.handle(&frame).await;
            keyward_fuzz::check_reply(frame.first().copied(), reply.as_bytes());
            clock.advance(Duration::from_secs(1));
        }
        // The session still answers a list afterwards.
        let listed = session.handle(&[11]).await;
        keyward_fuzz::check_reply(Some(11), listed.as_bytes());
    });
});
