//! EventStore: transactional append, tokens, tracking, aggregates, snapshots.

mod common;

use common::{channel, next, outbound, req, start, until};
use telamon_axon_proto::pb::SerializedObject;
use telamon_axon_proto::pb::event::event_store_client::EventStoreClient;
use telamon_axon_proto::pb::event::{
    Event, GetAggregateEventsRequest, GetAggregateSnapshotsRequest, GetEventsRequest,
    GetFirstTokenRequest, GetLastTokenRequest, GetTokenAtRequest, ReadHighestSequenceNrRequest,
};
use telamon_axon_proto::{error_code, headers};
use tonic::Code;
use tonic::transport::Channel;

fn domain(aggregate: &str, sequence: i64) -> Event {
    Event {
        message_identifier: format!("{aggregate}-{sequence}"),
        aggregate_identifier: aggregate.to_owned(),
        aggregate_sequence_number: sequence,
        aggregate_type: "Order".to_owned(),
        timestamp: 1_000 + sequence,
        payload: Some(SerializedObject {
            r#type: "OrderEvent".to_owned(),
            revision: String::new(),
            data: vec![1, 2, 3],
        }),
        ..Event::default()
    }
}

fn plain(id: &str, timestamp: i64) -> Event {
    Event {
        message_identifier: id.to_owned(),
        timestamp,
        ..Event::default()
    }
}

async fn append(
    client: &mut EventStoreClient<Channel>,
    events: Vec<Event>,
) -> Result<(), tonic::Status> {
    client
        .append_event(req(tokio_stream::iter(events)))
        .await
        .map(|r| assert!(r.into_inner().success))
}

