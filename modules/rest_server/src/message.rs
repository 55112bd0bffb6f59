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
    #[serde(default)]
    pub query: BTreeMap<String, Vec<String>>,
    /// The headers the config allows (`allow-headers`), names in lower case;
    /// a header sent twice has its values joined with `, `.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when the content type says JSON, else bytes.
    #[serde(default)]
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
    /// HTTP status (100–999; anything else is answered 500).
    pub status: u16,
    /// Extra response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `Content-Type`; by default `application/json` for a JSON body,
    /// `text/plain; charset=utf-8` for text, `application/octet-stream` for bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body.
    #[serde(default)]
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
}

impl From<RestRequest> for serde_json::Value {
    fn from(r: RestRequest) -> Self {
        serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
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
    fn bytes_round_trip_through_json_values() {
        let r = RestResponse::bytes(200, "application/x-demo", vec![0, 1, 255]);
        let v = serde_json::Value::from(r.clone());
        assert_eq!(v.rest_response().unwrap().into_owned(), r);
    }

    #[test]
    fn a_value_that_is_not_a_response_says_why() {
        let e = serde_json::json!({"hello": 1}).rest_response().unwrap_err();
        assert!(e.contains("not a REST response"), "{e}");
    }
}
