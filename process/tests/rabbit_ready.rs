//! `/ready` follows the broker: stopped (`rabbitmqctl stop_app`), it names the
//! bus; started again, the process reports ready once it has reconnected.
//! (Its own test binary: stopping the broker hits every client of it.)

mod common;

use common::http_get;
use common::rabbit::{rabbit_toml, rabbitmqctl, require_broker, require_local_broker, unique};
use common::{start, within};
use serde_json::Value;
use std::time::Duration;

async fn ready(addr: std::net::SocketAddr) -> (u16, Value) {
    let (status, body) = http_get(addr, "/ready").await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_flips_when_the_broker_stops_and_starts() {
    require_broker();
    require_local_broker();
    let exchange = unique("ready");
    let toml = rabbit_toml(
        &exchange,
        "at-least-once",
        "reconnect-min = \"100ms\"\nreconnect-max = \"500ms\"",
    ) + "\n[metrics]\naddress = \"127.0.0.1:0\"\n";
    let p = start(&toml).await;
    let addr = p.metrics_address().unwrap();
    assert_eq!(ready(addr).await.0, 200);
    /// Starts the broker again however the test ends.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            rabbitmqctl(&["start_app"]);
        }
    }
    tokio::task::block_in_place(|| rabbitmqctl(&["stop_app"]));
    let restart = Restart;
    let stopped = within(async {
        loop {
            let (status, report) = ready(addr).await;
            if status == 503 {
                break report;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::task::block_in_place(|| drop(restart));
    assert_eq!(
        stopped["not_ready"][0], "bus `external`: not connected",
        "{stopped}"
    );
    assert_eq!(
        http_get(addr, "/health").await.0,
        200,
        "up while the broker is away"
    );
    common::within(async {
        while ready(addr).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    p.stop().await;
}
