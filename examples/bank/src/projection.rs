//! The read side: balances built from the events a tracking processor
//! publishes (`bank.tracked.*`), answering the queries AxonServer routes
//! here (`bank.answer.*`) and publishing every change on
//! `bank.balance.updated`, which the bridge sends to the subscribers of
//! the balance query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use telamon_sdk::{Context, HandlerError, ModuleError, module};

use crate::account::apply;
use crate::message::{AccountState, Balance, Bank};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Projection {
    #[serde(skip)]
    accounts: Mutex<BTreeMap<String, AccountState>>,
}

#[module(name = "projection", message = Bank, description = "balances from tracked events; answers balance queries")]
impl Projection {
    async fn init(self: Arc<Self>, ctx: Context<Bank>) -> Result<(), ModuleError> {
        let mut events = ctx.subscribe("bank.tracked.*").await?;
        let (me, publisher) = (self.clone(), ctx.clone());
        ctx.run(async move {
            while let Some(event) = events.recv().await {
                let Some(changed) = me.apply(event.message()) else {
                    continue;
                };
                if let Err(e) = publisher
                    .publish("bank.balance.updated", Bank::Balance(changed))
                    .await
                {
                    tracing::warn!(error = %e, "balance update not published");
                }
            }
        });
        let me = self.clone();
        ctx.handle("bank.answer.balance", move |request| {
            let answer = match &**request.message() {
                Bank::GetBalance(q) => Ok(Bank::Balance(me.balance(&q.account_id))),
                other => Err(HandlerError::new(format!("not a balance query: {other:?}"))),
            };
            std::future::ready(answer)
        })
        .await?;
        let me = self.clone();
        ctx.handle("bank.answer.accounts", move |_| {
            let list = me
                .accounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|s| Balance {
                    account_id: s.account_id.clone(),
                    balance: s.balance,
                })
                .collect();
            std::future::ready(Ok::<_, HandlerError>(Bank::AccountList(list)))
        })
        .await?;
        Ok(())
    }
}

impl Projection {
    /// Applies an event; the account's new balance, if it was an account event.
    fn apply(&self, event: &Bank) -> Option<Balance> {
        let id = match event {
            Bank::AccountOpened(o) => &o.account_id,
            Bank::MoneyDeposited(a) | Bank::MoneyWithdrawn(a) => &a.account_id,
            _ => return None,
        };
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let state = accounts.entry(id.clone()).or_default();
        apply(state, event);
        Some(Balance {
            account_id: state.account_id.clone(),
            balance: state.balance,
        })
    }

    /// An account's balance (0 for an account not seen yet).
    fn balance(&self, id: &str) -> Balance {
        let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        Balance {
            account_id: id.to_owned(),
            balance: accounts.get(id).map_or(0, |s| s.balance),
        }
    }
}
