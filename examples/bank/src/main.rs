//! Run with `cargo run -p bank`.
//!
//! A small CQRS bank on AxonServer, through the bridge: the teller sends
//! commands on the bus, the bridge dispatches them to AxonServer, which
//! routes them back to the bridge's command handler and on to the account
//! aggregate; its events are appended, a tracking processor feeds the
//! projection, and queries and a subscription query read it back. With no
//! AxonServer configured (`[module.axon] servers = []`, the default) an
//! embedded test server is started; see `axonserver.toml` for a real one.

mod account;
mod message;
mod projection;
mod teller;

use std::sync::atomic::Ordering;

use telamon_module_axon::Axon;
use telamon_process::{ConfigLoader, OrExit, Process, init_tracing};
use telamon_testkit::AxonTestServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let loader = ConfigLoader::new()
        .embedded(include_str!("../bank.toml"))
        .args();
    let mut config = loader.clone().load().or_exit();
    let servers: Vec<String> = config.get("module.axon.servers").or_exit();
    let embedded = if servers.is_empty() {
        let server = AxonTestServer::builder().start().await?;
        println!(
            "bank: no AxonServer configured; using an embedded test server at {}",
            server.address()
        );
        config = loader
            .embedded(format!(
                "[module.axon]\nservers = [\"{}\"]\n",
                server.address()
            ))
            .load()
            .or_exit();
        Some(server)
    } else {
        println!("bank: using AxonServer at {}", servers.join(", "));
        None
    };
    let report = Process::<message::Bank>::new(config)
        .module::<Axon<message::Bank>>()
        .module::<account::Account>()
        .module::<projection::Projection>()
        .module::<teller::Teller>()
        .run()
        .await
        .or_exit();
    if let Some(server) = embedded {
        println!(
            "bank: the event store holds {} events",
            server.events().len()
        );
        server.stop().await?;
    }
    println!("bank: stopped in {:?}", report.elapsed);
    anyhow::ensure!(
        teller::SCENARIO_OK.load(Ordering::SeqCst),
        "the scenario did not complete"
    );
    Ok(())
}
