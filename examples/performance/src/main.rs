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
//! is raw tonic doing the same work against the same server. `rest-request`
//! sends HTTP GETs from 64 keep-alive clients through the `rest-server`
//! module to a bus handler; the baseline there is a bare axum handler
//! answering the same JSON, measured in alternating rounds with it.

mod axon_baseline;
mod axon_bridge;
mod baseline_system;
mod broker;
mod caryatid_system;
mod lapin_baseline;
mod measurement;
mod message;
mod request_clock;
mod rest_request;
mod telamon_system;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use measurement::Measurement;
use telamon_system::ManySubsBus;

const SCENARIOS: [&str; 16] = [
    "inproc-1to1",
    "inproc-fanout4",
    "inproc-request",
    "idle-rss",
    "rabbit-1to1",
    "rabbit-request",
    "axon-command",
    "axon-append",
    "axon-track",
    "inproc-many-subs-0",
    "inproc-many-subs-100",
    "inproc-many-subs-10000",
    "inproc-many-subs-100000",
    "rabbit-many-subs-0",
    "rabbit-many-subs-1000",
    "rest-request",
];
/// Messages in `inproc-many-subs-N` (through Caryatid: half).
const MANY_SUBS_MESSAGES: u64 = 200_000;
/// Messages in `rabbit-many-subs-N`.
const RABBIT_MANY_SUBS_MESSAGES: u64 = 20_000;
/// Caryatid runs `inproc-many-subs-N` up to this N (beyond, making the
/// subscriptions alone takes it past a minute).
const CARYATID_MANY_SUBS_MAX: u64 = 10_000;
/// Events per append in `axon-append`.
const AXON_BATCH: u64 = 100;
/// Events each `axon-track` round reads before its clock starts: in some
/// rounds a new stream's first 100 ms or so run at half the rate (see
/// docs/benchmarks.md); the rate timed is the steady one.
const AXON_TRACK_WARM_UP: u64 = 50_000;

