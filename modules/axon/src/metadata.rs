//! Bus headers ↔ Axon metadata, and the headers the bridge adds itself.
//!
//! - **Out** (bus → AxonServer): every header becomes a text metadata entry
//!   (so a `traceparent` reaches Axon Framework's tracing), except the
//!   bridge's own `axon-…` headers, which steer the bridge and are not sent.
//! - **In** (AxonServer → bus): every metadata entry becomes a header. Text
//!   stays text; numbers, booleans and doubles are written out as text; a
//!   bytes value becomes its base64 data (its type and revision are not
//!   kept). Then the bridge adds its `axon-…` headers (message id, payload
//!   type, aggregate id, sequence, token …), which win over metadata of the
//!   same name.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use telamon_axon_proto::pb::{MetaDataValue, meta_data_value};
use telamon_sdk::Headers;

/// Prefix of the headers the bridge reads and writes itself; they are never
/// sent as metadata.
pub const BRIDGE_PREFIX: &str = "axon-";
/// The Axon message id of the command, query, event or update.
pub const MESSAGE_ID: &str = "axon-message-id";
/// The payload type (on the way out, names a plain message's type).
pub const PAYLOAD_TYPE: &str = crate::payload::PAYLOAD_TYPE_HEADER;
/// The payload revision.
pub const PAYLOAD_REVISION: &str = "axon-payload-revision";
/// The aggregate an event belongs to.
pub const AGGREGATE_ID: &str = "axon-aggregate-id";
/// The aggregate's type.
pub const AGGREGATE_TYPE: &str = "axon-aggregate-type";
/// The event's sequence number within its aggregate.
pub const SEQUENCE: &str = "axon-sequence";
/// The event's global token (tracking processors).
pub const TOKEN: &str = "axon-token";
/// The message's timestamp, milliseconds since the Unix epoch.
pub const TIMESTAMP: &str = "axon-timestamp";
/// The tracking processor that published the event.
pub const PROCESSOR: &str = "axon-processor";
/// The command name of an incoming command.
pub const COMMAND: &str = "axon-command";
/// The query name of an incoming query.
pub const QUERY: &str = "axon-query";
/// The subscription-query id of an update.
pub const SUBSCRIPTION: &str = "axon-subscription";

/// Metadata for `headers`: every header but the bridge's own, as text.
pub(crate) fn to_metadata(headers: &Headers) -> HashMap<String, MetaDataValue> {
    headers
        .iter()
        .filter(|(k, _)| !k.starts_with(BRIDGE_PREFIX))
        .map(|(k, v)| {
            (
                k.to_owned(),
                MetaDataValue {
                    data: Some(meta_data_value::Data::TextValue(v.to_owned())),
                },
            )
        })
        .collect()
}

/// Headers for `metadata`, then the bridge's own `extra` headers.
pub(crate) fn to_headers(
    metadata: &HashMap<String, MetaDataValue>,
    extra: &[(&str, &str)],
) -> Headers {
    header_pairs(metadata, extra).collect()
}

/// The pairs [`to_headers`] makes, to collect or to add to a
/// [`HeaderBlock`](telamon_sdk::HeaderBlock).
pub(crate) fn header_pairs<'a>(
    metadata: &'a HashMap<String, MetaDataValue>,
    extra: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> {
    let from_metadata = metadata.iter().filter_map(|(k, v)| {
        let text: Cow<'_, str> = match v.data.as_ref()? {
            meta_data_value::Data::TextValue(t) => Cow::Borrowed(t),
            meta_data_value::Data::NumberValue(n) => Cow::Owned(n.to_string()),
            meta_data_value::Data::BooleanValue(b) => {
                Cow::Borrowed(if *b { "true" } else { "false" })
            }
            meta_data_value::Data::DoubleValue(d) => Cow::Owned(d.to_string()),
            meta_data_value::Data::BytesValue(b) => {
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&b.data))
            }
        };
        Some((k.as_str(), text))
    });
    from_metadata.chain(extra.iter().map(|(k, v)| (*k, Cow::Borrowed(*v))))
}

/// A text metadata value.
pub(crate) fn text(value: impl Into<String>) -> MetaDataValue {
    MetaDataValue {
        data: Some(meta_data_value::Data::TextValue(value.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telamon_axon_proto::pb::SerializedObject;

    #[test]
    fn headers_go_out_as_text_without_the_bridges_own() {
        let h = Headers::new()
            .with("traceparent", "00-a-b-01")
            .with(PAYLOAD_TYPE, "x.Y");
        let m = to_metadata(&h);
        assert_eq!(m.len(), 1);
        assert_eq!(m["traceparent"], text("00-a-b-01"));
    }

    #[test]
    fn typed_metadata_comes_in_as_text_and_bridge_headers_win() {
        let mut m = HashMap::new();
        m.insert(
            "n".to_owned(),
            MetaDataValue {
                data: Some(meta_data_value::Data::NumberValue(-4)),
            },
        );
        m.insert(
            "b".to_owned(),
            MetaDataValue {
                data: Some(meta_data_value::Data::BooleanValue(true)),
            },
        );
        m.insert(
            "d".to_owned(),
            MetaDataValue {
                data: Some(meta_data_value::Data::DoubleValue(1.5)),
            },
        );
        m.insert(
            "x".to_owned(),
            MetaDataValue {
                data: Some(meta_data_value::Data::BytesValue(SerializedObject {
                    r#type: "t".into(),
                    revision: String::new(),
                    data: vec![1, 2, 3],
                })),
            },
        );
        m.insert(TOKEN.to_owned(), text("forged"));
        m.insert("none".to_owned(), MetaDataValue { data: None });
        let h = to_headers(&m, &[(TOKEN, "7")]);
        assert_eq!(h.get("n"), Some("-4"));
        assert_eq!(h.get("b"), Some("true"));
        assert_eq!(h.get("d"), Some("1.5"));
        assert_eq!(h.get("x"), Some("AQID"));
        assert_eq!(h.get(TOKEN), Some("7"));
        assert_eq!(h.get("none"), None);
    }
}
