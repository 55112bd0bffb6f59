//! Raw lapin doing the same work as the RabbitMQ bus: a topic exchange, CBOR
//! bodies, publisher confirms with a window of 1024, persistent messages,
//! prefetch 256 and a manual ack per message; requests with `reply-to` and
//! `correlation-id` on a reply queue. No reconnection, no routing, no checks.

use std::collections::VecDeque;
use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ExchangeKind};

use crate::broker::{unique, url};
use crate::measurement::Measurement;
use crate::message::{BenchMsg, now_ns};
use crate::request_clock::RequestClock;

const SYSTEM: &str = "baseline";

pub(crate) async fn one_to_one(n: u64) -> anyhow::Result<Measurement> {
    let exchange = unique("raw");
    let publisher = Connection::connect(&url(), Default::default()).await?;
    let consumer_conn = Connection::connect(&url(), Default::default()).await?;
    let pch = publisher.create_channel().await?;
    pch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let cch = consumer_conn.create_channel().await?;
    cch.basic_qos(256, BasicQosOptions::default()).await?;
    let queue = cch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    cch.queue_bind(
        queue.name().clone(),
        exchange.as_str().into(),
        "perf.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = cch
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        while let Some(Ok(d)) = consumer.next().await {
            let m: BenchMsg = minicbor_serde::from_slice(&d.data)?;
            latencies.push(now_ns() - m.sent_ns);
            d.ack(BasicAckOptions::default()).await?;
            if latencies.len() as u64 == n {
                break;
            }
        }
        anyhow::Ok((latencies, Instant::now()))
    });
    let started = Instant::now();
    let mut window = VecDeque::new();
    for i in 0..n {
        let body = minicbor_serde::to_vec(BenchMsg::new(i))?;
        if window.len() == 1024 {
            let confirm: lapin::PublisherConfirm = window.pop_front().expect("window is full");
            confirm.await?;
        }
        let confirm = pch
            .basic_publish(
                exchange.as_str().into(),
                "perf.test".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        window.push_back(confirm);
    }
    for c in window {
        c.await?;
    }
    let (mut latencies, end) = receiver.await??;
    anyhow::ensure!(
        latencies.len() as u64 == n,
        "raw consumer got {} of {n}",
        latencies.len()
    );
    pch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    let _ = publisher.close(200, "done".into()).await;
    let _ = consumer_conn.close(200, "done".into()).await;
    Ok(Measurement::throughput(
        "rabbit-1to1",
        SYSTEM,
        n,
        end - started,
        &mut latencies,
    ))
}

pub(crate) async fn request(n: u64) -> anyhow::Result<Measurement> {
    let exchange = unique("rawreq");
    let server = Connection::connect(&url(), Default::default()).await?;
    let client = Connection::connect(&url(), Default::default()).await?;
    let sch = server.create_channel().await?;
    sch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let requests = sch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    sch.queue_bind(
        requests.name().clone(),
        exchange.as_str().into(),
        "perf.request".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut handler = sch
        .basic_consume(
            requests.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let reply_channel = sch.clone();
    let server_task = tokio::spawn(async move {
        while let Some(Ok(d)) = handler.next().await {
            let m: BenchMsg = minicbor_serde::from_slice(&d.data)?;
            let reply_to = d.properties.reply_to().clone().unwrap_or_default();
            let correlation = d.properties.correlation_id().clone().unwrap_or_default();
            d.ack(BasicAckOptions::default()).await?;
            reply_channel
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &minicbor_serde::to_vec(&m)?,
                    BasicProperties::default().with_correlation_id(correlation),
                )
                .await?;
        }
        anyhow::Ok(())
    });
    let cch = client.create_channel().await?;
    let replies = cch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut reply_consumer = cch
        .basic_consume(
            replies.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut clock = RequestClock::new(n);
    for i in 0..n {
        let t = now_ns();
        cch.basic_publish(
            exchange.as_str().into(),
            "perf.request".into(),
            BasicPublishOptions::default(),
            &minicbor_serde::to_vec(BenchMsg::new(i))?,
            BasicProperties::default()
                .with_reply_to(replies.name().clone())
                .with_correlation_id(i.to_string().into()),
        )
        .await?;
        let reply = reply_consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("reply consumer ended"))??;
        anyhow::ensure!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str())
                == Some(i.to_string().as_str())
        );
        let _: BenchMsg = minicbor_serde::from_slice(&reply.data)?;
        clock.record(now_ns() - t);
    }
    let m = clock.finish("rabbit-request", SYSTEM);
    sch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    let _ = client.close(200, "done".into()).await;
    let _ = server.close(200, "done".into()).await;
    server_task.abort();
    Ok(m)
}
