//! Makes one request of each kind, prints the outcome, then stops the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use telamon_sdk::{Context, ModuleError, RequestError, module};

use crate::message::Calc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Requester {
    #[serde(deserialize_with = "telamon_process::deserialize_duration")]
    short_timeout: Duration,
}

fn show(what: &str, started: Instant, outcome: Result<Arc<Calc>, RequestError>) {
    let took = started.elapsed();
    match outcome {
        Ok(answer) => println!("{what:<34} -> answer {answer:?} ({took:.1?})"),
        Err(e) => println!("{what:<34} -> error: {e} ({took:.1?})"),
    }
}

#[module(name = "requester", message = Calc, description = "tries every request outcome")]
impl Requester {
    async fn init(self: Arc<Self>, ctx: Context<Calc>) -> Result<(), ModuleError> {
        let c = ctx.clone();
        ctx.run(async move {
            let t = Instant::now();
            show(
                "divide 10 by 4",
                t,
                c.request("calc.divide", Calc::Divide { a: 10.0, b: 4.0 })
                    .await,
            );
            let t = Instant::now();
            show(
                "divide 1 by 0 (handler error)",
                t,
                c.request("calc.divide", Calc::Divide { a: 1.0, b: 0.0 })
                    .await,
            );
            let t = Instant::now();
            let slow = c
                .request_with_timeout("calc.slow", Calc::Ping, self.short_timeout)
                .await;
            show("slow handler, short timeout", t, slow);
            let t = Instant::now();
            show(
                "nobody handles this topic",
                t,
                c.request("nobody.home", Calc::Ping).await,
            );
            c.request_stop();
        });
        Ok(())
    }
}
