//! Shared set-up for the process tests.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different part"
)]

pub mod proxy;
pub mod rabbit;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use telamon_process::{ConfigLoader, Process, RunningProcess};

/// Loads `toml` with no environment overrides.
pub fn config(toml: &str) -> telamon_process::Config {
    ConfigLoader::new()
        .embedded(toml)
        .env_prefix(None)
        .load()
        .expect("test config loads")
}

/// Starts a process with no modules over `toml`.
pub async fn start(toml: &str) -> RunningProcess<Value> {
    Process::<Value>::new(config(toml))
        .start()
        .await
        .expect("process starts")
}

/// One in-memory bus carrying everything.
pub const ONE_BUS: &str = "[message-bus.internal]\nclass = \"in-memory\"\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"internal\"\n";

/// Awaits `fut`, failing the test if it takes longer than 10 s (a hang, not a timing check).
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("did not finish within 10 s")
}

/// Waits until `f` holds, asking every 50 ms (bounded by [`within`]).
pub async fn until(f: impl FnMut() -> bool) {
    until_every(Duration::from_millis(50), f).await;
}

/// Waits until `f` holds, asking every `period` (bounded by [`within`]).
pub async fn until_every(period: Duration, mut f: impl FnMut() -> bool) {
    within(async {
        while !f() {
            tokio::time::sleep(period).await;
        }
    })
    .await;
}

/// Resident set size of this test process in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// `GET path` over HTTP/1.1 (`Connection: close`): status and body.
#[allow(dead_code)]
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: telamon\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}
