//! Selectors: where a value the bridge needs (a routing key, an aggregate
//! id, a sequence number) comes from in a bus message, so modules carry no
//! Axon types.
//!
//! | selector | reads |
//! |---|---|
//! | `/accountId` | a JSON pointer into the message content (an enum's variant content) |
//! | `header:tenant` | a header of the message or request |
//! | `topic:2` | word 2 of the topic (0-based) |

use std::fmt;

use serde_json::Value;
use telamon_sdk::{Headers, Topic};

/// A parsed selector.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    /// JSON pointer into the content.
    Pointer(String),
    /// A header.
    Header(String),
    /// A topic word.
    Word(usize),
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Pointer(p) => write!(f, "{p}"),
            Selector::Header(h) => write!(f, "header:{h}"),
            Selector::Word(n) => write!(f, "topic:{n}"),
        }
    }
}

/// What a selector reads from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) content: Option<&'a Value>,
    pub(crate) headers: &'a Headers,
    pub(crate) topic: &'a Topic,
}

/// Why a selector found no usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SelectorError {
    /// Not one of the three forms.
    #[error(
        "`{0}` is not a selector: use a JSON pointer (`/accountId`), `header:<name>` or `topic:<word>`"
    )]
    Syntax(String),
    /// Nothing at that place.
    #[error("the message has no value at `{0:?}`")]
    Absent(Selector),
    /// Something that is not a string, number or boolean.
    #[error("the value at `{0:?}` is not a string, number or boolean")]
    NotScalar(Selector),
    /// Not an integer where one is needed.
    #[error("the value at `{0:?}` is `{1}`, not an integer")]
    NotInteger(Selector, String),
}

impl Selector {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.starts_with('/') {
            return Ok(Selector::Pointer(text.to_owned()));
        }
        if let Some(h) = text.strip_prefix("header:").filter(|h| !h.is_empty()) {
            return Ok(Selector::Header(h.to_owned()));
        }
        if let Some(n) = text.strip_prefix("topic:").and_then(|n| n.parse().ok()) {
            return Ok(Selector::Word(n));
        }
        Err(SelectorError::Syntax(text.to_owned()))
    }

    /// True for a JSON pointer (the content must be looked at).
    pub(crate) fn needs_content(&self) -> bool {
        matches!(self, Selector::Pointer(_))
    }

    /// The value as text.
    pub(crate) fn text(&self, source: Source<'_>) -> Result<String, SelectorError> {
        match self {
            Selector::Pointer(p) => match source.content.and_then(|c| c.pointer(p)) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(Value::Bool(b)) => Ok(b.to_string()),
                Some(Value::Null) | None => Err(SelectorError::Absent(self.clone())),
                Some(_) => Err(SelectorError::NotScalar(self.clone())),
            },
            Selector::Header(h) => source
                .headers
                .get(h)
                .map(str::to_owned)
                .ok_or_else(|| SelectorError::Absent(self.clone())),
            Selector::Word(n) => source
                .topic
                .words()
                .nth(*n)
                .map(str::to_owned)
                .ok_or_else(|| SelectorError::Absent(self.clone())),
        }
    }

    /// The value as an integer (a JSON number, or text holding one).
    pub(crate) fn integer(&self, source: Source<'_>) -> Result<i64, SelectorError> {
        if let Selector::Pointer(p) = self
            && let Some(Value::Number(n)) = source.content.and_then(|c| c.pointer(p))
        {
            return n
                .as_i64()
                .ok_or_else(|| SelectorError::NotInteger(self.clone(), n.to_string()));
        }
        let text = self.text(source)?;
        text.trim()
            .parse()
            .map_err(|_| SelectorError::NotInteger(self.clone(), text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_read_their_places() {
        let content = serde_json::json!({"accountId": "a-1", "seq": 4, "nested": {"x": true}});
        let headers = Headers::new().with("tenant", "acme");
        let topic = Topic::new("bank.event.opened").unwrap();
        let source = Source {
            content: Some(&content),
            headers: &headers,
            topic: &topic,
        };
        let sel = |t: &str| Selector::parse(t).unwrap();
        assert_eq!(sel("/accountId").text(source).unwrap(), "a-1");
        assert_eq!(sel("/seq").integer(source).unwrap(), 4);
        assert_eq!(sel("/nested/x").text(source).unwrap(), "true");
        assert_eq!(sel("header:tenant").text(source).unwrap(), "acme");
        assert_eq!(sel("topic:2").text(source).unwrap(), "opened");
        assert!(matches!(
            sel("/nested").text(source),
            Err(SelectorError::NotScalar(_))
        ));
        assert!(matches!(
            sel("/none").text(source),
            Err(SelectorError::Absent(_))
        ));
        assert!(matches!(
            sel("/accountId").integer(source),
            Err(SelectorError::NotInteger(..))
        ));
        for bad in ["accountId", "header:", "topic:x", ""] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
