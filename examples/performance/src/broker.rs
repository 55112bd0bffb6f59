//! Where the RabbitMQ scenarios run, and clean-up after Caryatid.

use std::process::Command;

/// `AMQP_URL`, default the local broker.
pub(crate) fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name unique to this run.
pub(crate) fn unique(what: &str) -> String {
    format!("telamon.bench.{what}.{}", std::process::id())
}

/// Deletes every queue whose name starts with `prefix` (Caryatid leaves its
/// per-topic and per-request queues behind).
pub(crate) async fn delete_queues(prefix: &str) -> anyhow::Result<usize> {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name"])
        .output()?;
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    let conn = lapin::Connection::connect(&url(), Default::default()).await?;
    let channel = conn.create_channel().await?;
    for n in &names {
        channel
            .queue_delete(n.as_str().into(), Default::default())
            .await?;
    }
    let _ = conn.close(200, "clean".into()).await;
    Ok(names.len())
}

/// How many queues whose name starts with `prefix` the broker holds now
/// (`rabbitmqctl list_queues`).
pub(crate) fn queue_count(prefix: &str) -> anyhow::Result<u64> {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl list_queues failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim().starts_with(prefix))
        .count() as u64)
}
