//! Topic patterns with AMQP topic-exchange semantics.

use std::fmt;
use std::sync::Arc;

use crate::error::TopicError;
use crate::topic::{Topic, validate};

/// A subscription or route pattern.
///
/// Exactly the semantics of an AMQP topic exchange, on every bus:
/// `*` matches exactly one word, `#` matches zero or more words.
///
/// ```
/// use telamon_sdk::Pattern;
/// let p = Pattern::new("sensor.*.temperature").unwrap();
/// assert!(p.matches("sensor.kitchen.temperature"));
/// assert!(!p.matches("sensor.temperature"));
/// assert!(Pattern::new("a.#").unwrap().matches("a"));
/// assert!(!Pattern::new("a.*").unwrap().matches("a"));
/// ```
#[derive(Clone)]
pub struct Pattern {
    text: Arc<str>,
    words: Arc<[Word]>,
    /// True when the pattern has no wildcard: matching is string equality.
    literal: bool,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Word {
    Literal(Box<str>),
    Star,
    Hash,
}

impl Word {
    fn accepts(&self, word: &str) -> bool {
        match self {
            Word::Literal(l) => &**l == word,
            Word::Star | Word::Hash => true,
        }
    }
}

impl Pattern {
    /// Validates and parses a pattern.
    pub fn new(pattern: impl AsRef<str>) -> Result<Self, TopicError> {
        let text = pattern.as_ref();
        validate(text, true)?;
        let mut words: Vec<Word> = Vec::new();
        for w in text.split('.') {
            let word = match w {
                "*" => Word::Star,
                "#" => Word::Hash,
                other => Word::Literal(other.into()),
            };
            // `#.#` means the same as `#`.
            if !(word == Word::Hash && words.last() == Some(&Word::Hash)) {
                words.push(word);
            }
        }
        let words: Arc<[Word]> = words.into();
        let literal = words.iter().all(|w| matches!(w, Word::Literal(_)));
        Ok(Pattern {
            text: Arc::from(text),
            words,
            literal,
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern contains no wildcard.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Does `topic` match this pattern?
    pub fn matches(&self, topic: &str) -> bool {
        if self.literal {
            return &*self.text == topic;
        }
        if self.words.iter().filter(|w| **w == Word::Hash).count() > 1 {
            // Several `#`: backtracking could take exponential time; use a table.
            return match_table(&self.words, topic);
        }
        let rest = if topic.is_empty() { None } else { Some(topic) };
        match_words(&self.words, rest)
    }

    /// Does the topic match this pattern?
    pub fn matches_topic(&self, topic: &Topic) -> bool {
        self.matches(topic.as_str())
    }

    /// Is there at least one topic that matches both patterns?
    ///
    /// The router uses this to find every bus a subscription must listen on.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        overlap(&self.words, &other.words)
    }
}

/// Splits off the first word; `None` for the rest means no words remain.
fn split_first(t: &str) -> (&str, Option<&str>) {
    match t.find('.') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    }
}

/// Matches pattern words against the remaining topic (`None` = no words left).
fn match_words(pattern: &[Word], topic: Option<&str>) -> bool {
    match pattern.split_first() {
        None => topic.is_none(),
        Some((Word::Hash, rest)) => {
            if rest.is_empty() {
                return true;
            }
            // `#` takes zero words, then one more at a time.
            let mut cur = topic;
            loop {
                if match_words(rest, cur) {
                    return true;
                }
                match cur {
                    None => return false,
                    Some(s) => cur = split_first(s).1,
                }
            }
        }
        Some((word, rest)) => match topic {
            None => false,
            Some(s) => {
                let (first, next) = split_first(s);
                word.accepts(first) && match_words(rest, next)
            }
        },
    }
}

/// Matching by dynamic programming: O(pattern words × topic words).
fn match_table(pattern: &[Word], topic: &str) -> bool {
    let words: Vec<&str> = if topic.is_empty() {
        Vec::new()
    } else {
        topic.split('.').collect()
    };
    let (n, m) = (pattern.len(), words.len());
    // ok[j]: pattern[i..] matches words[j..], for the current i (filled from the end).
    let mut ok = vec![false; m + 1];
    ok[m] = true;
    for i in (0..n).rev() {
        let mut next = vec![false; m + 1];
        for j in (0..=m).rev() {
            next[j] = match &pattern[i] {
                Word::Hash => ok[j] || (j < m && next[j + 1]),
                w => j < m && w.accepts(words[j]) && ok[j + 1],
            };
        }
        ok = next;
    }
    ok[0]
}

/// Intersection test of two patterns, by dynamic programming over word positions.
fn overlap(a: &[Word], b: &[Word]) -> bool {
    let (n, m) = (a.len(), b.len());
    // ok[i][j]: the suffixes a[i..] and b[j..] share a topic.
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            if i == n && j == m {
                continue;
            }
            let mut v = false;
            if i < n && a[i] == Word::Hash {
                // `#` matches nothing, or eats the word b[j] stands for.
                v |= ok[i + 1][j];
                if j < m && b[j] != Word::Hash {
                    v |= ok[i][j + 1];
                }
            }
            if j < m && b[j] == Word::Hash {
                v |= ok[i][j + 1];
                if i < n && a[i] != Word::Hash {
                    v |= ok[i + 1][j];
                }
            }
            if i < n && j < m && a[i] != Word::Hash && b[j] != Word::Hash {
                let same = match (&a[i], &b[j]) {
                    (Word::Literal(x), Word::Literal(y)) => x == y,
                    _ => true,
                };
                v |= same && ok[i + 1][j + 1];
            }
            ok[i][j] = v;
        }
    }
    ok[0][0]
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", &*self.text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

/// Anything that names a pattern: `&str`, `String`, `Pattern` or `&Pattern`.
pub trait IntoPattern {
    /// Converts into a validated pattern.
    fn into_pattern(self) -> Result<Pattern, TopicError>;
}

impl IntoPattern for Pattern {
    fn into_pattern(self) -> Result<Pattern, TopicError> {
        Ok(self)
    }
}

impl IntoPattern for &Pattern {
    fn into_pattern(self) -> Result<Pattern, TopicError> {
        Ok(self.clone())
    }
}

impl IntoPattern for &str {
    fn into_pattern(self) -> Result<Pattern, TopicError> {
        Pattern::new(self)
    }
}

impl IntoPattern for String {
    fn into_pattern(self) -> Result<Pattern, TopicError> {
        Pattern::new(self)
    }
}

impl IntoPattern for &String {
    fn into_pattern(self) -> Result<Pattern, TopicError> {
        Pattern::new(self)
    }
}
