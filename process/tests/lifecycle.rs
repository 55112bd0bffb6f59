//! Module lifecycle: init order, start barrier, failures, panics, stop.

mod common;

use std::sync::{Arc, Mutex};

use common::{config, within};
use serde::Deserialize;
use serde_json::{Value, json};
use telamon_process::{Process, ProcessError};
use telamon_sdk::{Context, HandlerError, Module, ModuleError, module};

/// Where the modules of one test write what happened, in order.
type Journal = Arc<Mutex<Vec<String>>>;

static JOURNALS: Mutex<Vec<(String, Journal)>> = Mutex::new(Vec::new());

/// The journal named `name` (each test uses its own).
fn journal(name: &str) -> Journal {
    let mut all = JOURNALS.lock().unwrap();
    if let Some((_, j)) = all.iter().find(|(n, _)| n == name) {
        return j.clone();
    }
    let j = Journal::default();
    all.push((name.to_owned(), j.clone()));
    j
}

fn note(name: &str, what: String) {
    journal(name).lock().unwrap().push(what);
}

/// Writes "init <id>" at init and "task <id>" when its task starts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recorder {
    journal: String,
    #[serde(default)]
    fail: bool,
}

async fn record(this: Arc<Recorder>, ctx: Context<Value>) -> Result<(), ModuleError> {
    note(&this.journal, format!("init {}", ctx.id()));
    if this.fail {
        return Err(ModuleError::new("refusing to start"));
    }
    let id = ctx.id().to_owned();
    let journal = this.journal.clone();
    ctx.run(async move { note(&journal, format!("task {id}")) });
    // Give the task every chance to start early: on a multi-threaded runtime
    // an idle worker would run it at once if nothing held it back.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    Ok(())
}

struct First(Arc<Recorder>);
struct Second(Arc<Recorder>);
struct Third(Arc<Recorder>);

macro_rules! recorder_class {
    ($t:ident, $name:literal) => {
        impl Module<Value> for $t {
            const NAME: &'static str = $name;
            type Config = Recorder;
            fn new(config: Recorder) -> Result<Self, ModuleError> {
                Ok($t(Arc::new(config)))
            }
            async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
                record(self.0.clone(), ctx).await
            }
        }
    };
}
recorder_class!(First, "first");
recorder_class!(Second, "second");
recorder_class!(Third, "third");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_init_in_registration_order_and_tasks_start_after_all_inits() {
    let toml = "[module.a]\nclass = \"first\"\njournal = \"order\"\n[module.b]\nclass = \"second\"\njournal = \"order\"\n[module.c]\nclass = \"third\"\njournal = \"order\"\n";
    let process = Process::<Value>::new(config(toml))
        .module::<Third>()
        .module::<First>()
        .module::<Second>()
        .start()
        .await
        .unwrap();
    assert_eq!(process.modules(), ["c", "a", "b"]);
    let j = journal("order");
    within(async {
        while j.lock().unwrap().len() < 6 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let seen = j.lock().unwrap().clone();
    assert_eq!(&seen[..3], ["init c", "init a", "init b"]);
    let mut tasks = seen[3..].to_vec();
    tasks.sort();
    assert_eq!(tasks, ["task a", "task b", "task c"]);
    process.stop().await;
}

#[tokio::test]
async fn an_init_error_stops_startup_and_names_the_module() {
    let toml = "[module.good]\nclass = \"first\"\njournal = \"failing\"\n[module.bad]\nclass = \"second\"\njournal = \"failing\"\nfail = true\n";
    let err = Process::<Value>::new(config(toml))
        .module::<First>()
        .module::<Second>()
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProcessError::Module { ref module, .. } if module == "bad"),
        "{err}"
    );
    assert_eq!(err.failed_module(), Some("bad"));
    assert!(err.to_string().contains("refusing to start"));
    // The good module was initialised but its task never ran: startup never finished.
    assert_eq!(
        *journal("failing").lock().unwrap(),
        ["init good", "init bad"]
    );
}

/// A module whose task panics, next to one that keeps answering.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Fragile {}

#[module(name = "fragile", message = Value)]
impl Fragile {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        ctx.run(async { panic!("task exploded") });
        ctx.handle("ping", |_| async { Ok::<_, HandlerError>(json!("pong")) })
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_task_is_logged_and_the_process_goes_on() {
    let process = Process::<Value>::new(config("[module.fragile]\n"))
        .module::<Fragile>()
        .start()
        .await
        .unwrap();
    let ctx = process.context("test");
    within(async {
        while process.panics() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        *ctx.request("ping", json!(null)).await.unwrap(),
        json!("pong")
    );
    let report = process.stop().await;
    assert_eq!(report.panics, 1);
}

/// Loops forever on a subscription and a timer; stops when the process stops.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Busy {}

#[module(name = "busy", message = Value)]
impl Busy {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        let mut sub = ctx.subscribe("#").await?;
        ctx.run(async move {
            loop {
                tokio::select! {
                    _ = sub.recv() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                }
            }
        });
        let me = ctx.clone();
        ctx.run(async move {
            me.stopping().await;
        });
        Ok(())
    }
}

#[tokio::test]
async fn stop_cancels_every_task_and_leaves_nothing_running() {
    let process = Process::<Value>::new(config("[module.busy]\n"))
        .module::<Busy>()
        .start()
        .await
        .unwrap();
    assert!(process.task_count() >= 2);
    let report = within(process.stop()).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.aborted, 0);
}

/// Asks the process to stop from inside.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Quitter {}

#[module(name = "quitter", message = Value)]
impl Quitter {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        let me = ctx.clone();
        ctx.run(async move { me.request_stop() });
        Ok(())
    }
}

#[tokio::test]
async fn a_module_can_stop_the_process_and_run_returns() {
    let report = within(
        Process::<Value>::new(config("[module.quitter]\n"))
            .module::<Quitter>()
            .run(),
    )
    .await
    .unwrap();
    assert!(report.drained);
}
