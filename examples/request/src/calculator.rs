//! Answers `calc.divide` (an error for division by zero) and `calc.slow` (after `slow-delay`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use telamon_sdk::{Context, HandlerError, ModuleError, Request, module};

use crate::message::Calc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Calculator {
    #[serde(deserialize_with = "telamon_process::deserialize_duration")]
    slow_delay: Duration,
}

#[module(name = "calculator", message = Calc, description = "divides, slowly if asked")]
impl Calculator {
    async fn init(self: Arc<Self>, ctx: Context<Calc>) -> Result<(), ModuleError> {
        ctx.handle("calc.divide", |request: Request<Calc>| async move {
            let request = request.into_message();
            match *request {
                Calc::Divide { b: 0.0, .. } => {
                    Err(HandlerError::new("division by zero").with_code("div-zero"))
                }
                Calc::Divide { a, b } => Ok(Calc::Quotient(a / b)),
                _ => Err(HandlerError::new("calc.divide takes Divide")),
            }
        })
        .await?;
        let delay = self.slow_delay;
        ctx.handle("calc.slow", move |_| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, HandlerError>(Calc::Pong)
        })
        .await?;
        Ok(())
    }
}
