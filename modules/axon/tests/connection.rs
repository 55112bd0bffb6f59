//! The connection: headers on every call, refused credentials at start-up,
//! the `GetPlatformServer` redirect, heartbeats noticing a silent server,
//! `RequestReconnect`, a restarted server, withheld permits, the circuit
//! breaker, and two bridges to two servers in one process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::bank::{self, Bank};
use common::raw;
use serde_json::{Value, json};
use telamon_module_axon::Axon;
use telamon_process::Process;
use telamon_sdk::HandlerError;
use telamon_testkit::{AxonTestServer, TcpProxy};

const ECHO: &str = r#"
[[module.axon.send-command]]
pattern = "cmd.*"
command = "{1}"
timeout = "2s"

[[module.axon.handle-command]]
command = "Echo"
topic = "echo"
"#;

async fn echo_handler<M: telamon_sdk::Message>(
    ctx: &telamon_sdk::Context<M>,
) -> telamon_sdk::HandlerHandle {
    ctx.handle("echo", |r| {
        let m = r.message().clone();
        std::future::ready(Ok::<_, HandlerError>(m))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_token_and_client_id_go_with_every_call() {
    let server = AxonTestServer::builder()
        .access_token(Some("s3cret"))
        .contexts(&["bank"])
        .require_client_id(true)
        .start()
        .await
        .unwrap();
    let dir = common::temp_dir("headers");
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        &format!(
            r#"
context = "bank"
token = "s3cret"
token-dir = "{}"
{ECHO}
[[module.axon.append-events]]
pattern = "ev.*"
payload-type = "Ev"

[[module.axon.read-aggregate]]
pattern = "load.*"
aggregate-id = "topic:1"

[[module.axon.send-query]]
pattern = "ask.*"
query = "Q"

[[module.axon.handle-query]]
query = "Q"
topic = "answer"

[[module.axon.tracking]]
processor = "p"
topic = "tracked"
"#,
            dir.display()
        ),
    ) + &common::collect::table("t", "headers-tracked", "tracked", 64);
    let process = common::start::<Value>(&toml).await;
    let mut tracked = common::collect::take::<Value>("headers-tracked");
    let ctx = process.context("test");
    let _e = echo_handler(&ctx).await;
    let _q = ctx
        .handle("answer", |_| {
            std::future::ready(Ok::<_, HandlerError>(json!(1)))
        })
        .await
        .unwrap();
    assert_eq!(
        *ctx.request("cmd.Echo", json!("hi")).await.unwrap(),
        json!("hi")
    );
    ctx.request("ev.x", json!({"n": 1})).await.unwrap();
    ctx.request("load.none", json!(null)).await.unwrap();
    assert_eq!(*ctx.request("ask.x", json!(0)).await.unwrap(), json!(1));
    common::within(10, tracked.recv()).await.unwrap();
    let client = common::client_of(&server, "test");
    let calls = server.calls();
    assert!(calls.len() >= 8, "{calls:?}");
    for call in &calls {
        assert!(call.accepted, "{call:?}");
        assert_eq!(call.context.as_deref(), Some("bank"));
        assert_eq!(call.client_id.as_deref(), Some(client.as_str()));
        assert!(call.token_present);
    }
    assert!(format!("{process:?}").find("s3cret").is_none());
    process.stop().await;
    server.stop().await.unwrap();
}

async fn start_error(toml: &str) -> String {
    Process::<Value>::new(common::config(toml))
        .module::<Axon<Value>>()
        .start()
        .await
        .expect_err("start-up must fail")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_start_up_naming_the_setting() {
    let server = AxonTestServer::builder()
        .access_token(Some("s3cret"))
        .contexts(&["default"])
        .start()
        .await
        .unwrap();
    let address = server.address().to_string();
    let wrong = start_error(&common::bridge("axon", &address, "token = \"guess\"")).await;
    assert!(
        wrong.contains("AXONIQ-1001") && wrong.contains("module.axon.token"),
        "{wrong}"
    );
    assert!(wrong.contains("TELAMON_MODULE__AXON__TOKEN"), "{wrong}");
    assert!(
        !wrong.contains("guess"),
        "the token is never shown: {wrong}"
    );
    let missing = start_error(&common::bridge("axon", &address, "")).await;
    assert!(
        missing.contains("AXONIQ-1000") && missing.contains("module.axon.token"),
        "{missing}"
    );
    let context = start_error(&common::bridge(
        "axon",
        &address,
        "token = \"s3cret\"\ncontext = \"other\"",
    ))
    .await;
    assert!(
        context.contains("AXONIQ-1302") && context.contains("module.axon.context"),
        "{context}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_names_the_key() {
    for (mapping, key) in [
        (
            "[[module.axon.send-command]]\npattern = \"a..b\"",
            "send-command[0].pattern",
        ),
        (
            "[[module.axon.send-command]]\npattern = \"a.*\"\nrouting-key = \"accountId\"",
            "send-command[0].routing-key",
        ),
        (
            "[[module.axon.handle-command]]\ncommand = \"X\"\ntopic = \"t.{0}\"",
            "handle-command[0].topic",
        ),
        (
            "[[module.axon.tracking]]\nprocessor = \"p\"\ntopic = \"t.{type|shout}\"",
            "tracking[0].topic",
        ),
        (
            "[[module.axon.tracking]]\nprocessor = \"p/..\"\ntopic = \"t\"",
            "tracking[0].processor",
        ),
        (
            "[[module.axon.tracking]]\nprocessor = \"p\"\ntopic = \"t\"\ntoken-store = \"redis\"",
            "tracking[0].token-store",
        ),
        (
            "[[module.axon.append-events]]\npattern = \"e\"\naggregate-id = \"/id\"",
            "append-events[0].aggregate-id",
        ),
        ("retry = { on = [\"unavailable\"] }", "retry.on[0]"),
        ("keep-alive-interval = \"200ms\"", "keep-alive-interval"),
        ("command-permits = 4", "command-permits"),
        ("servers = []", "servers"),
        ("servers = [\"host:port\"]", "servers[0]"),
    ] {
        let e = start_error(&common::bridge("axon", "127.0.0.1:1", mapping).replace(
            "servers = [\"127.0.0.1:1\"]\n",
            if mapping.starts_with("servers") {
                ""
            } else {
                "servers = [\"127.0.0.1:1\"]\n"
            },
        ))
        .await;
        assert!(e.contains(key), "`{key}` not named in: {e}");
    }
    let e = start_error(&common::bridge("axon", "127.0.0.1:1", "colour = \"blue\"")).await;
    assert!(e.contains("colour"), "{e}");
    // An enum without the variant a `[types]` entry names.
    let e = Process::<Bank>::new(common::config(&common::bridge(
        "axon",
        "127.0.0.1:1",
        "[module.axon.types]\nNope = \"x.Nope\"",
    )))
    .module::<Axon<Bank>>()
    .start()
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("types.Nope"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_platform_server_routes_the_bridge_to_another_node() {
    let primary = common::server().await;
    let router = AxonTestServer::builder()
        .redirect_to(Some(primary.address()))
        .start()
        .await
        .unwrap();
    let process =
        common::start::<Value>(&common::bridge("axon", &router.address().to_string(), ECHO)).await;
    let _e = echo_handler(&process.context("test")).await;
    common::ready(&process, "axon").await;
    assert!(
        router.clients().is_empty(),
        "nothing registered at the routing node"
    );
    assert_eq!(primary.clients().len(), 1);
    assert!(primary.command_handlers().contains_key("Echo"));
    assert_eq!(
        *process
            .context("test")
            .request("cmd.Echo", json!(5))
            .await
            .unwrap(),
        json!(5)
    );
    process.stop().await;
    router.stop().await.unwrap();
    primary.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_noticed_by_heartbeat_and_the_bridge_comes_back() {
    let server = common::server().await;
    let proxy = TcpProxy::start(server.address()).await.unwrap();
    let process =
        common::start::<Value>(&common::bridge("axon", &proxy.address().to_string(), ECHO)).await;
    let _e = echo_handler(&process.context("test")).await;
    common::ready(&process, "axon").await;
    proxy.freeze();
    common::until(10, "the silence is noticed", || {
        common::metric(&process, "telamon_axon_state", &[("module", "axon")]) == Some(0.0)
    })
    .await;
    assert_eq!(
        common::metric(
            &process,
            "telamon_axon_reconnects_total",
            &[("module", "axon")]
        ),
        Some(1.0)
    );
    proxy.thaw();
    common::ready(&process, "axon").await;
    let answer = common::within(
        10,
        process.context("test").request("cmd.Echo", json!("back")),
    )
    .await;
    assert_eq!(*answer.unwrap(), json!("back"));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reconnect_re_registers_handlers_and_reopens_event_streams() {
    let server = common::server().await;
    let dir = common::temp_dir("reconnect");
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        &format!(
            "token-dir = \"{}\"\n{ECHO}\n[[module.axon.tracking]]\nprocessor = \"p\"\ntopic = \"tracked\"\n",
            dir.display()
        ),
    ) + &common::collect::table("t", "reconnect-tracked", "tracked", 1024);
    let process = common::start::<Bank>(&toml).await;
    let mut tracked = common::collect::take::<Bank>("reconnect-tracked");
    let _e = echo_handler(&process.context("test")).await;
    common::ready(&process, "axon").await;
    raw::append(&server.url(), raw::deposits("x", 0, 3)).await;
    for _ in 0..3 {
        common::within(10, tracked.recv()).await.unwrap();
    }
    let client = common::client_of(&server, "test");
    assert!(server.faults().request_reconnect(&client));
    common::until(10, "reconnected", || {
        common::metric(
            &process,
            "telamon_axon_reconnects_total",
            &[("module", "axon")],
        ) == Some(1.0)
    })
    .await;
    common::ready(&process, "axon").await;
    assert!(
        server.command_handlers().contains_key("Echo"),
        "the handler is registered again"
    );
    raw::append(&server.url(), raw::deposits("x", 3, 2)).await;
    let after: Vec<String> = vec![
        common::within(10, tracked.recv())
            .await
            .unwrap()
            .headers()
            .get("axon-token")
            .unwrap()
            .to_owned(),
        common::within(10, tracked.recv())
            .await
            .unwrap()
            .headers()
            .get("axon-token")
            .unwrap()
            .to_owned(),
    ];
    assert_eq!(
        after,
        ["3", "4"],
        "the event stream resumed with no gap and no repeat"
    );
    assert_eq!(
        *process
            .context("test")
            .request("cmd.Echo", bank::open("e", 1))
            .await
            .unwrap(),
        bank::open("e", 1)
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_every_handler_again() {
    let server = common::server().await;
    let address: SocketAddr = server.address();
    let process = common::start::<Value>(&common::bridge("axon", &address.to_string(), ECHO)).await;
    let _e = echo_handler(&process.context("test")).await;
    common::ready(&process, "axon").await;
    server.stop().await.unwrap();
    common::until(10, "the loss is noticed", || {
        common::metric(&process, "telamon_axon_state", &[("module", "axon")]) == Some(0.0)
    })
    .await;
    let e = process
        .context("test")
        .request("cmd.Echo", json!(1))
        .await
        .unwrap_err();
    let code = e
        .handler_error()
        .and_then(HandlerError::code)
        .unwrap_or_default()
        .to_owned();
    assert!(
        ["not-connected", "unavailable", "circuit-open"].contains(&code.as_str()),
        "{e}"
    );
    let again = AxonTestServer::builder()
        .bind_address(address)
        .start()
        .await
        .unwrap();
    common::ready(&process, "axon").await;
    assert!(
        again.command_handlers().contains_key("Echo"),
        "registered on the new server"
    );
    assert_eq!(
        *process
            .context("test")
            .request("cmd.Echo", json!(2))
            .await
            .unwrap(),
        json!(2)
    );
    process.stop().await;
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_permits_never_stall_a_requester_forever() {
    let server = common::server().await;
    let process =
        common::start::<Value>(&common::bridge("axon", &server.address().to_string(), ECHO)).await;
    let ctx = process.context("test");
    let _e = echo_handler(&ctx).await;
    common::ready(&process, "axon").await;
    server.faults().withhold_permits();
    let e = common::within(10, ctx.request("cmd.Echo", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(
        e.handler_error().and_then(HandlerError::code),
        Some("timeout"),
        "{e}"
    );
    server.faults().release_permits();
    // The withheld command was answered by now; new ones flow.
    assert_eq!(*ctx.request("cmd.Echo", json!(2)).await.unwrap(), json!(2));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_when_axonserver_is_away() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = common::bridge(
        "axon",
        &port.to_string(),
        r#"
connect-timeout = "200ms"
circuit-breaker = { failures = 2, open-for = "30s" }
retry = { attempts = 1 }

[[module.axon.send-command]]
pattern = "cmd.*"
command = "{1}"
timeout = "300ms"
"#,
    )
    .replace("connect-timeout = \"3s\"\n", "");
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    let code = |e: telamon_sdk::RequestError| {
        e.handler_error()
            .and_then(HandlerError::code)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        code(ctx.request("cmd.X", json!(1)).await.unwrap_err()),
        "not-connected"
    );
    assert_eq!(
        code(ctx.request("cmd.X", json!(1)).await.unwrap_err()),
        "not-connected"
    );
    let started = std::time::Instant::now();
    assert_eq!(
        code(ctx.request("cmd.X", json!(1)).await.unwrap_err()),
        "circuit-open"
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "an open breaker fails at once"
    );
    assert_eq!(
        common::metric(
            &process,
            "telamon_axon_circuit_state",
            &[("module", "axon")]
        ),
        Some(1.0)
    );
    assert_eq!(
        common::metric(
            &process,
            "telamon_axon_call_failures_total",
            &[("module", "axon"), ("call", "dispatch")]
        ),
        Some(3.0)
    );
    process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_serve_two_servers_from_one_process() {
    let eu = common::server().await;
    let us = common::server().await;
    let bridge = |id: &str, server: &SocketAddr, region: &str| {
        common::bridge(
            id,
            &server.to_string(),
            &format!(
                r#"
[[module.{id}.send-command]]
pattern = "{region}.cmd.*"
command = "{{2}}"

[[module.{id}.handle-command]]
command = "Where"
topic = "{region}.where"
"#
            ),
        )
        .replace("component = \"test\"", &format!("component = \"{region}\""))
    };
    let toml = bridge("axon-eu", &eu.address(), "eu") + &bridge("axon-us", &us.address(), "us");
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    let _eu = ctx
        .handle("eu.where", |_| {
            std::future::ready(Ok::<_, HandlerError>(json!("eu")))
        })
        .await
        .unwrap();
    let _us = ctx
        .handle("us.where", |_| {
            std::future::ready(Ok::<_, HandlerError>(json!("us")))
        })
        .await
        .unwrap();
    assert_eq!(
        *ctx.request("eu.cmd.Where", json!(null)).await.unwrap(),
        json!("eu")
    );
    assert_eq!(
        *ctx.request("us.cmd.Where", json!(null)).await.unwrap(),
        json!("us")
    );
    assert_eq!(eu.clients()[0].identification.component_name, "eu");
    assert_eq!(us.clients()[0].identification.component_name, "us");
    assert_eq!(
        common::metric(&process, "telamon_axon_state", &[("module", "axon-eu")]),
        Some(1.0)
    );
    assert_eq!(
        common::metric(&process, "telamon_axon_state", &[("module", "axon-us")]),
        Some(1.0)
    );
    process.stop().await;
    eu.stop().await.unwrap();
    us.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_unsubscribes_first_and_finishes_the_command_in_hand() {
    let server = common::server().await;
    let process =
        common::start::<Value>(&common::bridge("axon", &server.address().to_string(), ECHO)).await;
    let ctx = process.context("test");
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let entered_tx = std::sync::Mutex::new(Some(entered_tx));
    let _slow = ctx
        .handle("echo", move |r| {
            if let Some(tx) = entered_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            let m = r.message().clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, HandlerError>(m)
            }
        })
        .await
        .unwrap();
    common::ready(&process, "axon").await;
    let url = server.url();
    let java = tokio::spawn(async move {
        raw::dispatch(
            &url,
            telamon_axon_proto::pb::command::Command {
                message_identifier: "in-hand".into(),
                name: "Echo".into(),
                payload: Some(raw::json_payload("x", b"7")),
                ..Default::default()
            },
        )
        .await
    });
    entered.await.unwrap();
    let report = process.stop().await;
    assert!(report.drained, "{report:?}");
    let answered = java.await.unwrap();
    assert_eq!(
        answered.error_code, "",
        "the command in hand was answered: {answered:?}"
    );
    assert_eq!(answered.payload.unwrap().data, b"7");
    assert!(server.command_handlers().is_empty(), "unsubscribed at stop");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_returns_with_every_handler_registered() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        &format!(
            r#"{ECHO}
[[module.axon.handle-query]]
query = "Lookup"
topic = "lookup"
"#
        ),
    );
    // The registration races the start; a few rounds make a lost race show.
    for round in 0..5 {
        let process = common::start::<Value>(&toml).await;
        // No waiting: a module that sends right after the start is served.
        assert!(
            server.command_handlers().contains_key("Echo"),
            "round {round}: the command handler is registered when start returns"
        );
        assert!(
            server.query_handlers().contains_key("Lookup"),
            "round {round}: the query handler is registered when start returns"
        );
        process.stop().await;
        common::until(10, "unsubscribed at stop", || {
            server.command_handlers().is_empty() && server.query_handlers().is_empty()
        })
        .await;
    }
    server.stop().await.unwrap();
}
