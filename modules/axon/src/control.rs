//! The control stream and the supervisor around it: `register`, acks of
//! every server instruction that carries an id, heartbeats with a deadline,
//! `RequestReconnect`, tracking-processor status reports and the pause /
//! start instructions for them.
//!
//! # Under stress
//!
//! - **Server silent**: a heartbeat goes out every `heartbeat-interval`;
//!   when nothing (an ack, a server heartbeat, any instruction) has come back
//!   for `heartbeat-interval + heartbeat-timeout`, the connection counts as
//!   lost and is replaced.
//! - **Control stream lost or completed by the server**: the link is
//!   retired, every stream on it ends, the supervisor reconnects with
//!   back-off (CONNECTOR §D.1: a completed stream is a lost one).
//! - **Instructions for unknown processors** are answered `success: false`
//!   (AXONIQ-1004 "Unknown processor"), unsupported ones (split, merge,
//!   release) with AXONIQ-1002; nothing is left unanswered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::control::platform_inbound_instruction::Request as In;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Out;
use telamon_axon_proto::pb::control::{
    Heartbeat, PlatformInboundInstruction, PlatformOutboundInstruction,
};
use tokio::sync::mpsc;

use crate::connection::{ConnectError, Connection, Established};
use crate::instruction::{self, Acks};
use crate::tracking::ProcessorRegistry;

/// Why a control stream ended.
#[derive(Debug)]
enum Ended {
    Stopping,
    Lost(String),
    Reconnect,
}

/// Runs the connection until the bridge stops: the control stream of each
/// link, and a new link (with back-off) whenever one is lost.
pub(crate) async fn supervise(
    conn: Arc<Connection>,
    processors: Arc<ProcessorRegistry>,
    mut first: Option<Established>,
) {
    let mut attempt = 0u32;
    loop {
        let established = match first.take() {
            Some(e) => e,
            None => {
                if conn.stop.is_cancelled() {
                    return;
                }
                match conn.connect_any().await {
                    Ok(e) => e,
                    Err(e) => {
                        let delay = conn.backoff(attempt);
                        match &e {
                            ConnectError::Refused { .. } => {
                                tracing::error!(error = %e, retry_in = ?delay, "AxonServer refused the bridge; check `token` and `context`")
                            }
                            ConnectError::Unreachable { .. } => {
                                tracing::warn!(error = %e, retry_in = ?delay, "AxonServer not reachable")
                            }
                        }
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => continue,
                            () = conn.stop.cancelled() => return,
                        }
                    }
                }
            }
        };
        attempt = 0;
        let link = established.link.clone();
        conn.install(&link);
        let ended = run(&conn, &processors, established).await;
        conn.retire(&link);
        match ended {
            Ended::Stopping => return,
            Ended::Lost(why) => {
                conn.reconnects.inc();
                tracing::warn!(server = %link.server, reason = %why, "AxonServer connection lost; reconnecting");
                let delay = conn.backoff(0);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = conn.stop.cancelled() => return,
                }
            }
            Ended::Reconnect => {
                conn.reconnects.inc();
                tracing::info!(server = %link.server, "AxonServer asked the bridge to reconnect");
            }
        }
    }
}

fn send(tx: &mpsc::UnboundedSender<PlatformInboundInstruction>, id: &str, request: In) {
    let _ = tx.send(PlatformInboundInstruction {
        instruction_id: id.to_owned(),
        request: Some(request),
    });
}

/// Serves one link's control stream until it is lost or the bridge stops.
async fn run(
    conn: &Connection,
    processors: &Arc<ProcessorRegistry>,
    established: Established,
) -> Ended {
    let Established {
        link,
        mut inbound,
        outbound: tx,
    } = established;
    let c = &conn.settings().raw;
    let acks = Acks::default();
    let beats = !c.heartbeat_interval.is_zero();
    let silence = c.heartbeat_interval + c.heartbeat_timeout;
    let mut last_heard = Instant::now();
    let mut heartbeat = tokio::time::interval(if beats {
        c.heartbeat_interval
    } else {
        Duration::from_secs(3600)
    });
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    let mut info = tokio::time::interval(c.processor_info_interval);
    info.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = conn.stop.cancelled() => return Ended::Stopping,
            () = link.lost.cancelled() => return Ended::Lost("a stream gave the connection up".into()),
            message = inbound.message() => match message {
                Ok(Some(m)) => {
                    last_heard = Instant::now();
                    if let Some(ended) = handle(&tx, &acks, processors, m) {
                        return ended;
                    }
                }
                Ok(None) => return Ended::Lost("the server completed the control stream".into()),
                Err(status) => return Ended::Lost(format!("control stream failed: {status}")),
            },
            _ = heartbeat.tick(), if beats => {
                if last_heard.elapsed() > silence {
                    return Ended::Lost(format!("no answer to heartbeats for {:?}", last_heard.elapsed()));
                }
                let (id, answered) = acks.expect();
                // The ack (success, or AXONIQ-1002 from a server without
                // heartbeats) arrives on the stream and moves `last_heard`;
                // the receiver only keeps the id known.
                drop(answered);
                send(&tx, &id, In::Heartbeat(Heartbeat {}));
            }
            _ = info.tick(), if !processors.is_empty() => {
                for report in processors.infos() {
                    send(&tx, "", In::EventProcessorInfo(report));
                }
            }
        }
    }
}

