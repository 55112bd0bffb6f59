//! Faults under load: every stream dropped in the middle of 10 000 commands
//! and 10 000 appended events; the handling process stopped and started in
//! the middle of them; a tracking processor killed with `kill -9`.
//!
//! Each load stops by itself (bounded counts, every wait bounded).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command as OsCommand, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::raw;
use serde_json::{Value, json};
use telamon_axon_proto::pb::command::Command;
use telamon_sdk::HandlerError;
use tokio::sync::Semaphore;

const COMMANDS: usize = 10_000;
const EVENTS: usize = 10_000;
const IN_FLIGHT: usize = 64;

fn mappings(dir: &std::path::Path) -> String {
    format!(
        r#"
token-dir = "{}"

[[module.axon.send-command]]
pattern = "cmd.*"
command = "{{1}}"
timeout = "10s"

[[module.axon.handle-command]]
command = "Echo"
topic = "echo"

[[module.axon.append-events]]
pattern = "ev.*"
payload-type = "org.load.Event"

[[module.axon.tracking]]
processor = "load"
topic = "tracked"
checkpoint-every = 50
"#,
        dir.display()
    )
}

/// Outcome counts by code ("" = success).
type Outcomes = BTreeMap<String, usize>;

fn outcome<T>(r: &Result<T, telamon_sdk::RequestError>) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => e
            .handler_error()
            .and_then(HandlerError::code)
            .map_or_else(|| e.to_string(), str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_dropped_in_the_middle_of_10000_commands_and_10000_events() {
    let server = common::server().await;
    let dir = common::temp_dir("drop");
    let toml = common::bridge("axon", &server.address().to_string(), &mappings(&dir))
        + &common::collect::table("t", "drop-tracked", "tracked", 1_000_000);
    let process = common::start::<Value>(&toml).await;
    let mut tracked = common::collect::take::<Value>("drop-tracked");
    let ctx = process.context("test");
    let _echo = ctx
        .handle("echo", |r| {
            let m = r.message().clone();
            std::future::ready(Ok::<_, HandlerError>(m))
        })
        .await
        .unwrap();
    common::ready(&process, "axon").await;
    let answered = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..COMMANDS + EVENTS {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (ctx, answered) = (ctx.clone(), answered.clone());
        calls.spawn(async move {
            let r = if i % 2 == 0 {
                ctx.request("cmd.Echo", json!(i))
                    .await
                    .map(|v| assert_eq!(*v, json!(i)))
            } else {
                ctx.request("ev.load", json!({ "n": i })).await.map(|_| ())
            };
            answered.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            (i % 2 == 0, outcome(&r))
        });
        if i == (COMMANDS + EVENTS) / 3 {
            let dropped = server.faults().close_all_streams();
            assert!(
                dropped >= 3,
                "control, command and event streams were open: {dropped}"
            );
        }
    }
    let mut commands = Outcomes::new();
    let mut appends = Outcomes::new();
    common::within(120, async {
        while let Some(done) = calls.join_next().await {
            let (is_command, code) = done.unwrap();
            *if is_command {
                &mut commands
            } else {
                &mut appends
            }
            .entry(code)
            .or_default() += 1;
        }
    })
    .await;
    assert_eq!(
        commands.values().sum::<usize>(),
        COMMANDS,
        "every command answered: {commands:?}"
    );
    assert_eq!(
        appends.values().sum::<usize>(),
        EVENTS,
        "every append answered: {appends:?}"
    );
    for code in commands
        .keys()
        .chain(appends.keys())
        .filter(|c| !c.is_empty())
    {
        assert!(
            [
                "AXONIQ-4001",
                "AXONIQ-4002",
                "unavailable",
                "not-connected",
                "timeout",
                "circuit-open"
            ]
            .contains(&code.as_str()),
            "a clear error, not `{code}`"
        );
    }
    assert!(
        commands.get("").copied().unwrap_or(0) >= COMMANDS * 9 / 10,
        "{commands:?}"
    );
    assert_eq!(
        common::metric(
            &process,
            "telamon_axon_reconnects_total",
            &[("module", "axon")]
        ),
        Some(1.0)
    );
    // Every stored event reaches the bus once, in order, across the drop.
    let stored = server.events();
    assert_eq!(stored.len(), appends.get("").copied().unwrap_or(0));
    let mut tokens = Vec::with_capacity(stored.len());
    common::within(60, async {
        while tokens.len() < stored.len() {
            let d = tracked.recv().await.unwrap();
            tokens.push((
                d.headers()
                    .get("axon-token")
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
                d.headers().get("axon-message-id").unwrap().to_owned(),
            ));
        }
    })
    .await;
    let expected: Vec<(i64, String)> = stored
        .iter()
        .map(|(t, e)| (*t, e.message_identifier.clone()))
        .collect();
    assert_eq!(tokens, expected);
    process.stop().await;
    assert!(tracked.try_recv().is_none(), "no event twice");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handling_process_restarts_in_the_middle_of_10000_java_commands() {
    let server = common::server().await;
    let dir = common::temp_dir("restart-load");
    let toml = common::bridge("axon", &server.address().to_string(), &mappings(&dir));
    let start = || async {
        let process = common::start::<Value>(&toml).await;
        let h = process
            .context("test")
            .handle("echo", |r| {
                let m = r.message().clone();
                std::future::ready(Ok::<_, HandlerError>(m))
            })
            .await
            .unwrap();
        common::ready(&process, "axon").await;
        (process, h)
    };
    let (process, handler) = start().await;
    let url = server.url();
    let answered = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let sender = {
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut client = telamon_axon_proto::pb::command::command_service_client::CommandServiceClient::connect(url)
                .await
                .unwrap();
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..COMMANDS {
                let permit = limit.clone().acquire_owned().await.unwrap();
                let (mut client, answered) = (client.clone(), answered.clone());
                calls.spawn(async move {
                    let r = client
                        .dispatch(raw::request(Command {
                            message_identifier: format!("java-{i}"),
                            name: "Echo".into(),
                            payload: Some(raw::json_payload(
                                "java.lang.Integer",
                                i.to_string().as_bytes(),
                            )),
                            ..Command::default()
                        }))
                        .await
                        .unwrap()
                        .into_inner();
                    answered.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                    if r.error_code.is_empty() {
                        assert_eq!(r.payload.unwrap().data, i.to_string().as_bytes());
                    }
                    r.error_code
                });
            }
            let _ = &mut client;
            let mut outcomes = Outcomes::new();
            while let Some(code) = calls.join_next().await {
                *outcomes.entry(code.unwrap()).or_default() += 1;
            }
            outcomes
        })
    };
    common::until(60, "a third of the commands answered", || {
        answered.load(Ordering::Relaxed) >= COMMANDS / 3
    })
    .await;
    drop(handler);
    let report = process.stop().await;
    assert!(report.drained, "{report:?}");
    let (process, _handler) = start().await;
    let outcomes = common::within(120, sender).await.unwrap();
    assert_eq!(
        outcomes.values().sum::<usize>(),
        COMMANDS,
        "every command answered: {outcomes:?}"
    );
    for code in outcomes.keys().filter(|c| !c.is_empty()) {
        assert!(
            ["AXONIQ-4000", "AXONIQ-4001"].contains(&code.as_str()),
            "a clear error, not `{code}`: {outcomes:?}"
        );
    }
    assert!(
        outcomes.get("").copied().unwrap_or(0) >= COMMANDS / 2,
        "{outcomes:?}"
    );
    process.stop().await;
    server.stop().await.unwrap();
}

