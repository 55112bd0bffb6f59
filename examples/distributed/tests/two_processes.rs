//! Two OS processes of the `distributed` example talk over the real broker.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn exchange() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("telamon.test.distributed.{}.{nanos:x}", std::process::id())
}

fn wait(mut child: std::process::Child, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            );
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (false, String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ping_and_pong_processes_exchange_messages_and_requests() {
    let url = std::env::var("TELAMON_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let dir = env!("CARGO_MANIFEST_DIR");
    let exchange = exchange();
    let spawn = |config: &str, extra: (&str, &str)| {
        Command::new(env!("CARGO_BIN_EXE_distributed"))
            .arg(format!("{dir}/{config}"))
            .env("TELAMON_MESSAGE_BUS__RABBIT__EXCHANGE", &exchange)
            .env("TELAMON_MESSAGE_BUS__RABBIT__URL", &url)
            .env(extra.0, extra.1)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example binary starts")
    };
    let pong = spawn("pong.toml", ("TELAMON_MODULE__PONGER__STOP_AFTER", "3"));
    let ping = spawn("ping.toml", ("TELAMON_MODULE__PINGER__COUNT", "3"));
    let (ping_ok, ping_out) = wait(ping, Duration::from_secs(60));
    let (pong_ok, pong_out) = wait(pong, Duration::from_secs(30));
    assert!(ping_ok, "ping failed; its output:\n{ping_out}");
    assert!(pong_ok, "pong failed; its output:\n{pong_out}");
    for n in 1..=3 {
        assert!(
            ping_out.contains(&format!(
                "ping: request {n} answered: Echo(\"echo: round {n}\")"
            )),
            "{ping_out}"
        );
        assert!(
            ping_out.contains(&format!(
                "ping: news {n}: News {{ text: \"pong saw ping {n}\" }}"
            )),
            "{ping_out}"
        );
        assert!(
            pong_out.contains(&format!("pong: got ping {n} on ping.{n}")),
            "{pong_out}"
        );
    }
}
