//! Raw tonic doing the same work as the bridge, against the same test
//! server: `Dispatch` calls answered by a handler on a plain command stream
//! (same payload, same in-flight count, the bridge's default permit window
//! of 5000 refilled by 1250), `AppendEvent` calls of 100 events, and a plain
//! `ListEvents` reader with the bridge's default event window (1024,
//! refilled by 256) that decodes each payload as the bridge does — alone,
//! or handing each message to a task over a tokio channel. No
//! reconnection, no routing, no checks.

use std::sync::Arc;
use std::time::Duration;

use telamon_axon_proto::headers;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as CmdIn;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as CmdOut;
use telamon_axon_proto::pb::command::command_service_client::CommandServiceClient;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderOutbound, CommandResponse, CommandSubscription,
};
use telamon_axon_proto::pb::event::event_store_client::EventStoreClient;
use telamon_axon_proto::pb::event::{Event, GetEventsRequest};
use telamon_axon_proto::pb::{FlowControl, SerializedObject};
use telamon_testkit::RunningAxonServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use crate::measurement::{Measurement, WarmClock};
use crate::message::BenchMsg;
use crate::request_clock::RequestClock;

const SYSTEM: &str = "baseline";

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        headers::CONTEXT,
        headers::DEFAULT_CONTEXT.parse().expect("ascii"),
    );
    r
}

async fn channel(server: &RunningAxonServer) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(server.url())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

fn payload(message: &BenchMsg) -> anyhow::Result<SerializedObject> {
    Ok(SerializedObject {
        r#type: "perf.BenchMsg".into(),
        revision: String::new(),
        data: serde_json::to_vec(message)?,
    })
}

/// A handler stream answering `Echo` with the command's payload.
async fn raw_handler(channel: Channel) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    const WINDOW: i64 = 5000;
    const REFILL: i64 = WINDOW / 4;
    let (tx, rx) = mpsc::unbounded_channel();
    let out = |request| CommandProviderOutbound {
        instruction_id: String::new(),
        request: Some(request),
    };
    tx.send(CommandProviderOutbound {
        instruction_id: "sub".into(),
        request: Some(CmdOut::Subscribe(CommandSubscription {
            message_id: "sub".into(),
            command: "Echo".into(),
            component_name: "baseline".into(),
            client_id: "baseline-handler".into(),
            load_factor: 100,
        })),
    })?;
    tx.send(out(CmdOut::FlowControl(FlowControl {
        client_id: "baseline-handler".into(),
        permits: WINDOW,
    })))?;
    let mut inbound = CommandServiceClient::new(channel)
        .open_stream(request(UnboundedReceiverStream::new(rx)))
        .await?
        .into_inner();
    // The subscription's ack.
    inbound.message().await?;
    Ok(tokio::spawn(async move {
        let mut done = 0;
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(CmdIn::Command(c)) = m.request {
                let _ = tx.send(out(CmdOut::CommandResponse(CommandResponse {
                    message_identifier: format!("r-{}", c.message_identifier),
                    request_identifier: c.message_identifier,
                    payload: c.payload,
                    ..CommandResponse::default()
                })));
                done += 1;
                if done % REFILL == 0 {
                    let _ = tx.send(out(CmdOut::FlowControl(FlowControl {
                        client_id: "baseline-handler".into(),
                        permits: REFILL,
                    })));
                }
            }
        }
    }))
}

pub(crate) async fn command(
    server: &RunningAxonServer,
    n: u64,
    in_flight: usize,
) -> anyhow::Result<Measurement> {
    let handler = raw_handler(channel(server).await?).await?;
    let client = CommandServiceClient::new(channel(server).await?);
    let clock = RequestClock::new(n)
        .drive(in_flight, |i| {
            let mut client = client.clone();
            async move {
                let command = Command {
                    message_identifier: format!("c-{i}"),
                    name: "Echo".into(),
                    payload: Some(payload(&BenchMsg::new(i))?),
                    ..Command::default()
                };
                let response = client.dispatch(request(command)).await?.into_inner();
                let echo: BenchMsg =
                    serde_json::from_slice(&response.payload.unwrap_or_default().data)?;
                anyhow::ensure!(echo.seq == i, "wrong echo");
                Ok::<_, anyhow::Error>(())
            }
        })
        .await?;
    handler.abort();
    Ok(clock.finish("axon-command", SYSTEM))
}

