//! Tracking processors: events onto the bus in token order with their
//! headers, resuming after a stop with no gap and no duplicate, the
//! caught-up signal and lag, undecodable events, pause and start from
//! AxonServer, and a slow subscriber holding the stream back.

mod common;

use std::time::Duration;

use common::bank::{Bank, CaughtUp};
use common::raw;
use telamon_axon_proto::pb::control::EventProcessorReference;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Instruction;
use telamon_sdk::{Delivery, Subscription};

fn tracking(dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
token-dir = "{}"

[module.axon.payload]
type-prefix = "com.example.bank."

[[module.axon.tracking]]
processor = "projection"
topic = "bank.tracked.{{type|simple|kebab}}"
checkpoint-every = 10
caught-up-topic = "bank.caught-up"
{extra}
"#,
        dir.display()
    )
}

/// A process with the bridge and a `collect` module on `pattern` (subscribed
/// before the processor starts publishing), and that subscription.
async fn start(
    server: &telamon_testkit::RunningAxonServer,
    dir: &std::path::Path,
    extra: &str,
    pattern: &str,
    capacity: usize,
) -> (telamon_process::RunningProcess<Bank>, Subscription<Bank>) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = format!(
        "tracking-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let toml = common::bridge("axon", &server.address().to_string(), &tracking(dir, extra))
        + &common::collect::table("events", &key, pattern, capacity);
    let process = common::start::<Bank>(&toml).await;
    let sub = common::collect::take(&key);
    (process, sub)
}

async fn drain(sub: &mut Subscription<Bank>, n: usize) -> Vec<Delivery<Bank>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(
            common::within(20, sub.recv())
                .await
                .expect("subscription open"),
        );
    }
    got
}