/// Measured rounds per system in `axon-track` (after one unmeasured round
/// each); a multiple of six keeps the order of the systems balanced.
const AXON_TRACK_ROUNDS: usize = 6;
/// Telamon's default queue depth; the baseline uses the same.
const QUEUE: usize = 1024;
/// Keep-alive HTTP clients in `rest-request`.
const REST_CLIENTS: u64 = 64;
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
    if args.get(1).map(String::as_str) == Some("--subs-child") {
        let n = args.get(3).map_or(Ok(0), |n| n.parse())?;
        return subs_child(args.get(2).map(String::as_str).unwrap_or(""), n);
    }
    let o = options()?;
    // On stderr, as the summary: `--json` output stays one document.
    eprintln!(
        "allocator: {}",
        if cfg!(feature = "mimalloc") {
            "mimalloc (built with --features mimalloc)"
        } else {
            "the system's (glibc on Linux; --features mimalloc for mimalloc)"
        }
    );
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
                // The cost of metrics: off and on, one right after the other.
                telamon_system::fan_out_metrics(SCENARIOS[0], &["perf.test"], n, QUEUE, false)
                    .await?,
                telamon_system::fan_out_metrics(SCENARIOS[0], &["perf.test"], n, QUEUE, true)
                    .await?,
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
                telamon_system::rabbit_one_to_one(n, "telamon").await?,
                lapin_baseline::one_to_one(n).await?,
                caryatid_system::rabbit_one_to_one(n / 2).await?,
                telamon_system::rabbit_one_to_one(n, "telamon-at-most-once").await?,
                telamon_system::rabbit_one_to_one(n, "telamon-queue-per-sub").await?,
            ]
        }
        "rabbit-request" => vec![
            telamon_system::rabbit_request(3_000 / scale).await?,
            lapin_baseline::request(3_000 / scale).await?,
            // Caryatid declares a queue per request and never deletes it.
            caryatid_system::rabbit_request(300 / scale).await?,
        ],
        "rest-request" => {
            let n = 100_000 / scale;
            rest_request::compare(n, REST_CLIENTS).await?
        }
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
            let warm_up = AXON_TRACK_WARM_UP / scale;
            axon_baseline::fill(&server, warm_up + n).await?;
            // One unmeasured round each, then rounds in turn (each round
            // starts with the next system); each system's figure is its
            // median round. The CPU time the whole process (test server
            // included) spent per event, also a median, is printed beside:
            // it moves far less than the rate on a shared machine. The
            // third system, the reader handing its messages to a task over
            // a tokio channel, is for information.
            let mut rounds: [Vec<(std::time::Duration, std::time::Duration)>; 3] =
                Default::default();
            let rounds_wanted = match std::env::var("AXON_TRACK_ROUNDS") {
                Err(_) => AXON_TRACK_ROUNDS,
                Ok(r) => match r.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => anyhow::bail!(
                        "AXON_TRACK_ROUNDS must be a whole number of rounds, at least 1 (got `{r}`)"
                    ),
                },
            };
            for r in 0..=rounds_wanted {
                // Each system first, second and third equally often, and
                // after each of the other two equally often, every six
                // rounds: rotated, and reflected every other cycle.
                let first = r % 3;
                let step = if (r / 3) % 2 == 0 { 1 } else { 2 };
                for i in 0..3 {
                    let which = (first + i * step) % 3;
                    let round = match which {
                        0 => axon_bridge::track(&server, warm_up, n).await?,
                        1 => axon_baseline::track(&server, warm_up, n).await?,
                        _ => axon_baseline::track_through_channel(&server, warm_up, n).await?,
                    };
                    if r > 0 {
                        rounds[which].push(round);
                    }
                }
            }
            let v = ["telamon", "baseline", "channel"]
                .into_iter()
                .zip(rounds.iter_mut())
                .map(|(system, r)| {
                    let mut cpu: Vec<_> = r.iter().map(|(_, cpu)| *cpu).collect();
                    cpu.sort();
                    // On stderr: `--json` output stays one document.
                    let per_event = cpu[cpu.len() / 2].as_nanos() / u128::from(n - 1);
                    let rates: Vec<String> = r
                        .iter()
                        .map(|(t, _)| format!("{:.0}k", (n - 1) as f64 / t.as_secs_f64() / 1e3))
                        .collect();
                    eprintln!("axon-track       {system:<17} {per_event:>7} ns of CPU per event (whole process, median round); rounds/s: {}", rates.join(" "));
                    r.sort();
                    // The rate is over the n − 1 gaps between the first event and the last.
                    Measurement::throughput("axon-track", system, n - 1, r[r.len() / 2].0, &mut [])
                })
                .collect();
            server.stop().await?;
            v
        }
        many if many.starts_with("inproc-many-subs-") || many.starts_with("rabbit-many-subs-") => {
            let scenario = SCENARIOS
                .iter()
                .copied()
                .find(|s| *s == many)
                .ok_or_else(|| anyhow::anyhow!("unknown scenario {many}"))?;
            let idle: u64 = many.rsplit('-').next().unwrap_or("0").parse()?;
            if many.starts_with("rabbit-") {
                let mut v = Vec::new();
                for shared_queue in [true, false] {
                    v.push(
                        telamon_system::many_subs(
                            scenario,
                            idle,
                            RABBIT_MANY_SUBS_MESSAGES / scale,
                            ManySubsBus::Rabbit { shared_queue },
                        )
                        .await?,
                    );
                }
                v
            } else {
                let mut v = vec![
                    telamon_system::many_subs(
                        scenario,
                        idle,
                        MANY_SUBS_MESSAGES / scale,
                        ManySubsBus::InProcess,
                    )
                    .await?,
                ];
                if idle <= CARYATID_MANY_SUBS_MAX {
                    v.push(
                        caryatid_system::many_subs(scenario, idle, MANY_SUBS_MESSAGES / 2 / scale)
                            .await?,
                    );
                }
                v
            }
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
        idle_subs: None,
    })
}

