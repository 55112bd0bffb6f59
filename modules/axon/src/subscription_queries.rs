//! Subscription queries both ways.
//!
//! - **Handled here** (`[[handle-query]]` with `updates`): AxonServer tells
//!   the query handler stream about every live subscription to the query;
//!   each message a module publishes on the `updates` pattern goes to every
//!   one of them (only to those whose query matches, with `update-key` /
//!   `query-key`). The initial result is an ordinary query (or, for old
//!   senders, `get_initial_result`, answered through the same bus request).
//! - **Subscribed from here** (`[[subscribe-query]]`): a bus request opens a
//!   `Subscription` call (permits first, then `subscribe`), then runs the
//!   query for the initial result, which is the request's answer; every
//!   update is published on `updates-topic`. A request on `cancel-pattern`
//!   ends it; a second request for the same topic keeps one subscription.
//!
//! # Under stress
//!
//! - **Updates with no live subscription** go nowhere (debug log), as in
//!   Axon Framework; updates while the query stream is down are lost with it,
//!   and AxonServer re-announces the live subscriptions on the new stream.
//! - **A subscription from here whose call is lost** is opened again with
//!   back-off; the current result is fetched again and published as an
//!   update, so a subscriber that missed updates catches up. Update permits
//!   (`buffer`) are re-granted as updates are published on the bus, so a
//!   slow bus slows the server instead of overrunning the bridge
//!   (AxonServer fails a subscription that runs out of permits; it is then
//!   opened again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use telamon_axon_proto::pb::ProcessingKey;
use telamon_axon_proto::pb::query::query_provider_outbound::Request as Out;
use telamon_axon_proto::pb::query::subscription_query_request::Request as SubRequest;
use telamon_axon_proto::pb::query::subscription_query_response::Response as SubResponse;
use telamon_axon_proto::pb::query::{
    QueryProviderOutbound, QueryRequest, QueryUpdate, SubscriptionQuery, SubscriptionQueryRequest,
    SubscriptionQueryResponse,
};
use telamon_sdk::{Message, Request, Topic};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::bridge::Bridge;
use crate::commands::number_instruction;
use crate::config::{HandleQueryRule, SubscribeQueryRule};
use crate::connection::reopen_delay;
use crate::error::BridgeError;
use crate::metadata::{self, to_headers, to_metadata};
use crate::queries::{self, outbound};
use crate::selector::Source;
use crate::template::Vars;

/// A subscription AxonServer announced to this handler.
#[derive(Debug)]
struct Live {
    query: String,
    /// The query's content, for `query-key` matching.
    content: Option<Value>,
}

/// Subscriptions to queries this bridge handles.
#[derive(Debug, Default)]
pub(crate) struct HandledSubscriptions {
    live: Mutex<HashMap<String, Live>>,
    stream: Mutex<Option<mpsc::UnboundedSender<QueryProviderOutbound>>>,
}

