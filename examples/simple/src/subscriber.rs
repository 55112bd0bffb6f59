//! Prints every message on `pattern`; stops the process after `stop-after` of them.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use telamon_sdk::{Context, ModuleError, module};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Subscriber {
    pattern: String,
    stop_after: u64,
}

#[module(name = "subscriber", message = Value, description = "prints what it receives")]
impl Subscriber {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        let mut subscription = ctx.subscribe(self.pattern.as_str()).await?;
        let stopper = ctx.clone();
        ctx.run(async move {
            let mut seen = 0;
            while let Some(delivery) = subscription.recv().await {
                seen += 1;
                println!("subscriber <- {}: {}", delivery.topic(), delivery.message());
                if seen == self.stop_after {
                    println!("subscriber: got all {seen}; stopping the process");
                    stopper.request_stop();
                }
            }
        });
        Ok(())
    }
}
