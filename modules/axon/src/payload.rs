//! Bus messages ↔ `SerializedObject{type, revision, data}`.
//!
//! The bytes on the wire are the bare object, as Axon Framework's Jackson
//! serializer writes and reads it:
//!
//! - **An application message enum** (serde's default, externally tagged
//!   representation): the variant's *content* is written, never serde's
//!   `{"Variant": …}` wrapper; the payload type names the variant — the
//!   `[types]` entry for it, else `payload.type-prefix` + the variant name.
//!   Read back, the type picks the variant: the `[types]` entry that names
//!   it, else the type without `type-prefix`, else the type's simple name
//!   (after the last `.` or `$`). A unit variant is written as `null`.
//! - **A plain message type** (`serde_json::Value`, a struct, an internally
//!   tagged or untagged enum): the whole message is written; its type comes
//!   from the header `axon-payload-type`, the mapping's `payload-type`, or
//!   `payload.default-type`.
//!
//! Which of the two a message type is, is found once, from the type itself
//! (whether deserialising it asks for an enum), so nothing needs configuring.
//! Documents the bridge makes itself (`telamon.axon.QueryResults`,
//! `telamon.axon.AggregateEvents` …) follow the same rule: plain JSON for a
//! plain type, the variant with the document's simple name for an enum.
//!
//! # Under stress
//!
//! A payload from the server is checked for size and nesting
//! (`payload.max-nesting-depth`) before anything is built from it, so a
//! hostile payload costs one pass over its bytes and an error, never a stack
//! overflow. An undecodable payload is an error to whoever can act on it; it
//! is never dropped silently.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use telamon_axon_proto::pb::SerializedObject;
use telamon_process::codec::{self, CodecError, DecodeLimits};

use crate::config::{PayloadConfig, PayloadFormat, TypeEntry};
use crate::template::simple_name;

/// Header a module sets to name the payload type of a plain message.
pub const PAYLOAD_TYPE_HEADER: &str = "axon-payload-type";

/// Type of a response that carries no payload.
pub const EMPTY_TYPE: &str = "telamon.axon.Empty";

/// Why a message could not become a payload, or a payload a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The message could not be serialised.
    #[error("message could not be serialised: {0}")]
    Encode(String),
    /// The payload bytes are not what the format says, or too large or deep.
    #[error("payload of type `{type_name}` could not be decoded: {source}")]
    Decode {
        /// The payload type.
        type_name: String,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// The payload type names no variant of the message enum.
    #[error(
        "payload type `{type_name}` names no variant of the message enum (looked for `{variant}`; map it in `[types]`)"
    )]
    UnknownType {
        /// The payload type.
        type_name: String,
        /// The variant it led to.
        variant: String,
    },
}

impl PayloadError {
    /// A short code for errors sent back over the bus or to AxonServer.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::Encode(_) => "payload-encode",
            PayloadError::Decode { .. } => "payload-decode",
            PayloadError::UnknownType { .. } => "payload-type",
        }
    }
}

/// What a message type looks like to serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Written whole.
    Plain,
    /// An externally tagged enum with these variants.
    Enum(&'static [&'static str]),
}

/// A message split into its variant (for an enum) and content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Content {
    pub(crate) variant: Option<&'static str>,
    pub(crate) value: Value,
}

