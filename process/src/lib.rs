//! Assemble a Telamon process from modules and a config file, and run it.
//!
//! ```
//! use std::sync::Arc;
//! use serde::Deserialize;
//! use serde_json::{json, Value};
//! use telamon_process::{ConfigLoader, Process};
//! use telamon_sdk::{module, Context, HandlerError, ModuleError};
//!
//! /// Answers `greet` requests.
//! #[derive(Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Greeter {
//!     greeting: String,
//! }
//!
//! #[module(name = "greeter", message = Value)]
//! impl Greeter {
//!     async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
//!         ctx.handle("greet", move |name| {
//!             let name = name.message().as_str().unwrap_or("world").to_owned();
//!             let text = format!("{}, {name}!", self.greeting);
//!             async move { Ok::<_, HandlerError>(json!(text)) }
//!         })
//!         .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ConfigLoader::new()
//!     .embedded("[module.greeter]\ngreeting = \"Hello\"\n")
//!     .env_prefix(None)
//!     .load()?;
//! let process = Process::<Value>::new(config).module::<Greeter>().start().await?;
//! let answer = process.context("main").request("greet", json!("Ada")).await?;
//! assert_eq!(*answer, json!("Hello, Ada!"));
//! process.stop().await;
//! # Ok(()) }
//! ```
//!
//! With no `[message-bus]` section the process gets one in-memory bus,
//! `internal`, carrying every topic. `docs/configuration.md` lists every key.
//!
//! | item | what |
//! |---|---|
//! | [`ConfigLoader`] | embedded TOML + files + `TELAMON_…` environment overrides |
//! | [`Process`], [`RunningProcess`] | register modules, start, run until a signal, stop |
//! | [`Router`] | first-match routing of topics to buses |
//! | [`InMemoryBus`] | zero-copy in-process bus |
//! | [`Bus`], [`BusClass`] | what another bus (RabbitMQ …) implements to plug in |
//! | [`Metrics`] | per-topic counters, request latency, Prometheus text |

#[cfg(feature = "rabbit-mq")]
mod burst_log;
mod bus;
pub mod codec;
mod config_loader;
mod error;
mod in_memory_bus;
mod loaded_config;
mod metrics;
mod metrics_endpoint;
mod process;
mod process_config;
#[cfg(feature = "rabbit-mq")]
mod rabbit;
mod registration;
mod router;
mod signal;
mod startup_report;

pub use bus::{Bus, BusClass, BusStats, QueueDefaults};
pub use config_loader::{ConfigLoader, DEFAULT_ENV_PREFIX};
pub use error::{ConfigError, ProcessError};
pub use in_memory_bus::{
    DEFAULT_REQUEST_QUEUE_SIZE, DEFAULT_SUBSCRIBER_QUEUE_SIZE, InMemoryBus, InMemoryClass,
    InMemoryConfig,
};
pub use loaded_config::{BusTable, Config};
pub use metrics::{
    BusHealth, DEFAULT_MAX_TOPICS, LATENCY_BUCKETS_US, Metrics, OVERFLOW_TOPIC, TopicCounters,
};
pub use process::{Process, RunningProcess, StopReport};
pub use process_config::{
    DEFAULT_BUS_ID, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
    Unrouted,
};
pub use router::{RouteBuses, Router};
pub use signal::{init_tracing, shutdown_signal};
pub use startup_report::{EXIT_CONFIG, EXIT_FAILURE, OrExit, StartupReport};
pub use telamon_sdk::duration::{deserialize as deserialize_duration, parse as parse_duration};

pub use codec::{CodecError, DecodeLimits};
#[cfg(feature = "rabbit-mq")]
pub use rabbit::{
    DEFAULT_EXCHANGE, DEFAULT_URL, DeliveryMode, RabbitMqBus, RabbitMqClass, RabbitMqConfig,
    Secret, redact,
};

pub use telamon_sdk as sdk;
