//! Waits for pong, then sends `count` pings and echo requests and waits for the news.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use telamon_sdk::{Context, ModuleError, module};

use crate::message::Wire;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Pinger {
    count: u64,
    #[serde(deserialize_with = "telamon_process::deserialize_duration")]
    interval: Duration,
}

#[module(name = "pinger", message = Wire, description = "pings and asks the other process")]
impl Pinger {
    async fn init(self: Arc<Self>, ctx: Context<Wire>) -> Result<(), ModuleError> {
        let mut news = ctx.subscribe("pong.news").await?;
        let me = ctx.clone();
        ctx.run(async move {
            if let Err(e) = self.rounds(&me, &mut news).await {
                println!("ping: failed: {e}");
                crate::FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            me.request_stop();
        });
        Ok(())
    }
}

impl Pinger {
    async fn rounds(
        &self,
        me: &Context<Wire>,
        news: &mut telamon_sdk::Subscription<Wire>,
    ) -> Result<(), String> {
        {
            // Pong may still be starting: ask until it answers (bounded).
            let mut ready = false;
            for _ in 0..100 {
                match me.request("pong.echo", Wire::Echo("hello?".into())).await {
                    Ok(_) => {
                        ready = true;
                        break;
                    }
                    Err(e) if e.is_no_responder() => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            if !ready {
                return Err(
                    "pong never answered (is it running on the same broker and exchange?)"
                        .to_owned(),
                );
            }
            for n in 1..=self.count {
                me.publish(format!("ping.{n}"), Wire::Ping { n })
                    .await
                    .map_err(|e| e.to_string())?;
                let answer = me
                    .request("pong.echo", Wire::Echo(format!("round {n}")))
                    .await
                    .map_err(|e| e.to_string())?;
                println!("ping: request {n} answered: {answer:?}");
                let d = news.recv().await.ok_or("bus closed")?;
                println!("ping: news {n}: {:?}", d.message());
                tokio::time::sleep(self.interval).await;
            }
            println!("ping: all {} round trips done", self.count);
            Ok(())
        }
    }
}