/// Converts between one message type and payloads, per the bridge's config.
pub(crate) struct PayloadCodec<M> {
    shape: Shape,
    format: PayloadFormat,
    by_variant: HashMap<String, TypeEntry>,
    by_type: HashMap<String, String>,
    type_prefix: String,
    default_type: String,
    limits: DecodeLimits,
    _message: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for PayloadCodec<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadCodec")
            .field("shape", &self.shape)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl<M: Serialize + DeserializeOwned> PayloadCodec<M> {
    /// A codec for `M`; `types` maps variant names to type names.
    pub(crate) fn new(
        config: &PayloadConfig,
        types: &std::collections::BTreeMap<String, TypeEntry>,
        max_size: usize,
    ) -> Self {
        PayloadCodec {
            shape: shape_of::<M>(),
            format: config.format,
            by_variant: types.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            by_type: types
                .iter()
                .map(|(k, v)| (v.name().to_owned(), k.clone()))
                .collect(),
            type_prefix: config.type_prefix.clone(),
            default_type: config.default_type.clone(),
            limits: DecodeLimits::new(max_size, config.max_nesting_depth),
            _message: PhantomData,
        }
    }

    /// The message type's shape.
    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// `[types]` keys that name no variant of an enum message type.
    pub(crate) fn unknown_type_keys(&self) -> Vec<String> {
        match self.shape {
            Shape::Plain => Vec::new(),
            Shape::Enum(variants) => self
                .by_variant
                .keys()
                .filter(|k| !variants.contains(&k.as_str()) && !k.starts_with("telamon.axon."))
                .cloned()
                .collect(),
        }
    }

    /// The variant name and content bytes of `message`, in the payload format.
    pub(crate) fn encode(
        &self,
        message: &M,
    ) -> Result<(Option<&'static str>, Vec<u8>), PayloadError> {
        let mode = match self.format {
            PayloadFormat::Json => Mode::Json,
            PayloadFormat::Cbor => Mode::Cbor,
        };
        match message.serialize(VariantProbe { mode }) {
            Ok(Split {
                variant,
                out: Out::Bytes(b),
            }) => Ok((Some(variant), b)),
            Ok(Split {
                out: Out::Value(_), ..
            }) => unreachable!("byte modes write bytes"),
            Err(Probe::NotVariant) => Ok((None, self.bytes_of(message)?)),
            Err(Probe::Complex) => {
                let content = self.content(message)?;
                Ok((content.variant, self.encode_value(&content.value)?))
            }
            Err(Probe::Failed(e)) => Err(PayloadError::Encode(e)),
        }
    }

    /// `message` as a variant and a JSON value (for selectors and batches).
    pub(crate) fn content(&self, message: &M) -> Result<Content, PayloadError> {
        match message.serialize(VariantProbe { mode: Mode::Value }) {
            Ok(Split {
                variant,
                out: Out::Value(value),
            }) => Ok(Content {
                variant: Some(variant),
                value,
            }),
            Ok(Split {
                out: Out::Bytes(_), ..
            }) => unreachable!("value mode writes values"),
            Err(Probe::NotVariant) => Ok(Content {
                variant: None,
                value: serde_json::to_value(message)
                    .map_err(|e| PayloadError::Encode(e.to_string()))?,
            }),
            Err(Probe::Complex) => {
                let whole = serde_json::to_value(message)
                    .map_err(|e| PayloadError::Encode(e.to_string()))?;
                let Value::Object(map) = whole else {
                    return Err(PayloadError::Encode(
                        "enum did not serialise as one entry".into(),
                    ));
                };
                let (name, value) = map.into_iter().next().ok_or_else(|| {
                    PayloadError::Encode("enum serialised as an empty map".into())
                })?;
                Ok(Content {
                    variant: self.variant_static(&name),
                    value,
                })
            }
            Err(Probe::Failed(e)) => Err(PayloadError::Encode(e)),
        }
    }

    fn variant_static(&self, name: &str) -> Option<&'static str> {
        match self.shape {
            Shape::Enum(variants) => variants.iter().find(|v| **v == name).copied(),
            Shape::Plain => None,
        }
    }

    fn bytes_of<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, PayloadError> {
        match self.format {
            PayloadFormat::Json => {
                serde_json::to_vec(value).map_err(|e| PayloadError::Encode(e.to_string()))
            }
            PayloadFormat::Cbor => {
                codec::encode_cbor(value).map_err(|e| PayloadError::Encode(e.to_string()))
            }
        }
    }

    /// A JSON value in the payload format.
    pub(crate) fn encode_value(&self, value: &Value) -> Result<Vec<u8>, PayloadError> {
        self.bytes_of(value)
    }

