//! What travels on the bus: [`RestRequest`] out, [`RestResponse`] back.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use telamon_sdk::{HandlerError, Message};

/// An HTTP request as a handler sees it, on topic `{prefix}.{method}.{path words}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RestRequest {
    /// Upper-case HTTP method (`GET`, `POST` …).
    pub method: String,
    /// The path as sent, still percent-encoded (`/users/42`).
    pub path: String,
    /// The path's words, percent-decoded (`["users", "42"]`).
    pub path_elements: Vec<String>,
    /// Query parameters, decoded; a name given twice has two values, in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, Vec<String>>,
    /// The headers the config allows (`allow-headers`), names in lower case;
    /// a header sent twice has its values joined with `, `.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when the content type says JSON, else bytes.
    #[serde(default, skip_serializing_if = "Body::is_empty")]
    pub body: Body,
}

impl RestRequest {
    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.get(name)?.first().map(String::as_str)
    }

    /// Header `name` (lower case), when the config let it through.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What a handler answers: status, headers, body.
///
/// ```
/// use telamon_module_rest_server::RestResponse;
/// let r = RestResponse::json(201, serde_json::json!({"id": 7})).with_header("location", "/items/7");
/// assert_eq!(r.status, 201);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestResponse {
    /// HTTP status (200–999; anything else is answered 500).
    pub status: u16,
    /// Extra response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `Content-Type`; by default `application/json` for a JSON body,
    /// `text/plain; charset=utf-8` for text, `application/octet-stream` for bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body.
    #[serde(default, skip_serializing_if = "Body::is_empty")]
    pub body: Body,
}

impl RestResponse {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::with_body(status, Body::Json(body))
    }

    /// `status` with a text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::with_body(status, Body::Text(body.into()))
    }

    /// `status` with bytes of `content_type`.
    pub fn bytes(status: u16, content_type: impl Into<String>, body: Vec<u8>) -> Self {
        RestResponse {
            content_type: Some(content_type.into()),
            ..Self::with_body(status, Body::Bytes(body))
        }
    }

    /// `status` and no body.
    pub fn empty(status: u16) -> Self {
        Self::with_body(status, Body::Empty)
    }

    fn with_body(status: u16, body: Body) -> Self {
        RestResponse {
            status,
            headers: BTreeMap::new(),
            content_type: None,
            body,
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// A request or response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// A JSON document.
    Json(serde_json::Value),
    /// UTF-8 text (responses).
    Text(String),
    /// Anything else (a CBOR byte string on the wire; an array of numbers in JSON).
    Bytes(#[serde(with = "byte_string")] Vec<u8>),
}

impl Body {
    /// True for [`Body::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, Body::Empty)
    }
}

/// The error a handler returns to answer with HTTP status `status`
/// (400–599): the gateway answers that status with body
/// `{"error": message, "status": status}`. Any other [`HandlerError`] is
/// answered 500.
///
/// ```
/// let e = telamon_module_rest_server::http_error(404, "no such user");
/// assert_eq!(e.code(), Some("404"));
/// ```
pub fn http_error(status: u16, message: impl Into<String>) -> HandlerError {
    HandlerError::new(message).with_code(status.to_string())
}

/// A process's message type, as the REST server needs it: a
/// [`RestRequest`] goes in, and a handler's answer is read as a
/// [`RestResponse`].
///
/// Implemented for `serde_json::Value` (an answer must then deserialise as a
/// `RestResponse`: `{"status": 200, "body": {"json": …}}`; `RestResponse`
/// converts into a `Value`). For an application enum:
///
/// ```
/// use std::borrow::Cow;
/// use serde::{Deserialize, Serialize};
/// use telamon_module_rest_server::{RestMessage, RestRequest, RestResponse};
///
/// #[derive(Serialize, Deserialize)]
/// enum Msg { Http(RestRequest), Reply(RestResponse), Other(String) }
/// impl From<RestRequest> for Msg {
///     fn from(r: RestRequest) -> Self { Msg::Http(r) }
/// }
/// impl RestMessage for Msg {
///     fn rest_response(&self) -> Result<Cow<'_, RestResponse>, String> {
///         match self {
///             Msg::Reply(r) => Ok(Cow::Borrowed(r)),
///             _ => Err("not a Msg::Reply".into()),
///         }
///     }
/// }
/// ```
pub trait RestMessage: Message + From<RestRequest> {
    /// This message as a response; `Err` says why it is not one (the client
    /// gets a 500 and the reason is logged).
    fn rest_response(&self) -> Result<Cow<'_, RestResponse>, String>;

    /// This message as a response, ready to send: what the server calls.
    /// The default encodes [`rest_response`](Self::rest_response); an
    /// implementation may write straight from the message instead (as
    /// `serde_json::Value`'s does, without copying the body), and must then
    /// accept and refuse exactly what `rest_response` does.
    fn encode_response(&self) -> Result<Encoded, String> {
        self.rest_response()?.encode()
    }
}

/// A response ready to send: what [`RestMessage::encode_response`] gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// `Content-Type`, when the response has one.
    pub content_type: Option<Cow<'static, str>>,
    /// The body's bytes.
    pub body: bytes::Bytes,
}

