//! Run with `cargo run -p rest` (optionally `-- my.toml` to override `rest.toml`),
//! then talk to it with curl (see the README) or open http://127.0.0.1:8080/.
//!
//! Two REST servers — `public` (prefix `api`) and `admin` (prefix `admin`) —
//! turn HTTP requests into bus requests; the `notes` module answers them.
//! Ctrl-C stops it.

mod notes;

use serde_json::Value;
use telamon_module_rest_server::RestServer;
use telamon_process::{ConfigLoader, OrExit, Process, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    // The page lives beside this file, wherever the example is run from.
    let www = concat!(env!("CARGO_MANIFEST_DIR"), "/www");
    let embedded = format!(
        "{}\n[module.public.static]\nfolder = {www:?}\n",
        include_str!("../rest.toml")
    );
    let config = ConfigLoader::new()
        .embedded(embedded)
        .args()
        .load()
        .or_exit();
    let report = Process::<Value>::new(config)
        .module::<RestServer<Value>>()
        .module::<notes::Notes>()
        .run()
        .await
        .or_exit();
    println!("stopped cleanly: {}", report.drained);
    Ok(())
}
