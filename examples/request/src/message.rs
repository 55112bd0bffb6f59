//! Requests and responses of the calculator.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Calc {
    Divide { a: f64, b: f64 },
    Quotient(f64),
    Ping,
    Pong,
}
