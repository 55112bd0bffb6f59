//! The demo's log, redirected, is plain text.

use std::process::Command;

#[test]
fn a_redirected_log_carries_no_colour_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_simple"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .expect("the demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("process started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log: {log:?}"
    );
}
