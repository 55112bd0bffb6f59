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
