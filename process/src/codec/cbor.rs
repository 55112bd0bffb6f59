//! CBOR on the wire, readable by Caryatid and by ciborium-based peers.
//!
//! Writing uses minicbor-serde: floats keep their declared width (an `f64` is
//! always 8 bytes) and `()` is `[]`, byte for byte what Caryatid (minicbor-serde
//! 0.6) writes and expects. ciborium would write the shortest lossless float
//! (`1.5f64` as an f16), which Caryatid rejects when it expects an `f64`.
//!
//! Reading checks size and nesting first (see the parent module), then tries
//! minicbor-serde (the fast path, and Caryatid's format), then ciborium,
//! which accepts any float width and `null` for `()` — what a ciborium writer
//! produces. So Telamon reads both; Caryatid reads Telamon.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CodecError, DecodeLimits, check_cbor};

/// Encodes `value` as CBOR.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    minicbor_serde::to_vec(value).map_err(|e| CodecError::Encode {
        format: "CBOR",
        reason: e.to_string(),
    })
}

/// Decodes CBOR into `T`, after checking it against `limits`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, CodecError> {
    check_cbor(bytes, limits)?;
    match minicbor_serde::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(first) => ciborium::from_reader(bytes).map_err(|e| CodecError::WrongType {
            format: "CBOR",
            reason: format!("{first}; {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        sensor: String,
        value: f64,
        unit: (),
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        super::decode(bytes, &DecodeLimits::default())
    }

    #[test]
    fn floats_keep_eight_bytes_and_unit_is_an_empty_array() {
        let bytes = encode(&1.5f64).unwrap();
        assert_eq!(bytes, [0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&()).unwrap(), [0x80]);
    }

    #[test]
    fn reads_its_own_and_ciborium_output() {
        let r = Reading {
            sensor: "t1".into(),
            value: 1.5,
            unit: (),
        };
        assert_eq!(decode::<Reading>(&encode(&r).unwrap()).unwrap(), r);
        let mut from_ciborium = Vec::new();
        ciborium::into_writer(&r, &mut from_ciborium).unwrap();
        assert_ne!(
            from_ciborium,
            encode(&r).unwrap(),
            "ciborium shortens the float"
        );
        assert_eq!(decode::<Reading>(&from_ciborium).unwrap(), r);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Reading>(b"\xff\x00not cbor").is_err());
        assert!(decode::<Reading>(&encode(&42u8).unwrap()).is_err());
    }

    #[test]
    fn the_limit_is_checked_before_decoding() {
        let limits = DecodeLimits::new(1024, 3);
        let v = serde_json::json!([[[1]]]);
        let bytes = encode(&v).unwrap();
        assert_eq!(super::decode::<serde_json::Value>(&bytes, &limits), Ok(v));
        let deeper = encode(&serde_json::json!([[[[1]]]])).unwrap();
        assert!(
            super::decode::<serde_json::Value>(&deeper, &limits)
                .unwrap_err()
                .is_too_deep()
        );
        let big = encode(&vec![0u8; 2000]).unwrap();
        assert!(
            super::decode::<Vec<u8>>(&big, &limits)
                .unwrap_err()
                .is_too_large()
        );
    }
}
