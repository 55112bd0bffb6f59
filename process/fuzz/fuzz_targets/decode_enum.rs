//! Arbitrary bytes as an application message enum through the codec: an error
//! or a value, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use telamon_process::codec::{self, DecodeLimits};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Message {
    Tick(u64),
    Reading { sensor: String, value: f64 },
    Batch(Vec<Message>),
    Tagged(std::collections::BTreeMap<String, Message>),
    Nothing,
    Bytes(Vec<u8>),
    Maybe(Option<Box<Message>>),
}

fuzz_target!(|bytes: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(m) = codec::decode_cbor::<Message>(bytes, &limits) {
        let again = codec::encode_cbor(&m).expect("a decoded message encodes");
        assert!(codec::decode_cbor::<Message>(&again, &limits).is_ok());
    }
});
