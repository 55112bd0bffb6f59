//! `rest-request`: HTTP GETs from 64 keep-alive clients, answered with the
//! same JSON by `telamon` (the `rest-server` module → in-memory bus →
//! a handler and back) and by `baseline` (a bare axum handler).
//!
//! Both servers run side by side for the whole scenario and are measured in
//! alternating rounds (telamon first in odd rounds, baseline first in even
//! ones); each system's figure is its median round. On a machine whose
//! speed drifts, a drift then lands on both, not on whichever ran second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use telamon_module_rest_server::{RestResponse, RestServer};
use telamon_process::{ConfigLoader, Process};

use crate::measurement::Measurement;

const SCENARIO: &str = "rest-request";
/// Measured rounds per system.
const ROUNDS: u64 = 5;

/// What both systems answer.
fn document() -> Value {
    json!({"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"], "active": true})
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `n` requests per system, from `clients` connections each.
pub(crate) async fn compare(n: u64, clients: u64) -> anyhow::Result<Vec<Measurement>> {
    // telamon: rest-server → in-memory bus → handler.
    let port = free_port()?;
    let config = ConfigLoader::new()
        .embedded(format!(
            "[module.rest]\nclass = \"rest-server\"\naddress = \"127.0.0.1:{port}\"\n\n[message-bus.internal]\nclass = \"in-memory\"\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"internal\"\n"
        ))
        .env_prefix(None)
        .load()?;
    let p = Process::<Value>::new(config)
        .module::<RestServer<Value>>()
        .start()
        .await?;
    let answer = Arc::new(Value::from(RestResponse::json(200, document())));
    let _h = p
        .context("bench")
        .handle("rest.get.perf", move |_| {
            let answer = answer.clone();
            async move { Ok::<_, telamon_sdk::HandlerError>(answer) }
        })
        .await?;
    let telamon = SocketAddr::from(([127, 0, 0, 1], port));

    // baseline: a bare axum handler.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let baseline = listener.local_addr()?;
    let doc = Arc::new(document());
    let app = axum::Router::new().route(
        "/perf",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::to_vec(&*doc).unwrap_or_default(),
                )
            }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let measured = drive([("telamon", telamon), ("baseline", baseline)], n, clients).await;
    let _ = stop.send(());
    server.await??;
    p.stop().await;
    measured
}

/// Runs the load on a runtime of its own (as clients in another process
/// would), so the servers' scheduler serves only the servers: `n / 10`
/// unmeasured requests to each system, then [`ROUNDS`] alternating rounds.
async fn drive(
    systems: [(&'static str, SocketAddr); 2],
    n: u64,
    clients: u64,
) -> anyhow::Result<Vec<Measurement>> {
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http-load")
        .enable_all()
        .build()?;
    let measured = tokio::task::spawn_blocking(move || {
        let m = load.block_on(async {
            for (system, addr) in systems {
                round(system, addr, n / 10, clients).await?;
            }
            let mut rates = [Vec::new(), Vec::new()];
            let mut latencies = [Vec::new(), Vec::new()];
            for r in 0..ROUNDS {
                for i in 0..2 {
                    let which = if r % 2 == 0 { i } else { 1 - i };
                    let (system, addr) = systems[which];
                    let (elapsed, mut l) = round(system, addr, n / ROUNDS, clients).await?;
                    rates[which].push(l.len() as f64 / elapsed.as_secs_f64());
                    latencies[which].append(&mut l);
                }
            }
            let mut out = Vec::new();
            for (i, (system, _)) in systems.into_iter().enumerate() {
                rates[i].sort_by(f64::total_cmp);
                let median = rates[i][rates[i].len() / 2];
                let count = latencies[i].len() as u64;
                out.push(Measurement::throughput(
                    SCENARIO,
                    system,
                    count,
                    Duration::from_secs_f64(count as f64 / median),
                    &mut latencies[i],
                ));
            }
            anyhow::Ok(out)
        });
        load.shutdown_background();
        m
    });
    measured.await?
}

/// `n` GETs of `/perf` spread over `clients` connections, each waiting for
/// its answer before the next; every answer is checked. The time taken and
/// each request's latency in nanoseconds.
async fn round(
    system: &'static str,
    addr: SocketAddr,
    n: u64,
    clients: u64,
) -> anyhow::Result<(Duration, Vec<u64>)> {
    let expected = Bytes::from(serde_json::to_vec(&document())?);
    let each = n / clients;
    let mut connections = Vec::new();
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        connections.push(sender);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut sender in connections {
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(each as usize);
            for _ in 0..each {
                let t = Instant::now();
                sender.ready().await?;
                let r = sender
                    .send_request(
                        Request::get("/perf")
                            .header(header::HOST, "bench")
                            .body(Empty::<Bytes>::new())?,
                    )
                    .await?;
                anyhow::ensure!(r.status() == 200, "{system}: status {}", r.status());
                let body = r.into_body().collect().await?.to_bytes();
                anyhow::ensure!(body == expected, "{system}: unexpected body {body:?}");
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(n as usize);
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok((start.elapsed(), latencies))
}
