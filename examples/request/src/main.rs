//! Run with `cargo run -p request`.
//!
//! The requester asks the calculator four things and prints what comes back:
//! an answer, a handler error, a timeout (per-call override), and a request
//! nobody handles, which fails at once instead of waiting for the timeout.

mod calculator;
mod message;
mod requester;

use telamon_process::{ConfigLoader, OrExit, Process, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = ConfigLoader::new()
        .embedded(include_str!("../request.toml"))
        .args()
        .load()
        .or_exit();
    Process::<message::Calc>::new(config)
        .module::<calculator::Calculator>()
        .module::<requester::Requester>()
        .run()
        .await
        .or_exit();
    Ok(())
}
