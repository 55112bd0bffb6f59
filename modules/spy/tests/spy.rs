//! The spy's log, captured: a rate limit that reports what it skipped, and
//! payloads cut to a length.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use telamon_module_spy::Spy;
use telamon_process::{ConfigLoader, Process, RunningProcess};

/// Everything logged on this thread, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the log of this (current-thread) test, where the spy's task runs too.
fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

async fn start(spy: &str) -> RunningProcess<Value> {
    let config = ConfigLoader::new()
        .embedded(format!("[module.spy]\n{spy}\n"))
        .env_prefix(None)
        .load()
        .unwrap();
    Process::<Value>::new(config)
        .module::<Spy<Value>>()
        .start()
        .await
        .unwrap()
}

/// Waits (at most 10 s) until the log holds `needle`.
async fn logged(log: &Log, needle: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = log.text();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("`{needle}` never logged: {}", log.text()))
}

#[tokio::test]
async fn a_flood_is_logged_up_to_the_rate_and_the_rest_is_counted() {
    let (log, _guard) = capture();
    let p = start("pattern = \"flood.#\"\nmax-per-second = 10").await;
    let ctx = p.context("t");
    for i in 0..100 {
        ctx.publish("flood.x", json!(i)).await.unwrap();
    }
    let text = logged(&log, "90 messages not logged (max-per-second)").await;
    let lines = text.lines().filter(|l| l.contains("topic=flood.x")).count();
    assert_eq!(lines, 10, "{text}");
    p.stop().await;
}

#[tokio::test]
async fn a_long_payload_is_cut_and_says_how_long_it_was() {
    let (log, _guard) = capture();
    let p = start("max-length = 8").await;
    let ctx = p.context("t");
    ctx.publish("long.x", json!("abcdefghijklmnop"))
        .await
        .unwrap();
    ctx.publish("short.x", json!("abc")).await.unwrap();
    let text = logged(&log, "topic=short.x").await;
    assert!(text.contains("\"abcdefg… (18 bytes)"), "{text}");
    assert!(!text.contains("hijklmnop"), "{text}");
    assert!(text.contains("\"abc\""), "{text}");
    p.stop().await;
}
