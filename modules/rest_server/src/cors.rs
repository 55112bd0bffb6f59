//! Cross-origin requests: preflights answered here, and
//! `Access-Control-Allow-Origin` on the answers to allowed origins.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! never reaches the bus: an allowed origin gets 204 with the allowed
//! methods and headers, any other 403. A request from an origin not allowed
//! is still served (the browser hides the answer), without the header.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use telamon_sdk::ModuleError;

use crate::config::CorsConfig;

#[derive(Debug)]
pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: HeaderValue,
    headers: HeaderValue,
    max_age: HeaderValue,
}

impl Cors {
    pub(crate) fn new(config: &CorsConfig) -> Result<Self, ModuleError> {
        let value = |key: &str, text: String| {
            HeaderValue::try_from(text.as_str()).map_err(|_| {
                ModuleError::new(format!("`cors.{key}`: `{text}` is not a header value"))
            })
        };
        if config.allow_origins.is_empty() {
            return Err(ModuleError::new(
                "`cors.allow-origins` is empty: list the origins (`https://app.example`) or `\"*\"`",
            ));
        }
        let any_origin = config.allow_origins.iter().any(|o| o == "*");
        let origins = config
            .allow_origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| value("allow-origins", o.trim_end_matches('/').to_owned()))
            .collect::<Result<_, _>>()?;
        Ok(Cors {
            any_origin,
            origins,
            methods: value("allow-methods", config.allow_methods.join(", "))?,
            headers: value("allow-headers", config.allow_headers.join(", "))?,
            max_age: value("max-age", config.max_age.as_secs().to_string())?,
        })
    }

    fn allowed(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin {
            Some(HeaderValue::from_static("*"))
        } else {
            self.origins.iter().find(|o| *o == origin).cloned()
        }
    }

    /// A preflight's answer, or `None` when `headers` are not a preflight's.
    pub(crate) fn preflight(&self, headers: &HeaderMap) -> Option<Response> {
        let origin = headers.get(header::ORIGIN)?;
        headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let Some(allowed) = self.allowed(origin) else {
            return Some(StatusCode::FORBIDDEN.into_response());
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(r)
    }

    /// Adds `Access-Control-Allow-Origin` when `origin` is allowed, and —
    /// unless any origin is — `Vary: origin` to every answer, so a shared
    /// cache never hands one origin's answer to another.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, response: &mut Response) {
        let h = response.headers_mut();
        if let Some(allowed) = origin.and_then(|o| self.allowed(o)) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        }
        if !self.any_origin {
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}
