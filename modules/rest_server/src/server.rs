//! The `rest-server` module: an axum server whose requests become bus requests.
//!
//! # Under stress
//!
//! - **No handler**: a request topic nobody handles is answered 404 at once
//!   (the bus says so without waiting for the timeout).
//! - **A slow handler**: after `timeout` (or the first matching
//!   `route-timeouts` entry) the client gets 504; the handler's late answer
//!   is dropped by the bus.
//! - **Many clients**: every connection is its own task (hyper); requests
//!   wait for handlers in the bus's request queue, whose size and
//!   concurrency the handler chooses (`HandleOptions`).
//! - **A large body**: a `Content-Length` over `body-limit` is answered 413
//!   before the body is read; a chunked body is read up to the limit, then 413.
//! - **Malformed input**: JSON that does not parse under a JSON content type,
//!   a path segment that cannot be a topic word, or one that is not UTF-8 →
//!   400 with a JSON error body, and nothing reaches the bus.
//! - **A slow upload**: a body that has not arrived within the request's
//!   timeout is answered 408.
//! - **Stop**: the listener closes, event streams end (their connections are
//!   cut, so a client that stopped reading cannot hold the stop), requests in
//!   flight are answered (the buses close only after).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use telamon_sdk::{
    Context, Counter, Headers, Module, ModuleError, Pattern, RequestError, RequestOptions,
    TRACEPARENT, Topic,
};
use tokio::net::TcpListener;

use crate::config::RestServerConfig;
use crate::connection::{Connection, CuttableListener};
use crate::cors::Cors;
use crate::events::EventStream;
use crate::message::{Body, Encoded, RestMessage, RestRequest};
use crate::route;
use crate::static_files::{Found, StaticFiles};

/// The REST server, for message type `M`. Register it with
/// `.module::<RestServer<M>>()`; each `[module.<id>]` with
/// `class = "rest-server"` is a server of its own.
#[derive(Debug)]
pub struct RestServer<M> {
    config: RestServerConfig,
    timeouts: Vec<(Pattern, Duration)>,
    allow_headers: Vec<HeaderName>,
    cors: Option<Cors>,
    events: Vec<Pattern>,
    _message: PhantomData<fn() -> M>,
}

impl<M: RestMessage> Module<M> for RestServer<M> {
    const NAME: &'static str = "rest-server";
    const DESCRIPTION: &'static str =
        "answers HTTP requests through bus requests, serves files and server-sent events";
    type Config = RestServerConfig;

