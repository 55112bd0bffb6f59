//! Helpers for tests against the real RabbitMQ broker.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// The broker the tests use: `TELAMON_TEST_AMQP_URL`, default the local one.
pub fn amqp_url() -> String {
    std::env::var("TELAMON_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// host:port of [`amqp_url`].
pub fn broker_address() -> String {
    let url = amqp_url();
    let rest = url.split("://").nth(1).unwrap_or("127.0.0.1:5672");
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    }
}

/// Fails the test with instructions when no broker is reachable (never skips).
pub fn require_broker() {
    let address = broker_address();
    let reachable = address
        .parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    assert!(
        reachable,
        "no RabbitMQ at {address}: start one with `rabbitmq-server -detached` (or set TELAMON_TEST_AMQP_URL)"
    );
}

/// A name unique to this test run, for exchanges.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("telamon.test.{name}.{}.{nanos:x}", std::process::id())
}

/// Config with one RabbitMQ bus `external` carrying every topic.
pub fn rabbit_toml(exchange: &str, delivery: &str, extra: &str) -> String {
    format!(
        "[process]\nconnect-timeout = \"5s\"\n\n[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"{}\"\nexchange = \"{exchange}\"\ndelivery = \"{delivery}\"\n{extra}\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n",
        amqp_url()
    )
}

/// `rabbitmqctl` talks to the local node: refuse to inspect anything else.
pub fn require_local_broker() {
    let host = broker_address();
    assert!(
        host.starts_with("127.0.0.1:") || host.starts_with("localhost:"),
        "this test inspects the broker with rabbitmqctl, which only reaches the local node; TELAMON_TEST_AMQP_URL points at {host}"
    );
}

/// Runs `rabbitmqctl` against the local node and returns its output.
pub fn rabbitmqctl(args: &[&str]) -> String {
    require_local_broker();
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the broker tests need it on PATH)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rabbitmqctl list_queues name messages_ready messages_unacknowledged`, for queues whose name starts with `prefix`.
pub fn queues(prefix: &str) -> Vec<(String, u64, u64)> {
    let listing = [
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ];
    rabbitmqctl(&listing)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_owned();
            let ready = f.next()?.parse().ok()?;
            let unacked = f.next()?.parse().ok()?;
            name.starts_with(prefix).then_some((name, ready, unacked))
        })
        .collect()
}

/// Every binding on the broker: (source exchange, destination, routing key).
fn binding_rows() -> Vec<(String, String, String)> {
    let listing = [
        "list_bindings",
        "-q",
        "--no-table-headers",
        "source_name",
        "destination_name",
        "routing_key",
    ];
    rabbitmqctl(&listing)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
        .collect()
}

/// Bindings whose source exchange starts with `prefix` (`rabbitmqctl list_bindings`).
pub fn bindings(prefix: &str) -> usize {
    binding_rows()
        .iter()
        .filter(|(source, _, _)| source.starts_with(prefix))
        .count()
}

/// Routing keys bound from `exchange` to queues whose name starts with `queue_prefix`.
pub fn bound_keys(exchange: &str, queue_prefix: &str) -> std::collections::BTreeSet<String> {
    binding_rows()
        .into_iter()
        .filter(|(source, queue, _)| source == exchange && queue.starts_with(queue_prefix))
        .map(|(_, _, key)| key)
        .collect()
}
