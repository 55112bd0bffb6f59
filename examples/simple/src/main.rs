//! Run with `cargo run -p simple` (optionally `-- my.toml` to override `simple.toml`).
//!
//! A publisher sends ten JSON greetings; a subscriber prints them and stops the
//! process after the last one.

mod publisher;
mod subscriber;

use serde_json::Value;
use telamon_process::{ConfigLoader, OrExit, Process, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = ConfigLoader::new()
        .embedded(include_str!("../simple.toml"))
        .args()
        .load()
        .or_exit();
    let report = Process::<Value>::new(config)
        .module::<publisher::Publisher>()
        .module::<subscriber::Subscriber>()
        .run()
        .await
        .or_exit();
    println!("stopped cleanly: {}", report.drained);
    Ok(())
}
