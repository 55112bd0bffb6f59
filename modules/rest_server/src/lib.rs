//! A REST gateway: HTTP requests become bus requests, their answers become
//! HTTP responses; it also serves a folder of files and streams bus
//! messages to browsers as server-sent events.
//!
//! ```toml
//! [module.api]
//! class = "rest-server"
//! address = "127.0.0.1:8080"
//! prefix = "api"                 # GET /users/42 → request on `api.get.users.42`
//! timeout = "5s"
//! body-limit = 1048576
//! allow-headers = ["authorization"]
//! cors = { allow-origins = ["https://app.example"], allow-headers = ["content-type", "authorization"] }
//! static = { folder = "www" }    # GET / → www/index.html
//! events = [{ path = "/events", pattern = "orders.#" }]
//! ```
//!
//! A handler answers the request topic with a [`RestResponse`], and fails
//! with [`http_error`] for a status of its own choosing:
//!
//! ```
//! use std::sync::Arc;
//! use telamon_module_rest_server::{http_error, RestMessage, RestResponse};
//! use telamon_sdk::{module, Context, ModuleError};
//!
//! #[derive(Default, serde::Deserialize)]
//! pub struct Users;
//!
//! #[module(name = "users", message = serde_json::Value)]
//! impl Users {
//!     async fn init(self: Arc<Self>, ctx: Context<serde_json::Value>) -> Result<(), ModuleError> {
//!         let _ = ctx.handle("api.get.users.*", |request| async move {
//!             let id = request.topic().words().last().unwrap_or("").to_owned();
//!             if id != "42" {
//!                 return Err(http_error(404, format!("no user {id}")));
//!             }
//!             let user = serde_json::json!({"id": 42, "name": "Ada"});
//!             Ok(serde_json::Value::from(RestResponse::json(200, user)))
//!         })
//!         .await?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! # What a client gets
//!
//! | case | status | body |
//! |---|---|---|
//! | the handler's [`RestResponse`] | its status | its body, headers and content type |
//! | the handler fails with [`http_error`]`(s, …)` | `s` (400–599) | `{"error": "…", "status": s}` |
//! | the handler fails otherwise | 500 | `{"error": "…", "status": 500, "code": "…"}` (`code` when it set one that is not the status) |
//! | the answer is not a `RestResponse`, has a status under 200, or sets a header the server owns (`content-length`, `transfer-encoding`, `connection` …) | 500 | `{"error": "…", "status": 500}`, logged at `warn` |
//! | no handler for the topic | 404 at once | `{"error": "no responder …", "status": 404}` |
//! | no answer within the timeout | 504 | JSON error |
//! | body over `body-limit` | 413 | JSON error |
//! | invalid JSON under a JSON content type; a path word with `.`, `*`, `#`; a method that is not letters and digits | 400 | JSON error |
//! | a path making a topic over 255 bytes | 414 | JSON error |
//! | a body that has not arrived within the timeout | 408 | JSON error |
//! | the handler went away without answering; the bus failed | 502 | JSON error |
//! | the process is stopping | 503 | JSON error |
//!
//! The topic is `{prefix}.{lower-case method}.{path words}`; see the
//! [`RestRequest`] fields for what a handler sees. Paths whose words cannot
//! be topic words are refused, not escaped (see `docs/rest.md`).
//!
//! # Metrics
//!
//! `telamon_rest_requests_total{module, status="2xx"|"3xx"|"4xx"|"5xx"}`,
//! `telamon_rest_sse_clients{module, path}`,
//! `telamon_rest_sse_dropped_total{module, path}`.

mod config;
mod connection;
mod cors;
mod events;
mod message;
mod route;
mod server;
mod static_files;

pub use config::{CorsConfig, EventStreamConfig, RestServerConfig, RouteTimeout, StaticConfig};
pub use message::{Body, Encoded, RestMessage, RestRequest, RestResponse, http_error};
pub use server::RestServer;
