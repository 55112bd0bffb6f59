//! Waiting for Ctrl-C or SIGTERM.

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; stopping"),
        _ = term => tracing::info!("SIGTERM received; stopping"),
    }
}

/// Sets up `tracing` output on stderr with `RUST_LOG` filtering (default
/// `info`, with lapin's per-message notice about returned requests — which
/// Telamon already reports as `NoResponder` — kept at `error`).
/// Colours only when stderr is a terminal and `NO_COLOR` is unset, so a log
/// redirected to a file or a collector carries no escape codes.
/// Does nothing if a subscriber is already set.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,lapin::returned_messages=error")
    });
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}
