//! Decoding bytes from outside the process: CBOR (the RabbitMQ wire format)
//! and JSON, each behind a size limit and a nesting limit.
//!
//! ```
//! use telamon_process::codec::{self, DecodeLimits};
//! let limits = DecodeLimits::default(); // 16 MiB, depth 128
//! let bytes = codec::encode_cbor(&vec![1u8, 2, 3]).unwrap();
//! assert_eq!(codec::decode_cbor::<Vec<u8>>(&bytes, &limits).unwrap(), [1, 2, 3]);
//! // 10 000 nested arrays: refused before anything is built.
//! let mut deep = vec![0x81u8; 10_000];
//! deep.push(0);
//! let error = codec::decode_cbor::<serde_json::Value>(&deep, &limits).unwrap_err();
//! assert!(error.is_too_deep());
//! ```
//!
//! # Under stress
//!
//! Decoders that build values recursively (serde's data model, and dropping
//! the value again) overflow the stack on deeply nested input, and a stack
//! overflow aborts the process: nothing can catch it. So every body is first
//! walked by a non-recursive checker that needs no allocation per level: it
//! rejects a body that is larger than [`DecodeLimits::max_size`], nested
//! deeper than [`DecodeLimits::max_depth`] (arrays, maps and CBOR tags each
//! count one level), truncated, or that declares a length longer than the
//! bytes left (so a header that claims 2⁶⁴ items allocates nothing). Only then
//! does serde see it. Checking costs one pass over the bytes.

mod cbor;
mod cbor_check;
mod json_check;

pub use cbor::{
    CborUnit, decode as decode_cbor, encode as encode_cbor, encode_with as encode_cbor_with,
};

/// Default [`DecodeLimits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 128;
/// The deepest nesting that decoding (and dropping) stays well inside a 2 MiB
/// thread stack with; config refuses more.
pub const MAX_SAFE_DEPTH: usize = 1024;
/// Default [`DecodeLimits::max_size`]: 16 MiB.
pub const DEFAULT_MAX_SIZE: usize = 16 * 1024 * 1024;

/// How large and how deeply nested a body from outside may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeLimits {
    /// Largest body accepted, in bytes.
    pub max_size: usize,
    /// Deepest nesting accepted: `[[1]]` is depth 2, a scalar depth 0.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_size: DEFAULT_MAX_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl DecodeLimits {
    /// Limits with the given size and depth.
    pub fn new(max_size: usize, max_depth: usize) -> Self {
        DecodeLimits {
            max_size,
            max_depth,
        }
    }

    /// The limits for a body wrapped once more (`{"Ok": message}`): one more
    /// level and a little more room, so a message that was within the limits
    /// is within them as a reply too.
    pub fn for_reply(&self) -> Self {
        DecodeLimits {
            max_size: self.max_size.saturating_add(64),
            max_depth: self.max_depth.saturating_add(1),
        }
    }

    fn check_size(&self, len: usize) -> Result<(), CodecError> {
        if len > self.max_size {
            return Err(CodecError::TooLarge {
                size: len,
                limit: self.max_size,
            });
        }
        Ok(())
    }
}

/// Why a body could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is larger than the size limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes in the body.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body nests deeper than the depth limit.
    #[error("body nests deeper than the limit of {limit} levels (at byte {offset})")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the level past the limit starts.
        offset: usize,
    },
    /// The bytes are not well-formed CBOR or JSON.
    #[error("not well-formed {format}: {reason} (at byte {offset})")]
    Malformed {
        /// `"CBOR"` or `"JSON"`.
        format: &'static str,
        /// What is wrong.
        reason: &'static str,
        /// Where.
        offset: usize,
    },
    /// Well-formed, but not a value of the expected type.
    #[error("not {format} of the message type: {reason}")]
    WrongType {
        /// `"CBOR"` or `"JSON"`.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The value could not be encoded.
    #[error("cannot encode as {format}: {reason}")]
    Encode {
        /// `"CBOR"` or `"JSON"`.
        format: &'static str,
        /// What the encoder said.
        reason: String,
    },
}

impl CodecError {
    /// The body was over the size limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self, CodecError::TooLarge { .. })
    }

    /// The body was nested past the depth limit.
    pub fn is_too_deep(&self) -> bool {
        matches!(self, CodecError::TooDeep { .. })
    }

    /// The bytes were not well-formed (truncated, impossible lengths, …).
    pub fn is_malformed(&self) -> bool {
        matches!(self, CodecError::Malformed { .. })
    }
}

/// Decodes JSON into `T` after checking size and nesting.
pub fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<T, CodecError> {
    limits.check_size(bytes.len())?;
    json_check::check(bytes, limits.max_depth)?;
    serde_json::from_slice(bytes).map_err(|e| CodecError::WrongType {
        format: "JSON",
        reason: e.to_string(),
    })
}

/// Checks size and nesting of a CBOR body without decoding it.
pub fn check_cbor(bytes: &[u8], limits: &DecodeLimits) -> Result<(), CodecError> {
    limits.check_size(bytes.len())?;
    cbor_check::check(bytes, limits.max_depth)
}
