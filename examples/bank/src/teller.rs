//! Drives a short scenario through the bus and prints what happens: it
//! watches a balance (a subscription query), sends commands (open, deposit,
//! withdraw past the overdraft), queries the read side, then stops the
//! process. Every command goes to AxonServer and comes back to the account
//! module through the bridge; every balance comes from events the tracking
//! processor delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use telamon_sdk::{Context, Headers, ModuleError, module};

use crate::message::{AccountId, Amount, Balance, Bank, ListAccounts, OpenAccount};

/// Header of the teller's own probe updates (see `run`).
const PROBE: &str = "teller-probe";

/// Set once the whole scenario went as expected; `main` exits 1 otherwise.
pub(crate) static SCENARIO_OK: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Teller {
    /// Longest wait for the read side to show a change.
    #[serde(deserialize_with = "telamon_process::deserialize_duration")]
    patience: Duration,
}

#[module(name = "teller", message = Bank, description = "runs the demo scenario, then stops the process")]
impl Teller {
    async fn init(self: Arc<Self>, ctx: Context<Bank>) -> Result<(), ModuleError> {
        let c = ctx.clone();
        ctx.run(async move {
            match self.scenario(&c).await {
                Ok(()) => {
                    SCENARIO_OK.store(true, Ordering::SeqCst);
                    println!("teller: done");
                }
                Err(e) => println!("teller: the scenario failed: {e}"),
            }
            c.request_stop();
        });
        Ok(())
    }
}

fn amount(id: &str, amount: i64) -> Amount {
    Amount {
        account_id: id.to_owned(),
        amount,
    }
}

impl Teller {
    async fn scenario(&self, ctx: &Context<Bank>) -> Result<(), String> {
        // Names unique to this run, so a real AxonServer can run it again.
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            & 0xffff;
        let (alice, bob) = (format!("alice-{run:04x}"), format!("bob-{run:04x}"));
        let mut updates = ctx
            .subscribe(format!("bank.balance-of.{alice}").as_str())
            .await
            .map_err(|e| e.to_string())?;
        let mut projected = ctx
            .subscribe("bank.balance.updated")
            .await
            .map_err(|e| e.to_string())?;
        let get = |id: &str| {
            Bank::GetBalance(AccountId {
                account_id: id.to_owned(),
            })
        };

        let initial = ctx
            .request(format!("bank.watch.{alice}").as_str(), get(&alice))
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "teller: watching {alice} (subscription query); initial result {}",
            show(&initial)
        );
        // AxonServer tells the handling side about a new subscription on its
        // own schedule: the initial result (a separate query) can come back
        // first, and an update published before the handler knows the
        // subscription goes nowhere. So the teller makes sure it is live: it
        // publishes the balance it was given, marked as a probe, until one
        // comes back through the subscription.
        tokio::time::timeout(self.patience, async {
            loop {
                let probe = Headers::new().with(PROBE, "1");
                ctx.publish_with("bank.balance.updated", initial.clone(), probe)
                    .await
                    .map_err(|e| e.to_string())?;
                match tokio::time::timeout(Duration::from_millis(200), updates.recv()).await {
                    Ok(Some(_)) => return Ok::<_, String>(()),
                    Ok(None) => return Err("the update subscription closed".to_owned()),
                    Err(_) => {}
                }
            }
        })
        .await
        .map_err(|_| {
            format!(
                "the subscription query was not live within {:?}",
                self.patience
            )
        })??;

