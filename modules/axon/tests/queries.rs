//! Queries through the bridge: first result and scatter-gather across
//! components, the distinct AXONIQ-5000/5001/5006 errors, cancelled queries
//! giving their permits back, and subscription queries both ways.

mod common;

use std::time::Duration;

use common::bank::{Balance, Bank, GetBalance};
use serde_json::{Value, json};
use telamon_sdk::HandlerError;

fn balance(id: &str, amount: i64) -> Bank {
    Bank::Balance(Balance {
        account_id: id.into(),
        balance: amount,
    })
}

fn get(id: &str) -> Bank {
    Bank::GetBalance(GetBalance {
        account_id: id.into(),
    })
}

/// Two bridges in one process, two components: `axon-a` handles and
/// sends, `axon-b` handles (slowly when asked to) and subscribes.
fn two_components(server: &str) -> String {
    let a = common::bridge(
        "axon-a",
        server,
        r#"
[module.axon-a.payload]
type-prefix = "com.example.bank."

[[module.axon-a.send-query]]
pattern = "ask.first.*"
query = "balance"
routing-key = "/accountId"

[[module.axon-a.send-query]]
pattern = "ask.all.*"
query = "balance"
results = "all"
timeout = "2s"

[[module.axon-a.send-query]]
pattern = "ask.named.*"
query = "{2}"
timeout = "2s"

[[module.axon-a.handle-query]]
query = "balance"
topic = "a.balance"
updates = "bank.balance.updated"
update-key = "/accountId"
query-key = "/accountId"
"#,
    )
    .replace("component = \"test\"", "component = \"ledger\"");
    let b = common::bridge(
        "axon-b",
        server,
        r#"
[module.axon-b.payload]
type-prefix = "com.example.bank."

[[module.axon-b.handle-query]]
query = "balance"
topic = "b.balance"

[[module.axon-b.handle-query]]
query = "fails"
topic = "b.fails"

[[module.axon-b.handle-query]]
query = "slow"
topic = "b.slow"

[[module.axon-b.subscribe-query]]
pattern = "watch.*"
query = "balance"
updates-topic = "bank.balance-of.{1}"
cancel-pattern = "unwatch.*"
"#,
    )
    .replace("component = \"test\"", "component = \"reports\"");
    a + &b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_result_and_scatter_gather_across_components() {
    let server = common::server().await;
    let process = common::start::<Bank>(&two_components(&server.address().to_string())).await;
    let ctx = process.context("test");
    let _a = ctx
        .handle("a.balance", |r| {
            let Bank::GetBalance(g) = &**r.message() else {
                panic!("{:?}", r.message())
            };
            std::future::ready(Ok::<_, HandlerError>(balance(&g.account_id, 100)))
        })
        .await
        .unwrap();
    let _b = ctx
        .handle("b.balance", |r| {
            let Bank::GetBalance(g) = &**r.message() else {
                panic!("{:?}", r.message())
            };
            let id = g.account_id.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, HandlerError>(balance(&id, 200))
            }
        })
        .await
        .unwrap();
    let first = ctx.request("ask.first.x", get("q-1")).await.unwrap();
    assert_eq!(
        *first,
        balance("q-1", 100),
        "the faster component answers first"
    );
    let all = ctx.request("ask.all.x", get("q-2")).await.unwrap();
    let Bank::QueryResults(mut results) = (*all).clone() else {
        panic!("{all:?}")
    };
    results.sort_by_key(|r| match r {
        Bank::Balance(b) => b.balance,
        _ => 0,
    });
    assert_eq!(
        results,
        [balance("q-2", 100), balance("q-2", 200)],
        "one handler per component"
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_a_failing_handler_and_a_server_timeout_are_distinct() {
    let server = AxonTestServerFast::start().await;
    let process = common::start::<Bank>(&two_components(&server.address().to_string())).await;
    let ctx = process.context("test");
    let _f = ctx
        .handle("b.fails", |_| async {
            Err::<Bank, _>(HandlerError::new("ledger closed").with_code("closed"))
        })
        .await
        .unwrap();
    let _s = ctx
        .handle("b.slow", |_| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, HandlerError>(Bank::Empty)
        })
        .await
        .unwrap();
    let code = |e: telamon_sdk::RequestError| {
        e.handler_error()
            .and_then(HandlerError::code)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        code(ctx.request("ask.named.nobody", get("x")).await.unwrap_err()),
        "AXONIQ-5000"
    );
    // Registered at AxonServer, but nobody on the bus takes it.
    assert_eq!(
        code(
            ctx.request("ask.named.balance", get("x"))
                .await
                .unwrap_err()
        ),
        "AXONIQ-5000"
    );
    let failed = ctx.request("ask.named.fails", get("x")).await.unwrap_err();
    assert_eq!(code(failed), "AXONIQ-5001");
    assert_eq!(
        code(ctx.request("ask.named.slow", get("x")).await.unwrap_err()),
        "AXONIQ-5006"
    );
    process.stop().await;
    server.stop().await.unwrap();
}

/// A test server that gives up on pending queries after 200 ms.
struct AxonTestServerFast;

impl AxonTestServerFast {
    async fn start() -> telamon_testkit::RunningAxonServer {
        telamon_testkit::AxonTestServer::builder()
            .pending_request_timeout(Duration::from_millis(200))
            .sweep_interval(Duration::from_millis(20))
            .start()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_queries_give_their_permits_back() {
    let server = common::server().await;
    // A handler timeout far longer than the test: only cancellation can
    // give the permits back.
    let toml = two_components(&server.address().to_string())
        .replace(
            "[module.axon-b.payload]",
            "query-permits = 16\nquery-refill = 4\n\n[module.axon-b.payload]",
        )
        .replace("handler-timeout = \"5s\"", "handler-timeout = \"120s\"");
    let process = common::start::<Bank>(&toml).await;
    let ctx = process.context("test");
    let _a = ctx
        .handle("a.balance", |_| {
            std::future::ready(Ok::<_, HandlerError>(balance("x", 1)))
        })
        .await
        .unwrap();
    let _b = ctx
        .handle("b.balance", |_| async {
            tokio::time::sleep(Duration::from_secs(300)).await;
            Ok::<_, HandlerError>(balance("x", 2))
        })
        .await
        .unwrap();
    // Each query: `axon-a` answers, the server cancels it at `axon-b`.
    for i in 0..40 {
        let r = ctx
            .request("ask.first.x", get(&format!("c-{i}")))
            .await
            .unwrap();
        assert_eq!(*r, balance("x", 1));
    }
    // Permits come back in batches of `query-refill`: up to 3 finished
    // ones may wait for the next batch (a query the server withdrew before
    // delivering it costs nothing, so the count need not be a multiple of
    // 4). Leaked permits would leave the window near 0.
    let labels = [("module", "axon-b"), ("stream", "queries")];
    common::until(10, "every cancelled query's permit is back", || {
        common::metric(&process, "telamon_axon_permits_available", &labels)
            .is_some_and(|p| p >= 13.0)
    })
    .await;
    let available = || common::metric(&process, "telamon_axon_permits_available", &labels);
    let at_server = || -> Vec<i64> {
        server.query_handlers()["balance"]
            .iter()
            .filter(|h| h.component_name == "reports")
            .map(|h| h.permits)
            .collect()
    };
    common::until(10, "the server sees the window the bridge counts", || {
        at_server().first().map(|&p| p as f64) == available()
    })
    .await;
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_queries_both_ways_with_updates_filtered_by_key() {
    let server = common::server().await;
    let toml = two_components(&server.address().to_string())
        + &common::collect::table("watcher", "sq-updates", "bank.balance-of.#", 64);
    let process = common::start::<Bank>(&toml).await;
    let mut updates = common::collect::take::<Bank>("sq-updates");
    let ctx = process.context("test");
    let _a = ctx
        .handle("a.balance", |r| {
            let Bank::GetBalance(g) = &**r.message() else {
                panic!()
            };
            std::future::ready(Ok::<_, HandlerError>(balance(&g.account_id, 100)))
        })
        .await
        .unwrap();
    let _b = ctx
        .handle("b.balance", |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, HandlerError>(Bank::Empty)
        })
        .await
        .unwrap();
    let initial = ctx.request("watch.s-1", get("s-1")).await.unwrap();
    assert_eq!(
        *initial,
        balance("s-1", 100),
        "the initial result answers the request"
    );
    common::until(10, "the handler knows the subscription", || {
        server.subscription_queries() == 1
    })
    .await;
    // Asking again keeps one subscription.
    ctx.request("watch.s-1", get("s-1")).await.unwrap();
    assert_eq!(server.subscription_queries(), 1);
    ctx.publish("bank.balance.updated", balance("other", 1))
        .await
        .unwrap();
    ctx.publish("bank.balance.updated", balance("s-1", 150))
        .await
        .unwrap();
    let update = common::within(10, updates.recv()).await.unwrap();
    assert_eq!(update.topic().as_str(), "bank.balance-of.s-1");
    assert_eq!(
        *update.message().clone(),
        balance("s-1", 150),
        "the other account's update was filtered out"
    );
    assert!(update.headers().get("axon-subscription").is_some());
    ctx.request("unwatch.s-1", get("s-1")).await.unwrap();
    common::until(10, "the subscription is gone at the server", || {
        server.subscription_queries() == 0
    })
    .await;
    ctx.publish("bank.balance.updated", balance("s-1", 999))
        .await
        .unwrap();
    let e = ctx.request("unwatch.s-1", get("s-1")).await.unwrap_err();
    assert!(e.to_string().contains("no subscription"), "{e}");
    assert!(updates.try_recv().is_none(), "nothing after the cancel");
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_queries_round_trip() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[[module.axon.send-query]]
pattern = "find.*"
query = "org.shop.Find{1|pascal}"
payload-type = "org.shop.Find{1|pascal}"

[[module.axon.handle-query]]
query = "org.shop.FindOrder"
topic = "shop.find.order"
response-type = "org.shop.Order"
"#,
    );
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    let _h = ctx
        .handle("shop.find.order", |r| {
            let id = r.message()["id"].clone();
            async move { Ok::<_, HandlerError>(json!({"id": id, "total": 12})) }
        })
        .await
        .unwrap();
    let r = ctx.request("find.order", json!({"id": 4})).await.unwrap();
    assert_eq!(*r, json!({"id": 4, "total": 12}));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_subscription_queries_both_ways() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[[module.axon.handle-query]]
query = "org.shop.Stock"
topic = "shop.stock"
response-type = "org.shop.StockLevel"
updates = "shop.stock.changed"
update-key = "/sku"
query-key = "/sku"

[[module.axon.subscribe-query]]
pattern = "watch.*"
query = "org.shop.Stock"
payload-type = "org.shop.Stock"
updates-topic = "shop.stock-of.{1}"
cancel-pattern = "unwatch.*"
"#,
    ) + &common::collect::table("watcher", "json-sq", "shop.stock-of.#", 64);
    let process = common::start::<Value>(&toml).await;
    let mut updates = common::collect::take::<Value>("json-sq");
    let ctx = process.context("test");
    let _h = ctx
        .handle("shop.stock", |r| {
            let sku = r.message()["sku"].clone();
            async move { Ok::<_, HandlerError>(json!({"sku": sku, "count": 5})) }
        })
        .await
        .unwrap();
    let initial = ctx.request("watch.s1", json!({"sku": "s1"})).await.unwrap();
    assert_eq!(*initial, json!({"sku": "s1", "count": 5}));
    common::until(10, "the handler knows the subscription", || {
        server.subscription_queries() == 1
    })
    .await;
    ctx.publish("shop.stock.changed", json!({"sku": "other", "count": 1}))
        .await
        .unwrap();
    ctx.publish("shop.stock.changed", json!({"sku": "s1", "count": 4}))
        .await
        .unwrap();
    let update = common::within(10, updates.recv()).await.unwrap();
    assert_eq!(update.topic().as_str(), "shop.stock-of.s1");
    assert_eq!(
        *update.message().clone(),
        json!({"sku": "s1", "count": 4}),
        "the other sku's update was filtered out"
    );
    ctx.request("unwatch.s1", json!({"sku": "s1"}))
        .await
        .unwrap();
    common::until(10, "the subscription is gone at the server", || {
        server.subscription_queries() == 0
    })
    .await;
    process.stop().await;
    server.stop().await.unwrap();
}
