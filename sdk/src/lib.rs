//! Everything a Telamon module author needs, and nothing else.
//!
//! A module subscribes to topics, answers requests and publishes, through a
//! [`Context`]. It never calls another module, and it never knows which bus —
//! in-process or RabbitMQ — carries its messages: the process's router decides
//! that from config.
//!
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use telamon_sdk::{module, Context, HandlerError, ModuleError};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub enum Msg {
//!     Reading(f64),
//!     Total(f64),
//! }
//!
//! /// Sums readings; answers `sum.total` with the running total.
//! #[derive(Default, Deserialize)]
//! #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
//! pub struct Summer {
//!     pattern: String,
//!     #[serde(skip)]
//!     total: std::sync::Mutex<f64>,
//! }
//!
//! #[module(name = "summer", message = Msg, description = "sums readings")]
//! impl Summer {
//!     async fn init(self: Arc<Self>, ctx: Context<Msg>) -> Result<(), ModuleError> {
//!         let mut readings = ctx.subscribe(self.pattern.as_str()).await?;
//!         let me = self.clone();
//!         ctx.run(async move {
//!             while let Some(d) = readings.recv().await {
//!                 if let Msg::Reading(x) = **d.message() {
//!                     *me.total.lock().unwrap() += x;
//!                 }
//!             }
//!         });
//!         let me = self.clone();
//!         let _ = ctx.handle("sum.total", move |_request| {
//!             let total = *me.total.lock().unwrap();
//!             async move { Ok::<_, HandlerError>(Msg::Total(total)) }
//!         })
//!         .await?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! A process (crate `telamon-process`) registers it with `.module::<Summer>()`
//! and gives it config in `[module.summer] pattern = "sensor.#"`.
//!
//! # What is where
//!
//! | item | what |
//! |---|---|
//! | [`Module`], [`module`] | the trait, and the attribute for the common case |
//! | [`Context`] | publish, subscribe, request, handle, run tasks, stop |
//! | [`Topic`], [`Pattern`] | dot-separated words; `*` one word, `#` zero or more (AMQP) |
//! | [`Subscription`], [`SubscribeOptions`], [`FullPolicy`] | bounded queues and what happens when full |
//! | [`Request`], [`HandlerHandle`], [`HandleOptions`], [`RequestOptions`] | what a handler sees; removing a handler; queue size, concurrency, timeouts |
//! | [`Headers`], [`HeaderBlock`], [`TraceContext`] | key/value headers on messages and requests (a batch's sharing their allocations); W3C `traceparent` across processes |
//! | [`RequestError`], [`HandlerError`] | typed request failures: timed out, no responder, handler error |
//! | [`Gauge`], [`Counter`] | a module's own metrics, rendered beside the process's |
//! | [`bus`] | the seam buses implement (for `telamon-process`), kept apart from the above |

pub mod bus;
mod context;
mod delivery;
mod drop_guard;
pub mod duration;
mod error;
mod handler;
mod headers;
mod instrument;
mod lifecycle;
mod message;
mod module;
mod pattern;
mod pattern_index;
mod publish;
mod request;
mod subscriber_queue;
mod subscription;
mod topic;
mod trace_context;

pub use context::Context;
pub use delivery::Delivery;
pub use error::{
    BatchPublishError, HandlerError, ModuleError, PublishError, RequestError, SubscribeError,
    TopicError,
};
pub use handler::HandlerHandle;
pub use headers::{HeaderBlock, HeaderSets, Headers};
pub use instrument::{Counter, Gauge};
pub use message::Message;
pub use module::Module;
pub use pattern::{IntoPattern, Pattern};
pub use request::{
    DEFAULT_HANDLER_CONCURRENCY, HandleOptions, Incoming, Reply, Request, RequestOptions,
    RequestQueue, Responder,
};
pub use subscription::{FullPolicy, SubscribeOptions, Subscription};
pub use telamon_sdk_macros::module;
pub use topic::{IntoTopic, MAX_TOPIC_LEN, Topic};
pub use trace_context::{TRACEPARENT, TraceContext};
