//! Standalone AxonServer-compatible test server (in-memory; state is lost on exit).
//!
//! Usage: `axon-test-server [--port N] [--token T]`; runs until Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use telamon_axon_proto::defaults;
use telamon_testkit::AxonTestServer;

/// Parsed command line.
#[derive(Debug)]
struct Args {
    port: u16,
    token: Option<String>,
}

const USAGE: &str = "usage: axon-test-server [--port N] [--token T]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        port: defaults::GRPC_PORT,
        token: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                parsed.port = value
                    .parse()
                    .map_err(|_| format!("invalid port: {value}"))?;
            }
            "--token" => {
                parsed.token = Some(args.next().ok_or("--token needs a value")?);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument: {other}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let server = AxonTestServer::builder()
        .bind_address(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .access_token(args.token.as_deref())
        .start()
        .await;
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            eprintln!("axon-test-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("axon-test-server listening on {}", server.url());
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("axon-test-server: cannot wait for Ctrl-C: {error}");
    }
    match server.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axon-test-server: {error}");
            ExitCode::FAILURE
        }
    }
}
