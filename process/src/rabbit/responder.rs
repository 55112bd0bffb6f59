//! Handlers for requests from any process: one shared queue per handler
//! pattern, answers to the requester's reply queue (the requesting side is
//! `requester.rs`).
//!
//! - Each handler pattern has one shared queue, `<exchange>.request.<pattern>`
//!   (auto-delete: gone when its last handler goes), so several instances of a
//!   handler share the requests.
//! - The answer is published to the request's `reply-to` with its
//!   `correlation-id`, as `{"Ok": message}` or `{"Err": HandlerError}` in CBOR.
//!
//! # Under stress
//!
//! - **Malformed request**: counted, and answered with a `malformed` handler
//!   error so the requester does not wait for its timeout.
//! - **Stale request**: requests carry `expiration` = the requester's timeout,
//!   so the broker drops one nobody waits for any more.
//! - **Handler gone**: a request already taken is answered `dropped`.
use std::sync::Arc;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use serde::Serialize;
use serde::de::DeserializeOwned;
use telamon_sdk::bus::RequestSender;
use telamon_sdk::{HandlerError, Incoming, Pattern, Request, Responder};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::rabbit::link::{CBOR_CONTENT_TYPE, Link, Live};
use crate::rabbit::subscription::{Attempts, bounded, close_queue};

/// What travels back: the response or the handler's error.
#[derive(Serialize)]
enum ReplyOut<'a, M> {
    Ok(&'a M),
    Err(&'a HandlerError),
}

/// Publishes `outcome` to the requester's reply queue, at most
/// `ACK_DEADLINE` long (a publish on a connection the network dropped never
/// finishes; a lost answer is the requester's timeout).
async fn reply<M: Serialize>(
    channel: &Channel,
    reply_to: &str,
    correlation_id: &str,
    outcome: &Result<Arc<M>, HandlerError>,
) {
    let body = encode_reply(outcome);
    let properties = BasicProperties::default()
        .with_content_type(CBOR_CONTENT_TYPE.into())
        .with_correlation_id(correlation_id.into());
    bounded(channel.basic_publish(
        "".into(),
        reply_to.into(),
        BasicPublishOptions::default(),
        &body,
        properties,
    ))
    .await;
}

fn encode_reply<M: Serialize>(outcome: &Result<Arc<M>, HandlerError>) -> Vec<u8> {
    let encoded = match outcome {
        Ok(m) => codec::encode_cbor(&ReplyOut::Ok(&**m)),
        Err(e) => codec::encode_cbor(&ReplyOut::<M>::Err(e)),
    };
    encoded.unwrap_or_else(|e| {
        let error =
            HandlerError::new(format!("response could not be encoded: {e}")).with_code("encode");
        codec::encode_cbor(&ReplyOut::<M>::Err(&error)).unwrap_or_default()
    })
}

/// Serves one handler pattern: its shared request queue into the handler's local queue.
pub(crate) async fn run_handler<M: Serialize + DeserializeOwned + Send + Sync + 'static>(
    link: Arc<Link>,
    pattern: Pattern,
    sender: RequestSender<M>,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<(), String>>,
    replies: TaskTracker,
) {
    let mut attempts = Attempts::new(&link, Some(ready));
    let queue_name = format!("{}.request.{}", link.config.exchange, pattern.as_str());
    let request_exchange = link.request_exchange();
    let what = format!("request handler `{pattern}`");
    while let Some(live) = attempts.next(&link, &stop).await {
        let opened = open_handler_queue(
            &link,
            &live,
            &queue_name,
            &request_exchange,
            pattern.as_str(),
        )
        .await;
        let (channel, mut consumer, queue) = match opened {
            Ok(o) => o,
            Err(e) => {
                attempts.failed(&link, &live, &what, &e);
                continue;
            }
        };
        attempts.bound(&link, &live);
        let gone = link.gone(live.generation);
        tokio::pin!(gone);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    close_queue(&channel, &consumer, &queue, false).await;
                    return;
                }
                next = consumer.next() => next,
                _ = &mut gone => None,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(_)) | None => {
                    attempts.lost(&link, &live);
                    break;
                }
            };
            bounded(delivery.ack(BasicAckOptions::default())).await;
            let reply_to = delivery
                .properties
                .reply_to()
                .as_ref()
                .map(|s| s.to_string());
            let correlation = delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.to_string());
            let (Some(reply_to), Some(correlation)) = (reply_to, correlation) else {
                link.rejected(
                    delivery.routing_key.as_str(),
                    "request without reply-to or correlation-id dropped",
                    &"no reply-to or correlation-id",
                );
                continue;
            };
            let (topic, message) = match link.decode::<M>(&delivery) {
                Ok(decoded) => decoded,
                Err(why) => {
                    link.rejected(
                        delivery.routing_key.as_str(),
                        "malformed request answered with an error",
                        &why,
                    );
                    let error = HandlerError::new(format!("malformed request: {why}"))
                        .with_code("malformed");
                    reply::<M>(&live.reply, &reply_to, &correlation, &Err(error)).await;
                    continue;
                }
            };
            let headers = super::headers::decode(delivery.properties.headers().as_ref());
            let (responder, answer) = Responder::channel();
            let queued = tokio::select! {
                biased;
                _ = stop.cancelled() => false,
                queued = sender.send(Incoming::new(Request::new(topic, Arc::new(message), headers), responder)) => queued.is_ok(),
            };
            if !queued {
                // The handler is gone: say so rather than leave the requester to time out.
                let error = HandlerError::new("handler went away").with_code("dropped");
                reply::<M>(&live.reply, &reply_to, &correlation, &Err(error)).await;
                close_queue(&channel, &consumer, &queue, false).await;
                return;
            }
            let live = live.clone();
            replies.spawn(async move {
                let outcome = answer.await.unwrap_or_else(|_| {
                    Err(HandlerError::new("handler went away without answering")
                        .with_code("dropped"))
                });
                reply(&live.reply, &reply_to, &correlation, &outcome).await;
            });
        }
    }
}

async fn open_handler_queue(
    link: &Link,
    live: &Live,
    name: &str,
    exchange: &str,
    pattern: &str,
) -> Result<(Channel, lapin::Consumer, String), lapin::Error> {
    // Shared handler queues are auto-delete and not durable: they vanish with
    // their last handler, so nothing is left on the broker.
    let channel = live.connection.create_channel().await?;
    channel
        .basic_qos(
            link.config.prefetch,
            lapin::options::BasicQosOptions::default(),
        )
        .await?;
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            pattern.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            name.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer, name.to_owned()))
}
