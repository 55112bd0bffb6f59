//! What crosses between the two processes (CBOR on RabbitMQ).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Wire {
    Ping { n: u64 },
    News { text: String },
    Echo(String),
}