/// Events in the store for the `kill -9` test.
const KILL_EVENTS: i64 = 6_000;
/// `checkpoint-every` of the child: at most twice this many repeats.
const KILL_CHECKPOINT: i64 = 50;

/// The child side of the `kill -9` test: a tracking processor that prints
/// every event it publishes, until it is killed. Does nothing unless the
/// parent test started this binary for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child() {
    let (Ok(server), Ok(dir)) = (
        std::env::var("AXON_KILL_SERVER"),
        std::env::var("AXON_KILL_DIR"),
    ) else {
        return;
    };
    let toml = common::bridge(
        "axon",
        &server,
        &format!(
            "token-dir = \"{dir}\"\n[[module.axon.tracking]]\nprocessor = \"killed\"\ntopic = \"tracked\"\ncheckpoint-every = {KILL_CHECKPOINT}\n"
        ),
    ) + &common::collect::table("t", "kill-tracked", "tracked", 16);
    let process = common::start::<Value>(&toml).await;
    let mut tracked = common::collect::take::<Value>("kill-tracked");
    // Bounded: the parent kills it long before this.
    let _ = tokio::time::timeout(Duration::from_secs(120), async {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some(d) = tracked.recv().await {
            let _ = writeln!(out, "token {}", d.headers().get("axon-token").unwrap());
            let _ = out.flush();
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .await;
    process.stop().await;
}

/// Starts the child and reads its tokens until `stop` says enough.
fn run_child(
    server: &str,
    dir: &std::path::Path,
    seen: &mut Vec<i64>,
    stop: impl Fn(&[i64]) -> bool,
) {
    let mut child = OsCommand::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env("AXON_KILL_SERVER", server)
        .env("AXON_KILL_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = seen.len();
    for line in lines {
        let line = line.unwrap();
        // With --nocapture, the harness's "test kill_child ... " may start the line.
        if let Some((_, t)) = line.split_once("token ") {
            seen.push(t.parse().unwrap());
            if stop(&seen[start..]) {
                break;
            }
        }
    }
    // SIGKILL: no stop, no final checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_nothing_and_repeats_at_most_two_checkpoints() {
    let server = common::server().await;
    for first in (0..KILL_EVENTS).step_by(1000) {
        raw::append(&server.url(), raw::deposits("k", first, 1000)).await;
    }
    let dir = common::temp_dir("kill");
    let address = server.address().to_string();
    let (first_run, second_run) = tokio::task::spawn_blocking(move || {
        let mut first = Vec::new();
        run_child(&address, &dir, &mut first, |s| s.len() >= 2_000);
        let mut second = Vec::new();
        run_child(&address, &dir, &mut second, |s| {
            s.last() == Some(&(KILL_EVENTS - 1))
        });
        (first, second)
    })
    .await
    .unwrap();
    let killed_at = *first_run.last().unwrap();
    let resumed_at = second_run[0];
    assert_eq!(
        first_run,
        (0..first_run.len() as i64).collect::<Vec<_>>(),
        "in order, once, before the kill"
    );
    assert_eq!(
        second_run,
        (resumed_at..KILL_EVENTS).collect::<Vec<_>>(),
        "in order, once, after the restart"
    );
    assert!(
        resumed_at <= killed_at + 1,
        "no gap: resumed at {resumed_at}, killed after {killed_at}"
    );
    let repeats = killed_at + 1 - resumed_at;
    assert!(
        repeats < 2 * KILL_CHECKPOINT,
        "{repeats} events published again, more than 2 × checkpoint-every"
    );
    server.stop().await.unwrap();
}
