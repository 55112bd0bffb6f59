//! Bad config fails at startup with a message naming the key; env overrides work.

mod common;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use telamon_process::{ConfigError, ConfigLoader, Process, ProcessError};
use telamon_sdk::{Context, HandlerError, ModuleError, module};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Greeter {
    greeting: String,
    #[serde(default)]
    answer_topic: Option<String>,
}

#[module(name = "greeter", message = Value)]
impl Greeter {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        let topic = self
            .answer_topic
            .clone()
            .unwrap_or_else(|| "greet".to_owned());
        ctx.handle(topic.as_str(), move |_| {
            let g = self.greeting.clone();
            async move { Ok::<_, HandlerError>(json!(g)) }
        })
        .await?;
        Ok(())
    }
}

async fn start_err(toml: &str) -> (String, String) {
    let err = Process::<Value>::new(common::config(toml))
        .module::<Greeter>()
        .start()
        .await
        .unwrap_err();
    match err {
        ProcessError::Config(ConfigError::Invalid { key, problem }) => (key, problem),
        other => panic!("expected a config error naming a key, got: {other}"),
    }
}

#[tokio::test]
async fn an_unknown_bus_class_names_the_key() {
    let (key, problem) = start_err("[message-bus.main]\nclass = \"carrier-pigeon\"\n").await;
    assert_eq!(key, "message-bus.main.class");
    assert!(
        problem.contains("carrier-pigeon") && problem.contains("in-memory"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_route_to_an_undeclared_bus_names_the_key() {
    let toml = "[message-bus.main]\nclass = \"in-memory\"\n[[message-router.route]]\npattern = \"#\"\nbus = [\"main\", \"ghost\"]\n";
    let (key, problem) = start_err(toml).await;
    assert_eq!(key, "message-router.route[0].bus");
    assert!(problem.contains("ghost"), "{problem}");
}

#[tokio::test]
async fn a_module_id_with_no_registered_class_names_the_key() {
    let (key, problem) = start_err("[module.translator]\n").await;
    assert_eq!(key, "module.translator");
    assert!(
        problem.contains("greeter"),
        "lists what is registered: {problem}"
    );
    let (key, _) = start_err("[module.x]\nclass = \"translator\"\n").await;
    assert_eq!(key, "module.x.class");
}

#[tokio::test]
async fn malformed_values_and_unknown_keys_name_the_key() {
    let (key, problem) =
        start_err("[message-bus.main]\nclass = \"in-memory\"\nsubscriber-queue-size = \"lots\"\n")
            .await;
    assert_eq!(key, "message-bus.main");
    assert!(
        problem.contains("lots") || problem.contains("invalid"),
        "{problem}"
    );
    let (key, problem) = start_err("[module.greeter]\ngreting = \"hi\"\n").await;
    assert_eq!(key, "module.greeter");
    assert!(problem.contains("greting"), "{problem}");
    let (key, _) = start_err("[modules.greeter]\ngreeting = \"hi\"\n").await;
    assert_eq!(key, "modules");
    let (key, problem) = start_err("[message-router]\nrequest-timeout = \"soon\"\n").await;
    assert_eq!(key, "message-router");
    assert!(problem.contains("soon"), "{problem}");
    let (key, _) =
        start_err("[message-bus.main]\nclass = \"in-memory\"\nfull-policy = \"panic\"\n").await;
    assert_eq!(key, "message-bus.main");
    let (key, _) = start_err("[[message-router.route]]\npattern = \"a..b\"\nbus = \"internal\"\n[message-bus.internal]\nclass = \"in-memory\"\n").await;
    assert_eq!(key, "message-router.route[0].pattern");
}

#[tokio::test]
async fn several_buses_without_routes_is_an_error() {
    let (key, _) = start_err(
        "[message-bus.a]\nclass = \"in-memory\"\n[message-bus.b]\nclass = \"in-memory\"\n",
    )
    .await;
    assert_eq!(key, "message-router.route");
}

#[tokio::test]
async fn environment_overrides_nested_kebab_case_keys() {
    let config = ConfigLoader::new()
        .embedded("[module.greeter]\ngreeting = \"hello\"\n")
        .env_prefix(Some("APP"))
        .env_vars([
            ("APP_MODULE__GREETER__GREETING", "bonjour"),
            ("APP_MODULE__GREETER__ANSWER_TOPIC", "greet.fr"),
            ("APP_MESSAGE_ROUTER__REQUEST_TIMEOUT", "250ms"),
            ("OTHER_MODULE__GREETER__GREETING", "ignored: other prefix"),
        ])
        .load()
        .unwrap();
    let process = Process::<Value>::new(config)
        .module::<Greeter>()
        .start()
        .await
        .unwrap();
    let ctx = process.context("test");
    assert_eq!(
        *ctx.request("greet.fr", json!(null)).await.unwrap(),
        json!("bonjour")
    );
    let err = ctx.request("greet", json!(null)).await.unwrap_err();
    assert!(err.is_no_responder(), "{err}");
    process.stop().await;
}

#[tokio::test]
async fn unrelated_prefixed_variables_are_not_config_but_misspelt_keys_are_errors() {
    let load = |vars: Vec<(&str, &str)>| {
        ConfigLoader::new()
            .embedded("[module.greeter]\ngreeting = \"hello\"\n")
            .env_prefix(Some("TELAMON"))
            .env_vars(vars)
            .load()
            .unwrap()
    };
    // The test suite's own broker variable, and another tool's, share the prefix.
    let config = load(vec![
        ("TELAMON_TEST_AMQP_URL", "amqp://127.0.0.1:5672/%2f"),
        ("TELAMON_HOME", "/opt/telamon"),
        ("TELAMON_MODULE__GREETER__GREETING", "hej"),
    ]);
    let process = Process::<Value>::new(config)
        .module::<Greeter>()
        .start()
        .await
        .expect("unrelated TELAMON_ variables do not stop a process");
    let answer = process.context("t").request("greet", json!(null)).await;
    assert_eq!(*answer.unwrap(), json!("hej"));
    process.stop().await;

    let typo = load(vec![("TELAMON_MODULE__GREETER__GREETNG", "hej")]);
    let err = Process::<Value>::new(typo)
        .module::<Greeter>()
        .check()
        .unwrap_err();
    assert!(err.to_string().contains("greetng"), "{err}");
    let section = load(vec![("TELAMON_MESSAGE_ROUTER__REQUEST_TIMOUT", "1s")]);
    let err = Process::<Value>::new(section).check().unwrap_err();
    assert!(err.to_string().contains("request-timout"), "{err}");
}

#[tokio::test]
async fn a_missing_config_file_is_an_error_not_silently_skipped() {
    let err = ConfigLoader::new()
        .file("/nonexistent/telamon.toml")
        .load()
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/telamon.toml"),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let toml = "[metrics]\naddress = \"127.0.0.1:0\"\n[module.greeter]\ngreeting = \"hi\"\n";
    let process = Process::<Value>::new(common::config(toml))
        .module::<Greeter>()
        .start()
        .await
        .unwrap();
    let ctx = process.context("test");
    let mut sub = ctx.subscribe("news.#").await.unwrap();
    ctx.publish("news.today", json!(1)).await.unwrap();
    ctx.publish("news.today", json!(2)).await.unwrap();
    ctx.request("greet", json!(null)).await.unwrap();
    assert!(sub.try_recv().is_some());
    let body = scrape(
        process
            .metrics_address()
            .expect("metrics endpoint listening"),
    )
    .await;
    assert!(
        body.contains("telamon_published_total{topic=\"news.today\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("telamon_delivered_total{topic=\"news.today\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("telamon_requests_total{topic=\"greet\",outcome=\"ok\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("telamon_request_latency_seconds_count{topic=\"greet\"} 1"),
        "{body}"
    );
    process.stop().await;
}

/// Scrapes `/metrics` over HTTP and returns the body.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = common::http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_topic_per_entity_keeps_the_series_bounded_and_the_text_parses() {
    let toml = "[metrics]\naddress = \"127.0.0.1:0\"\nmax-topics = 100\n";
    let process = Process::<Value>::new(common::config(toml))
        .start()
        .await
        .unwrap();
    let ctx = process.context("test");
    // A label value that needs every escape of the text format.
    let odd = "odd.say \"hi\"\\back\nslash";
    ctx.publish(odd, json!(0)).await.unwrap();
    for i in 0..100_000 {
        ctx.publish(format!("orders.{i}.created"), json!(i))
            .await
            .unwrap();
    }
    let body = scrape(process.metrics_address().unwrap()).await;
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scraped = prometheus_parse::Scrape::parse(lines).expect("the text format parses");
    let published: Vec<_> = scraped
        .samples
        .iter()
        .filter(|s| s.metric == "telamon_published_total")
        .collect();
    assert_eq!(published.len(), 101, "100 topics and the overflow series");
    // prometheus-parse hands label values back as written; undo the text
    // format's escapes to compare with the topic.
    let unescape = |v: &str| {
        let mut out = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => panic!("dangling escape in {v:?}"),
                },
                (c, false) => out.push(c),
            }
        }
        out
    };
    let value = |topic: &str| {
        published
            .iter()
            .find(|s| s.labels.get("topic").map(unescape).as_deref() == Some(topic))
            .map(|s| match s.value {
                // OpenMetrics names a counter family without `_total`, so
                // prometheus-parse (a 0.0.4 parser) reads its samples as untyped.
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            })
    };
    assert_eq!(
        value(odd),
        Some(1.0),
        "the odd topic keeps its text: {body:.2000}"
    );
    assert_eq!(
        value(telamon_process::OVERFLOW_TOPIC),
        Some(100_000.0 - 99.0)
    );
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    process.stop().await;
}