    fn new(config: RestServerConfig) -> Result<Self, ModuleError> {
        Topic::new(&config.prefix).map_err(|e| ModuleError::new(format!("`prefix`: {e}")))?;
        if config.timeout.is_zero() || config.body_limit == 0 {
            return Err(ModuleError::new(
                "`timeout` and `body-limit` must be more than 0",
            ));
        }
        let timeouts = config
            .route_timeouts
            .iter()
            .map(|r| {
                let p = Pattern::new(&r.pattern)
                    .map_err(|e| ModuleError::new(format!("`route-timeouts`: {e}")))?;
                if r.timeout.is_zero() {
                    return Err(ModuleError::new(format!(
                        "`route-timeouts`: the timeout of `{p}` must be more than 0"
                    )));
                }
                Ok((p, r.timeout))
            })
            .collect::<Result<_, _>>()?;
        let allow_headers = config
            .allow_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.to_ascii_lowercase()).map_err(|_| {
                    ModuleError::new(format!("`allow-headers`: `{h}` is not a header name"))
                })
            })
            .collect::<Result<_, _>>()?;
        let cors = config.cors.as_ref().map(Cors::new).transpose()?;
        if let Some(s) = &config.static_files {
            if !s.path.starts_with('/') {
                return Err(ModuleError::new(format!(
                    "`static.path` `{}` must start with `/`",
                    s.path
                )));
            }
            if !s.folder.is_dir() {
                return Err(ModuleError::new(format!(
                    "`static.folder` `{}` is not a folder",
                    s.folder.display()
                )));
            }
        }
        let mut events = Vec::new();
        for (i, e) in config.events.iter().enumerate() {
            if !e.path.starts_with('/') || e.client_queue == 0 {
                return Err(ModuleError::new(format!(
                    "`events[{i}]`: `path` must start with `/` and `client-queue` be more than 0"
                )));
            }
            if config.events[..i].iter().any(|o| o.path == e.path) {
                return Err(ModuleError::new(format!(
                    "`events[{i}]`: path `{}` is given twice",
                    e.path
                )));
            }
            events.push(
                Pattern::new(&e.pattern)
                    .map_err(|err| ModuleError::new(format!("`events[{i}].pattern`: {err}")))?,
            );
        }
        Ok(RestServer {
            config,
            timeouts,
            allow_headers,
            cors,
            events,
            _message: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let listener = TcpListener::bind(&self.config.address).await.map_err(|e| {
            ModuleError::new(format!("cannot listen on `{}`: {e}", self.config.address))
        })?;
        let local = listener.local_addr()?;
        let mut streams = Vec::new();
        for (config, pattern) in self.config.events.iter().zip(&self.events) {
            streams.push(EventStream::start(config, pattern, &ctx).await?);
        }
        let outcome = |class: &str| {
            ctx.counter(
                "telamon_rest_requests",
                "HTTP requests answered, by status class",
                &[("status", class)],
            )
        };
        let shared = Arc::new(Shared {
            statics: self.config.static_files.as_ref().map(StaticFiles::new),
            answered: [
                outcome("2xx"),
                outcome("3xx"),
                outcome("4xx"),
                outcome("5xx"),
            ],
            server: self,
            ctx: ctx.clone(),
            streams,
        });
        tracing::info!(module = %ctx.id(), address = %local, prefix = %shared.server.config.prefix, "REST server listening");
        let app = Router::new()
            .fallback(gateway::<M>)
            .with_state(shared.clone());
        let task_ctx = ctx.clone();
        ctx.run_draining(async move {
            if !task_ctx.started().await {
                return;
            }
            let stop = task_ctx.clone();
            let streams = shared.clone();
            let app = app.into_make_service_with_connect_info::<Connection>();
            let served = axum::serve(CuttableListener(listener), app)
                .with_graceful_shutdown(async move {
                    stop.stopping().await;
                    for s in &streams.streams {
                        s.close();
                    }
                })
                .await;
            if let Err(e) = served {
                tracing::error!(module = %task_ctx.id(), error = %e, "the REST server failed");
            }
        });
        Ok(())
    }
}

struct Shared<M: RestMessage> {
    server: Arc<RestServer<M>>,
    ctx: Context<M>,
    statics: Option<StaticFiles>,
    streams: Vec<Arc<EventStream>>,
    answered: [Counter; 4],
}

async fn gateway<M: RestMessage>(
    State(s): State<Arc<Shared<M>>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    request: Request,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = answer(&s, connection, request).await;
    if let Some(cors) = &s.server.cors {
        cors.decorate(origin.as_ref(), &mut response);
    }
    let class = (response.status().as_u16() / 100).clamp(2, 5) - 2;
    s.answered[class as usize].inc();
    response
}

async fn answer<M: RestMessage>(
    s: &Shared<M>,
    connection: Connection,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if parts.method == Method::OPTIONS
        && let Some(preflight) = s
            .server
            .cors
            .as_ref()
            .and_then(|c| c.preflight(&parts.headers))
    {
        return preflight;
    }
    if parts.method == Method::GET || parts.method == Method::HEAD {
        if let Some(stream) = s.streams.iter().find(|e| e.path == path) {
            return stream.connect(connection);
        }
        if let Some(statics) = &s.statics
            && let Found::Answer(r) = statics.lookup(path, parts.method == Method::HEAD).await
        {
            return r;
        }
    }
    let routed = route::path_words(path).and_then(|words| {
        let topic = route::request_topic(&s.server.config.prefix, &parts.method, &words)?;
        Ok((topic, words))
    });
    let (topic, words) = match routed {
        Ok(r) => r,
        Err(refused) => return error(refused.status, &refused.reason),
    };
    let timeout = s
        .server
        .timeouts
        .iter()
        .find(|(p, _)| p.matches_topic(&topic))
        .map_or(s.server.config.timeout, |(_, t)| *t);
    // A body that trickles in is given the request's timeout too, so a slow
    // upload cannot hold a connection (or the server's stop) for ever.
    let body = match tokio::time::timeout(
        timeout,
        read_body(&parts.headers, body, s.server.config.body_limit),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return r,
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {timeout:?}"),
            );
        }
    };
    let request = RestRequest {
        method: parts.method.as_str().to_owned(),
        path: path.to_owned(),
        path_elements: words,
        query: query(parts.uri.query()),
        headers: allowed_headers(&parts.headers, &s.server.allow_headers),
        body,
    };
    let mut options = RequestOptions::new().timeout(timeout);
    if let Some(tp) = parts.headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        options = options.headers(Headers::new().with(TRACEPARENT, tp));
    }
    match s.ctx.request_with(topic, M::from(request), options).await {
        Ok(answer) => match answer.encode_response() {
            Ok(r) => to_http(r).unwrap_or_else(|reason| {
                tracing::warn!(module = %s.ctx.id(), path, %reason, "a handler's answer cannot be sent");
                error(StatusCode::INTERNAL_SERVER_ERROR, &reason)
            }),
            Err(reason) => {
                tracing::warn!(module = %s.ctx.id(), path, %reason, "a handler answered with something that is not a REST response");
                error(StatusCode::INTERNAL_SERVER_ERROR, &reason)
            }
        },
        Err(e) => request_failed(&e),
    }
}

