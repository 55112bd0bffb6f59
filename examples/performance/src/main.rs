//! Run with `cargo run --release -p performance -- --json` (all scenarios), or
//! name scenarios: `cargo run --release -p performance -- inproc-1to1 inproc-request`.
//!
//! Each scenario runs for every system in the same process, one after the other:
//! `telamon` (through its public API), `baseline` (raw tokio channels: bounded
//! mpsc per subscriber, mpsc + oneshot for requests) and `caryatid` (the
//! published caryatid_process / caryatid_sdk 0.14 crates, with their default
//! subscriber queue of 10; `caryatid-q1024` is the same with Telamon's queue
//! depth, for an equal-queue comparison). With `--json` each
//! result is one JSON line on stdout; the ratios against the targets go to stderr.
//! `--quick` divides every count by 10 (for a smoke run). The `rabbit-*`
//! scenarios need RabbitMQ (`AMQP_URL`, default the local broker); the
//! baseline there is raw lapin doing the same work. The `axon-*` scenarios
//! run an in-process AxonServer-compatible test server; the baseline there
//! is raw tonic doing the same work against the same server.

mod axon_baseline;
mod axon_bridge;
mod baseline_system;
mod broker;
mod caryatid_system;
mod lapin_baseline;
mod measurement;
mod message;
mod request_clock;
mod telamon_system;

use measurement::Measurement;

const SCENARIOS: [&str; 9] = [
    "inproc-1to1",
    "inproc-fanout4",
    "inproc-request",
    "idle-rss",
    "rabbit-1to1",
    "rabbit-request",
    "axon-command",
    "axon-append",
    "axon-track",
];
/// Events per append in `axon-append`.
const AXON_BATCH: u64 = 100;
/// Telamon's default queue depth; the baseline uses the same.
const QUEUE: usize = 1024;
/// Requests one requester keeps outstanding.
const IN_FLIGHT: usize = 16;
const FANOUT_PATTERNS: [&str; 4] = ["perf.test", "perf.#", "perf.*", "#"];

struct Options {
    json: bool,
    scale: u64,
    scenarios: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        json: false,
        scale: 1,
        scenarios: Vec::new(),
    };
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--json" => o.json = true,
            "--quick" => o.scale = 10,
            s if SCENARIOS.contains(&s) => o.scenarios.push(s.to_owned()),
            other => anyhow::bail!(
                "unknown argument `{other}`; scenarios: {}",
                SCENARIOS.join(", ")
            ),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--idle-child") {
        return idle_child(args.get(2).map(String::as_str).unwrap_or(""));
    }
    let o = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for s in &o.scenarios {
        for m in runtime.block_on(scenario(s, o.scale))? {
            report(&m, o.json);
            results.push(m);
        }
    }
    summary(&results);
    Ok(())
}

async fn scenario(name: &str, scale: u64) -> anyhow::Result<Vec<Measurement>> {
    Ok(match name {
        "inproc-1to1" => {
            let n = 2_000_000 / scale;
            vec![
                telamon_system::fan_out(SCENARIOS[0], &["perf.test"], n, QUEUE).await?,
                baseline_system::fan_out(SCENARIOS[0], 1, n, QUEUE).await?,
                caryatid_system::fan_out(SCENARIOS[0], &["perf.test"], n / 2, None).await?,
                caryatid_system::fan_out(SCENARIOS[0], &["perf.test"], n / 2, Some(QUEUE)).await?,
            ]
        }
        "inproc-fanout4" => {
            let n = 1_000_000 / scale;
            vec![
                telamon_system::fan_out(SCENARIOS[1], &FANOUT_PATTERNS, n, QUEUE).await?,
                baseline_system::fan_out(SCENARIOS[1], 4, n, QUEUE).await?,
                caryatid_system::fan_out(SCENARIOS[1], &FANOUT_PATTERNS, n / 2, None).await?,
                caryatid_system::fan_out(SCENARIOS[1], &FANOUT_PATTERNS, n / 2, Some(QUEUE))
                    .await?,
            ]
        }
        "inproc-request" => vec![
            telamon_system::request(1_000_000 / scale, IN_FLIGHT).await?,
            baseline_system::request(1_000_000 / scale, IN_FLIGHT).await?,
            // Caryatid's request path leaks a subscription per request and slows
            // down linearly; 5 000 requests finish well under a minute.
            caryatid_system::request(5_000 / scale, IN_FLIGHT).await?,
        ],
        "rabbit-1to1" => {
            let n = 50_000 / scale;
            vec![
                telamon_system::rabbit_one_to_one(n, true).await?,
                lapin_baseline::one_to_one(n).await?,
                caryatid_system::rabbit_one_to_one(n / 2).await?,
                telamon_system::rabbit_one_to_one(n, false).await?,
            ]
        }
        "rabbit-request" => vec![
            telamon_system::rabbit_request(3_000 / scale).await?,
            lapin_baseline::request(3_000 / scale).await?,
            // Caryatid declares a queue per request and never deletes it.
            caryatid_system::rabbit_request(300 / scale).await?,
        ],
        "axon-command" => {
            let server = telamon_testkit::AxonTestServer::builder().start().await?;
            let n = 20_000 / scale;
            let v = vec![
                axon_bridge::command(&server, n, IN_FLIGHT).await?,
                axon_baseline::command(&server, n, IN_FLIGHT).await?,
            ];
            server.stop().await?;
            v
        }
        "axon-append" => {
            let server = telamon_testkit::AxonTestServer::builder().start().await?;
            let batches = 1_000 / scale;
            let v = vec![
                axon_bridge::append(&server, batches, 4).await?,
                axon_baseline::append(&server, batches, 4).await?,
            ];
            server.stop().await?;
            v
        }
        "axon-track" => {
            let server = telamon_testkit::AxonTestServer::builder().start().await?;
            let n = 100_000 / scale;
            axon_baseline::fill(&server, n).await?;
            let v = vec![
                axon_bridge::track(&server, n).await?,
                axon_baseline::track(&server, n).await?,
            ];
            server.stop().await?;
            v
        }
        "idle-rss" => {
            let mut v = Vec::new();
            for system in ["telamon", "baseline", "caryatid"] {
                v.push(idle_rss(system)?);
            }
            v
        }
        other => anyhow::bail!("unknown scenario {other}"),
    })
}

