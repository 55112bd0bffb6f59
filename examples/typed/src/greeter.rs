//! Answers every clock tick with a greeting; stops the process after `stop-after` ticks.

use std::sync::Arc;

use serde::Deserialize;
use telamon_sdk::{Context, ModuleError, module};

use crate::message::Message;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Greeter {
    stop_after: u64,
}

#[module(name = "greeter", message = Message, description = "greets every tick")]
impl Greeter {
    async fn init(self: Arc<Self>, ctx: Context<Message>) -> Result<(), ModuleError> {
        let mut ticks = ctx.subscribe("clock.tick").await?;
        let me = ctx.clone();
        ctx.run_fallible(async move {
            while let Some(delivery) = ticks.recv().await {
                let Message::Tick(tick) = **delivery.message() else {
                    continue;
                };
                let text = format!("good tick number {}", tick.number);
                println!("greeter: {text}");
                me.publish(
                    "greeting.tick",
                    Message::Greeting {
                        to_tick: tick.number,
                        text,
                    },
                )
                .await?;
                if tick.number >= self.stop_after {
                    me.request_stop();
                }
            }
            Ok::<_, telamon_sdk::PublishError>(())
        });
        Ok(())
    }
}
