//! Commands both ways: bus requests → `Dispatch` (`[[send-command]]`), and
//! the command handler stream → bus requests (`[[handle-command]]`).
//!
//! # Under stress
//!
//! - **Sending**: a request waits for a connection, is retried on transient
//!   errors and fails through the circuit breaker, all within the mapping's
//!   `timeout`; the requester always gets the result payload or a
//!   `HandlerError` carrying the `AXONIQ-nnnn` code and the server's message.
//!   A command larger than `max-message-size` is refused before it is sent.
//! - **Handling**: at most `command-permits` commands are in work; each
//!   permit is given back when its bus request *finished* (in batches of
//!   `command-refill`). A module error, a bus timeout (`handler-timeout`) or
//!   an undecodable payload answer AXONIQ-4002 with the reason (a module's
//!   own `AXONIQ-` code is kept); no handler on the bus answers AXONIQ-4000,
//!   a handler that went away mid-command AXONIQ-4001. The stream never
//!   stalls on one command.
//! - **Stream lost**: it is reopened (on a new connection if the connection
//!   went) and every command name registered again; the bridge is ready
//!   again once every registration is acknowledged. Answers to commands
//!   received on the lost stream are dropped (AxonServer already answered
//!   them AXONIQ-4001).
//! - **Stop**: every name is unsubscribed first, commands in work finish,
//!   then the stream is closed.

use std::sync::Arc;
use std::time::Instant;

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as In;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as Out;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderInbound, CommandProviderOutbound, CommandResponse, CommandSubscription,
};
use telamon_axon_proto::pb::{FlowControl, ProcessingInstruction, ProcessingKey};
use telamon_sdk::{Message, Request, RequestError, RequestOptions};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::bridge::{Bridge, now_millis};
use crate::config::{HandleCommandRule, SendCommandRule};
use crate::connection::{Link, Slot, reopen_delay};
use crate::error::{BridgeError, bus_failure_code};
use crate::instruction::{Acks, ack_error};
use crate::metadata::{self, to_headers, to_metadata};
use crate::permits::Permits;
use crate::selector::Source;
use crate::template::Vars;

/// A processing instruction with a text value.
pub(crate) fn text_instruction(key: ProcessingKey, value: &str) -> ProcessingInstruction {
    ProcessingInstruction {
        key: key as i32,
        value: Some(metadata::text(value)),
    }
}

/// A processing instruction with a number value.
pub(crate) fn number_instruction(key: ProcessingKey, value: i64) -> ProcessingInstruction {
    ProcessingInstruction {
        key: key as i32,
        value: Some(telamon_axon_proto::pb::MetaDataValue {
            data: Some(telamon_axon_proto::pb::meta_data_value::Data::NumberValue(
                value,
            )),
        }),
    }
}

