//! Processing-instruction keys.
//!
//! A [`ProcessingInstruction`](crate::pb::ProcessingInstruction) pairs a
//! [`ProcessingKey`] with a [`MetaDataValue`](crate::pb::MetaDataValue); each
//! key expects one variant of the value (see [`value_kind`]). On the wire the
//! key is a varint and proto3 enums are open, so unknown numbers must be
//! tolerated: the generated field is an `i32`, read it with
//! `ProcessingInstruction::key()` (falls back to `ROUTING_KEY`) or
//! `ProcessingKey::try_from(i32)`.
//!
//! | key | # | value | set by | effect |
//! |---|---|---|---|---|
//! | `RoutingKey` | 0 | text | command sender | consistent-hash routing among handlers; server default is the message id |
//! | `Priority` | 1 | number | sender | per-handler queue order, higher first; > 0 may exceed the soft queue limit |
//! | `Timeout` | 2 | number (ms) | sender | queries: deadline for delivery to a handler (server default 5000 ms) |
//! | `NrOfResults` | 3 | number | query sender | expected number of results, -1 = unlimited (a hint) |
//! | — | 4, 5, 6 | — | — | reserved, never reuse |
//! | `ServerSupportsStreaming` | 7 | boolean | server | on forwarded queries: the server can do per-query flow control |
//! | `ClientSupportsStreaming` | 8 | boolean | query sender | asks for streaming-query semantics |

pub use crate::pb::ProcessingKey;

/// Key numbers that were removed from [`ProcessingKey`] and must not be reused.
pub const RESERVED: [i32; 3] = [4, 5, 6];

/// Which [`MetaDataValue`](crate::pb::MetaDataValue) variant a key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `text_value`.
    Text,
    /// `number_value` (a zig-zag `sint64`).
    Number,
    /// `boolean_value`.
    Boolean,
}

/// The value variant that `key` carries.
#[must_use]
pub const fn value_kind(key: ProcessingKey) -> ValueKind {
    match key {
        ProcessingKey::RoutingKey => ValueKind::Text,
        ProcessingKey::Priority | ProcessingKey::Timeout | ProcessingKey::NrOfResults => {
            ValueKind::Number
        }
        ProcessingKey::ServerSupportsStreaming | ProcessingKey::ClientSupportsStreaming => {
            ValueKind::Boolean
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ProcessingKey, RESERVED, ValueKind, value_kind};

    #[test]
    fn numbers_and_value_kinds() {
        let table = [
            (ProcessingKey::RoutingKey, 0, ValueKind::Text),
            (ProcessingKey::Priority, 1, ValueKind::Number),
            (ProcessingKey::Timeout, 2, ValueKind::Number),
            (ProcessingKey::NrOfResults, 3, ValueKind::Number),
            (
                ProcessingKey::ServerSupportsStreaming,
                7,
                ValueKind::Boolean,
            ),
            (
                ProcessingKey::ClientSupportsStreaming,
                8,
                ValueKind::Boolean,
            ),
        ];
        for (key, number, kind) in table {
            assert_eq!(key as i32, number);
            assert_eq!(value_kind(key), kind);
        }
        for number in RESERVED {
            assert!(ProcessingKey::try_from(number).is_err());
        }
    }
}
