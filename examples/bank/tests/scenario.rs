//! `cargo run -p bank` does what the README says: the scenario runs against
//! the embedded server and the process exits 0 on its own.

use std::process::Command;

#[test]
fn the_demo_runs_its_scenario_and_stops_by_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_bank"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("the bank binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "using an embedded test server",
        "refused as expected [AXONIQ-4002] insufficient funds",
        "refused as expected [AXONIQ-4002] account",
        "through the subscription query: [0, 50, 80, -70]",
        "balance -70",
        "teller: done",
        "the event store holds 6 events",
    ] {
        assert!(
            stdout.contains(expected),
            "`{expected}` missing from:\n{stdout}"
        );
    }
    assert!(
        !stderr.contains("WARN"),
        "warnings in a clean run:\n{stderr}"
    );
}
