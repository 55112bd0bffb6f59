//! Durations in config: a number of seconds (`5`, `0.25`) or text with a unit
//! (`"250ms"`, `"5s"`, `"2m"`), the same spelling everywhere in a process's
//! config.
//!
//! ```
//! use std::time::Duration;
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     #[serde(deserialize_with = "telamon_sdk::duration::deserialize")]
//!     every: Duration,
//! }
//! assert_eq!(telamon_sdk::duration::parse("250ms"), Ok(Duration::from_millis(250)));
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, or a bare number of seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (t[..i].trim(), &t[i..]),
        None => (t, "s"),
    };
    let value: f64 = num.parse().map_err(|_| {
        format!("`{text}` is not a duration (use e.g. 5, 0.5, \"250ms\", \"5s\", \"2m\")")
    })?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{text}` is not a duration that fits (non-negative, finite)"))
}

/// Serde helper: `#[serde(deserialize_with = "telamon_sdk::duration::deserialize")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(s) => Ok(Duration::from_secs(s)),
        Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
        Raw::Float(f) => Err(serde::de::Error::custom(format!(
            "{f} is not a non-negative duration"
        ))),
        Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_seconds() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("1e30").is_err());
        assert!(parse("99999999999999999999999h").is_err());
    }
}
