//! The process's one message type.

use serde::{Deserialize, Serialize};
use telamon_module_clock::ClockTick;

/// Everything that travels in this process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// From the clock module.
    Tick(ClockTick),
    /// From the greeter.
    Greeting { to_tick: u64, text: String },
}

impl From<ClockTick> for Message {
    fn from(tick: ClockTick) -> Self {
        Message::Tick(tick)
    }
}
