//! The control protocol's JSON envelopes, as the daemon reads requests and the CLI reads
//! responses: arbitrary bytes never panic, and whatever decodes re-encodes to JSON that decodes
//! again to the same JSON (no message changes meaning on a round trip).
#![no_main]

use keyward::control::proto::{RequestEnvelope, ResponseEnvelope};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trips<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let once = serde_json::to_vec(&value).expect("a decoded message encodes");
    let again: T = serde_json::from_slice(&once).expect("an encoded message decodes");
    let twice = serde_json::to_vec(&again).expect("encodes again");
    assert_eq!(
        String::from_utf8_lossy(&once),
        String::from_utf8_lossy(&twice),
        "round trip changed the message"
    );
}

fuzz_target!(|data: &[u8]| {
    round_trips::<RequestEnvelope>(data);
    round_trips::<ResponseEnvelope>(data);
});