        let commands = [
            (
                "open",
                Bank::OpenAccount(OpenAccount {
                    account_id: alice.clone(),
                    overdraft_limit: 100,
                    initial_deposit: 50,
                }),
                true,
            ),
            ("deposit", Bank::DepositMoney(amount(&alice, 30)), true),
            ("withdraw", Bank::WithdrawMoney(amount(&alice, 150)), true),
            ("withdraw", Bank::WithdrawMoney(amount(&alice, 50)), false),
            (
                "open",
                Bank::OpenAccount(OpenAccount {
                    account_id: alice.clone(),
                    overdraft_limit: 0,
                    initial_deposit: 0,
                }),
                false,
            ),
            (
                "open",
                Bank::OpenAccount(OpenAccount {
                    account_id: bob.clone(),
                    overdraft_limit: 0,
                    initial_deposit: 10,
                }),
                true,
            ),
        ];
        for (verb, command, should_pass) in commands {
            let what = describe(&command);
            match ctx
                .request(format!("bank.command.{verb}").as_str(), command)
                .await
            {
                Ok(state) if should_pass => println!("teller: {what}: done, {}", show(&state)),
                Err(e) if !should_pass => {
                    let (code, message) = e
                        .handler_error()
                        .map(|h| (h.code().unwrap_or("-").to_owned(), h.message().to_owned()))
                        .unwrap_or_else(|| ("-".to_owned(), e.to_string()));
                    println!("teller: {what}: refused as expected [{code}] {message}");
                }
                Ok(state) => {
                    return Err(format!(
                        "{what} should have been refused, got {}",
                        show(&state)
                    ));
                }
                Err(e) => return Err(format!("{what} failed: {e}")),
            }
        }

        let mut seen = Vec::new();
        tokio::time::timeout(self.patience, async {
            while let Some(u) = updates.recv().await {
                if u.headers().get(PROBE).is_some() {
                    continue;
                }
                if let Bank::Balance(b) = &**u.message() {
                    seen.push(b.balance);
                    if b.balance == -70 {
                        break;
                    }
                }
            }
        })
        .await
        .map_err(|_| format!("no update to -70 within {:?}; saw {seen:?}", self.patience))?;
        println!("teller: balance updates of {alice} through the subscription query: {seen:?}");
        ctx.request(format!("bank.unwatch.{alice}").as_str(), get(&alice))
            .await
            .map_err(|e| e.to_string())?;

        // The read side is eventually consistent: wait until it saw bob.
        tokio::time::timeout(self.patience, async {
            while let Some(u) = projected.recv().await {
                if matches!(&**u.message(), Bank::Balance(b) if b.account_id == bob && b.balance == 10) {
                    break;
                }
            }
        })
        .await
        .map_err(|_| "the projection did not see bob's account in time".to_owned())?;
        let balance = ctx
            .request("bank.query.balance", get(&alice))
            .await
            .map_err(|e| e.to_string())?;
        println!("teller: query {alice}: {}", show(&balance));
        let list = ctx
            .request("bank.query.accounts", Bank::ListAccounts(ListAccounts {}))
            .await
            .map_err(|e| e.to_string())?;
        println!("teller: query all accounts: {}", show(&list));
        match (&*balance, &*list) {
            (Bank::Balance(Balance { balance: -70, .. }), Bank::AccountList(all))
                if all.iter().any(|b| b.account_id == bob && b.balance == 10) =>
            {
                Ok(())
            }
            _ => Err("the read side does not show the expected balances".to_owned()),
        }
    }
}

fn describe(command: &Bank) -> String {
    match command {
        Bank::OpenAccount(o) => format!(
            "open {} (overdraft limit {}, {} deposited)",
            o.account_id, o.overdraft_limit, o.initial_deposit
        ),
        Bank::DepositMoney(a) => format!("deposit {} into {}", a.amount, a.account_id),
        Bank::WithdrawMoney(a) => format!("withdraw {} from {}", a.amount, a.account_id),
        other => format!("{other:?}"),
    }
}

fn show(message: &Bank) -> String {
    match message {
        Bank::AccountState(s) => format!(
            "balance {} (overdraft limit {})",
            s.balance, s.overdraft_limit
        ),
        Bank::Balance(b) => format!("balance {}", b.balance),
        Bank::AccountList(all) => all
            .iter()
            .map(|b| format!("{} {}", b.account_id, b.balance))
            .collect::<Vec<_>>()
            .join(", "),
        other => format!("{other:?}"),
    }
}
