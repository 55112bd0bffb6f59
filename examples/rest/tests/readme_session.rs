//! The README's REST session, pasted: each `curl` line of the block under
//! "A REST session" is run against `cargo run -p rest` (its embedded config,
//! ports 8080, 8081 and 9464), and what it prints must be the `# …` lines
//! under it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The example process, killed when the test ends however it ends.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (command, expected output lines) of the README's session.
fn session() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let block = readme
        .split("### A REST session")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README has a REST session block");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("# ") {
            Some(expected) => steps
                .last_mut()
                .expect("output before any command")
                .1
                .push(expected.to_owned()),
            None if !line.trim().is_empty() => steps.push((line.to_owned(), Vec::new())),
            None => {}
        }
    }
    steps
}

#[test]
fn the_readme_curl_session_works_when_pasted() {
    let steps = session();
    assert!(steps.len() >= 8, "{steps:?}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rest"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let stderr = child.stderr.take().unwrap();
    let example = Example(child);
    // Wait for the example to say it started (or to end, which fails below).
    let (started, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("process started") {
                let _ = started.send(());
            }
        }
    });
    log.recv_timeout(Duration::from_secs(60))
        .expect("the example did not start within 60 s (ports 8080, 8081, 9464 taken?)");

    for (command, expected) in steps {
        let out = Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("run sh");
        let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(printed, expected, "`{command}` printed something else");
    }
    drop(example);
}
