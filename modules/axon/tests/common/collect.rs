//! A module that subscribes during `init` — before any module task runs —
//! and hands the subscription to the test, so nothing published at start-up
//! is missed.
//!
//! ```toml
//! [module.events]
//! class = "collect"
//! key = "unique-per-test"
//! pattern = "bank.tracked.#"
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use telamon_sdk::{Context, Message, Module, ModuleError, SubscribeOptions, Subscription};

static TAKEN: Mutex<Option<HashMap<String, Box<dyn Any + Send>>>> = Mutex::new(None);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CollectConfig {
    key: String,
    pattern: String,
    #[serde(default = "capacity")]
    capacity: usize,
}

fn capacity() -> usize {
    65_536
}

pub struct Collect<M>(CollectConfig, PhantomData<fn() -> M>);

impl<M: Message> Module<M> for Collect<M> {
    const NAME: &'static str = "collect";
    type Config = CollectConfig;

    fn new(config: CollectConfig) -> Result<Self, ModuleError> {
        Ok(Collect(config, PhantomData))
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let sub = ctx
            .subscribe_with(
                self.0.pattern.as_str(),
                SubscribeOptions::new().capacity(self.0.capacity),
            )
            .await?;
        TAKEN
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(self.0.key.clone(), Box::new(sub));
        Ok(())
    }
}

/// The subscription the `collect` module with `key` made.
pub fn take<M: Message>(key: &str) -> Subscription<M> {
    let any = TAKEN
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .remove(key)
        .expect("a collect module with this key was initialised");
    *any.downcast::<Subscription<M>>()
        .expect("the message type matches")
}

/// A `collect` module table.
pub fn table(id: &str, key: &str, pattern: &str, capacity: usize) -> String {
    format!(
        "\n[module.{id}]\nclass = \"collect\"\nkey = \"{key}\"\npattern = \"{pattern}\"\ncapacity = {capacity}\n"
    )
}