impl HandledSubscriptions {
    pub(crate) fn stream_opened(&self, tx: mpsc::UnboundedSender<QueryProviderOutbound>) {
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// The stream went: so did every subscription on it (the server
    /// announces them again on the next one).
    pub(crate) fn stream_ended(&self) {
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A `subscription_query_request` on the query handler stream (no permit).
pub(crate) fn on_request<M: Message>(
    b: &Arc<Bridge<M>>,
    request: SubscriptionQueryRequest,
    tx: &mpsc::UnboundedSender<QueryProviderOutbound>,
    work: &mut JoinSet<()>,
) {
    match request.request {
        Some(SubRequest::Subscribe(sq)) => {
            let Some(query) = sq.query_request else {
                return;
            };
            let content = b
                .settings
                .handle_query
                .iter()
                .find(|r| r.query == query.query && r.query_key.is_some())
                .and_then(|_| b.codec.message_json(query.payload.as_ref()).ok())
                .map(|v| unwrap_variant(b, v));
            b.handled_subscriptions
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    sq.subscription_identifier,
                    Live {
                        query: query.query,
                        content,
                    },
                );
        }
        Some(SubRequest::Unsubscribe(sq)) => {
            b.handled_subscriptions
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&sq.subscription_identifier);
        }
        Some(SubRequest::GetInitialResult(sq)) => {
            let Some(query) = sq.query_request else {
                return;
            };
            let (b, tx) = (b.clone(), tx.clone());
            work.spawn(async move {
                let response = queries::answer(&b, &query).await;
                let _ = tx.send(outbound(
                    Out::SubscriptionQueryResponse(SubscriptionQueryResponse {
                        message_identifier: crate::ids::uuid(),
                        subscription_identifier: sq.subscription_identifier,
                        response: Some(SubResponse::InitialResult(response)),
                    }),
                    String::new(),
                ));
            });
        }
        Some(SubRequest::FlowControl(_)) | None => {}
    }
}

/// The content inside an enum's `{"Variant": content}` (as selectors see it).
fn unwrap_variant<M: Message>(b: &Bridge<M>, v: Value) -> Value {
    match (b.codec.shape(), v) {
        (crate::payload::Shape::Enum(_), Value::Object(map)) if map.len() == 1 => {
            map.into_iter().next().map_or(Value::Null, |(_, v)| v)
        }
        (_, v) => v,
    }
}

/// Sends what modules publish on `rule.updates` to the live subscriptions.
pub(crate) async fn serve_updates<M: Message>(b: Arc<Bridge<M>>, rule_index: usize) {
    let rule: &HandleQueryRule = &b.settings.handle_query[rule_index];
    let Some(pattern) = rule.updates.clone() else {
        return;
    };
    let mut updates = match b.ctx.subscribe(pattern.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(pattern = %pattern, error = %e, "cannot subscribe to subscription-query updates");
            return;
        }
    };
    loop {
        let delivery = tokio::select! {
            d = updates.recv() => match d { Some(d) => d, None => return },
            () = b.drain.cancelled() => return,
        };
        let content = match (&rule.update_key, b.codec.content(delivery.message())) {
            (Some(_), Ok(c)) => Some(c.value),
            (Some(_), Err(e)) => {
                tracing::warn!(topic = %delivery.topic(), error = %e, "update not sent: its content cannot be read");
                continue;
            }
            (None, _) => None,
        };
        let key = match &rule.update_key {
            Some(selector) => match selector.text(Source {
                content: content.as_ref(),
                headers: delivery.headers(),
                topic: delivery.topic(),
            }) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(topic = %delivery.topic(), error = %e, "update not sent: no update key");
                    continue;
                }
            },
            None => None,
        };
        let targets: Vec<String> = b
            .handled_subscriptions
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, live)| live.query == rule.query)
            .filter(|(_, live)| match (&key, &rule.query_key) {
                (Some(k), Some(q)) => q
                    .text(Source {
                        content: live.content.as_ref(),
                        headers: &telamon_sdk::Headers::new(),
                        topic: delivery.topic(),
                    })
                    .is_ok_and(|v| &v == k),
                _ => true,
            })
            .map(|(id, _)| id.clone())
            .collect();
        if targets.is_empty() {
            tracing::debug!(query = %rule.query, topic = %delivery.topic(), "update with no live subscription");
            continue;
        }
        let payload = match b.codec.encode(delivery.message()) {
            Ok((variant, data)) => b
                .codec
                .serialized(variant, rule.response_type.clone(), data),
            Err(e) => {
                tracing::warn!(topic = %delivery.topic(), error = %e, "update not sent");
                continue;
            }
        };
        let Some(tx) = b
            .handled_subscriptions
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            tracing::debug!(query = %rule.query, "update while the query stream is down");
            continue;
        };
        for id in targets {
            let update = QueryUpdate {
                message_identifier: crate::ids::uuid(),
                payload: Some(payload.clone()),
                meta_data: to_metadata(delivery.headers()),
                client_id: b.settings.client_id.clone(),
                component_name: b.settings.raw.component.clone(),
                error_code: String::new(),
                error_message: None,
            };
            let _ = tx.send(outbound(
                Out::SubscriptionQueryResponse(SubscriptionQueryResponse {
                    message_identifier: crate::ids::uuid(),
                    subscription_identifier: id,
                    response: Some(SubResponse::Update(update)),
                }),
                String::new(),
            ));
        }
    }
}

