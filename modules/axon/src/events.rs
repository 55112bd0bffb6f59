//! Events: append (`[[append-events]]`), snapshots (`[[append-snapshot]]`)
//! and sourcing one aggregate (`[[read-aggregate]]`).
//!
//! A message on an append pattern becomes one `AppendEvent` transaction: one
//! event, or — when its content is a list and `batch` is on — one event per
//! element, all or nothing. Aggregate id, type and sequence come from the
//! message by the mapping's selectors, so modules hold no Axon types. A
//! *request* on the pattern is answered with the message itself once the
//! server committed, or with the server's error (AXONIQ-2000 for a sequence
//! conflict, with its message); a *publish* whose append fails is logged
//! with its message ids and counted (`telamon_axon_append_failures_total`),
//! never dropped silently.
//!
//! A read returns a `telamon.axon.AggregateEvents` document:
//! `{"aggregateId", "snapshot", "snapshotSequence", "events", "lastSequence"}`
//! — the latest snapshot (or `null`) and the events after it, each as a
//! message, and the highest sequence number (−1 for an unknown aggregate).
//!
//! # Under stress
//!
//! - Appends are not retried: a transaction whose outcome is unknown (the
//!   connection broke at commit) must not be sent twice. The requester gets
//!   the error and decides; the circuit breaker still counts the failure.
//! - Publishes on one pattern are appended one at a time, in order, so
//!   events of one aggregate keep their order; requests run concurrently (a
//!   requester orders its own by waiting for each answer).
//! - At stop, publishes already queued for the bridge are still appended
//!   (within the shutdown deadline) before the connection closes.

use std::sync::Arc;

use serde_json::{Value, json};
use telamon_axon_proto::pb::event::{Event, GetAggregateEventsRequest};
use telamon_sdk::{Delivery, Headers, Message, Request, Topic};

use crate::bridge::{Bridge, now_millis};
use crate::config::{AppendRule, ReadAggregateRule};
use crate::error::BridgeError;
use crate::metadata::{PAYLOAD_TYPE, to_metadata};
use crate::payload::Content;
use crate::selector::Source;
use crate::template::Vars;

/// Type of the document a read returns.
pub const AGGREGATE_EVENTS_TYPE: &str = "telamon.axon.AggregateEvents";