/// Handles one server instruction; `Some` ends the stream.
fn handle(
    tx: &mpsc::UnboundedSender<PlatformInboundInstruction>,
    acks: &Acks,
    processors: &Arc<ProcessorRegistry>,
    message: PlatformOutboundInstruction,
) -> Option<Ended> {
    let id = message.instruction_id;
    let ack_now = |error| {
        if !id.is_empty() {
            send(tx, "", In::Ack(instruction::ack(&id, error)));
        }
    };
    match message.request {
        Some(Out::Ack(ack)) => {
            if !ack.success
                && ack
                    .error
                    .as_ref()
                    .is_some_and(|e| e.error_code != error_code::UNSUPPORTED_INSTRUCTION)
            {
                tracing::warn!(error = %instruction::ack_error(&ack), "AxonServer refused an instruction on the control stream");
            }
            acks.resolve(ack);
        }
        Some(Out::Heartbeat(_)) => {
            send(tx, "", In::Heartbeat(Heartbeat {}));
            ack_now(None);
        }
        Some(Out::RequestReconnect(_)) => {
            ack_now(None);
            return Some(Ended::Reconnect);
        }
        Some(Out::PauseEventProcessor(p)) => {
            processor_instruction(tx, processors, &id, &p.processor_name, Some(false))
        }
        Some(Out::StartEventProcessor(p)) => {
            processor_instruction(tx, processors, &id, &p.processor_name, Some(true))
        }
        Some(Out::RequestEventProcessorInfo(p)) => match processors.info(&p.processor_name) {
            Some(report) => {
                ack_now(None);
                send(tx, &id, In::EventProcessorInfo(report));
            }
            None => ack_now(Some(unknown_processor(&p.processor_name))),
        },
        Some(
            Out::SplitEventProcessorSegment(s)
            | Out::MergeEventProcessorSegment(s)
            | Out::ReleaseSegment(s),
        ) => {
            let error = if processors.contains(&s.processor_name) {
                instruction::client_error(
                    error_code::UNSUPPORTED_INSTRUCTION,
                    format!(
                        "processor {} runs one segment; splitting, merging and releasing segments is not supported by the Telamon bridge",
                        s.processor_name
                    ),
                )
            } else {
                unknown_processor(&s.processor_name)
            };
            ack_now(Some(error));
        }
        Some(Out::NodeNotification(_) | Out::TopologyChange(_)) => ack_now(None),
        None => ack_now(Some(instruction::client_error(
            error_code::UNSUPPORTED_INSTRUCTION,
            "No handler for instruction",
        ))),
    }
    None
}

/// The code the Java connector and Axon Framework give a processor
/// instruction that failed on the client (unknown processor included); the
/// server's table names the same number "result timeout" (SEMANTICS §12:
/// codes are opaque strings).
const CLIENT_INSTRUCTION_FAILED: &str = "AXONIQ-1004";

fn unknown_processor(name: &str) -> telamon_axon_proto::pb::ErrorMessage {
    instruction::client_error(
        CLIENT_INSTRUCTION_FAILED,
        format!("Unknown processor: {name}"),
    )
}

/// Pause (`run = Some(false)`) or start a processor: ack at once, then the
/// result once the processor has done it (or failed to within 10 s, the
/// time AxonServer waits).
fn processor_instruction(
    tx: &mpsc::UnboundedSender<PlatformInboundInstruction>,
    processors: &Arc<ProcessorRegistry>,
    id: &str,
    name: &str,
    run: Option<bool>,
) {
    if !processors.contains(name) {
        if !id.is_empty() {
            send(tx, "", In::Ack(instruction::ack(id, None)));
            send(
                tx,
                "",
                In::Result(instruction::result(id, Some(unknown_processor(name)))),
            );
        }
        return;
    }
    if !id.is_empty() {
        send(tx, "", In::Ack(instruction::ack(id, None)));
    }
    let (tx, processors, id, name) = (
        tx.clone(),
        processors.clone(),
        id.to_owned(),
        name.to_owned(),
    );
    tokio::spawn(async move {
        let done = processors
            .set_running(&name, run.unwrap_or(true), Duration::from_secs(10))
            .await;
        if id.is_empty() {
            return;
        }
        let error = (!done).then(|| {
            instruction::client_error(
                CLIENT_INSTRUCTION_FAILED,
                format!("processor {name} did not change state within 10 s"),
            )
        });
        send(&tx, "", In::Result(instruction::result(&id, error)));
    });
}
