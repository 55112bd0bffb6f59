//! The operations endpoint: `GET /metrics` (OpenMetrics text), `GET /health`
//! (the process is up) and `GET /ready` (every module initialised and every
//! bus connected; a 503 names what is not), on axum/hyper.
//!
//! # Under stress
//!
//! - **Idle or slow clients**: every connection is served on its own task by
//!   hyper, so connections that send nothing hold no one else up (a test keeps
//!   100 open and still scrapes).
//! - **Unknown path or method**: 404 / 405 at once.
//! - **Stop**: the listener closes with the process; open connections finish
//!   the response they are writing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Metrics};

/// What is not ready yet, one line each (empty: ready).
pub(crate) type ReadinessCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Binds `address` and serves until `stop` fires. Returns the bound address.
pub(crate) async fn serve(
    address: &str,
    metrics: Arc<Metrics>,
    ready: ReadinessCheck,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    metrics.render(),
                )
            }),
        )
        .route("/health", get(|| async { json(StatusCode::OK, true, &[]) }))
        .route(
            "/ready",
            get(move || async move {
                let missing = ready();
                if missing.is_empty() {
                    json(StatusCode::OK, true, &missing)
                } else {
                    json(StatusCode::SERVICE_UNAVAILABLE, false, &missing)
                }
            }),
        );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the operations endpoint stopped");
        }
    });
    Ok(local)
}

/// `{"ok": true}` or `{"ok": false, "not_ready": [...]}`.
fn json(status: StatusCode, ok: bool, missing: &[String]) -> axum::response::Response {
    let body = if missing.is_empty() {
        serde_json::json!({ "ok": ok })
    } else {
        serde_json::json!({ "ok": ok, "not_ready": missing })
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
