//! Optional string key/value pairs that travel with a message or a request.

use std::fmt;
use std::sync::Arc;

/// Headers of one message or request: AMQP headers on RabbitMQ, shared as
/// they are on the in-process bus. Empty headers allocate nothing, so a
/// message without them costs nothing extra anywhere.
///
/// They carry the W3C `traceparent` (see [`TraceContext`](crate::TraceContext))
/// and, through the AxonServer bridge, Axon metadata.
///
/// ```
/// use telamon_sdk::Headers;
/// let h = Headers::new().with("tenant", "acme").with("tenant", "globex");
/// assert_eq!(h.get("tenant"), Some("globex"));
/// assert_eq!(h.len(), 1);
/// assert!(Headers::new().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Headers(Option<Arc<Vec<(String, String)>>>);

/// Header names whose values `Debug` hides.
const SECRET_WORDS: [&str; 5] = ["token", "authorization", "password", "secret", "cookie"];

impl Headers {
    /// No headers (allocates nothing).
    pub const fn new() -> Self {
        Headers(None)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    /// The value of `name` (names are compared exactly).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Every header, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|v| v.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        let list = Arc::make_mut(self.0.get_or_insert_with(Default::default));
        match list.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => list.push((name, value)),
        }
        self
    }

    /// [`insert`](Self::insert), by value.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let list = Arc::make_mut(self.0.as_mut()?);
        let at = list.iter().position(|(k, _)| k == name)?;
        Some(list.remove(at).1)
    }
}

/// Equal when they hold the same names with the same values, in any order
/// (AMQP hands headers back sorted by name).
impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for Headers {}

/// Later pairs replace earlier ones with the same name; linear in the number
/// of pairs (a hostile peer's thousands of headers cost no quadratic scan).
impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut list: Vec<(String, String)> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (k, v) in iter {
            let (k, v) = (k.into(), v.into());
            match at.get(&k) {
                Some(&i) => list[i].1 = v,
                None => {
                    at.insert(k.clone(), list.len());
                    list.push((k, v));
                }
            }
        }
        if list.is_empty() {
            Headers::new()
        } else {
            Headers(Some(Arc::new(list)))
        }
    }
}

/// Shows names and values, except values of names that look secret
/// (`…token…`, `authorization`, `…password…`, `…secret…`, `cookie`).
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in self.iter() {
            let lower = k.to_ascii_lowercase();
            if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                map.entry(&k, &"***");
            } else {
                map.entry(&k, &v);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_headers_allocate_nothing_and_clones_share() {
        let h = Headers::new();
        assert!(h.0.is_none() && h.is_empty() && h.get("x").is_none());
        let a = Headers::new().with("a", "1").with("b", "2");
        let mut b = a.clone();
        assert!(Arc::ptr_eq(a.0.as_ref().unwrap(), b.0.as_ref().unwrap()));
        b.insert("a", "9");
        assert_eq!((a.get("a"), b.get("a")), (Some("1"), Some("9")));
        assert_eq!(b.remove("b").as_deref(), Some("2"));
        assert_eq!(b.iter().collect::<Vec<_>>(), [("a", "9")]);
    }

    #[test]
    fn debug_hides_secret_values() {
        let h = Headers::new()
            .with("axoniq-access-token", "hunter2")
            .with("Authorization", "Bearer x")
            .with("traceparent", "00-ab-cd-01");
        let shown = format!("{h:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("Bearer"),
            "{shown}"
        );
        assert!(shown.contains("00-ab-cd-01"), "{shown}");
    }
}