    /// The type name and revision of a payload: `explicit` (header or
    /// mapping) first, then the variant's name, then the default type.
    pub(crate) fn type_of(
        &self,
        variant: Option<&str>,
        explicit: Option<String>,
    ) -> (String, String) {
        if let Some(t) = explicit {
            let revision = self
                .by_type
                .get(&t)
                .and_then(|v| self.by_variant.get(v))
                .map(|e| e.revision().to_owned())
                .unwrap_or_default();
            return (t, revision);
        }
        match variant {
            Some(v) => match self.by_variant.get(v) {
                Some(entry) => (entry.name().to_owned(), entry.revision().to_owned()),
                None => (format!("{}{v}", self.type_prefix), String::new()),
            },
            None => (self.default_type.clone(), String::new()),
        }
    }

    /// A complete payload.
    pub(crate) fn serialized(
        &self,
        variant: Option<&str>,
        explicit_type: Option<String>,
        data: Vec<u8>,
    ) -> SerializedObject {
        let (r#type, revision) = self.type_of(variant, explicit_type);
        SerializedObject {
            r#type,
            revision,
            data,
        }
    }

    /// The variant a payload type names (enums only).
    fn variant_for(&self, type_name: &str) -> Result<&'static str, PayloadError> {
        let Shape::Enum(variants) = self.shape else {
            unreachable!("only enums have variants")
        };
        let wanted: &str = if let Some(v) = self.by_type.get(type_name) {
            v
        } else if !self.type_prefix.is_empty()
            && let Some(rest) = type_name.strip_prefix(self.type_prefix.as_str())
        {
            rest
        } else {
            simple_name(type_name)
        };
        variants
            .iter()
            .find(|v| **v == wanted)
            .copied()
            .ok_or_else(|| PayloadError::UnknownType {
                type_name: type_name.to_owned(),
                variant: wanted.to_owned(),
            })
    }

