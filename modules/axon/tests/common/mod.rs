//! Shared set-up for the bridge tests: a test server, a process with the
//! bridge, metric reads and condition waits.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different part"
)]

pub mod bank;
pub mod collect;
pub mod raw;

use std::future::Future;
use std::time::{Duration, Instant};

use telamon_module_axon::Axon;
use telamon_process::{ConfigLoader, Process, RunningProcess};
use telamon_sdk::Message;
use telamon_testkit::{AxonTestServer, RunningAxonServer};

/// A test server with the default settings.
pub async fn server() -> RunningAxonServer {
    AxonTestServer::builder()
        .start()
        .await
        .expect("test server starts")
}

/// Loads `toml` with no environment overrides.
pub fn config(toml: &str) -> telamon_process::Config {
    ConfigLoader::new()
        .embedded(toml)
        .env_prefix(None)
        .load()
        .expect("test config loads")
}

/// A bridge table for `server` (short heartbeats and back-off, so faults
/// are noticed quickly), then `mappings`.
pub fn bridge(id: &str, server: &str, mappings: &str) -> String {
    format!(
        r#"
[module.{id}]
class = "axon"
servers = ["{server}"]
component = "test"
connect-timeout = "3s"
call-timeout = "5s"
handler-timeout = "5s"
heartbeat-interval = "200ms"
heartbeat-timeout = "400ms"
processor-info-interval = "100ms"
reconnect = {{ initial = "20ms", max = "200ms" }}
{mappings}
"#
    )
}

/// Starts a process over `toml` with the bridge (and the test `collect`
/// module) registered for `M`.
pub async fn start<M: Message>(toml: &str) -> RunningProcess<M> {
    if std::env::var_os("RUST_LOG").is_some() {
        telamon_process::init_tracing();
    }
    Process::<M>::new(config(toml))
        .module::<collect::Collect<M>>()
        .module::<Axon<M>>()
        .start()
        .await
        .expect("process starts")
}

/// Awaits `fut`, failing the test after `secs` (a hang, not a timing check).
pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {secs} s"))
}

/// Waits until `condition` holds, checking every 5 ms, failing after `secs`.
pub async fn until(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "not true within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of metric `name` with `labels` (all of them must match).
pub fn metric<M: Message>(
    process: &RunningProcess<M>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let text = process.metrics().render();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Waits until bridge `module` reports ready (`telamon_axon_state` = 1).
pub async fn ready<M: Message>(process: &RunningProcess<M>, module: &str) {
    until(10, &format!("bridge {module} ready"), || {
        metric(process, "telamon_axon_state", &[("module", module)]) == Some(1.0)
    })
    .await;
}

/// The client id the bridge registered with, found by component name.
pub fn client_of(server: &RunningAxonServer, component: &str) -> String {
    server
        .clients()
        .into_iter()
        .find(|c| c.identification.component_name == component)
        .map(|c| c.identification.client_id)
        .expect("the bridge registered")
}

/// A fresh temporary folder.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("telamon-axon-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