pub(crate) async fn append(
    server: &RunningAxonServer,
    batches: u64,
    in_flight: usize,
) -> anyhow::Result<Measurement> {
    let client = EventStoreClient::new(channel(server).await?);
    let clock = RequestClock::new(batches)
        .drive(in_flight, |b| {
            let mut client = client.clone();
            async move {
                let events = (0..crate::AXON_BATCH)
                    .map(|i| {
                        Ok(Event {
                            message_identifier: format!("e-{b}-{i}"),
                            timestamp: 1,
                            payload: Some(payload(&BenchMsg::new(b * crate::AXON_BATCH + i))?),
                            ..Event::default()
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                client
                    .append_event(request(tokio_stream::iter(events)))
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .await?;
    let mut m = clock.finish("axon-append", SYSTEM);
    m.msgs_per_s = m.msgs_per_s.map(|r| r * crate::AXON_BATCH as f64);
    m.count = Some(batches * crate::AXON_BATCH);
    Ok(m)
}

/// A raw `ListEvents` reader over the first `warm_up + n` events: the time
/// from event `warm_up` received to the last, and the CPU time the process
/// spent meanwhile.
pub(crate) async fn track(
    server: &RunningAxonServer,
    warm_up: u64,
    n: u64,
) -> anyhow::Result<(Duration, Duration)> {
    read_events(server, warm_up, n, None).await
}

/// The reader of [`track`] handing each decoded message, with its token,
/// to a consumer task over a bounded tokio channel (the capacity of the
/// bridge's subscriber queue in `axon-track`): the pipeline a team would
/// write by hand instead of a bus. The time runs from event `warm_up` the
/// consumer receives to the last.
pub(crate) async fn track_through_channel(
    server: &RunningAxonServer,
    warm_up: u64,
    n: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let (tx, mut rx) = mpsc::channel::<(i64, Arc<BenchMsg>)>(4096);
    let consumer = tokio::spawn(async move {
        let mut clock = WarmClock::new(warm_up);
        while clock.seen() < warm_up + n {
            let Some((token, message)) = rx.recv().await else {
                anyhow::bail!("the channel closed after {} events", clock.seen());
            };
            let seq = clock.saw();
            anyhow::ensure!(message.seq == seq && token == seq as i64, "out of order");
        }
        Ok(clock.elapsed())
    });
    read_events(server, warm_up, n, Some(tx)).await?;
    consumer.await?
}

/// Reads the first `warm_up + n` events, checking their order, or hands
/// them to `consumer` to check.
async fn read_events(
    server: &RunningAxonServer,
    warm_up: u64,
    n: u64,
    consumer: Option<mpsc::Sender<(i64, Arc<BenchMsg>)>>,
) -> anyhow::Result<(Duration, Duration)> {
    const WINDOW: i64 = 1024;
    const REFILL: i64 = WINDOW / 4;
    let (tx, rx) = mpsc::unbounded_channel();
    let permits = |token, permits| GetEventsRequest {
        tracking_token: token,
        number_of_permits: permits,
        client_id: "baseline-reader".into(),
        component_name: "baseline".into(),
        processor: "baseline".into(),
        ..GetEventsRequest::default()
    };
    tx.send(permits(0, WINDOW))?;
    let mut inbound = EventStoreClient::new(channel(server).await?)
        .list_events(request(UnboundedReceiverStream::new(rx)))
        .await?
        .into_inner();
    // The reader is a task on the runtime, as the bridge's is; the rate
    // runs from event `warm_up` to the last.
    let elapsed = tokio::spawn(async move {
        let mut clock = WarmClock::new(warm_up);
        while clock.seen() < warm_up + n {
            let Some(e) = inbound.message().await? else {
                anyhow::bail!("the stream ended after {} events", clock.seen());
            };
            let seq = clock.saw();
            let event = e.event.unwrap_or_default();
            let message: BenchMsg =
                serde_json::from_slice(&event.payload.unwrap_or_default().data)?;
            match &consumer {
                Some(c) => c
                    .send((e.token, Arc::new(message)))
                    .await
                    .map_err(|_| anyhow::anyhow!("the consumer stopped after {seq} events"))?,
                None => anyhow::ensure!(message.seq == seq, "out of order"),
            }
            if clock.seen() as i64 % REFILL == 0 {
                tx.send(permits(0, REFILL))?;
            }
        }
        Ok(clock.elapsed())
    })
    .await??;
    Ok(elapsed)
}

/// Fills the store with `n` `BenchMsg` events for the tracking scenario.
pub(crate) async fn fill(server: &RunningAxonServer, n: u64) -> anyhow::Result<()> {
    let mut client = EventStoreClient::new(channel(server).await?);
    let mut next = 0;
    while next < n {
        let end = (next + 1000).min(n);
        let events = (next..end)
            .map(|i| {
                Ok(Event {
                    message_identifier: format!("t-{i}"),
                    timestamp: 1,
                    payload: Some(payload(&BenchMsg::new(i))?),
                    ..Event::default()
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        client
            .append_event(request(tokio_stream::iter(events)))
            .await?;
        next = end;
    }
    Ok(())
}
