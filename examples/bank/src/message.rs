//! Every message of the bank. The variant names are the payload types'
//! simple names (`type-prefix = "com.example.bank."`), so a Java Axon
//! application with classes `com.example.bank.OpenAccount` … reads and
//! writes the same JSON.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenAccount {
    pub(crate) account_id: String,
    pub(crate) overdraft_limit: i64,
    pub(crate) initial_deposit: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Amount {
    pub(crate) account_id: String,
    pub(crate) amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountOpened {
    pub(crate) account_id: String,
    pub(crate) overdraft_limit: i64,
}

/// The aggregate's state, also its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountState {
    pub(crate) account_id: String,
    pub(crate) balance: i64,
    pub(crate) overdraft_limit: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountId {
    pub(crate) account_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Balance {
    pub(crate) account_id: String,
    pub(crate) balance: i64,
}

/// No fields: Jackson reads `{}` into an empty class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ListAccounts {}

/// What the bridge answers a `read-aggregate` request with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AggregateEvents {
    pub(crate) snapshot: Option<Box<Bank>>,
    pub(crate) events: Vec<Bank>,
    pub(crate) last_sequence: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Bank {
    // Commands.
    OpenAccount(OpenAccount),
    DepositMoney(Amount),
    WithdrawMoney(Amount),
    // Events.
    AccountOpened(AccountOpened),
    MoneyDeposited(Amount),
    MoneyWithdrawn(Amount),
    // The snapshot.
    AccountState(AccountState),
    // Queries and their answers.
    GetBalance(AccountId),
    Balance(Balance),
    ListAccounts(ListAccounts),
    AccountList(Vec<Balance>),
    // Several events appended in one transaction.
    Batch(Vec<Bank>),
    // Bridge documents.
    AggregateEvents(AggregateEvents),
}
