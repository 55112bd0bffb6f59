//! Queries both ways: bus requests → `Query` (`[[send-query]]`), and the
//! query handler stream → bus requests (`[[handle-query]]`). Subscription
//! queries ride on the same handler stream; see `subscription_queries.rs`.
//!
//! # Under stress
//!
//! - **Sending**: the `TIMEOUT` instruction and the local deadline are the
//!   mapping's `timeout`; with `results = "first"` the call is cancelled as
//!   soon as a result arrives (AxonServer then cancels the other handlers),
//!   with `"all"` after `expected-results` results or when every handler
//!   completed. AXONIQ-5000 (no handler), 5001 (handler failed) and 5006
//!   (timed out at the server) reach the requester as distinct codes.
//! - **Handling**: queries, query cancels and query flow-control messages
//!   each cost a permit and each give it back when done (CONNECTOR §D.4);
//!   a cancelled query's bus request is dropped and its permit returned.
//!   Every query is answered with a response or an error (AXONIQ-5001 when
//!   the module failed or timed out, 5000 when nobody on the bus takes it,
//!   4001 when its handler went away), then `QueryComplete` — never left
//!   open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::query::query_provider_inbound::Request as In;
use telamon_axon_proto::pb::query::query_provider_outbound::Request as Out;
use telamon_axon_proto::pb::query::{
    QueryComplete, QueryProviderInbound, QueryProviderOutbound, QueryRequest, QueryResponse,
    QuerySubscription,
};
use telamon_axon_proto::pb::{FlowControl, ProcessingKey, SerializedObject};
use telamon_sdk::{Headers, Message, Request, RequestError, RequestOptions, Topic};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::bridge::{Bridge, now_millis};
use crate::commands::{Ended, number_instruction, text_instruction};
use crate::config::{HandleQueryRule, Results, SendQueryRule};
use crate::connection::{Link, Slot, reopen_delay};
use crate::error::{BridgeError, bus_failure_code};
use crate::instruction::{Acks, ack_error};
use crate::metadata::{self, to_headers, to_metadata};
use crate::permits::Permits;
use crate::selector::{Selector, Source};
use crate::template::{Template, Vars};

/// Type of the document a `results = "all"` query answers with.
pub const QUERY_RESULTS_TYPE: &str = "telamon.axon.QueryResults";

