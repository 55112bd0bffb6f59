//! Run with `cargo run -p interop` (needs RabbitMQ on 127.0.0.1:5672).
//!
//! Starts a Caryatid 0.14 process and a Telamon process on one exchange and
//! sends a reading each way.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telamon_process::init_tracing();
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let e = interop::exchange_both_ways(&url, "caryatid", "interop.demo").await?;
    println!("caryatid received from telamon: {:?}", e.caryatid_got);
    println!("telamon received from caryatid: {:?}", e.telamon_got);
    Ok(())
}
