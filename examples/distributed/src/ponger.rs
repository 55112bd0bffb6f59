//! Prints pings, answers each with news, echoes requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use telamon_sdk::{Context, HandlerError, ModuleError, Request, module};

use crate::message::Wire;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Ponger {
    stop_after: u64,
}

#[module(name = "ponger", message = Wire, description = "answers pings and echo requests")]
impl Ponger {
    async fn init(self: Arc<Self>, ctx: Context<Wire>) -> Result<(), ModuleError> {
        let mut pings = ctx.subscribe("ping.#").await?;
        // Stop once `stop-after` pings were answered with news and as many
        // rounds were echoed (0: never).
        let done = Arc::new(AtomicU64::new(0));
        let stop_after = self.stop_after;
        let (echoed, stopper) = (done.clone(), ctx.clone());
        ctx.handle("pong.echo", move |request: Request<Wire>| {
            let m = request.into_message();
            let (echoed, stopper) = (echoed.clone(), stopper.clone());
            async move {
                match &*m {
                    Wire::Echo(text) => {
                        if text.starts_with("round")
                            && echoed.fetch_add(1, Ordering::Relaxed) + 1 == 2 * stop_after
                        {
                            println!("pong: done");
                            stopper.request_stop();
                        }
                        Ok(Wire::Echo(format!("echo: {text}")))
                    }
                    other => Err(HandlerError::new(format!(
                        "pong.echo takes Echo, got {other:?}"
                    ))),
                }
            }
        })
        .await?;
        println!("pong: ready");
        let seen = done;
        let me = ctx.clone();
        ctx.run_fallible(async move {
            while let Some(d) = pings.recv().await {
                let Wire::Ping { n } = **d.message() else {
                    continue;
                };
                println!("pong: got ping {n} on {}", d.topic());
                me.publish(
                    "pong.news",
                    Wire::News {
                        text: format!("pong saw ping {n}"),
                    },
                )
                .await?;
                if seen.fetch_add(1, Ordering::Relaxed) + 1 == 2 * self.stop_after {
                    println!("pong: done");
                    me.request_stop();
                }
            }
            Ok::<_, telamon_sdk::PublishError>(())
        });
        Ok(())
    }
}