/// A query request for a bus message.
pub(crate) fn query_request<M: Message>(
    b: &Bridge<M>,
    (topic, message, headers): (&Topic, &M, &Headers),
    name: &Template,
    payload_type: Option<&Template>,
    routing_key: Option<&Selector>,
    instructions: Vec<telamon_axon_proto::pb::ProcessingInstruction>,
) -> Result<QueryRequest, BridgeError> {
    let needs_content = routing_key.is_some_and(|s| s.needs_content());
    let (payload, content) = b.payload(topic, message, headers, payload_type, needs_content)?;
    let query = name.render(Vars {
        topic: Some(topic),
        named: &[("type", &payload.r#type)],
    })?;
    let mut processing_instructions = instructions;
    if let Some(selector) = routing_key {
        let key = selector.text(Source {
            content: content.as_ref(),
            headers,
            topic,
        })?;
        processing_instructions.push(text_instruction(ProcessingKey::RoutingKey, &key));
    }
    Ok(QueryRequest {
        message_identifier: crate::ids::uuid(),
        query,
        timestamp: now_millis(),
        payload: Some(payload),
        meta_data: to_metadata(headers),
        response_type: None,
        processing_instructions,
        client_id: b.settings.client_id.clone(),
        component_name: b.settings.raw.component.clone(),
    })
}

/// Runs `query` and collects up to `expected` successful responses (all
/// when negative). An error response counts only when no result came.
pub(crate) async fn run_query<M: Message>(
    b: &Bridge<M>,
    query: &QueryRequest,
    expected: i64,
    deadline: std::time::Duration,
) -> Result<Vec<QueryResponse>, BridgeError> {
    b.call("query", deadline, |link| {
        let query = query.clone();
        async move {
            let mut stream = link
                .queries()
                .query(query.clone())
                .await
                .map_err(BridgeError::from)?
                .into_inner();
            let mut results = Vec::new();
            let mut error = None;
            while let Some(r) = stream.message().await.map_err(BridgeError::from)? {
                if !r.error_code.is_empty() {
                    error.get_or_insert_with(|| {
                        BridgeError::in_band(&r.error_code, r.error_message.as_ref())
                    });
                    continue;
                }
                results.push(r);
                if expected > 0 && results.len() as i64 >= expected {
                    // Dropping the stream cancels the call; AxonServer
                    // cancels the handlers still working.
                    break;
                }
            }
            match error {
                Some(e) if results.is_empty() => Err(e),
                _ => Ok(results),
            }
        }
    })
    .await
}

/// Sends one bus request as a query and returns the result(s) as a message.
pub(crate) async fn send<M: Message>(
    b: &Bridge<M>,
    rule: &SendQueryRule,
    request: Request<M>,
) -> Result<Arc<M>, BridgeError> {
    let (topic, message, headers) = request.into_parts();
    let mut instructions = vec![
        number_instruction(
            ProcessingKey::Timeout,
            i64::try_from(rule.timeout.as_millis()).unwrap_or(i64::MAX),
        ),
        number_instruction(ProcessingKey::NrOfResults, rule.expected_results),
    ];
    if let Some(p) = rule.priority {
        instructions.push(number_instruction(ProcessingKey::Priority, p));
    }
    let mut query = query_request(
        b,
        (&topic, &message, &headers),
        &rule.query,
        rule.payload_type.as_ref(),
        rule.routing_key.as_ref(),
        instructions,
    )?;
    query.response_type = rule.response_type.as_ref().map(|t| SerializedObject {
        r#type: t.clone(),
        revision: String::new(),
        data: Vec::new(),
    });
    b.check_size(&query)?;
    let results = run_query(b, &query, rule.expected_results, rule.timeout).await?;
    match rule.results {
        Results::First => match results.first() {
            Some(r) => Ok(Arc::new(b.codec.decode(r.payload.as_ref())?)),
            None => Err(BridgeError::Axon {
                code: "no-result".to_owned(),
                message: format!("query {} completed without a result", query.query),
                status: None,
            }),
        },
        Results::All => {
            let list = results
                .iter()
                .map(|r| b.codec.message_json(r.payload.as_ref()))
                .collect::<Result<Vec<Value>, _>>()?;
            Ok(Arc::new(
                b.codec.document(QUERY_RESULTS_TYPE, Value::Array(list))?,
            ))
        }
    }
}

pub(crate) fn outbound(request: Out, instruction_id: String) -> QueryProviderOutbound {
    QueryProviderOutbound {
        request: Some(request),
        instruction_id,
    }
}

/// Serves `[[handle-query]]` for as long as the bridge runs.
pub(crate) async fn serve<M: Message>(b: Arc<Bridge<M>>, slot: Slot) {
    let (window, refill) = b.settings.query_window();
    let permits = Arc::new(Permits::new(
        window,
        refill,
        b.ctx.gauge(
            "telamon_axon_permits_available",
            "Permits AxonServer may still use on a stream (messages it may send before the bridge grants more).",
            &[("stream", "queries")],
        ),
    ));
    while let Some(link) = b.conn.next_link_or(&b.drain).await {
        let ended = run(&b, &link, &permits, &slot).await;
        slot.set(false);
        permits.closed();
        b.handled_subscriptions.stream_ended();
        match ended {
            Ended::Stopping => return,
            Ended::LinkLost => {}
            Ended::Failed(code, why) => {
                tracing::warn!(reason = %why, "query handler stream lost; reopening");
                tokio::select! {
                    () = tokio::time::sleep(reopen_delay(code)) => {}
                    () = b.drain.cancelled() => return,
                }
            }
        }
    }
}

/// Gives a permit back when dropped (answered, failed or cancelled alike).
struct PermitReturn {
    permits: Arc<Permits>,
    tx: mpsc::UnboundedSender<QueryProviderOutbound>,
    client_id: String,
}

impl Drop for PermitReturn {
    fn drop(&mut self) {
        if let Some(n) = self.permits.finished() {
            let _ = self.tx.send(outbound(
                Out::FlowControl(FlowControl {
                    client_id: self.client_id.clone(),
                    permits: n,
                }),
                String::new(),
            ));
        }
    }
}

async fn run<M: Message>(
    b: &Arc<Bridge<M>>,
    link: &Link,
    permits: &Arc<Permits>,
    slot: &Slot,
) -> Ended {
    let c = &b.settings.raw;
    let (tx, rx) = mpsc::unbounded_channel();
    let acks = Acks::default();
    for rule in &b.settings.handle_query {
        let (id, _) = acks.expect();
        let _ = tx.send(outbound(Out::Subscribe(subscription(b, rule, &id)), id));
    }
    let _ = tx.send(outbound(
        Out::FlowControl(FlowControl {
            client_id: b.settings.client_id.clone(),
            permits: permits.open(),
        }),
        String::new(),
    ));
    let mut client = link.queries();
    let opened = tokio::select! {
        r = tokio::time::timeout(c.connect_timeout, client.open_stream(UnboundedReceiverStream::new(rx))) => r,
        () = link.lost.cancelled() => return Ended::LinkLost,
        () = b.drain.cancelled() => return Ended::Stopping,
    };
    let mut inbound = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Ended::Failed(Some(s.code()), s.to_string()),
        Err(_) => return Ended::Failed(None, "query stream did not open in time".into()),
    };
    b.handled_subscriptions.stream_opened(tx.clone());
    let registered_by = Instant::now() + c.connect_timeout;
    let mut work: JoinSet<()> = JoinSet::new();
    let in_work: Arc<Mutex<HashMap<String, AbortHandle>>> = Arc::default();
    let permit = || PermitReturn {
        permits: permits.clone(),
        tx: tx.clone(),
        client_id: b.settings.client_id.clone(),
    };
    loop {
        tokio::select! {
            () = b.drain.cancelled() => {
                for rule in &b.settings.handle_query {
                    let _ = tx.send(outbound(Out::Unsubscribe(subscription(b, rule, "")), String::new()));
                }
                let _ = tokio::time::timeout(c.handler_timeout, async { while work.join_next().await.is_some() {} }).await;
                b.handled_subscriptions.stream_ended();
                crate::commands::close(tx, &mut inbound, c.connect_timeout).await;
                return Ended::Stopping;
            }
            () = link.lost.cancelled() => return Ended::LinkLost,
            () = tokio::time::sleep_until(registered_by.into()), if acks.pending() > 0 => {
                return Ended::Failed(None, format!("query subscriptions not acknowledged within {:?}", c.connect_timeout));
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            message = inbound.message() => match message {
                Ok(Some(QueryProviderInbound { request: Some(request), .. })) => match request {
                    In::Ack(ack) => {
                        let refused = (!ack.success).then(|| ack_error(&ack));
                        if acks.resolve(ack) {
                            if let Some(e) = refused {
                                return Ended::Failed(None, format!("query subscription refused: {e}"));
                            }
                            if acks.pending() == 0 {
                                slot.set(true);
                            }
                        }
                    }
                    In::Query(query) => {
                        permits.consumed();
                        let returned = permit();
                        let (b2, tx2, in_work2) = (b.clone(), tx.clone(), in_work.clone());
                        let id = query.message_identifier.clone();
                        // Held while spawning, so the task's own removal
                        // comes after this insertion.
                        let mut map = in_work.lock().unwrap_or_else(|e| e.into_inner());
                        let handle = work.spawn(async move {
                            let _returned = returned;
                            let id = query.message_identifier.clone();
                            let response = answer(&b2, &query).await;
                            let _ = tx2.send(outbound(Out::QueryResponse(response), String::new()));
                            let _ = tx2.send(outbound(Out::QueryComplete(QueryComplete {
                                message_id: crate::ids::uuid(),
                                request_id: id.clone(),
                            }), String::new()));
                            in_work2.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        });
                        map.insert(id, handle);
                    }
                    In::QueryCancel(reference) => {
                        permits.consumed();
                        let _returned = permit();
                        let cancelled = in_work.lock().unwrap_or_else(|e| e.into_inner()).remove(&reference.request_id);
                        if let Some(handle) = cancelled {
                            // Dropping the task drops its bus request and
                            // gives its permit back.
                            handle.abort();
                            let _ = tx.send(outbound(Out::QueryComplete(QueryComplete {
                                message_id: crate::ids::uuid(),
                                request_id: reference.request_id,
                            }), String::new()));
                        }
                    }
                    In::QueryFlowControl(_) => {
                        // One response per query: nothing to pace, but the
                        // message cost a permit like any other.
                        permits.consumed();
                        drop(permit());
                    }
                    In::SubscriptionQueryRequest(request) => {
                        crate::subscription_queries::on_request(b, request, &tx, &mut work);
                    }
                },
                Ok(Some(QueryProviderInbound { request: None, instruction_id })) => {
                    tracing::debug!(%instruction_id, "empty message on the query stream ignored");
                }
                Ok(None) => return Ended::Failed(None, "the server completed the query stream".into()),
                Err(s) => return Ended::Failed(Some(s.code()), s.to_string()),
            },
        }
    }
}

fn subscription<M: Message>(b: &Bridge<M>, rule: &HandleQueryRule, id: &str) -> QuerySubscription {
    QuerySubscription {
        message_id: id.to_owned(),
        query: rule.query.clone(),
        result_name: rule.response_type.clone().unwrap_or_else(|| "*".to_owned()),
        component_name: b.settings.raw.component.clone(),
        client_id: b.settings.client_id.clone(),
    }
}

/// The code a failed query is answered with.
const EXECUTION_ERROR: &str = error_code::client::QUERY_EXECUTION_ERROR;

/// Answers one query through the bus: a response or an AXONIQ-5001 error.
pub(crate) async fn answer<M: Message>(b: &Bridge<M>, query: &QueryRequest) -> QueryResponse {
    // A query that came while modules were still initialising waits for them.
    b.ctx.started().await;
    let failure = |code: &str, message: String, details: Vec<String>| QueryResponse {
        message_identifier: crate::ids::uuid(),
        request_identifier: query.message_identifier.clone(),
        error_code: code.to_owned(),
        error_message: Some(b.error_message(code, message, details)),
        ..QueryResponse::default()
    };
    let Some(rule) = b
        .settings
        .handle_query
        .iter()
        .find(|r| r.query == query.query)
    else {
        return failure(
            error_code::NO_HANDLER_FOR_QUERY,
            format!("No handler for query: {}", query.query),
            Vec::new(),
        );
    };
    match ask(b, rule, query).await {
        Ok(response) => response,
        Err((code, message, details)) => failure(&code, message, details),
    }
}

type Failure = (String, String, Vec<String>);

fn bridge_failure(e: BridgeError) -> Failure {
    (
        EXECUTION_ERROR.to_owned(),
        e.to_string(),
        vec![e.code().to_owned()],
    )
}

async fn ask<M: Message>(
    b: &Bridge<M>,
    rule: &HandleQueryRule,
    query: &QueryRequest,
) -> Result<QueryResponse, Failure> {
    let type_name = query.payload.as_ref().map_or("", |p| p.r#type.as_str());
    let topic = rule
        .topic
        .render(Vars {
            topic: None,
            named: &[("query", &query.query), ("type", type_name)],
        })
        .map_err(|e| bridge_failure(e.into()))?;
    let message = b
        .codec
        .decode(query.payload.as_ref())
        .map_err(|e| bridge_failure(e.into()))?;
    let timestamp = query.timestamp.to_string();
    let mut extra = vec![
        (metadata::MESSAGE_ID, query.message_identifier.as_str()),
        (metadata::QUERY, query.query.as_str()),
        (metadata::TIMESTAMP, timestamp.as_str()),
    ];
    if let Some(p) = &query.payload {
        extra.push((metadata::PAYLOAD_TYPE, p.r#type.as_str()));
        extra.push((metadata::PAYLOAD_REVISION, p.revision.as_str()));
    }
    let asked = b
        .ctx
        .request_with(
            topic.as_str(),
            message,
            RequestOptions::new()
                .timeout(b.settings.raw.handler_timeout)
                .headers(to_headers(&query.meta_data, &extra)),
        )
        .await;
    let reply = match asked {
        Ok(reply) => reply,
        Err(RequestError::Handler { error, .. }) => {
            let code = error.code().filter(|c| c.starts_with("AXONIQ-"));
            return Err((
                code.unwrap_or(EXECUTION_ERROR).to_owned(),
                error.message().to_owned(),
                error.code().map(str::to_owned).into_iter().collect(),
            ));
        }
        Err(other) => {
            let code = bus_failure_code(&other, error_code::NO_HANDLER_FOR_QUERY, EXECUTION_ERROR);
            return Err((code.to_owned(), other.to_string(), Vec::new()));
        }
    };
    let (variant, data) = b
        .codec
        .encode(&reply)
        .map_err(|e| bridge_failure(e.into()))?;
    let response = QueryResponse {
        message_identifier: crate::ids::uuid(),
        request_identifier: query.message_identifier.clone(),
        payload: Some(
            b.codec
                .serialized(variant, rule.response_type.clone(), data),
        ),
        ..QueryResponse::default()
    };
    b.check_size(&response).map_err(|e| {
        (
            EXECUTION_ERROR.to_owned(),
            format!("the handler's answer could not be sent: {e}"),
            vec![e.code().to_owned()],
        )
    })?;
    Ok(response)
}