const JSON_TYPE: &str = "application/json";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
const BYTES_TYPE: &str = "application/octet-stream";

/// A JSON document's bytes, in one allocation for typical answers.
fn json_bytes(v: &serde_json::Value) -> Result<bytes::Bytes, String> {
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, v).map_err(|e| e.to_string())?;
    Ok(out.into())
}

impl RestResponse {
    /// Encodes this response.
    pub fn encode(&self) -> Result<Encoded, String> {
        let (default_type, body) = match &self.body {
            Body::Empty => (None, bytes::Bytes::new()),
            Body::Json(v) => (Some(JSON_TYPE), json_bytes(v)?),
            Body::Text(t) => (Some(TEXT_TYPE), bytes::Bytes::copy_from_slice(t.as_bytes())),
            Body::Bytes(b) => (Some(BYTES_TYPE), bytes::Bytes::copy_from_slice(b)),
        };
        Ok(Encoded {
            status: self.status,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            content_type: match &self.content_type {
                Some(t) => Some(Cow::Owned(t.clone())),
                None => default_type.map(Cow::Borrowed),
            },
            body,
        })
    }
}

impl From<RestRequest> for serde_json::Value {
    /// The request as `RestRequest`'s `Serialize` writes it, built by moving
    /// its strings rather than copying them.
    fn from(r: RestRequest) -> Self {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        m.insert("method".to_owned(), Value::String(r.method));
        m.insert("path".to_owned(), Value::String(r.path));
        m.insert(
            "path-elements".to_owned(),
            Value::Array(r.path_elements.into_iter().map(Value::String).collect()),
        );
        if !r.query.is_empty() {
            m.insert(
                "query".to_owned(),
                serde_json::to_value(r.query).unwrap_or_default(),
            );
        }
        if !r.headers.is_empty() {
            m.insert(
                "headers".to_owned(),
                serde_json::to_value(r.headers).unwrap_or_default(),
            );
        }
        if !r.body.is_empty() {
            m.insert(
                "body".to_owned(),
                serde_json::to_value(r.body).unwrap_or_default(),
            );
        }
        Value::Object(m)
    }
}

impl From<RestResponse> for serde_json::Value {
    fn from(r: RestResponse) -> Self {
        serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
    }
}

