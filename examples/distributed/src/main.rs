//! Two processes over RabbitMQ. In two terminals:
//!
//! ```sh
//! cargo run -p distributed -- examples/distributed/pong.toml
//! cargo run -p distributed -- examples/distributed/ping.toml
//! ```
//!
//! `ping` publishes `ping.<n>` messages and asks `pong.echo`; `pong` prints
//! every ping, answers each with a `pong.news` message and answers the requests.
//! Which module runs is chosen by the config file alone.

mod message;
mod pinger;
mod ponger;

use std::sync::atomic::{AtomicBool, Ordering};

use telamon_process::{ConfigLoader, OrExit, Process, init_tracing};

/// Set when the pinger gave up; the process then exits with an error.
static FAILED: AtomicBool = AtomicBool::new(false);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = ConfigLoader::new().args().load().or_exit();
    Process::<message::Wire>::new(config)
        .module::<pinger::Pinger>()
        .module::<ponger::Ponger>()
        .run()
        .await
        .or_exit();
    anyhow::ensure!(!FAILED.load(Ordering::Relaxed), "ping did not complete");
    Ok(())
}
