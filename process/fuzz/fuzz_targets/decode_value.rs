//! Arbitrary bytes as a dynamic message (`serde_json::Value`), through the
//! codec a RabbitMQ consumer uses, and as JSON: an error or a value, never a
//! crash, and whatever decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use telamon_process::codec::{self, DecodeLimits};

fuzz_target!(|bytes: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(value) = codec::decode_cbor::<Value>(bytes, &limits) {
        let again = codec::encode_cbor(&value).expect("a decoded value encodes");
        let back: Value = codec::decode_cbor(&again, &limits).expect("what it wrote, it reads");
        assert_eq!(back, value);
    }
    let _ = codec::decode_json::<Value>(bytes, &limits);
});