/// The body as a handler gets it; a response for the client when it is too
/// large or not the JSON its content type promises.
async fn read_body(headers: &HeaderMap, body: HttpBody, limit: usize) -> Result<Body, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if axum::body::HttpBody::is_end_stream(&body) {
        return Ok(Body::Empty);
    }
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            ));
        }
    };
    if bytes.is_empty() {
        return Ok(Body::Empty);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
    if !json {
        return Ok(Body::Bytes(bytes.into()));
    }
    serde_json::from_slice(&bytes).map(Body::Json).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not valid JSON: {e}"),
        )
    })
}

fn query(q: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::<String, Vec<String>>::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}

fn allowed_headers(headers: &HeaderMap, allowed: &[HeaderName]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in allowed {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            out.insert(name.as_str().to_owned(), values.join(", "));
        }
    }
    out
}

/// Headers the server sets itself: a handler setting them could break the
/// framing of the connection (a wrong length, a second one) or its life.
const SERVER_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// A handler's response as HTTP; `Err` says what in it cannot be sent.
fn to_http(r: Encoded) -> Result<Response, String> {
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| format!("status {} is not a final HTTP status (200–999)", r.status))?;
    let mut response = Response::new(HttpBody::from(r.body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    if let Some(t) = &r.content_type {
        let value = HeaderValue::try_from(t.as_ref())
            .map_err(|_| format!("content type `{t}` is not a header value"))?;
        h.insert(header::CONTENT_TYPE, value);
    }
    for (k, v) in r.headers {
        let name =
            HeaderName::try_from(k.as_str()).map_err(|_| format!("`{k}` is not a header name"))?;
        if SERVER_HEADERS.contains(&name.as_str()) {
            return Err(format!("header `{k}` is the server's to set"));
        }
        let value = HeaderValue::try_from(v.as_str())
            .map_err(|_| format!("header `{k}`: `{v}` is not a header value"))?;
        if name == header::CONTENT_TYPE {
            h.insert(name, value);
        } else {
            h.append(name, value);
        }
    }
    Ok(response)
}

/// The client's answer when the bus request failed.
fn request_failed(e: &RequestError) -> Response {
    let status = match e {
        _ if e.is_no_responder() => StatusCode::NOT_FOUND,
        _ if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
        _ if e.is_closed() => StatusCode::SERVICE_UNAVAILABLE,
        RequestError::InvalidTopic(_) => StatusCode::BAD_REQUEST,
        _ => match e.handler_error() {
            Some(h) => {
                let status = h
                    .code()
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (400..600).contains(c))
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut body = serde_json::json!({"error": h.message(), "status": status.as_u16()});
                if let Some(code) = h.code().filter(|c| *c != status.as_str()) {
                    body["code"] = code.into();
                }
                return json(status, &body);
            }
            None => StatusCode::BAD_GATEWAY,
        },
    };
    error(status, &e.to_string())
}

fn error(status: StatusCode, reason: &str) -> Response {
    json(
        status,
        &serde_json::json!({"error": reason, "status": status.as_u16()}),
    )
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
