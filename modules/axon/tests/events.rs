//! Appending events (published and requested, single and batched), the
//! sequence conflict reaching the publisher, failed fire-and-forget appends
//! counted, snapshots, and reading an aggregate back.

mod common;

use common::bank::{self, AggregateEvents, Balance, Bank};
use serde_json::{Value, json};
use telamon_axon_proto::pb::event::Event;
use telamon_sdk::{HandlerError, Headers};

const EVENTS: &str = r#"
[module.axon.payload]
type-prefix = "com.example.bank."

[[module.axon.append-events]]
pattern = "bank.event.#"
aggregate-id = "/accountId"
aggregate-type = "Account"
sequence = "/sequence"

[[module.axon.append-snapshot]]
pattern = "bank.snapshot"
aggregate-id = "/accountId"
aggregate-type = "Account"
sequence = "header:sequence"

[[module.axon.read-aggregate]]
pattern = "bank.load.*"
aggregate-id = "topic:2"
"#;

fn stored(server: &telamon_testkit::RunningAxonServer) -> Vec<(i64, Event)> {
    server.events()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_and_requested_events_are_appended_with_their_aggregate_and_metadata() {
    let server = common::server().await;
    let process = common::start::<Bank>(&common::bridge(
        "axon",
        &server.address().to_string(),
        EVENTS,
    ))
    .await;
    let ctx = process.context("test");
    ctx.publish_with(
        "bank.event.opened",
        bank::opened("a-1", 100, 0),
        Headers::new().with("correlation", "c-9"),
    )
    .await
    .unwrap();
    common::until(10, "the published event is stored", || {
        stored(&server).len() == 1
    })
    .await;
    let echo = ctx
        .request("bank.event.deposited", bank::deposited("a-1", 5, 1))
        .await
        .unwrap();
    assert_eq!(
        *echo,
        bank::deposited("a-1", 5, 1),
        "a request is answered with the message once committed"
    );
    let events = stored(&server);
    assert_eq!(events.len(), 2);
    let (token, first) = &events[0];
    assert_eq!(*token, 0);
    assert_eq!(first.aggregate_identifier, "a-1");
    assert_eq!(first.aggregate_type, "Account");
    assert_eq!(first.aggregate_sequence_number, 0);
    let payload = first.payload.as_ref().unwrap();
    assert_eq!(payload.r#type, "com.example.bank.AccountOpened");
    assert_eq!(
        payload.data,
        br#"{"accountId":"a-1","overdraft":100,"sequence":0}"#
    );
    assert!(first.meta_data.contains_key("correlation"));
    assert_eq!(events[1].1.aggregate_sequence_number, 1);
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_transaction_and_a_conflict_reaches_the_requester() {
    let server = common::server().await;
    let process = common::start::<Bank>(&common::bridge(
        "axon",
        &server.address().to_string(),
        EVENTS,
    ))
    .await;
    let ctx = process.context("test");
    let batch = Bank::Batch(vec![
        bank::opened("b-1", 0, 0),
        bank::deposited("b-1", 10, 1),
        bank::deposited("b-1", 20, 2),
    ]);
    ctx.request("bank.event.batch", batch).await.unwrap();
    assert_eq!(stored(&server).len(), 3);
    // Sequence 2 is taken: the whole batch (3 and 4 too) is refused.
    let conflicting = Bank::Batch(vec![
        bank::deposited("b-1", 1, 2),
        bank::deposited("b-1", 1, 3),
    ]);
    let e = ctx
        .request("bank.event.batch", conflicting)
        .await
        .unwrap_err();
    let h = e.handler_error().expect("the server's refusal");
    assert_eq!(h.code(), Some("AXONIQ-2000"), "{h}");
    assert!(
        h.message()
            .contains("Invalid sequence number 2 for aggregate b-1, expected 3"),
        "{h}"
    );
    assert_eq!(
        stored(&server).len(),
        3,
        "nothing of the refused batch is stored"
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fire_and_forget_append_is_counted_not_lost_silently() {
    let server = common::server().await;
    let process = common::start::<Bank>(&common::bridge(
        "axon",
        &server.address().to_string(),
        EVENTS,
    ))
    .await;
    let ctx = process.context("test");
    ctx.publish("bank.event.x", bank::opened("c-1", 0, 0))
        .await
        .unwrap();
    ctx.publish("bank.event.x", bank::opened("c-1", 0, 0))
        .await
        .unwrap();
    // No sequence: the mapping cannot build the event.
    ctx.publish("bank.event.x", Bank::Text("no sequence here".into()))
        .await
        .unwrap();
    ctx.publish("bank.event.x", bank::deposited("c-1", 1, 1))
        .await
        .unwrap();
    common::until(10, "the last event is stored", || {
        stored(&server).len() == 2
    })
    .await;
    let failures = common::metric(
        &process,
        "telamon_axon_append_failures_total",
        &[("module", "axon"), ("pattern", "bank.event.#")],
    );
    assert_eq!(failures, Some(2.0));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_is_read_back_from_its_latest_snapshot() {
    let server = common::server().await;
    let process = common::start::<Bank>(&common::bridge(
        "axon",
        &server.address().to_string(),
        EVENTS,
    ))
    .await;
    let ctx = process.context("test");
    let history = |m: &Bank| match m {
        Bank::AggregateEvents(a) => a.clone(),
        other => panic!("expected the aggregate's events, got {other:?}"),
    };
    let empty = history(&ctx.request("bank.load.nobody", Bank::Empty).await.unwrap());
    assert_eq!((empty.last_sequence, empty.events.len()), (-1, 0));
    ctx.request(
        "bank.event.all",
        Bank::Batch(vec![
            bank::opened("d-1", 0, 0),
            bank::deposited("d-1", 10, 1),
            bank::deposited("d-1", 20, 2),
        ]),
    )
    .await
    .unwrap();
    let snapshot = Bank::AccountSnapshot(Balance {
        account_id: "d-1".into(),
        balance: 30,
    });
    let snapped = ctx
        .request_with(
            "bank.snapshot",
            snapshot.clone(),
            telamon_sdk::RequestOptions::new().headers(Headers::new().with("sequence", "2")),
        )
        .await;
    snapped.unwrap();
    ctx.request("bank.event.more", bank::deposited("d-1", 5, 3))
        .await
        .unwrap();
    let loaded = history(&ctx.request("bank.load.d-1", Bank::Empty).await.unwrap());
    assert_eq!(
        loaded,
        AggregateEvents {
            aggregate_id: "d-1".into(),
            snapshot: Some(Box::new(snapshot)),
            snapshot_sequence: Some(2),
            events: vec![bank::deposited("d-1", 5, 3)],
            last_sequence: 3,
        }
    );
    // A snapshot past the last event is refused by the server.
    let e = ctx
        .request_with(
            "bank.snapshot",
            Bank::AccountSnapshot(Balance {
                account_id: "d-1".into(),
                balance: 0,
            }),
            telamon_sdk::RequestOptions::new().headers(Headers::new().with("sequence", "9")),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.handler_error().and_then(HandlerError::code),
        Some("AXONIQ-2000")
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_events_take_their_type_from_the_header_or_the_mapping() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[[module.axon.append-events]]
pattern = "audit.*"
payload-type = "org.audit.{1|pascal}"
"#,
    );
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    ctx.request("audit.login", json!({"user": "ada"}))
        .await
        .unwrap();
    ctx.request_with(
        "audit.login",
        json!({"user": "bob"}),
        telamon_sdk::RequestOptions::new()
            .headers(Headers::new().with("axon-payload-type", "org.audit.Special")),
    )
    .await
    .unwrap();
    let events = stored(&server);
    let types: Vec<&str> = events
        .iter()
        .map(|(_, e)| e.payload.as_ref().unwrap().r#type.as_str())
        .collect();
    assert_eq!(types, ["org.audit.Login", "org.audit.Special"]);
    assert_eq!(
        events[0].1.aggregate_type, "",
        "not a domain event without aggregate-id"
    );
    assert!(
        !events[0].1.meta_data.contains_key("axon-payload-type"),
        "bridge headers are not metadata"
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_batches_snapshots_and_aggregate_reads() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[[module.axon.append-events]]
pattern = "shop.event"
aggregate-id = "/orderId"
aggregate-type = "Order"
sequence = "/seq"
payload-type = "org.shop.OrderEvent"

[[module.axon.append-snapshot]]
pattern = "shop.snapshot"
aggregate-id = "/orderId"
aggregate-type = "Order"
sequence = "/seq"
payload-type = "org.shop.OrderState"

[[module.axon.read-aggregate]]
pattern = "shop.load.*"
aggregate-id = "topic:2"
"#,
    );
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    let empty = ctx.request("shop.load.nobody", Value::Null).await.unwrap();
    assert_eq!(empty["lastSequence"], json!(-1));
    ctx.request(
        "shop.event",
        json!([
            {"orderId": "o-1", "seq": 0, "item": "tea"},
            {"orderId": "o-1", "seq": 1, "item": "cake"}
        ]),
    )
    .await
    .unwrap();
    let state = json!({"orderId": "o-1", "seq": 1, "items": ["tea", "cake"]});
    ctx.request("shop.snapshot", state.clone()).await.unwrap();
    let third = json!({"orderId": "o-1", "seq": 2, "item": "jam"});
    ctx.request("shop.event", third.clone()).await.unwrap();
    let loaded = ctx.request("shop.load.o-1", Value::Null).await.unwrap();
    assert_eq!(
        *loaded,
        json!({
            "aggregateId": "o-1",
            "snapshot": state,
            "snapshotSequence": 1,
            "events": [third],
            "lastSequence": 2
        })
    );
    let stored: Vec<(String, i64, String)> = stored(&server)
        .into_iter()
        .map(|(_, e)| {
            let p = e.payload.unwrap();
            (
                p.r#type,
                e.aggregate_sequence_number,
                String::from_utf8(p.data).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [
            (
                "org.shop.OrderEvent".to_owned(),
                0,
                r#"{"item":"tea","orderId":"o-1","seq":0}"#.to_owned()
            ),
            (
                "org.shop.OrderEvent".to_owned(),
                1,
                r#"{"item":"cake","orderId":"o-1","seq":1}"#.to_owned()
            ),
            (
                "org.shop.OrderEvent".to_owned(),
                2,
                r#"{"item":"jam","orderId":"o-1","seq":2}"#.to_owned()
            ),
        ],
        "each element of the list is one event, written as it is (a `Value`'s keys in order)"
    );
    process.stop().await;
    server.stop().await.unwrap();
}
