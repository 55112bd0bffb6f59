//! CBOR on the wire, readable by Caryatid and by ciborium-based peers.
//!
//! Writing uses minicbor-serde: floats keep their declared width (an `f64` is
//! always 8 bytes), what Caryatid (minicbor-serde 0.6) writes and expects.
//! ciborium would write the shortest lossless float (`1.5f64` as an f16),
//! which Caryatid rejects when it expects an `f64`. `()` is `null` by default
//! (serde writes `serde_json::Value::Null` as `()`, so anything else would
//! turn a JSON `null` into something else); [`CborUnit::EmptyArray`] writes
//! `[]` instead, byte for byte Caryatid's encoding.
//!
//! Reading checks size and nesting first (see the parent module), then tries
//! minicbor-serde (the fast path, and Caryatid's format), then ciborium,
//! which accepts any float width and `null` for `()` — what a ciborium writer
//! produces. So Telamon reads both; Caryatid reads Telamon.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CodecError, DecodeLimits, check_cbor};

/// How `()` — and so `serde_json::Value::Null`, which serde writes as unit — is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CborUnit {
    /// CBOR `null`: a JSON `null` arrives as `null`. Caryatid (which expects
    /// `[]` for a `()` field) cannot read a `()` written this way.
    #[default]
    Null,
    /// An empty array, byte for byte what Caryatid writes: a `()` field
    /// interoperates, but a JSON `null` arrives as `[]` (as it does between
    /// Caryatid processes).
    EmptyArray,
}

/// Encodes `value` as CBOR, `()` as `null`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_with(value, CborUnit::Null)
}

/// Encodes `value` as CBOR, `()` as `unit` says.
pub fn encode_with<T: Serialize + ?Sized>(
    value: &T,
    unit: CborUnit,
) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    let mut serializer = minicbor_serde::Serializer::new(&mut bytes);
    serializer.serialize_unit_as_null(unit == CborUnit::Null);
    value
        .serialize(&mut serializer)
        .map_err(|e| CodecError::Encode {
            format: "CBOR",
            reason: e.to_string(),
        })?;
    Ok(bytes)
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
    fn floats_keep_eight_bytes_and_unit_is_null_or_an_empty_array() {
        let bytes = encode(&1.5f64).unwrap();
        assert_eq!(bytes, [0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&()).unwrap(), [0xf6]);
        assert_eq!(encode_with(&(), CborUnit::EmptyArray).unwrap(), [0x80]);
    }

    /// Found by the `decode_value` fuzz target: `null` came back as `[]`.
    #[test]
    fn a_json_null_round_trips() {
        let v = serde_json::json!([5, null, {"a": null}]);
        let back: serde_json::Value = decode(&encode(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        // CBOR `undefined` (0xf7), as a fuzzer sent it, reads as null.
        let read: serde_json::Value = decode(&[0x9f, 0x05, 0x00, 0xf7, 0x00, 0xff]).unwrap();
        assert_eq!(read, serde_json::json!([5, 0, null, 0]));
        assert_eq!(
            decode::<serde_json::Value>(&encode(&read).unwrap()).unwrap(),
            read
        );
    }

    #[test]
    fn a_unit_reads_from_null_and_from_an_empty_array() {
        let r = Reading {
            sensor: "t".into(),
            value: 0.5,
            unit: (),
        };
        for unit in [CborUnit::Null, CborUnit::EmptyArray] {
            assert_eq!(
                decode::<Reading>(&encode_with(&r, unit).unwrap()).unwrap(),
                r
            );
        }
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
