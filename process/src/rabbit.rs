//! `class = "rabbit-mq"`: the RabbitMQ bus (feature `rabbit-mq`, on by default).
//!
//! | file | holds |
//! |---|---|
//! | `config.rs` | what `[message-bus.<id>]` of this class reads |
//! | `headers.rs` | message headers ↔ AMQP headers |
//! | `link.rs` | the connection and its supervisor: connect, declare, reconnect |
//! | `bus.rs` | the [`Bus`](crate::Bus) implementation that ties the rest together |
//! | `publisher.rs` | publishing with the confirm window |
//! | `subscription.rs` | one queue per subscription, consumed into its local queue |
//! | `requester.rs` | requests out: reply queue, correlation ids |
//! | `responder.rs` | requests in: handler queues, answers |

mod bus;
mod config;
mod headers;
mod link;
mod publisher;
mod requester;
mod responder;
mod shared_queue;
mod subscription;

pub use bus::{RabbitMqBus, RabbitMqClass};
pub use config::{DEFAULT_EXCHANGE, DEFAULT_URL, DeliveryMode, RabbitMqConfig, Secret, redact};