/// Starts this binary again with `--idle-child SYSTEM` and reads the RSS it prints.
fn idle_rss(system: &'static str) -> anyhow::Result<Measurement> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--idle-child", system])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "idle child for {system} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(Measurement {
        scenario: "idle-rss",
        system,
        msgs_per_s: None,
        p50_us: None,
        p99_us: None,
        rss_mb: Some(rss),
        first_tenth_per_s: None,
        last_tenth_per_s: None,
        count: None,
    })
}

fn idle_child(system: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match system {
            "telamon" => telamon_system::idle().await,
            "baseline" => baseline_system::idle().await,
            "caryatid" => caryatid_system::idle().await,
            other => anyhow::bail!("unknown system {other}"),
        }
    })
}

fn report(m: &Measurement, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(m).expect("a measurement serialises")
        );
        return;
    }
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
    println!(
        "{:<16} {:<14} {:>10} msg/s  p50 {:>8} us  p99 {:>8} us  rss {:>6} MB{}",
        m.scenario,
        m.system,
        m.msgs_per_s.map_or("-".to_owned(), |x| format!("{x:.0}")),
        f(m.p50_us),
        f(m.p99_us),
        f(m.rss_mb),
        match (m.first_tenth_per_s, m.last_tenth_per_s) {
            (Some(a), Some(b)) => format!("  first 10%: {a:.0}/s, last 10%: {b:.0}/s"),
            _ => String::new(),
        }
    );
}

/// Ratios within this run, against the targets, on stderr.
fn summary(results: &[Measurement]) {
    let find = |s: &str, sys: &str| results.iter().find(|m| m.scenario == s && m.system == sys);
    let rate = |s: &str, sys: &str| find(s, sys).and_then(|m| m.msgs_per_s);
    // (scenario, telamon system, peer, target ratio; 0 = for information)
    let targets = [
        ("inproc-1to1", "telamon", "baseline", 0.9),
        ("inproc-1to1", "telamon", "caryatid", 3.0),
        ("inproc-fanout4", "telamon", "baseline", 0.8),
        ("inproc-fanout4", "telamon", "caryatid", 4.0),
        ("inproc-request", "telamon", "baseline", 0.8),
        ("rabbit-1to1", "telamon", "baseline", 0.8),
        ("rabbit-1to1", "telamon", "caryatid", 2.0),
        ("rabbit-request", "telamon", "baseline", 0.6),
        ("rabbit-request", "telamon", "caryatid", 10.0),
        ("axon-command", "telamon", "baseline", 0.77),
        ("axon-append", "telamon", "baseline", 0.8),
        ("axon-track", "telamon", "baseline", 0.8),
        ("inproc-1to1", "telamon", "caryatid-q1024", 0.0),
        ("inproc-fanout4", "telamon", "caryatid-q1024", 0.0),
        ("rabbit-1to1", "telamon-at-most-once", "caryatid", 0.0),
    ];
    for (scenario, ours, peer, target) in targets {
        let (Some(a), Some(b)) = (rate(scenario, ours), rate(scenario, peer)) else {
            continue;
        };
        let label = format!("{scenario} {ours} / {peer}");
        if target > 0.0 {
            let verdict = if a / b >= target { "ok" } else { "MISSED" };
            eprintln!(
                "{label:<48} {:>7.2}x  (target >= {target}x) {verdict}",
                a / b
            );
        } else {
            eprintln!("{label:<48} {:>7.2}x  (for information)", a / b);
        }
    }
    for scenario in ["inproc-request", "rabbit-request"] {
        if let Some(Measurement {
            first_tenth_per_s: Some(first),
            last_tenth_per_s: Some(last),
            ..
        }) = find(scenario, "telamon")
        {
            let label = format!("{scenario} telamon last 10% / first 10%");
            eprintln!(
                "{label:<48} {:>7.2}x  (flat: no growth per request)",
                last / first
            );
        }
    }
    if let Some(Measurement {
        rss_mb: Some(rss), ..
    }) = find("idle-rss", "telamon")
    {
        let verdict = if *rss <= 20.0 { "ok" } else { "MISSED" };
        eprintln!(
            "{:<48} {rss:>7.1} MB (target <= 20 MB) {verdict}",
            "idle-rss telamon"
        );
    }
}
