//! The bridge with RabbitMQ carrying its topics: a requester in another
//! process reaches AxonServer through the bridge over the real broker, and
//! tracked events reach it the same way.

mod common;

use common::bank::{self, Bank};
use common::raw;
use telamon_sdk::HandlerError;

fn amqp_url() -> String {
    std::env::var("TELAMON_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn exchange() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("telamon.test.axon.{}.{nanos:x}", std::process::id())
}

/// `bank.*` over RabbitMQ, everything else in-process.
fn buses(exchange: &str) -> String {
    format!(
        r##"
[message-bus.external]
class = "rabbit-mq"
url = "{}"
exchange = "{exchange}"

[message-bus.internal]
class = "in-memory"

[[message-router.route]]
pattern = "bank.#"
bus = "external"

[[message-router.route]]
pattern = "#"
bus = "internal"
"##,
        amqp_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_and_tracked_events_cross_rabbitmq_to_and_from_the_bridge() {
    let server = common::server().await;
    let exchange = exchange();
    let dir = common::temp_dir("rabbit");
    let bridge = common::bridge(
        "axon",
        &server.address().to_string(),
        &format!(
            r#"
token-dir = "{}"

[module.axon.payload]
type-prefix = "com.example.bank."

[[module.axon.send-command]]
pattern = "bank.command.*"
routing-key = "/accountId"

[[module.axon.handle-command]]
command = "com.example.bank.OpenAccount"
topic = "local.open-account"

[[module.axon.tracking]]
processor = "rabbit"
topic = "bank.tracked.{{type|simple|kebab}}"
"#,
            dir.display()
        ),
    ) + &buses(&exchange);
    let process = common::start::<Bank>(&bridge).await;
    let _h = process
        .context("test")
        .handle("local.open-account", |r| {
            let Bank::OpenAccount(o) = &**r.message() else {
                panic!()
            };
            std::future::ready(Ok::<_, HandlerError>(bank::opened(
                &o.account_id,
                o.overdraft,
                0,
            )))
        })
        .await
        .unwrap();
    // Another process: only the broker in common with the bridge's process.
    let other = telamon_process::Process::<Bank>::new(common::config(
        &(buses(&exchange) + &common::collect::table("t", "rabbit-tracked", "bank.tracked.#", 64)),
    ))
    .module::<common::collect::Collect<Bank>>()
    .start()
    .await
    .unwrap();
    let mut tracked = common::collect::take::<Bank>("rabbit-tracked");
    let answer = common::within(
        20,
        other
            .context("remote")
            .request("bank.command.open", bank::open("r-1", 7)),
    )
    .await
    .unwrap();
    assert_eq!(*answer, bank::opened("r-1", 7, 0));
    raw::append(&server.url(), raw::deposits("r-1", 0, 3)).await;
    for sequence in 0..3 {
        let d = common::within(20, tracked.recv()).await.unwrap();
        assert_eq!(*d.message().clone(), bank::deposited("r-1", 1, sequence));
        assert_eq!(
            d.headers().get("axon-token"),
            Some(sequence.to_string().as_str()),
            "headers cross the broker"
        );
    }
    other.stop().await;
    process.stop().await;
    server.stop().await.unwrap();
}