/// Subscriptions this bridge opened, by updates topic.
#[derive(Debug, Default)]
pub(crate) struct OpenedSubscriptions {
    open: Mutex<HashMap<String, CancellationToken>>,
}

fn updates_topic(rule: &SubscribeQueryRule, topic: &Topic) -> Result<Topic, BridgeError> {
    let text = rule.updates_topic.render(Vars {
        topic: Some(topic),
        named: &[],
    })?;
    Topic::new(&text).map_err(|e| BridgeError::Mapping(format!("updates-topic `{text}`: {e}")))
}

/// A `[[subscribe-query]]` request: the initial result; updates follow on the bus.
pub(crate) async fn subscribe<M: Message>(
    b: &Arc<Bridge<M>>,
    rule_index: usize,
    request: Request<M>,
) -> Result<Arc<M>, BridgeError> {
    let rule = &b.settings.subscribe_query[rule_index];
    let (topic, message, headers) = request.into_parts();
    let updates = updates_topic(rule, &topic)?;
    let timeout = b.settings.raw.call_timeout;
    let mut query = queries::query_request(
        b,
        (&topic, &message, &headers),
        &rule.query,
        rule.payload_type.as_ref(),
        None,
        vec![number_instruction(
            ProcessingKey::Timeout,
            i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
        )],
    )?;
    b.check_size(&query)?;
    let fresh = {
        let mut open = b
            .opened_subscriptions
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if open.contains_key(updates.as_str()) {
            None
        } else {
            let stop = b.drain.child_token();
            open.insert(updates.as_str().to_owned(), stop.clone());
            Some(stop)
        }
    };
    if let Some(stop) = fresh {
        let (b2, q, t) = (b.clone(), query.clone(), updates.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        b.ctx
            .run_draining(follow(b2, rule_index, q, t, stop, Some(ready_tx)));
        // Updates must not be missed: the call is open before the initial query.
        let _ = tokio::time::timeout(timeout, ready_rx).await;
    }
    query.message_identifier = crate::ids::uuid();
    let results = queries::run_query(b, &query, 1, timeout).await?;
    let first = results.first().ok_or_else(|| BridgeError::Axon {
        code: "no-result".to_owned(),
        message: format!("query {} completed without an initial result", query.query),
        status: None,
    })?;
    Ok(Arc::new(b.codec.decode(first.payload.as_ref())?))
}

/// A `cancel-pattern` request: ends the subscription of the same updates topic.
pub(crate) async fn cancel<M: Message>(
    b: &Arc<Bridge<M>>,
    rule_index: usize,
    request: Request<M>,
) -> Result<Arc<M>, BridgeError> {
    let rule = &b.settings.subscribe_query[rule_index];
    let (topic, message, _) = request.into_parts();
    let updates = updates_topic(rule, &topic)?;
    let stop = b
        .opened_subscriptions
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(updates.as_str());
    match stop {
        Some(stop) => {
            stop.cancel();
            Ok(message)
        }
        None => Err(BridgeError::Mapping(format!(
            "no subscription publishes on `{updates}`"
        ))),
    }
}

/// Keeps one subscription open, reopening it after a loss, until cancelled.
async fn follow<M: Message>(
    b: Arc<Bridge<M>>,
    rule_index: usize,
    query: QueryRequest,
    topic: Topic,
    stop: CancellationToken,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let rule = &b.settings.subscribe_query[rule_index];
    let mut first = true;
    let mut attempt = 0u32;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let ended = once(&b, rule.buffer, &query, &topic, &stop, &mut ready, first).await;
        first = false;
        match ended {
            Ok(Done::Stopped) | Ok(Done::Completed) => break,
            Err((code, why)) => {
                let delay = reopen_delay(code).max(b.conn.backoff(attempt));
                attempt = attempt.saturating_add(1);
                tracing::warn!(topic = %topic, reason = %why, retry_in = ?delay, "subscription query lost; reopening");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    b.opened_subscriptions
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(topic.as_str());
}

enum Done {
    Stopped,
    Completed,
}

fn sub_request(request: SubRequest) -> SubscriptionQueryRequest {
    SubscriptionQueryRequest {
        request: Some(request),
    }
}

async fn once<M: Message>(
    b: &Arc<Bridge<M>>,
    buffer: u32,
    query: &QueryRequest,
    topic: &Topic,
    stop: &CancellationToken,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    first: bool,
) -> Result<Done, (Option<tonic::Code>, String)> {
    let link = tokio::select! {
        l = b.conn.next_link_or(&b.drain) => match l { Some(l) => l, None => return Ok(Done::Stopped) },
        () = stop.cancelled() => return Ok(Done::Stopped),
    };
    let id = crate::ids::uuid();
    let sq = |permits: i64| SubscriptionQuery {
        subscription_identifier: id.clone(),
        number_of_permits: permits,
        query_request: Some(query.clone()),
        update_response_type: None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(sub_request(SubRequest::FlowControl(sq(i64::from(buffer)))));
    let _ = tx.send(sub_request(SubRequest::Subscribe(sq(i64::from(buffer)))));
    let mut inbound = link
        .queries()
        .subscription(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|s| (Some(s.code()), s.to_string()))?
        .into_inner();
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    if !first {
        // Catch up on what changed while the subscription was down.
        let mut q = query.clone();
        q.message_identifier = crate::ids::uuid();
        if let Ok(results) = queries::run_query(b, &q, 1, b.settings.raw.call_timeout).await
            && let Some(r) = results.first()
        {
            publish(
                b,
                topic,
                &id,
                r.payload.as_ref(),
                &r.meta_data,
                &r.message_identifier,
            )
            .await;
        }
    }
    let refill = (buffer / 4).max(1);
    let mut published = 0u32;
    loop {
        let message = tokio::select! {
            m = inbound.message() => m,
            () = stop.cancelled() => {
                let _ = tx.send(sub_request(SubRequest::Unsubscribe(sq(0))));
                return Ok(Done::Stopped);
            }
            () = link.lost.cancelled() => return Err((Some(tonic::Code::Unavailable), "connection lost".into())),
        };
        match message {
            Ok(Some(SubscriptionQueryResponse {
                response: Some(response),
                ..
            })) => match response {
                SubResponse::Update(update) => {
                    if update.error_code.is_empty() {
                        publish(
                            b,
                            topic,
                            &id,
                            update.payload.as_ref(),
                            &update.meta_data,
                            &update.message_identifier,
                        )
                        .await;
                    } else {
                        tracing::warn!(topic = %topic, code = %update.error_code, "subscription query update carried an error");
                    }
                    published += 1;
                    if published >= refill {
                        published = 0;
                        let _ =
                            tx.send(sub_request(SubRequest::FlowControl(sq(i64::from(refill)))));
                    }
                }
                SubResponse::InitialResult(_) => {}
                SubResponse::Complete(_) => {
                    tracing::info!(topic = %topic, "subscription query completed by its handler");
                    return Ok(Done::Completed);
                }
                SubResponse::CompleteExceptionally(e) => {
                    tracing::warn!(topic = %topic, code = %e.error_code, "subscription query ended with an error by its handler");
                    return Ok(Done::Completed);
                }
            },
            Ok(Some(_)) => {}
            Ok(None) => return Err((None, "the server completed the subscription".into())),
            Err(s) => return Err((Some(s.code()), s.to_string())),
        }
    }
}

async fn publish<M: Message>(
    b: &Bridge<M>,
    topic: &Topic,
    subscription: &str,
    payload: Option<&telamon_axon_proto::pb::SerializedObject>,
    meta_data: &HashMap<String, telamon_axon_proto::pb::MetaDataValue>,
    message_id: &str,
) {
    let message = match b.codec.decode(payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(topic = %topic, error = %e, "subscription query update could not be decoded");
            return;
        }
    };
    let headers = to_headers(
        meta_data,
        &[
            (metadata::SUBSCRIPTION, subscription),
            (metadata::MESSAGE_ID, message_id),
        ],
    );
    if let Err(e) = b.ctx.publish_with(topic, message, headers).await {
        tracing::warn!(topic = %topic, error = %e, "subscription query update not published");
    }
}
