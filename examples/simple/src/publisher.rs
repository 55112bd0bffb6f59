//! Publishes `count` JSON greetings on `topic`, one every `interval`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use telamon_sdk::{Context, ModuleError, module};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Publisher {
    topic: String,
    count: u64,
    #[serde(deserialize_with = "telamon_process::deserialize_duration")]
    interval: Duration,
}

#[module(name = "publisher", message = Value, description = "publishes numbered greetings")]
impl Publisher {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        let publisher = ctx.clone();
        ctx.run_fallible(async move {
            for n in 1..=self.count {
                let message = json!({ "n": n, "text": format!("hello #{n}") });
                println!("publisher  -> {}: {message}", self.topic);
                publisher.publish(self.topic.as_str(), message).await?;
                tokio::time::sleep(self.interval).await;
            }
            Ok::<_, telamon_sdk::PublishError>(())
        });
        Ok(())
    }
}
