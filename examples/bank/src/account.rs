//! The account aggregate: answers the commands AxonServer routes to this
//! service (`bank.handle.*`), deciding against the account's events.
//!
//! For each command it sources the account (`bank.aggregate.load`: the
//! latest snapshot and the events after it), applies the overdraft rule,
//! and appends the new events with the next sequence number
//! (`bank.event.append`, the `axon-sequence` header). Every
//! `snapshot-every` events it also appends a snapshot. A concurrent writer
//! makes the append fail with AXONIQ-2000, which reaches the command's
//! sender in the message of the command's error (AXONIQ-4002). The module holds no Axon types: the
//! bridge's config maps its topics.

use std::sync::Arc;

use serde::Deserialize;
use telamon_sdk::{Context, HandlerError, Headers, ModuleError, Request, RequestOptions, module};

use crate::message::{AccountId, AccountOpened, AccountState, Amount, Bank, OpenAccount};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Account {
    /// A snapshot after this many events.
    snapshot_every: i64,
}

#[module(name = "account", message = Bank, description = "the account aggregate: commands in, events out")]
impl Account {
    async fn init(self: Arc<Self>, ctx: Context<Bank>) -> Result<(), ModuleError> {
        let me = self.clone();
        let c = ctx.clone();
        ctx.handle("bank.handle.*", move |request: Request<Bank>| {
            let (me, ctx) = (me.clone(), c.clone());
            async move { me.decide(&ctx, request.into_message()).await }
        })
        .await?;
        Ok(())
    }
}

impl Account {
    async fn decide(&self, ctx: &Context<Bank>, command: Arc<Bank>) -> Result<Bank, HandlerError> {
        let id = match &*command {
            Bank::OpenAccount(OpenAccount { account_id, .. })
            | Bank::DepositMoney(Amount { account_id, .. })
            | Bank::WithdrawMoney(Amount { account_id, .. }) => account_id.clone(),
            other => return Err(HandlerError::new(format!("not a bank command: {other:?}"))),
        };
        let (state, last) = load(ctx, &id).await?;
        let events = match (&*command, &state) {
            (Bank::OpenAccount(open), None) => {
                let mut events = vec![Bank::AccountOpened(AccountOpened {
                    account_id: id.clone(),
                    overdraft_limit: open.overdraft_limit,
                })];
                if open.initial_deposit > 0 {
                    events.push(Bank::MoneyDeposited(Amount {
                        account_id: id.clone(),
                        amount: open.initial_deposit,
                    }));
                }
                events
            }
            (Bank::OpenAccount(_), Some(_)) => {
                return Err(
                    HandlerError::new(format!("account {id} is already open")).with_code("exists")
                );
            }
            (_, None) => {
                return Err(
                    HandlerError::new(format!("no account {id}")).with_code("unknown-account")
                );
            }
            (Bank::DepositMoney(d), Some(_)) if d.amount <= 0 => {
                return Err(HandlerError::new("a deposit must be positive").with_code("bad-amount"));
            }
            (Bank::DepositMoney(d), Some(_)) => vec![Bank::MoneyDeposited(d.clone())],
            (Bank::WithdrawMoney(w), Some(s)) if s.balance - w.amount < -s.overdraft_limit => {
                return Err(HandlerError::new(format!(
                    "insufficient funds: balance {}, overdraft limit {}, asked {}",
                    s.balance, s.overdraft_limit, w.amount
                ))
                .with_code("overdraft"));
            }
            (Bank::WithdrawMoney(w), Some(_)) => vec![Bank::MoneyWithdrawn(w.clone())],
            _ => unreachable!("commands were matched above"),
        };
        let mut state = state.unwrap_or_default();
        for e in &events {
            apply(&mut state, e);
        }
        let count = events.len() as i64;
        // One transaction: every event of the command or none.
        let sequence = Headers::new().with("axon-sequence", (last + 1).to_string());
        ctx.request_with(
            "bank.event.append",
            Bank::Batch(events),
            RequestOptions::new().headers(sequence),
        )
        .await?;
        let new_last = last + count;
        if (new_last + 1) / self.snapshot_every > (last + 1) / self.snapshot_every {
            let at = Headers::new().with("axon-sequence", new_last.to_string());
            if let Err(e) = ctx
                .request_with(
                    "bank.snapshot",
                    Bank::AccountState(state.clone()),
                    RequestOptions::new().headers(at),
                )
                .await
            {
                tracing::warn!(account = %id, error = %e, "snapshot not stored (the events are)");
            }
        }
        Ok(Bank::AccountState(state))
    }
}

/// The account's state and its last sequence number (−1: no account).
async fn load(ctx: &Context<Bank>, id: &str) -> Result<(Option<AccountState>, i64), HandlerError> {
    let which = Bank::GetBalance(AccountId {
        account_id: id.to_owned(),
    });
    let history = ctx.request("bank.aggregate.load", which).await?;
    let Bank::AggregateEvents(history) = &*history else {
        return Err(HandlerError::new(
            "the aggregate read did not return events",
        ));
    };
    let mut state = match history.snapshot.as_deref() {
        Some(Bank::AccountState(s)) => Some(s.clone()),
        _ => None,
    };
    for e in &history.events {
        apply(state.get_or_insert_with(Default::default), e);
    }
    Ok((state, history.last_sequence))
}

/// One event's effect on the state.
pub(crate) fn apply(state: &mut AccountState, event: &Bank) {
    match event {
        Bank::AccountOpened(o) => {
            state.account_id = o.account_id.clone();
            state.overdraft_limit = o.overdraft_limit;
        }
        Bank::MoneyDeposited(d) => state.balance += d.amount,
        Bank::MoneyWithdrawn(w) => state.balance -= w.amount,
        _ => {}
    }
}