/// Sends one bus request as a command and returns the result as a message.
pub(crate) async fn dispatch<M: Message>(
    b: &Bridge<M>,
    rule: &SendCommandRule,
    request: Request<M>,
) -> Result<Arc<M>, BridgeError> {
    let (topic, message, headers) = request.into_parts();
    let needs_content = rule.routing_key.as_ref().is_some_and(|s| s.needs_content());
    let (payload, content) = b.payload(
        &topic,
        &message,
        &headers,
        rule.payload_type.as_ref(),
        needs_content,
    )?;
    let name = rule.command.render(Vars {
        topic: Some(&topic),
        named: &[("type", &payload.r#type)],
    })?;
    let id = crate::ids::uuid();
    let routing_key = match &rule.routing_key {
        Some(selector) => selector.text(Source {
            content: content.as_ref(),
            headers: &headers,
            topic: &topic,
        })?,
        None => id.clone(),
    };
    let mut instructions = vec![text_instruction(ProcessingKey::RoutingKey, &routing_key)];
    if let Some(p) = rule.priority {
        instructions.push(number_instruction(ProcessingKey::Priority, p));
    }
    let c = &b.settings.raw;
    let command = Command {
        message_identifier: id,
        name,
        timestamp: now_millis(),
        payload: Some(payload),
        meta_data: to_metadata(&headers),
        processing_instructions: instructions,
        client_id: b.settings.client_id.clone(),
        component_name: c.component.clone(),
    };
    b.check_size(&command)?;
    let response = b
        .call("dispatch", rule.timeout, |link| {
            let command = command.clone();
            async move {
                let r = link
                    .commands()
                    .dispatch(command)
                    .await
                    .map_err(BridgeError::from)?
                    .into_inner();
                if r.error_code.is_empty() {
                    Ok(r)
                } else {
                    Err(BridgeError::in_band(
                        &r.error_code,
                        r.error_message.as_ref(),
                    ))
                }
            }
        })
        .await?;
    Ok(Arc::new(b.codec.decode(response.payload.as_ref())?))
}

/// How a handler stream ended.
pub(crate) enum Ended {
    /// The bridge stops.
    Stopping,
    /// The link went; wait for the next one.
    LinkLost,
    /// The stream failed on a live link; reopen after a delay.
    Failed(Option<tonic::Code>, String),
}

/// Serves `[[handle-command]]` for as long as the bridge runs.
pub(crate) async fn serve<M: Message>(b: Arc<Bridge<M>>, slot: Slot) {
    let (window, refill) = b.settings.command_window();
    let permits = Arc::new(Permits::new(
        window,
        refill,
        b.ctx.gauge(
            "telamon_axon_permits_available",
            "Permits AxonServer may still use on a stream (messages it may send before the bridge grants more).",
            &[("stream", "commands")],
        ),
    ));
    while let Some(link) = b.conn.next_link_or(&b.drain).await {
        let ended = run(&b, &link, &permits, &slot).await;
        slot.set(false);
        permits.closed();
        match ended {
            Ended::Stopping => return,
            Ended::LinkLost => {}
            Ended::Failed(code, why) => {
                tracing::warn!(reason = %why, "command handler stream lost; reopening");
                tokio::select! {
                    () = tokio::time::sleep(reopen_delay(code)) => {}
                    () = b.drain.cancelled() => return,
                }
            }
        }
    }
}

fn outbound(request: Out, instruction_id: String) -> CommandProviderOutbound {
    CommandProviderOutbound {
        request: Some(request),
        instruction_id,
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
    let subscription = |rule: &HandleCommandRule, id: &str| CommandSubscription {
        message_id: id.to_owned(),
        command: rule.command.clone(),
        component_name: c.component.clone(),
        client_id: b.settings.client_id.clone(),
        load_factor: rule.load_factor,
    };
    for rule in &b.settings.handle_command {
        let (id, _) = acks.expect();
        let _ = tx.send(outbound(Out::Subscribe(subscription(rule, &id)), id));
    }
    let _ = tx.send(outbound(
        Out::FlowControl(FlowControl {
            client_id: b.settings.client_id.clone(),
            permits: permits.open(),
        }),
        String::new(),
    ));
    let mut client = link.commands();
    let opened = tokio::select! {
        r = tokio::time::timeout(c.connect_timeout, client.open_stream(UnboundedReceiverStream::new(rx))) => r,
        () = link.lost.cancelled() => return Ended::LinkLost,
        () = b.drain.cancelled() => return Ended::Stopping,
    };
    let mut inbound = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Ended::Failed(Some(s.code()), s.to_string()),
        Err(_) => return Ended::Failed(None, "command stream did not open in time".into()),
    };
    let registered_by = Instant::now() + c.connect_timeout;
    let mut work: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            () = b.drain.cancelled() => {
                for rule in &b.settings.handle_command {
                    let _ = tx.send(outbound(Out::Unsubscribe(subscription(rule, "")), String::new()));
                }
                let drain = b.settings.raw.handler_timeout;
                let _ = tokio::time::timeout(drain, async { while work.join_next().await.is_some() {} }).await;
                close(tx, &mut inbound, c.connect_timeout).await;
                return Ended::Stopping;
            }
            () = link.lost.cancelled() => return Ended::LinkLost,
            () = tokio::time::sleep_until(registered_by.into()), if acks.pending() > 0 => {
                return Ended::Failed(None, format!("command subscriptions not acknowledged within {:?}", c.connect_timeout));
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            message = inbound.message() => match message {
                Ok(Some(CommandProviderInbound { request: Some(In::Ack(ack)), .. })) => {
                    let refused = (!ack.success).then(|| ack_error(&ack));
                    if acks.resolve(ack) {
                        if let Some(e) = refused {
                            return Ended::Failed(None, format!("command subscription refused: {e}"));
                        }
                        if acks.pending() == 0 {
                            slot.set(true);
                        }
                    }
                }
                Ok(Some(CommandProviderInbound { request: Some(In::Command(command)), .. })) => {
                    permits.consumed();
                    let (b, tx, permits) = (b.clone(), tx.clone(), permits.clone());
                    work.spawn(async move {
                        let response = handle(&b, command).await;
                        let _ = tx.send(outbound(Out::CommandResponse(response), String::new()));
                        if let Some(n) = permits.finished() {
                            let _ = tx.send(outbound(
                                Out::FlowControl(FlowControl { client_id: b.settings.client_id.clone(), permits: n }),
                                String::new(),
                            ));
                        }
                    });
                }
                Ok(Some(CommandProviderInbound { request: None, instruction_id })) => {
                    tracing::debug!(%instruction_id, "empty message on the command stream ignored");
                }
                Ok(None) => return Ended::Failed(None, "the server completed the command stream".into()),
                Err(s) => return Ended::Failed(Some(s.code()), s.to_string()),
            },
        }
    }
}

/// Half-closes a handler stream and waits (up to `wait`) for the server to
/// end it, so the answers queued last reach the server before the call goes.
pub(crate) async fn close<T, U>(
    tx: mpsc::UnboundedSender<T>,
    inbound: &mut tonic::Streaming<U>,
    wait: std::time::Duration,
) {
    drop(tx);
    let _ = tokio::time::timeout(wait, async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
}

/// The code a failed command is answered with (as the Java connector does).
const EXECUTION_ERROR: &str = error_code::client::COMMAND_EXECUTION_ERROR;

/// Answers one incoming command through the bus.
async fn handle<M: Message>(b: &Bridge<M>, command: Command) -> CommandResponse {
    // A command that came while modules were still initialising waits for them.
    b.ctx.started().await;
    let request_id = command.message_identifier.clone();
    let failure = |code: &str, message: String, details: Vec<String>| CommandResponse {
        message_identifier: crate::ids::uuid(),
        request_identifier: request_id.clone(),
        error_code: code.to_owned(),
        error_message: Some(b.error_message(code, message, details)),
        ..CommandResponse::default()
    };
    let Some(rule) = b
        .settings
        .handle_command
        .iter()
        .find(|r| r.command == command.name)
    else {
        return failure(
            error_code::NO_HANDLER_FOR_COMMAND,
            format!("No Handler for command: {}", command.name),
            Vec::new(),
        );
    };
    match ask(b, rule, &command).await {
        Ok(response) => response,
        Err(Failure {
            code,
            message,
            details,
        }) => failure(&code, message, details),
    }
}

struct Failure {
    code: String,
    message: String,
    details: Vec<String>,
}

impl From<BridgeError> for Failure {
    fn from(e: BridgeError) -> Self {
        Failure {
            code: EXECUTION_ERROR.to_owned(),
            message: e.to_string(),
            details: vec![e.code().to_owned()],
        }
    }
}

async fn ask<M: Message>(
    b: &Bridge<M>,
    rule: &HandleCommandRule,
    command: &Command,
) -> Result<CommandResponse, Failure> {
    let type_name = command.payload.as_ref().map_or("", |p| p.r#type.as_str());
    let topic = rule
        .topic
        .render(Vars {
            topic: None,
            named: &[("command", &command.name), ("type", type_name)],
        })
        .map_err(BridgeError::from)?;
    let message = b
        .codec
        .decode(command.payload.as_ref())
        .map_err(BridgeError::from)?;
    let timestamp = command.timestamp.to_string();
    let mut extra = vec![
        (metadata::MESSAGE_ID, command.message_identifier.as_str()),
        (metadata::COMMAND, command.name.as_str()),
        (metadata::TIMESTAMP, timestamp.as_str()),
    ];
    if let Some(p) = &command.payload {
        extra.push((metadata::PAYLOAD_TYPE, p.r#type.as_str()));
        extra.push((metadata::PAYLOAD_REVISION, p.revision.as_str()));
    }
    let headers = to_headers(&command.meta_data, &extra);
    let asked = b
        .ctx
        .request_with(
            topic.as_str(),
            message,
            RequestOptions::new()
                .timeout(b.settings.raw.handler_timeout)
                .headers(headers),
        )
        .await;
    let reply = match asked {
        Ok(reply) => reply,
        Err(RequestError::Handler { error, .. }) => {
            let code = error.code().filter(|c| c.starts_with("AXONIQ-"));
            return Err(Failure {
                code: code.unwrap_or(EXECUTION_ERROR).to_owned(),
                message: error.message().to_owned(),
                details: error.code().map(str::to_owned).into_iter().collect(),
            });
        }
        Err(other) => {
            return Err(Failure {
                code: bus_failure_code(&other, error_code::NO_HANDLER_FOR_COMMAND, EXECUTION_ERROR)
                    .to_owned(),
                message: other.to_string(),
                details: Vec::new(),
            });
        }
    };
    let (variant, data) = b.codec.encode(&reply).map_err(BridgeError::from)?;
    let payload = b
        .codec
        .serialized(variant, rule.response_type.clone(), data);
    let response = CommandResponse {
        message_identifier: crate::ids::uuid(),
        request_identifier: command.message_identifier.clone(),
        payload: Some(payload),
        ..CommandResponse::default()
    };
    b.check_size(&response).map_err(|e| Failure {
        code: EXECUTION_ERROR.to_owned(),
        message: format!("the handler's answer could not be sent: {e}"),
        details: vec![e.code().to_owned()],
    })?;
    Ok(response)
}
