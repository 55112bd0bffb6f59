//! `[module.<id>]` of a REST server.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[module.<id>]` of a REST server; every key has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestServerConfig {
    /// Where to listen (`host:port`; port 0 picks one, logged at start).
    pub address: String,
    /// First word of every request topic.
    pub prefix: String,
    /// How long a handler has to answer before the client gets a 504.
    #[serde(deserialize_with = "telamon_sdk::duration::deserialize")]
    pub timeout: Duration,
    /// Other timeouts for some request topics; the first match wins.
    pub route_timeouts: Vec<RouteTimeout>,
    /// Largest request body in bytes; a larger one is answered 413.
    pub body_limit: usize,
    /// Request headers passed to handlers (case-insensitive); others are not.
    pub allow_headers: Vec<String>,
    /// Cross-origin requests; none allowed when absent.
    pub cors: Option<CorsConfig>,
    /// Files served from a folder.
    #[serde(rename = "static")]
    pub static_files: Option<StaticConfig>,
    /// Server-sent event streams of bus patterns.
    pub events: Vec<EventStreamConfig>,
}

impl Default for RestServerConfig {
    fn default() -> Self {
        RestServerConfig {
            address: "127.0.0.1:4340".to_owned(),
            prefix: "rest".to_owned(),
            timeout: Duration::from_secs(5),
            route_timeouts: Vec::new(),
            body_limit: 1024 * 1024,
            allow_headers: Vec::new(),
            cors: None,
            static_files: None,
            events: Vec::new(),
        }
    }
}

/// `[[module.<id>.route-timeouts]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteTimeout {
    /// Pattern on request topics (`rest.post.reports.#`).
    pub pattern: String,
    /// The timeout for them.
    #[serde(deserialize_with = "telamon_sdk::duration::deserialize")]
    pub timeout: Duration,
}

/// `[module.<id>.cors]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example`), or `["*"]` for any.
    pub allow_origins: Vec<String>,
    /// Methods a preflight allows.
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows.
    pub allow_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(deserialize_with = "telamon_sdk::duration::deserialize")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: Vec::new(),
            allow_methods: ["GET", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            allow_headers: vec!["content-type".to_owned()],
            max_age: Duration::from_secs(600),
        }
    }
}

/// `[module.<id>.static]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticConfig {
    /// The folder.
    pub folder: PathBuf,
    /// URL path the folder is served under (`/` by default).
    #[serde(default = "root")]
    pub path: String,
    /// Served for a folder's own path.
    #[serde(default = "index")]
    pub index: String,
}

fn root() -> String {
    "/".to_owned()
}

fn index() -> String {
    "index.html".to_owned()
}

/// `[[module.<id>.events]]`: a server-sent event stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventStreamConfig {
    /// URL path of the stream (`/events`).
    pub path: String,
    /// Bus pattern whose messages it streams.
    pub pattern: String,
    /// Events one client may have waiting; a client that falls further
    /// behind is disconnected.
    #[serde(default = "client_queue")]
    pub client_queue: usize,
}

fn client_queue() -> usize {
    256
}
