//! A process with REST servers on free loopback ports, and an HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use telamon_module_rest_server::RestServer;
use telamon_process::{ConfigLoader, Process, ProcessError, RunningProcess};

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a process whose `[module.rest]` is `rest` (plus `address`, on a
/// free port); `extra` is more config.
pub async fn start(rest: &str, extra: &str) -> (RunningProcess<Value>, SocketAddr) {
    let port = free_port();
    let p = try_start(&format!(
        "[module.rest]\nclass = \"rest-server\"\naddress = \"127.0.0.1:{port}\"\n{rest}\n{extra}"
    ))
    .await
    .unwrap();
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

pub async fn try_start(config: &str) -> Result<RunningProcess<Value>, ProcessError> {
    let config = ConfigLoader::new()
        .embedded(config.to_owned())
        .env_prefix(None)
        .load()?;
    Process::<Value>::new(config)
        .module::<RestServer<Value>>()
        .start()
        .await
}

/// An HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request`; fails the test after 10 s.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let r = client.request(request).await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("no answer within 10 s")
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Waits (at most 10 s) until `check` holds.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within 10 s"));
}

/// The value of a metric line starting with `prefix` in the process's metrics.
pub fn metric(p: &RunningProcess<Value>, prefix: &str) -> Option<f64> {
    p.metrics()
        .render()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