    /// A payload from AxonServer as a message. `None` (no payload) is
    /// [`EMPTY_TYPE`] with `null` content.
    pub(crate) fn decode(&self, payload: Option<&SerializedObject>) -> Result<M, PayloadError> {
        let Some(payload) = payload.filter(|p| !(p.r#type.is_empty() && p.data.is_empty())) else {
            return self.document(EMPTY_TYPE, Value::Null);
        };
        let type_name = payload.r#type.as_str();
        let data: &[u8] = if payload.data.is_empty() {
            match self.format {
                PayloadFormat::Json => b"null",
                PayloadFormat::Cbor => &[0xf6],
            }
        } else {
            &payload.data
        };
        let decode_err = |source| PayloadError::Decode {
            type_name: type_name.to_owned(),
            source,
        };
        match self.shape {
            Shape::Plain => match self.format {
                PayloadFormat::Json => codec::decode_json(data, &self.limits).map_err(decode_err),
                PayloadFormat::Cbor => codec::decode_cbor(data, &self.limits).map_err(decode_err),
            },
            Shape::Enum(_) => {
                let variant = self.variant_for(type_name)?;
                let limits = self.limits.for_reply();
                match self.format {
                    PayloadFormat::Json => {
                        // `{"<variant>":<data>}`: the wrapper adds one level
                        // and a few bytes, which `for_reply` allows for.
                        let mut wrapped = Vec::with_capacity(data.len() + variant.len() + 8);
                        wrapped.push(b'{');
                        serde_json::to_writer(&mut wrapped, variant)
                            .map_err(|e| PayloadError::Encode(e.to_string()))?;
                        wrapped.push(b':');
                        wrapped.extend_from_slice(data);
                        wrapped.push(b'}');
                        codec::decode_json(&wrapped, &limits).map_err(decode_err)
                    }
                    PayloadFormat::Cbor => {
                        codec::check_cbor(data, &self.limits).map_err(decode_err)?;
                        let mut wrapped = vec![0xa1];
                        let name = codec::encode_cbor(variant)
                            .map_err(|e| PayloadError::Encode(e.to_string()))?;
                        wrapped.extend_from_slice(&name);
                        wrapped.extend_from_slice(data);
                        codec::decode_cbor(&wrapped, &limits).map_err(decode_err)
                    }
                }
            }
        }
    }

    /// A payload's content as JSON, wrapped in its variant for an enum: the
    /// form a message takes inside a bridge document.
    pub(crate) fn message_json(
        &self,
        payload: Option<&SerializedObject>,
    ) -> Result<Value, PayloadError> {
        let (type_name, content) =
            match payload.filter(|p| !(p.r#type.is_empty() && p.data.is_empty())) {
                None => (EMPTY_TYPE, Value::Null),
                Some(p) if p.data.is_empty() => (p.r#type.as_str(), Value::Null),
                Some(p) => {
                    let decode_err = |source| PayloadError::Decode {
                        type_name: p.r#type.clone(),
                        source,
                    };
                    let v = match self.format {
                        PayloadFormat::Json => codec::decode_json::<Value>(&p.data, &self.limits),
                        PayloadFormat::Cbor => codec::decode_cbor::<Value>(&p.data, &self.limits),
                    }
                    .map_err(decode_err)?;
                    (p.r#type.as_str(), v)
                }
            };
        self.wrap(type_name, content)
    }

    fn wrap(&self, type_name: &str, content: Value) -> Result<Value, PayloadError> {
        match self.shape {
            Shape::Plain => Ok(content),
            Shape::Enum(_) => {
                let variant = self.variant_for(type_name)?;
                let mut map = serde_json::Map::with_capacity(1);
                map.insert(variant.to_owned(), content);
                Ok(Value::Object(map))
            }
        }
    }

    /// A document the bridge made (type `type_name`) as a message.
    pub(crate) fn document(&self, type_name: &str, content: Value) -> Result<M, PayloadError> {
        let wrapped = self.wrap(type_name, content)?;
        serde_json::from_value(wrapped).map_err(|e| PayloadError::Decode {
            type_name: type_name.to_owned(),
            source: CodecError::WrongType {
                format: "JSON",
                reason: e.to_string(),
            },
        })
    }

    /// Elements of a list message (a batch): each element's variant (when
    /// it is an enum value) and content.
    pub(crate) fn elements(&self, list: Vec<Value>) -> Vec<Content> {
        list.into_iter()
            .map(|element| match (&self.shape, element) {
                (Shape::Enum(variants), Value::Object(map)) if map.len() == 1 => {
                    let (name, value) = map.into_iter().next().expect("one entry");
                    match variants.iter().find(|v| **v == name) {
                        Some(v) => Content {
                            variant: Some(v),
                            value,
                        },
                        None => {
                            let mut back = serde_json::Map::new();
                            back.insert(name, value);
                            Content {
                                variant: None,
                                value: Value::Object(back),
                            }
                        }
                    }
                }
                (Shape::Enum(variants), Value::String(s)) if variants.contains(&s.as_str()) => {
                    Content {
                        variant: self.variant_static(&s),
                        value: Value::Null,
                    }
                }
                (_, value) => Content {
                    variant: None,
                    value,
                },
            })
            .collect()
    }
}

/// The shape of `M`: an enum if deserialising it asks for one.
pub(crate) fn shape_of<M: DeserializeOwned>() -> Shape {
    match M::deserialize(ShapeProbe) {
        Err(ShapeFound::Enum(variants)) => Shape::Enum(variants),
        _ => Shape::Plain,
    }
}

/// A deserializer that answers only which kind of value is asked for.
struct ShapeProbe;

#[derive(Debug)]
enum ShapeFound {
    Enum(&'static [&'static str]),
    Other,
}

impl fmt::Display for ShapeFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shape probe")
    }
}

impl std::error::Error for ShapeFound {}

impl serde::de::Error for ShapeFound {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ShapeFound::Other
    }
}