/// Starts this binary again with `--subs-child SYSTEM N`: the bytes of
/// resident memory each of `n` idle subscriptions adds to a fresh process
/// (in this process, memory freed by earlier scenarios would hide it).
pub(crate) fn bytes_per_subscription(system: &str, n: u64) -> anyhow::Result<f64> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--subs-child", system, &n.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "subscription child for {system} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn subs_child(system: &str, n: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let bytes = match system {
            "telamon" => telamon_system::idle_subscriptions_memory(n).await?,
            "caryatid" => caryatid_system::idle_subscriptions_memory(n).await?,
            other => anyhow::bail!("unknown system {other}"),
        };
        println!("{bytes}");
        Ok(())
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
    let idle = m.idle_subs.map_or(String::new(), |i| {
        format!(
            "  {} idle subscriptions made in {:.0} ms{}{}",
            i.n,
            i.created_ms,
            i.bytes_each
                .map_or(String::new(), |b| format!(", {b:.0} bytes each")),
            i.broker_queues
                .map_or(String::new(), |q| format!(", {q} broker queues")),
        )
    });
    println!(
        "{:<16} {:<14} {:>10} msg/s  p50 {:>8} us  p99 {:>8} us  rss {:>6} MB{}{idle}",
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

/// `inproc-many-subs-N` against its targets: the rate at 10 000 idle
/// subscriptions against the rate at none, the time to make 100 000, and
/// the memory each idle one takes.
fn many_subs_summary(results: &[Measurement]) {
    let find = |s: &str| {
        results
            .iter()
            .find(|m| m.scenario == s && m.system == "telamon")
    };
    let rate = |s: &str| find(s).and_then(|m| m.msgs_per_s);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    if let (Some(at0), Some(at10k)) = (rate("inproc-many-subs-0"), rate("inproc-many-subs-10000")) {
        let label = "inproc-many-subs 10000 idle / 0 idle (telamon)";
        eprintln!(
            "{label:<48} {:>7.2}x  (target >= 0.8x) {}",
            at10k / at0,
            verdict(at10k / at0 >= 0.8)
        );
    }
    for m in results.iter().filter(|m| m.system == "telamon") {
        let Some(i) = m.idle_subs else { continue };
        if i.n == 100_000 {
            let label = "inproc-many-subs 100000 created in";
            eprintln!(
                "{label:<48} {:>7.0} ms (target <= 1000 ms) {}",
                i.created_ms,
                verdict(i.created_ms <= 1000.0)
            );
        }
        if let (Some(b), true) = (i.bytes_each, i.n >= 10_000) {
            let label = format!("{} bytes per idle subscription", m.scenario);
            eprintln!(
                "{label:<48} {b:>7.0}    (target <= 1024) {}",
                verdict(b <= 1024.0)
            );
        }
    }
    for system in ["telamon", "telamon-queue-per-sub"] {
        for m in results.iter().filter(|m| m.system == system) {
            if let Some(i) = m.idle_subs
                && let Some(q) = i.broker_queues
            {
                let label = format!("{} {system} broker queues", m.scenario);
                eprintln!("{label:<48} {q:>7}    (for information)");
                let label = format!("{} {system} made in", m.scenario);
                eprintln!("{label:<48} {:>7.0} ms (for information)", i.created_ms);
            }
        }
        let rate = |s: &str| {
            results
                .iter()
                .find(|m| m.scenario == s && m.system == system)
                .and_then(|m| m.msgs_per_s)
        };
        if let (Some(at0), Some(at1k)) = (rate("rabbit-many-subs-0"), rate("rabbit-many-subs-1000"))
        {
            let label = format!("rabbit-many-subs 1000 idle / 0 idle ({system})");
            eprintln!("{label:<48} {:>7.2}x  (for information)", at1k / at0);
        }
    }
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
        ("axon-track", "channel", "baseline", 0.0),
        ("rest-request", "telamon", "baseline", 0.7),
        (
            "inproc-1to1",
            "telamon-metrics-on",
            "telamon-metrics-off",
            0.85,
        ),
        ("inproc-1to1", "telamon", "caryatid-q1024", 0.0),
        ("inproc-fanout4", "telamon", "caryatid-q1024", 0.0),
        ("rabbit-1to1", "telamon-at-most-once", "caryatid", 0.0),
        ("rabbit-1to1", "telamon-queue-per-sub", "baseline", 0.0),
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
    many_subs_summary(results);
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
