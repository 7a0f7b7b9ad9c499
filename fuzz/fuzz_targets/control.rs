//! The control protocol's JSON envelopes, as the daemon reads requests and the CLI reads
//! responses: arbitrary bytes never panic, and whatever decodes re-encodes to JSON that decodes
//! again to the same JSON (no message changes meaning on a round trip).
//!
//! Except for non-integer numbers (which only free-form `serde_json::Value` fields such as audit
//! details can hold; keyward writes none): `serde_json`, built without its `float_roundtrip`
//! feature as keyward builds it, may read a float one unit in the last place off, so the text of
//! `1.1555555555555554e48` does not survive a round trip. Found by this target; documented
//! `serde_json` behaviour, harmless here.
#![no_main]

use keyward::control::proto::{RequestEnvelope, ResponseEnvelope};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Whether `value` holds a number that is not an integer `serde_json` reads exactly.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(fields) => fields.values().any(has_float),
        _ => false,
    }
}

fn round_trips<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let once = serde_json::to_vec(&value).expect("a decoded message encodes");
    let again: T = serde_json::from_slice(&once).expect("an encoded message decodes");
    let tree: Value = serde_json::from_slice(&once).expect("an encoded message is JSON");
    if has_float(&tree) {
        return;
    }
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
