//! Arbitrary text as a process's config file: loading and checking it gives
//! a value or an error naming a key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telamon_process::{ConfigLoader, Process};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(config) = ConfigLoader::new().embedded(text).env_prefix(None).load() else {
        return;
    };
    let _ = Process::<serde_json::Value>::new(config).check();
});