impl<'de> serde::Deserializer<'de> for ShapeProbe {
    type Error = ShapeFound;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, ShapeFound> {
        Err(ShapeFound::Other)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ShapeFound> {
        Err(ShapeFound::Enum(variants))
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeFound> {
        // A newtype around an enum is still that enum on the wire.
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// How [`VariantProbe`] writes a variant's content.
#[derive(Clone, Copy)]
enum Mode {
    Json,
    Cbor,
    Value,
}

enum Out {
    Bytes(Vec<u8>),
    Value(Value),
}

struct Split {
    variant: &'static str,
    out: Out,
}

/// Why the probe did not split the message.
#[derive(Debug)]
enum Probe {
    /// Not an externally tagged enum value: write it whole.
    NotVariant,
    /// A struct or tuple variant: split through a JSON value.
    Complex,
    /// Serialising the content failed.
    Failed(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Failed(e) => f.write_str(e),
            _ => f.write_str("variant probe"),
        }
    }
}

impl std::error::Error for Probe {}

impl serde::ser::Error for Probe {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Probe::Failed(msg.to_string())
    }
}

/// A serializer that only accepts an enum value at the top and writes its
/// content alone.
struct VariantProbe {
    mode: Mode,
}

impl VariantProbe {
    fn write<T: Serialize + ?Sized>(&self, value: &T) -> Result<Out, Probe> {
        match self.mode {
            Mode::Json => serde_json::to_vec(value)
                .map(Out::Bytes)
                .map_err(|e| Probe::Failed(e.to_string())),
            Mode::Cbor => codec::encode_cbor(value)
                .map(Out::Bytes)
                .map_err(|e| Probe::Failed(e.to_string())),
            Mode::Value => serde_json::to_value(value)
                .map(Out::Value)
                .map_err(|e| Probe::Failed(e.to_string())),
        }
    }
}

macro_rules! not_variant {
    ($($method:ident($($arg:ty),*);)*) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<Split, Probe> {
                Err(Probe::NotVariant)
            }
        )*
    };
}

type Never = serde::ser::Impossible<Split, Probe>;

impl serde::Serializer for VariantProbe {
    type Ok = Split;
    type Error = Probe;
    type SerializeSeq = Never;
    type SerializeTuple = Never;
    type SerializeTupleStruct = Never;
    type SerializeTupleVariant = Never;
    type SerializeMap = Never;
    type SerializeStruct = Never;
    type SerializeStructVariant = Never;

