//! An application message enum, as a Telamon service would have one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenAccount {
    pub account_id: String,
    pub overdraft: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountOpened {
    pub account_id: String,
    pub overdraft: i64,
    pub sequence: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyDeposited {
    pub account_id: String,
    pub amount: i64,
    pub sequence: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetBalance {
    pub account_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub account_id: String,
    pub balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregateEvents {
    pub aggregate_id: String,
    pub snapshot: Option<Box<Bank>>,
    pub snapshot_sequence: Option<i64>,
    pub events: Vec<Bank>,
    pub last_sequence: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaughtUp {
    pub processor: String,
    pub token: i64,
}

/// Every message of the test service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Bank {
    OpenAccount(OpenAccount),
    AccountOpened(AccountOpened),
    MoneyDeposited(MoneyDeposited),
    GetBalance(GetBalance),
    Balance(Balance),
    AccountSnapshot(Balance),
    Batch(Vec<Bank>),
    QueryResults(Vec<Bank>),
    AggregateEvents(AggregateEvents),
    CaughtUp(CaughtUp),
    UndecodableEvent(serde_json::Value),
    Text(String),
    Empty,
}

pub fn open(id: &str, overdraft: i64) -> Bank {
    Bank::OpenAccount(OpenAccount {
        account_id: id.to_owned(),
        overdraft,
    })
}

pub fn opened(id: &str, overdraft: i64, sequence: i64) -> Bank {
    Bank::AccountOpened(AccountOpened {
        account_id: id.to_owned(),
        overdraft,
        sequence,
    })
}

pub fn deposited(id: &str, amount: i64, sequence: i64) -> Bank {
    Bank::MoneyDeposited(MoneyDeposited {
        account_id: id.to_owned(),
        amount,
        sequence,
    })
}