impl RestMessage for serde_json::Value {
    fn rest_response(&self) -> Result<Cow<'_, RestResponse>, String> {
        RestResponse::deserialize(self)
            .map(Cow::Owned)
            .map_err(|e| format!("the answer is not a REST response ({e})"))
    }

    /// Reads the response in place: a JSON body is written from the message
    /// itself, not from a copy. Anything not laid out exactly as a
    /// `RestResponse` falls back to [`rest_response`](Self::rest_response),
    /// which says what is wrong.
    fn encode_response(&self) -> Result<Encoded, String> {
        use serde_json::Value;
        let slow = || self.rest_response()?.encode();
        let Value::Object(fields) = self else {
            return slow();
        };
        let mut encoded = Encoded {
            status: 0,
            headers: Vec::new(),
            content_type: None,
            body: bytes::Bytes::new(),
        };
        let mut default_type = None;
        for (key, value) in fields {
            match (key.as_str(), value) {
                ("status", Value::Number(n)) => {
                    match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                        Some(n) => encoded.status = n,
                        None => return slow(),
                    }
                }
                ("headers", Value::Object(h)) => {
                    for (k, v) in h {
                        let Value::String(v) = v else { return slow() };
                        encoded.headers.push((k.clone(), v.clone()));
                    }
                }
                ("content-type", Value::String(t)) => {
                    encoded.content_type = Some(Cow::Owned(t.clone()));
                }
                ("content-type", Value::Null) => {}
                ("body", Value::String(s)) if s == "empty" => {}
                ("body", Value::Object(b)) if b.len() == 1 => match b.iter().next() {
                    Some((kind, Value::String(t))) if kind == "text" => {
                        default_type = Some(TEXT_TYPE);
                        encoded.body = bytes::Bytes::copy_from_slice(t.as_bytes());
                    }
                    Some((kind, v)) if kind == "json" => {
                        default_type = Some(JSON_TYPE);
                        encoded.body = json_bytes(v)?;
                    }
                    _ => return slow(),
                },
                _ => return slow(),
            }
        }
        if !fields.contains_key("status") {
            return slow();
        }
        if encoded.content_type.is_none() {
            encoded.content_type = default_type.map(Cow::Borrowed);
        }
        Ok(encoded)
    }
}

/// Bytes as a byte string (compact in CBOR); read back from a byte string
/// or from a sequence of numbers (JSON).
mod byte_string {
    use super::*;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_the_value_its_serialize_writes() {
        let mut r = RestRequest {
            method: "POST".into(),
            path: "/a/b".into(),
            path_elements: vec!["a".into(), "b".into()],
            query: BTreeMap::new(),
            headers: BTreeMap::new(),
            body: Body::Empty,
        };
        assert_eq!(
            serde_json::Value::from(r.clone()),
            serde_json::to_value(&r).unwrap()
        );
        r.query.insert("q".into(), vec!["1".into(), "2".into()]);
        r.headers.insert("x-tenant".into(), "acme".into());
        r.body = Body::Bytes(vec![1, 2]);
        assert_eq!(
            serde_json::Value::from(r.clone()),
            serde_json::to_value(&r).unwrap()
        );
    }

    #[test]
    fn bytes_round_trip_through_json_values() {
        let r = RestResponse::bytes(200, "application/x-demo", vec![0, 1, 255]);
        let v = serde_json::Value::from(r.clone());
        assert_eq!(v.rest_response().unwrap().into_owned(), r);
    }

    #[test]
    fn a_value_encodes_as_its_response_does() {
        let responses = [
            RestResponse::json(201, serde_json::json!({"a": [1, "x"]}))
                .with_header("location", "/a"),
            RestResponse::text(200, "hi"),
            RestResponse::bytes(200, "image/png", vec![1, 2]),
            RestResponse::empty(204),
            RestResponse {
                content_type: Some("text/html".into()),
                ..RestResponse::text(200, "<p>")
            },
        ];
        for r in responses {
            let v = serde_json::Value::from(r.clone());
            assert_eq!(v.encode_response().unwrap(), r.encode().unwrap(), "{v}");
        }
        for bad in [
            serde_json::json!({"status": 70000}),
            serde_json::json!({"status": 200, "extra": 1}),
            serde_json::json!({"status": 200, "body": {"json": 1, "text": "x"}}),
            serde_json::json!({"body": "empty"}),
            serde_json::json!({"status": 200, "headers": {"a": 1}}),
        ] {
            assert!(bad.encode_response().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_value_that_is_not_a_response_says_why() {
        let e = serde_json::json!({"hello": 1}).rest_response().unwrap_err();
        assert!(e.contains("not a REST response"), "{e}");
    }
}
