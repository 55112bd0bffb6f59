//! Run with `cargo run -p typed`.
//!
//! One message enum for the whole process: the clock publishes `Tick`s, the
//! greeter answers each with a `Greeting`, the spy logs both.

mod greeter;
mod message;

use telamon_module_clock::Clock;
use telamon_module_spy::Spy;
use telamon_process::{ConfigLoader, OrExit, Process, init_tracing};

use crate::message::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = ConfigLoader::new()
        .embedded(include_str!("../typed.toml"))
        .args()
        .load()
        .or_exit();
    Process::<Message>::new(config)
        .module::<Clock<Message>>()
        .module::<greeter::Greeter>()
        .module::<Spy<Message>>()
        .run()
        .await
        .or_exit();
    Ok(())
}