/// The events one message stands for.
pub(crate) fn build<M: Message>(
    b: &Bridge<M>,
    rule: &AppendRule,
    snapshot: bool,
    topic: &Topic,
    message: &M,
    headers: &Headers,
) -> Result<Vec<Event>, BridgeError> {
    let content = b.codec.content(message)?;
    let (batch, parts): (bool, Vec<Content>) = match content.value {
        Value::Array(list) if rule.batch && !snapshot => (true, b.codec.elements(list)),
        value => (
            false,
            vec![Content {
                variant: content.variant,
                value,
            }],
        ),
    };
    let explicit = match headers.get(PAYLOAD_TYPE) {
        Some(t) => Some(t.to_owned()),
        None => rule
            .payload_type
            .as_ref()
            .map(|t| {
                t.render(Vars {
                    topic: Some(topic),
                    named: &[],
                })
            })
            .transpose()?,
    };
    let metadata = to_metadata(headers);
    let now = now_millis();
    let mut events = Vec::with_capacity(parts.len());
    let mut previous: Option<(String, i64)> = None;
    for part in parts {
        let data = b.codec.encode_value(&part.value)?;
        // In a batch, an element that is a variant of the message enum
        // keeps its own type; the header or mapping type is for the rest.
        let chosen = if batch && part.variant.is_some() {
            None
        } else {
            explicit.clone()
        };
        let payload = b.codec.serialized(part.variant, chosen, data);
        let (aggregate_identifier, aggregate_type, sequence) = match &rule.aggregate {
            None => (String::new(), String::new(), 0),
            Some(a) => {
                let source = Source {
                    content: Some(&part.value),
                    headers,
                    topic,
                };
                let id = a.id.text(source)?;
                let kind = a.kind.render(Vars {
                    topic: Some(topic),
                    named: &[("type", &payload.r#type)],
                })?;
                // In a batch, a sequence read from the message as a whole (a
                // header, a topic word) is the first event's; the others of
                // the same aggregate follow it, as do elements that leave
                // their own sequence out.
                let follows = match &previous {
                    Some((pid, pseq)) if *pid == id => Some(pseq + 1),
                    _ => None,
                };
                let seq = match (follows, a.sequence.needs_content()) {
                    (Some(next), false) => next,
                    (follows, _) => match a.sequence.integer(source) {
                        Ok(s) => s,
                        Err(e) => follows.ok_or(e)?,
                    },
                };
                previous = Some((id.clone(), seq));
                (id, kind, seq)
            }
        };
        events.push(Event {
            message_identifier: crate::ids::uuid(),
            aggregate_identifier,
            aggregate_sequence_number: sequence,
            aggregate_type,
            timestamp: now,
            payload: Some(payload),
            meta_data: metadata.clone(),
            snapshot,
        });
    }
    for e in &events {
        b.check_size(e)?;
    }
    Ok(events)
}

/// Appends the events of one message (one transaction), or a snapshot.
pub(crate) async fn append<M: Message>(
    b: &Bridge<M>,
    rule: &AppendRule,
    snapshot: bool,
    topic: &Topic,
    message: &M,
    headers: &Headers,
) -> Result<usize, BridgeError> {
    let events = build(b, rule, snapshot, topic, message, headers)?;
    let deadline = b.settings.raw.call_timeout;
    let count = events.len();
    if snapshot {
        b.call_once("append-snapshot", deadline, |link| {
            let event = events[0].clone();
            async move {
                link.events().append_snapshot(event).await?;
                Ok(())
            }
        })
        .await?;
    } else {
        b.call_once("append", deadline, |link| {
            let events = events.clone();
            async move {
                link.events()
                    .append_event(tokio_stream::iter(events))
                    .await?;
                Ok(())
            }
        })
        .await?;
    }
    Ok(count)
}

/// A request on an append pattern: the message back once committed.
pub(crate) async fn append_request<M: Message>(
    b: &Bridge<M>,
    rule: &AppendRule,
    snapshot: bool,
    request: Request<M>,
) -> Result<Arc<M>, BridgeError> {
    let (topic, message, headers) = request.into_parts();
    append(b, rule, snapshot, &topic, &message, &headers).await?;
    Ok(message)
}

/// A publish on an append pattern: appended, or logged and counted.
pub(crate) async fn append_published<M: Message>(
    b: &Bridge<M>,
    rule: &AppendRule,
    delivery: &Delivery<M>,
) {
    if let Err(e) = append(
        b,
        rule,
        false,
        delivery.topic(),
        delivery.message(),
        delivery.headers(),
    )
    .await
    {
        b.counter(
            "append_failures_total",
            "Published events whose append failed (the publisher used no request, so it is logged and counted).",
            &[("pattern", rule.pattern.as_str())],
        )
        .inc();
        tracing::error!(
            topic = %delivery.topic(),
            bus_message_id = delivery.id().unwrap_or("-"),
            code = e.code(),
            error = %e,
            "published event not appended to AxonServer"
        );
    }
}

/// A read: the aggregate's latest snapshot and the events after it.
pub(crate) async fn read<M: Message>(
    b: &Bridge<M>,
    rule: &ReadAggregateRule,
    request: Request<M>,
) -> Result<Arc<M>, BridgeError> {
    let (topic, message, headers) = request.into_parts();
    let content = if rule.aggregate_id.needs_content() {
        Some(b.codec.content(&message)?.value)
    } else {
        None
    };
    let id = rule.aggregate_id.text(Source {
        content: content.as_ref(),
        headers: &headers,
        topic: &topic,
    })?;
    let request = GetAggregateEventsRequest {
        aggregate_id: id.clone(),
        initial_sequence: 0,
        allow_snapshots: rule.snapshots,
        max_sequence: 0,
        min_token: 0,
    };
    let events = b
        .call("read-aggregate", b.settings.raw.call_timeout, |link| {
            let request = request.clone();
            async move {
                let mut stream = link
                    .events()
                    .list_aggregate_events(request)
                    .await?
                    .into_inner();
                let mut events = Vec::new();
                while let Some(e) = stream.message().await? {
                    events.push(e);
                }
                Ok(events)
            }
        })
        .await?;
    let mut snapshot = Value::Null;
    let mut snapshot_sequence = Value::Null;
    let mut list = Vec::with_capacity(events.len());
    let mut last = -1;
    for e in &events {
        last = last.max(e.aggregate_sequence_number);
        let m = b.codec.message_json(e.payload.as_ref())?;
        if e.snapshot {
            snapshot = m;
            snapshot_sequence = json!(e.aggregate_sequence_number);
        } else {
            list.push(m);
        }
    }
    let doc = json!({
        "aggregateId": id,
        "snapshot": snapshot,
        "snapshotSequence": snapshot_sequence,
        "events": list,
        "lastSequence": last,
    });
    Ok(Arc::new(b.codec.document(AGGREGATE_EVENTS_TYPE, doc)?))
}
