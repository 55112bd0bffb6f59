//! [`Headers`] ↔ AMQP message headers (a field table of long strings).

use lapin::types::{AMQPValue, FieldTable, ShortString};
use telamon_sdk::Headers;

/// AMQP header names are short strings.
const MAX_NAME_LEN: usize = 255;

/// The field table for `headers`; `None` when there are none (nothing is
/// allocated or sent for a message without headers).
pub(crate) fn encode(headers: &Headers) -> Result<Option<FieldTable>, String> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut table = FieldTable::default();
    for (name, value) in headers.iter() {
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "header name of {} bytes exceeds AMQP's {MAX_NAME_LEN}",
                name.len()
            ));
        }
        table.insert(ShortString::from(name), AMQPValue::LongString(value.into()));
    }
    Ok(Some(table))
}

/// The headers of a delivery. String values are taken as they are (invalid
/// UTF-8 replaced); numbers and booleans a foreign client set become text;
/// nested tables, arrays and binary values are left out.
pub(crate) fn decode(table: Option<&FieldTable>) -> Headers {
    let Some(table) = table else {
        return Headers::new();
    };
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::ShortShortInt(n) => n.to_string(),
                AMQPValue::ShortShortUInt(n) => n.to_string(),
                AMQPValue::ShortInt(n) => n.to_string(),
                AMQPValue::ShortUInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::Timestamp(n) => n.to_string(),
                AMQPValue::Float(n) => n.to_string(),
                AMQPValue::Double(n) => n.to_string(),
                _ => return None,
            };
            Some((name.as_str().to_owned(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_what_other_clients_send() {
        assert!(encode(&Headers::new()).unwrap().is_none());
        let h = Headers::new()
            .with("traceparent", "00-ab")
            .with("tenant", "acme");
        assert_eq!(decode(encode(&h).unwrap().as_ref()), h);
        let mut foreign = FieldTable::default();
        foreign.insert("retries".into(), AMQPValue::LongInt(3));
        foreign.insert(
            "nested".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        let got = decode(Some(&foreign));
        assert_eq!(got.get("retries"), Some("3"));
        assert_eq!(got.get("nested"), None);
        let long = Headers::new().with("x".repeat(256), "v");
        assert!(encode(&long).is_err());
    }
}