fn token(d: &Delivery<Bank>) -> i64 {
    d.headers().get("axon-token").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_token_order_with_their_headers_and_catching_up_is_signalled() {
    let server = common::server().await;
    let dir = common::temp_dir("order");
    let mut opened = raw::event(
        "a-1",
        0,
        "com.example.bank.AccountOpened",
        br#"{"accountId":"a-1","overdraft":0,"sequence":0}"#,
    );
    opened.meta_data.insert(
        "tenant".into(),
        telamon_axon_proto::pb::MetaDataValue {
            data: Some(telamon_axon_proto::pb::meta_data_value::Data::TextValue(
                "acme".into(),
            )),
        },
    );
    // Metadata named as one of the bridge's own headers does not replace it.
    opened.meta_data.insert(
        "axon-processor".into(),
        telamon_axon_proto::pb::MetaDataValue {
            data: Some(telamon_axon_proto::pb::meta_data_value::Data::TextValue(
                "spoofed".into(),
            )),
        },
    );
    raw::append(&server.url(), vec![opened]).await;
    raw::append(&server.url(), raw::deposits("a-1", 1, 49)).await;
    let (process, mut all) = start(&server, &dir, "", "bank.#", 65_536).await;
    let got = drain(&mut all, 51).await;
    let (events, signals): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|d| d.topic().as_str() != "bank.caught-up");
    let got = events;
    assert_eq!(
        signals
            .iter()
            .map(|d| (*d.message().clone()).clone())
            .collect::<Vec<Bank>>(),
        [Bank::CaughtUp(CaughtUp {
            processor: "projection".into(),
            token: 49
        })],
        "caught up once, at the last event"
    );
    assert_eq!(
        got.iter().map(token).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    assert_eq!(got[0].topic().as_str(), "bank.tracked.account-opened");
    assert_eq!(got[1].topic().as_str(), "bank.tracked.money-deposited");
    let h = got[0].headers();
    assert_eq!(h.get("axon-aggregate-id"), Some("a-1"));
    assert_eq!(h.get("axon-aggregate-type"), Some("Account"));
    assert_eq!(h.get("axon-sequence"), Some("0"));
    assert_eq!(h.get("axon-timestamp"), Some("1700000000000"));
    assert_eq!(h.get("axon-processor"), Some("projection"));
    assert_eq!(
        h.get("axon-payload-type"),
        Some("com.example.bank.AccountOpened")
    );
    assert_eq!(h.get("tenant"), Some("acme"));
    assert_eq!(h.iter().filter(|(k, _)| *k == "axon-processor").count(), 1);
    // Every event has its own headers, not its neighbour's.
    for (i, d) in got.iter().enumerate() {
        let h = d.headers();
        assert_eq!(h.get("axon-sequence"), Some(i.to_string().as_str()));
        assert_eq!(h.get("tenant"), (i == 0).then_some("acme"));
        assert_eq!(h.len(), if i == 0 { 10 } else { 9 }, "{h:?}");
    }
    assert!(matches!(&**got[1].message(), Bank::MoneyDeposited(d) if d.sequence == 1));
    let labels = [("module", "axon"), ("processor", "projection")];
    assert_eq!(
        common::metric(&process, "telamon_axon_tracking_position", &labels),
        Some(49.0)
    );
    assert_eq!(
        common::metric(&process, "telamon_axon_tracking_lag", &labels),
        Some(0.0)
    );
    assert_eq!(
        common::metric(&process, "telamon_axon_tracking_caught_up", &labels),
        Some(1.0)
    );
    assert_eq!(
        common::metric(&process, "telamon_axon_tracked_events_total", &labels),
        Some(50.0)
    );
    // AxonServer hears about the processor.
    common::until(10, "processor info reported", || {
        server.clients().iter().any(|c| {
            c.processors.get("projection").is_some_and(|p| {
                p.running
                    && p.segment_status
                        .first()
                        .is_some_and(|s| s.token_position == 49 && s.caught_up)
            })
        })
    })
    .await;
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_the_middle_and_a_restart_lose_nothing_and_repeat_nothing() {
    let server = common::server().await;
    let dir = common::temp_dir("restart");
    raw::append(&server.url(), raw::deposits("r-1", 0, 2000)).await;
    let mut seen = Vec::new();
    for round in 0..3 {
        // A small queue keeps the processor in the middle of the stream.
        let (process, mut events) = start(&server, &dir, "", "bank.tracked.#", 64).await;
        let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
        let reader = tokio::spawn(async move {
            let mut tokens = Vec::new();
            while let Some(d) = events.recv().await {
                tokens.push(token(&d));
                count_tx.send_replace(tokens.len());
                // A slow subscriber: the processor is mid-stream when it stops.
                tokio::time::sleep(std::time::Duration::from_micros(500)).await;
            }
            tokens
        });
        common::within(20, count.wait_for(|n| *n >= 100))
            .await
            .unwrap();
        if round == 1 {
            raw::append(&server.url(), raw::deposits("r-1", 2000, 500)).await;
        }
        let report = process.stop().await;
        assert!(report.drained, "round {round}: {report:?}");
        seen.extend(common::within(20, reader).await.unwrap());
        let stored: i64 = std::fs::read_to_string(dir.join("projection.token"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            Some(&stored),
            seen.last(),
            "round {round}: the stored token is the last published one"
        );
    }
    // Whatever the rounds saw, they saw it once and in order, from 0.
    let expected: Vec<i64> = (0..seen.len() as i64).collect();
    assert_eq!(seen, expected);
    assert!(
        seen.len() < 2500,
        "the rounds stopped in the middle ({} events)",
        seen.len()
    );
    // The last round finishes the store.
    let (process, mut events) = start(&server, &dir, "", "bank.tracked.#", 4096).await;
    let rest = drain(&mut events, 2500 - seen.len()).await;
    assert_eq!(rest.first().map(token), Some(seen.len() as i64));
    assert_eq!(rest.last().map(token), Some(2499));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_is_caught_up_at_once() {
    let server = common::server().await;
    let dir = common::temp_dir("empty");
    let (process, mut signals) = start(&server, &dir, "", "bank.caught-up", 16).await;
    let first = common::within(10, signals.recv()).await.unwrap();
    assert_eq!(
        (*first.message().clone()).clone(),
        Bank::CaughtUp(CaughtUp {
            processor: "projection".into(),
            token: -1
        })
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_stops_the_processor_until_started_again() {
    let server = common::server().await;
    let dir = common::temp_dir("undecodable");
    let (process, mut events) = start(&server, &dir, "", "bank.tracked.#", 4096).await;
    raw::append(&server.url(), raw::deposits("u-1", 0, 2)).await;
    raw::append(
        &server.url(),
        vec![raw::event(
            "u-1",
            2,
            "com.example.bank.MoneyDeposited",
            b"{not json",
        )],
    )
    .await;
    raw::append(&server.url(), raw::deposits("u-1", 3, 2)).await;
    let got = drain(&mut events, 2).await;
    assert_eq!(got.iter().map(token).collect::<Vec<_>>(), [0, 1]);
    let labels = [("module", "axon"), ("processor", "projection")];
    common::until(10, "the undecodable event is counted", || {
        common::metric(&process, "telamon_axon_undecodable_events_total", &labels) == Some(1.0)
    })
    .await;
    common::until(10, "the error is reported to AxonServer", || {
        server.clients().iter().any(|c| {
            c.processors.get("projection").is_some_and(|p| {
                p.error
                    && !p.running
                    && p.segment_status
                        .first()
                        .is_some_and(|s| s.error_state.contains("event 2"))
            })
        })
    })
    .await;
    assert!(
        events.try_recv().is_none(),
        "nothing after the bad event is published"
    );
    // An operator starts it again: the same event fails again (it is still bad).
    let client = common::client_of(&server, "test");
    // Its result is a failure report after 10 s at most; the retry happens at once.
    let instruct = server.processor_instruction(
        &client,
        Instruction::StartEventProcessor(EventProcessorReference {
            processor_name: "projection".into(),
        }),
        Duration::from_millis(200),
    );
    let _ = instruct.await.unwrap();
    common::until(10, "counted twice", || {
        common::metric(&process, "telamon_axon_undecodable_events_total", &labels) == Some(2.0)
    })
    .await;
    process.stop().await;

    // With `undecodable = "skip"` it is logged, counted, dead-lettered, and skipped.
    let (process, mut events) = start(
        &server,
        &dir,
        "undecodable = \"skip\"\ndead-letter-topic = \"bank.dead\"",
        "bank.#",
        4096,
    )
    .await;
    let got = drain(&mut events, 3).await;
    let tokens: Vec<i64> = got
        .iter()
        .filter_map(|d| d.headers().get("axon-token"))
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(tokens, [3, 4]);
    let letter = got
        .iter()
        .find(|d| d.topic().as_str() == "bank.dead")
        .expect("a dead letter");
    let Bank::UndecodableEvent(doc) = &**letter.message() else {
        panic!("expected a dead letter, got {:?}", letter.message());
    };
    assert_eq!(doc["token"], 2);
    assert_eq!(doc["messageId"], "u-1-2");
    assert!(doc["error"].as_str().unwrap().contains("JSON"), "{doc}");
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_start_instructions_from_axonserver_are_carried_out_and_answered() {
    let server = common::server().await;
    let dir = common::temp_dir("pause");
    let (process, mut events) = start(&server, &dir, "", "bank.tracked.#", 4096).await;
    raw::append(&server.url(), raw::deposits("p-1", 0, 5)).await;
    let _ = drain(&mut events, 5).await;
    let client = common::client_of(&server, "test");
    let instruct = |i| server.processor_instruction(&client, i, Duration::from_secs(5));
    let paused = instruct(Instruction::PauseEventProcessor(EventProcessorReference {
        processor_name: "projection".into(),
    }))
    .await
    .unwrap();
    assert!(paused.success, "{paused:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("projection.token"))
            .unwrap()
            .trim(),
        "4",
        "paused: position stored"
    );
    raw::append(&server.url(), raw::deposits("p-1", 5, 5)).await;
    assert!(
        server.event_trackers().is_empty(),
        "no event stream while paused"
    );
    assert!(events.try_recv().is_none());
    let started = instruct(Instruction::StartEventProcessor(EventProcessorReference {
        processor_name: "projection".into(),
    }))
    .await
    .unwrap();
    assert!(started.success, "{started:?}");
    let got = drain(&mut events, 5).await;
    assert_eq!(
        got.iter().map(token).collect::<Vec<_>>(),
        (5..10).collect::<Vec<_>>()
    );
    let unknown = instruct(Instruction::PauseEventProcessor(EventProcessorReference {
        processor_name: "nope".into(),
    }))
    .await
    .unwrap();
    assert!(!unknown.success);
    assert!(unknown.error.unwrap().message.contains("Unknown processor"));
    let split = instruct(Instruction::SplitEventProcessorSegment(
        telamon_axon_proto::pb::control::EventProcessorSegmentReference {
            processor_name: "projection".into(),
            segment_identifier: 0,
        },
    ))
    .await
    .unwrap();
    assert!(!split.success);
    assert_eq!(split.error.unwrap().error_code, "AXONIQ-1002");
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_holds_the_stream_back_instead_of_piling_events_up() {
    let server = common::server().await;
    let dir = common::temp_dir("slow");
    let (process, mut events) = start(
        &server,
        &dir,
        "permits = 16\nrefill = 4",
        "bank.tracked.#",
        8,
    )
    .await;
    raw::append(&server.url(), raw::deposits("s-1", 0, 200)).await;
    // The subscriber reads nothing: the bridge publishes until its queue is
    // full, then stops reading the stream, and the server holds the rest.
    common::until(
        10,
        "the server holds events back for lack of permits",
        || {
            server
                .event_trackers()
                .iter()
                .any(|t| t.permits == 0 && t.next_token < 200 && t.events_seen == 200)
        },
    )
    .await;
    let held = server.event_trackers()[0].next_token;
    assert!(
        held <= 8 + 1 + 16,
        "at most the queue, one in hand and the window went out: {held}"
    );
    let got = drain(&mut events, 200).await;
    assert_eq!(
        got.iter().map(token).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    process.stop().await;
    server.stop().await.unwrap();
}
