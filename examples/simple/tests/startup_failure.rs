//! A config typo stops the demo with one readable report and a non-zero
//! status — no panic, no backtrace, also with `RUST_BACKTRACE` set.

use std::process::Command;

#[test]
fn a_config_typo_prints_one_report_and_exits_78_without_a_backtrace() {
    let dir = std::env::temp_dir().join(format!("telamon-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typo.toml");
    std::fs::write(&file, "[message-router]\nrequest-timout = \"1s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simple"))
        .arg(&file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_BACKTRACE", "full")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the demo runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("cannot start: config key `message-router.request-timout`"),
        "{stderr}"
    );
    assert!(stderr.contains("  problem: "), "{stderr}");
    assert!(
        stderr.contains("TELAMON_MESSAGE_ROUTER__REQUEST_TIMOUT"),
        "the fix names the variable too: {stderr}"
    );
    assert!(
        !stderr.contains("backtrace")
            && !stderr.contains("panicked")
            && !stderr.contains("Error: "),
        "{stderr}"
    );
}