#[tokio::test]
async fn appends_get_gap_free_tokens_from_zero() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    append(&mut client, vec![domain("a", 0), domain("a", 1)])
        .await
        .expect("first");
    append(&mut client, vec![plain("p", 5), domain("b", 0)])
        .await
        .expect("second");
    let tokens: Vec<i64> = server.events().into_iter().map(|(t, _)| t).collect();
    assert_eq!(tokens, vec![0, 1, 2, 3]);
    let last = client
        .get_last_token(req(GetLastTokenRequest {}))
        .await
        .expect("last");
    assert_eq!(last.into_inner().token, 3);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn wrong_sequence_fails_with_out_of_range_and_axoniq_2000_and_stores_nothing() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    append(&mut client, vec![domain("a", 0)])
        .await
        .expect("first");
    // Valid first event, but the transaction as a whole is rejected: all or nothing.
    let status = append(&mut client, vec![domain("b", 0), domain("a", 2)])
        .await
        .expect_err("sequence gap rejected");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status
            .metadata()
            .get(headers::ERROR_CODE)
            .and_then(|v| v.to_str().ok()),
        Some(error_code::INVALID_SEQUENCE)
    );
    assert_eq!(
        status.message(),
        "[AXONIQ-2000] Invalid sequence number 2 for aggregate a, expected 1"
    );
    assert_eq!(server.events().len(), 1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn events_without_aggregate_type_are_not_sequence_checked() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    let mut odd = plain("x", 1);
    odd.aggregate_identifier = "a".to_owned();
    odd.aggregate_sequence_number = 42;
    append(&mut client, vec![odd.clone(), odd])
        .await
        .expect("not checked");
    append(&mut client, vec![domain("a", 0)])
        .await
        .expect("domain sequence starts at 0");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn concurrent_appends_with_the_same_sequence_exactly_one_succeeds() {
    let server = start().await;
    let channel = channel(&server).await;
    let (tx1, request1) = outbound();
    let (tx2, request2) = outbound();
    let mut c1 = EventStoreClient::new(channel.clone());
    let mut c2 = EventStoreClient::new(channel);
    let call1 = tokio::spawn(async move { c1.append_event(request1).await });
    let call2 = tokio::spawn(async move { c2.append_event(request2).await });
    tx1.send(domain("agg", 0)).expect("send");
    tx2.send(domain("agg", 0)).expect("send");
    drop((tx1, tx2)); // both commit
    let results = [call1.await.expect("join"), call2.await.expect("join")];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    let status = results
        .into_iter()
        .find_map(Result::err)
        .expect("one failure");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status
            .metadata()
            .get(headers::ERROR_CODE)
            .and_then(|v| v.to_str().ok()),
        Some("AXONIQ-2000")
    );
    assert_eq!(server.events().len(), 1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn list_events_starts_at_the_token_respects_permits_and_tails() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    let events: Vec<Event> = (0..5).map(|i| plain(&format!("e{i}"), i)).collect();
    append(&mut client, events).await.expect("append");

    let (tx, request) = outbound();
    let mut stream = client
        .list_events(request)
        .await
        .expect("stream")
        .into_inner();
    tx.send(GetEventsRequest {
        tracking_token: 2,
        number_of_permits: 2,
        client_id: "tracker".to_owned(),
        ..GetEventsRequest::default()
    })
    .expect("send");
    assert_eq!(next(&mut stream).await.token, 2);
    assert_eq!(next(&mut stream).await.token, 3);
    // Out of permits although event 4 exists: the server holds it back.
    let holds = |next: i64, permits: i64, seen: i64| {
        server
            .event_trackers()
            .iter()
            .any(|t| t.next_token == next && t.permits == permits && t.events_seen >= seen)
    };
    until("event 4 held back", || holds(4, 0, 5)).await;
    tx.send(GetEventsRequest {
        number_of_permits: 2,
        ..GetEventsRequest::default()
    })
    .expect("send");
    let four = next(&mut stream).await;
    assert_eq!(four.token, 4);
    assert_eq!(four.event.expect("event").message_identifier, "e4");
    until("one permit left, nothing new yet", || holds(5, 1, 5)).await;
    append(&mut client, vec![plain("e5", 5), plain("e6", 6)])
        .await
        .expect("append");
    assert_eq!(next(&mut stream).await.token, 5); // live tail
    until("permits used up, event 6 held back", || holds(6, 0, 7)).await;
    tx.send(GetEventsRequest {
        number_of_permits: 1,
        ..GetEventsRequest::default()
    })
    .expect("send");
    assert_eq!(next(&mut stream).await.token, 6);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn aggregate_events_start_from_the_latest_snapshot_when_allowed() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    append(&mut client, (0..5).map(|s| domain("a", s)).collect())
        .await
        .expect("append");
    let mut snapshot = domain("a", 2);
    snapshot.message_identifier = "snap-2".to_owned();
    client
        .append_snapshot(req(snapshot))
        .await
        .expect("snapshot");

    let read = |allow: bool, max: i64| GetAggregateEventsRequest {
        aggregate_id: "a".to_owned(),
        initial_sequence: 0,
        allow_snapshots: allow,
        max_sequence: max,
        min_token: 0,
    };
    let mut with = client
        .list_aggregate_events(req(read(true, 0)))
        .await
        .expect("read")
        .into_inner();
    let mut got = Vec::new();
    while let Some(event) = with.message().await.expect("ok") {
        got.push((event.aggregate_sequence_number, event.snapshot));
    }
    assert_eq!(got, vec![(2, true), (3, false), (4, false)]);

    let mut without = client
        .list_aggregate_events(req(read(false, 3)))
        .await
        .expect("read")
        .into_inner();
    let mut sequences = Vec::new();
    while let Some(event) = without.message().await.expect("ok") {
        assert!(!event.snapshot);
        sequences.push(event.aggregate_sequence_number);
    }
    assert_eq!(sequences, vec![0, 1, 2], "max_sequence is exclusive (SE)");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn snapshots_are_listed_highest_first_and_cannot_exceed_the_events() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    append(&mut client, (0..4).map(|s| domain("a", s)).collect())
        .await
        .expect("append");
    for s in [1, 3, 2] {
        client
            .append_snapshot(req(domain("a", s)))
            .await
            .expect("snapshot");
    }
    let status = client
        .append_snapshot(req(domain("a", 9)))
        .await
        .expect_err("beyond the highest event");
    assert_eq!(status.code(), Code::OutOfRange);

    let mut listed = client
        .list_aggregate_snapshots(req(GetAggregateSnapshotsRequest {
            aggregate_id: "a".to_owned(),
            initial_sequence: 0,
            max_sequence: i64::MAX,
            max_results: 2,
        }))
        .await
        .expect("list")
        .into_inner();
    let mut sequences = Vec::new();
    while let Some(event) = listed.message().await.expect("ok") {
        assert!(event.snapshot);
        sequences.push(event.aggregate_sequence_number);
    }
    assert_eq!(sequences, vec![3, 2]);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn highest_sequence_is_minus_one_without_events() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    let highest = |id: &str| ReadHighestSequenceNrRequest {
        aggregate_id: id.to_owned(),
        from_sequence_nr: 0,
    };
    let none = client
        .read_highest_sequence_nr(req(highest("a")))
        .await
        .expect("read");
    assert_eq!(none.into_inner().to_sequence_nr, -1);
    append(&mut client, (0..3).map(|s| domain("a", s)).collect())
        .await
        .expect("append");
    let some = client
        .read_highest_sequence_nr(req(highest("a")))
        .await
        .expect("read");
    assert_eq!(some.into_inner().to_sequence_nr, 2);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn token_helpers_follow_se() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    let last = client
        .get_last_token(req(GetLastTokenRequest {}))
        .await
        .expect("last");
    assert_eq!(last.into_inner().token, -1, "empty store");
    append(
        &mut client,
        vec![plain("a", 100), plain("b", 200), plain("c", 300)],
    )
    .await
    .expect("append");
    let first = client
        .get_first_token(req(GetFirstTokenRequest {}))
        .await
        .expect("first");
    assert_eq!(first.into_inner().token, 0);
    let at = |instant| GetTokenAtRequest { instant };
    let cases = [(150, 1), (200, 1), (50, 0), (999, 3)];
    for (instant, expected) in cases {
        let token = client.get_token_at(req(at(instant))).await.expect("at");
        assert_eq!(token.into_inner().token, expected, "instant {instant}");
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn tracker_starved_of_permits_is_failed_after_the_permit_timeout() {
    let server = telamon_testkit::AxonTestServer::builder()
        .event_permit_timeout(std::time::Duration::from_millis(100))
        .start()
        .await
        .expect("starts");
    let mut client = EventStoreClient::new(channel(&server).await);
    let (tx, request) = outbound();
    let mut stream = client
        .list_events(request)
        .await
        .expect("stream")
        .into_inner();
    tx.send(GetEventsRequest {
        tracking_token: 0,
        number_of_permits: 0,
        ..GetEventsRequest::default()
    })
    .expect("send");
    let status = tokio::time::timeout(common::WAIT, stream.message())
        .await
        .expect("bounded")
        .expect_err("starved tracker fails");
    assert_eq!(status.code(), Code::Cancelled);
    assert!(status.message().contains("Timeout waiting for permits"));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn blacklisted_payload_types_are_skipped() {
    let server = start().await;
    let mut client = EventStoreClient::new(channel(&server).await);
    let mut noisy = plain("noisy", 1);
    noisy.payload = Some(SerializedObject {
        r#type: "Noise".to_owned(),
        revision: String::new(),
        data: Vec::new(),
    });
    append(&mut client, vec![noisy, plain("wanted", 2)])
        .await
        .expect("append");
    let (tx, request) = outbound();
    let mut stream = client
        .list_events(request)
        .await
        .expect("stream")
        .into_inner();
    tx.send(GetEventsRequest {
        tracking_token: 0,
        number_of_permits: 10,
        blacklist: vec![telamon_axon_proto::pb::event::PayloadDescription {
            r#type: "Noise".to_owned(),
            revision: String::new(),
        }],
        ..GetEventsRequest::default()
    })
    .expect("send");
    let first = next(&mut stream).await;
    assert_eq!(first.token, 1);
    assert_eq!(first.event.expect("event").message_identifier, "wanted");
    server.stop().await.expect("stops");
}
