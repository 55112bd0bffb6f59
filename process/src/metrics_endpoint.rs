//! A tiny HTTP endpoint that serves `GET /metrics` as Prometheus text.
//!
//! Any other path gets 404. One connection at a time is enough for a scraper;
//! a client that sends or reads nothing for 5 s is dropped, so it cannot hold
//! the endpoint; accept errors back off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Binds `address` and serves until `stop` fires. Returns the bound address.
pub(crate) async fn serve(
    address: &str,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((mut stream, _)) = accepted else {
                // Out of file descriptors or similar: back off, do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => continue,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let response = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?")
            {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let write = async {
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            };
            // A scraper that does not read cannot hold the endpoint.
            let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        }
    });
    Ok(local)
}