    not_variant! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Split, Probe> {
        Err(Probe::NotVariant)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Split, Probe> {
        Ok(Split {
            variant,
            out: self.write(&())?,
        })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Split, Probe> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Split, Probe> {
        Ok(Split {
            variant,
            out: self.write(value)?,
        })
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Never, Probe> {
        Err(Probe::NotVariant)
    }

    fn serialize_tuple(self, _: usize) -> Result<Never, Probe> {
        Err(Probe::NotVariant)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Never, Probe> {
        Err(Probe::NotVariant)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Never, Probe> {
        Err(Probe::Complex)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Never, Probe> {
        Err(Probe::NotVariant)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Never, Probe> {
        Err(Probe::NotVariant)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Never, Probe> {
        Err(Probe::Complex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Opened {
        account_id: String,
        overdraft: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        AccountOpened(Opened),
        Closed { account_id: String },
        Ping,
        Empty,
    }

    fn codec<M: Serialize + DeserializeOwned>(format: PayloadFormat) -> PayloadCodec<M> {
        let mut types = std::collections::BTreeMap::new();
        types.insert(
            "AccountOpened".to_owned(),
            TypeEntry::Full {
                name: "com.example.AccountOpenedEvent".into(),
                revision: "2".into(),
            },
        );
        let config = PayloadConfig {
            format,
            type_prefix: "com.example.".into(),
            ..PayloadConfig::default()
        };
        PayloadCodec::new(&config, &types, 1 << 20)
    }

    #[test]
    fn shapes_are_found_from_the_type() {
        assert_eq!(shape_of::<Value>(), Shape::Plain);
        assert_eq!(shape_of::<Opened>(), Shape::Plain);
        assert_eq!(
            shape_of::<Msg>(),
            Shape::Enum(&["AccountOpened", "Closed", "Ping", "Empty"])
        );
    }

    #[test]
    fn an_enum_is_written_as_its_bare_content_and_read_back_by_type() {
        for format in [PayloadFormat::Json, PayloadFormat::Cbor] {
            let c = codec::<Msg>(format);
            let m = Msg::AccountOpened(Opened {
                account_id: "a-1".into(),
                overdraft: 100,
            });
            let (variant, data) = c.encode(&m).unwrap();
            if format == PayloadFormat::Json {
                assert_eq!(data, br#"{"accountId":"a-1","overdraft":100}"#);
            }
            let p = c.serialized(variant, None, data);
            assert_eq!(
                (p.r#type.as_str(), p.revision.as_str()),
                ("com.example.AccountOpenedEvent", "2")
            );
            assert_eq!(c.decode(Some(&p)).unwrap(), m);

            let closed = Msg::Closed {
                account_id: "a-2".into(),
            };
            let (variant, data) = c.encode(&closed).unwrap();
            let p = c.serialized(variant, None, data);
            assert_eq!(p.r#type, "com.example.Closed");
            assert_eq!(c.decode(Some(&p)).unwrap(), closed);

            let (variant, data) = c.encode(&Msg::Ping).unwrap();
            let p = c.serialized(variant, None, data);
            assert_eq!(c.decode(Some(&p)).unwrap(), Msg::Ping);
            // No payload at all is the Empty document.
            assert_eq!(c.decode(None).unwrap(), Msg::Empty);
        }
    }

    #[test]
    fn a_simple_name_picks_the_variant_and_an_unknown_type_is_an_error() {
        let c = codec::<Msg>(PayloadFormat::Json);
        let p = SerializedObject {
            r#type: "org.other.Outer$Closed".into(),
            revision: String::new(),
            data: br#"{"account_id":"x"}"#.to_vec(),
        };
        assert_eq!(
            c.decode(Some(&p)).unwrap(),
            Msg::Closed {
                account_id: "x".into()
            }
        );
        let unknown = SerializedObject {
            r#type: "org.other.Nope".into(),
            ..p.clone()
        };
        assert!(matches!(
            c.decode(Some(&unknown)),
            Err(PayloadError::UnknownType { .. })
        ));
        let garbage = SerializedObject {
            data: b"{\"account_id\": ".to_vec(),
            ..p.clone()
        };
        assert!(matches!(
            c.decode(Some(&garbage)),
            Err(PayloadError::Decode { .. })
        ));
        let deep = SerializedObject {
            data: "[".repeat(10_000).into_bytes(),
            ..p
        };
        let Err(PayloadError::Decode { source, .. }) = c.decode(Some(&deep)) else {
            panic!("deep payload decoded")
        };
        assert!(source.is_too_deep());
    }

    #[test]
    fn a_plain_type_is_written_whole_and_named_by_config() {
        let c = codec::<Value>(PayloadFormat::Json);
        let m = json!({"Closed": {"x": 1}});
        let (variant, data) = c.encode(&m).unwrap();
        assert_eq!(variant, None);
        assert_eq!(data, br#"{"Closed":{"x":1}}"#);
        let p = c.serialized(None, Some("x.Y".into()), data);
        assert_eq!(p.r#type, "x.Y");
        assert_eq!(c.decode(Some(&p)).unwrap(), m);
        assert_eq!(c.serialized(None, None, vec![]).r#type, "java.lang.Object");
        assert_eq!(c.decode(None).unwrap(), Value::Null);
    }

    #[test]
    fn documents_and_batches() {
        let c = codec::<Msg>(PayloadFormat::Json);
        let doc = c.message_json(Some(&SerializedObject {
            r#type: "com.example.Closed".into(),
            revision: String::new(),
            data: br#"{"account_id":"z"}"#.to_vec(),
        }));
        assert_eq!(doc.unwrap(), json!({"Closed": {"account_id": "z"}}));
        let parts = c.elements(vec![
            json!({"Closed": {"account_id": "z"}}),
            json!("Ping"),
            json!(3),
        ]);
        assert_eq!(parts[0].variant, Some("Closed"));
        assert_eq!(parts[1].variant, Some("Ping"));
        assert_eq!(parts[2].variant, None);
    }
}
