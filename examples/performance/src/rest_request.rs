//! `rest-request`: HTTP GETs from 64 keep-alive clients, answered with the
//! same JSON by `telamon` (the `rest-server` module → in-memory bus →
//! a handler and back) and by `baseline` (a bare axum handler), in the same
//! run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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

/// What both systems answer.
fn document() -> Value {
    json!({"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"], "active": true})
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn telamon(n: u64, clients: u64) -> anyhow::Result<Measurement> {
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
    let m = drive(
        "telamon",
        SocketAddr::from(([127, 0, 0, 1], port)),
        n,
        clients,
    )
    .await;
    p.stop().await;
    m
}

pub(crate) async fn baseline(n: u64, clients: u64) -> anyhow::Result<Measurement> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let document = Arc::new(document());
    let app = axum::Router::new().route(
        "/perf",
        axum::routing::get(move || {
            let document = document.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::to_vec(&*document).unwrap_or_default(),
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
    let m = drive("baseline", addr, n, clients).await;
    let _ = stop.send(());
    server.await??;
    m
}

/// `n` GETs of `/perf` spread over `clients` connections, each waiting for
/// its answer before the next, after `n / 10` unmeasured ones to warm both
/// ends up; every answer is checked. The clients run on
/// a runtime of their own (as they would in another process), so the
/// server's scheduler serves only the server.
async fn drive(
    system: &'static str,
    addr: SocketAddr,
    n: u64,
    clients: u64,
) -> anyhow::Result<Measurement> {
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http-load")
        .enable_all()
        .build()?;
    let measured = tokio::task::spawn_blocking(move || {
        let m = load
            .block_on(load_run(system, addr, n / 10, clients))
            .and_then(|_| load.block_on(load_run(system, addr, n, clients)));
        load.shutdown_background();
        m
    });
    measured.await?
}

async fn load_run(
    system: &'static str,
    addr: SocketAddr,
    n: u64,
    clients: u64,
) -> anyhow::Result<Measurement> {
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
    let elapsed = start.elapsed();
    Ok(Measurement::throughput(
        SCENARIO,
        system,
        each * clients,
        elapsed,
        &mut latencies,
    ))
}
