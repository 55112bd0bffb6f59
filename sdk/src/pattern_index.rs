//! Which registrations a topic reaches, without looking at the ones it does
//! not: the matching structure every bus shares.
//!
//! - **Literal patterns** (no wildcard; the common case: one subscription per
//!   entity, per client, per account) sit in a hash map keyed by the topic:
//!   a lookup costs one hash of the topic, however many there are.
//! - **Wildcard patterns** sit in a trie over their words, as an AMQP
//!   broker's topic exchange keeps them: a lookup walks the topic's words
//!   through the literal, `*` and `#` branches that exist, so its cost grows
//!   with the topic's length and the patterns that match, not with the
//!   number that do not.
//!
//! Insert and remove touch one map entry or one trie path: O(pattern words)
//! each, nothing copied. Each registration carries an id; lookups that need
//! an order (first registered handler, first route) take the smallest.
//!
//! # Under stress
//!
//! - **Many registrations on one pattern** (a hot topic with thousands of
//!   subscribers): they share one slot; removing one scans that slot.
//! - **Patterns with several `#`** (`#.a.#.b.#`): a walk that reaches the
//!   same trie node at the same topic word twice does not go on from it
//!   again (a `#` takes one more word per step), so a lookup stays
//!   O(trie nodes × topic words) and reports each registration once.
//! - **Values dropped during a lookup**: none are; but a bus that drops
//!   deliveries while it holds a read lock on its index (a full
//!   `drop-oldest` queue) must not let that drop unsubscribe from the same
//!   bus — see the in-memory bus.
//!
//! ```
//! use telamon_sdk::Pattern;
//! use telamon_sdk::bus::PatternIndex;
//!
//! let mut index = PatternIndex::new();
//! index.insert(1, &Pattern::new("orders.42.#").unwrap(), "order 42");
//! index.insert(2, &Pattern::new("orders.*.paid").unwrap(), "every payment");
//! index.insert(3, &Pattern::new("orders.7.paid").unwrap(), "order 7");
//! let mut hit: Vec<&str> = index.matching("orders.42.paid").into_iter().map(|(_, v)| *v).collect();
//! hit.sort();
//! assert_eq!(hit, ["every payment", "order 42"]);
//! assert_eq!(index.remove(2, &Pattern::new("orders.*.paid").unwrap()), Some("every payment"));
//! assert_eq!(index.len(), 2);
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::pattern::Pattern;

/// Literal patterns and trie branches, by word (the standard hasher: a
/// cheaper one measured no different in `inproc-fanout4`).
type Map<V> = HashMap<Box<str>, V>;

/// Registrations by pattern: see the [module documentation](self).
pub struct PatternIndex<T> {
    /// Literal patterns, by their text.
    exact: Map<Slot<T>>,
    /// Wildcard patterns, by their words.
    root: Node<T>,
    len: usize,
}

/// The registrations of one pattern (usually one).
type Slot<T> = Vec<(u64, T)>;

struct Node<T> {
    literal: Map<Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    /// Registrations whose pattern ends here.
    here: Slot<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: Map::default(),
            star: None,
            hash: None,
            here: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

impl<T> Default for PatternIndex<T> {
    fn default() -> Self {
        PatternIndex {
            exact: Map::default(),
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> fmt::Debug for PatternIndex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatternIndex")
            .field("literal_patterns", &self.exact.len())
            .field("registrations", &self.len)
            .finish()
    }
}

/// The words of a pattern, `#.#` folded into `#` (they mean the same).
fn words(pattern: &Pattern) -> impl Iterator<Item = &str> {
    let mut previous_hash = false;
    pattern.as_str().split('.').filter(move |w| {
        let hash = *w == "#";
        let keep = !(hash && previous_hash);
        previous_hash = hash;
        keep
    })
}

impl<T> PatternIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many registrations it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a registration. Ids are the caller's; they order lookups and
    /// find the registration again in [`remove`](Self::remove).
    pub fn insert(&mut self, id: u64, pattern: &Pattern, value: T) {
        self.len += 1;
        if pattern.is_literal() {
            self.exact
                .entry(pattern.as_str().into())
                .or_default()
                .push((id, value));
            return;
        }
        let mut node = &mut self.root;
        for w in words(pattern) {
            node = match w {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        node.here.push((id, value));
    }

    /// Removes the registration `id` made with `pattern`; `None` when there
    /// is none. Empty trie branches are pruned.
    pub fn remove(&mut self, id: u64, pattern: &Pattern) -> Option<T> {
        let removed = if pattern.is_literal() {
            let slot = self.exact.get_mut(pattern.as_str())?;
            let at = slot.iter().position(|(i, _)| *i == id)?;
            let (_, value) = slot.swap_remove(at);
            if slot.is_empty() {
                self.exact.remove(pattern.as_str());
            }
            Some(value)
        } else {
            let path: Vec<&str> = words(pattern).collect();
            remove_in(&mut self.root, &path, id)
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` once for every registration whose pattern matches `topic`,
    /// in no particular order.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(u64, &'a T)) {
        if let Some(slot) = self.exact.get(topic) {
            for (id, v) in slot {
                f(*id, v);
            }
        }
        if self.root.is_empty() {
            return;
        }
        let mut walk = Walk {
            topic,
            seen: Seen::default(),
            f: &mut f,
        };
        walk.visit(&self.root, 0, false, false);
    }

    /// Every registration matching `topic`, by id.
    pub fn matching(&self, topic: &str) -> Vec<(u64, &T)> {
        let mut out = Vec::new();
        self.for_each_match(topic, |id, v| out.push((id, v)));
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// The registration with the smallest id among those matching `topic`
    /// for which `accept` holds (the first registered handler, the first
    /// route).
    pub fn first_match(&self, topic: &str, mut accept: impl FnMut(&T) -> bool) -> Option<&T> {
        let mut best: Option<(u64, &T)> = None;
        self.for_each_match(topic, |id, v| {
            if best.is_none_or(|(b, _)| id < b) && accept(v) {
                best = Some((id, v));
            }
        });
        best.map(|(_, v)| v)
    }

    /// Every registration whose pattern shares at least one topic with
    /// `pattern`, by id (the router's subscribe-by-overlap).
    pub fn overlapping(&self, pattern: &Pattern) -> Vec<(u64, &T)> {
        let query: Vec<&str> = words(pattern).collect();
        let mut out: Vec<(u64, &T)> = Vec::new();
        // A literal pattern overlaps exactly when it is a matching topic.
        if pattern.is_literal() {
            if let Some(slot) = self.exact.get(pattern.as_str()) {
                out.extend(slot.iter().map(|(id, v)| (*id, v)));
            }
        } else {
            for (key, slot) in &self.exact {
                if pattern.matches(key) {
                    out.extend(slot.iter().map(|(id, v)| (*id, v)));
                }
            }
        }
        let mut seen = HashSet::new();
        overlap_visit(&self.root, &query, 0, false, &mut seen, &mut out);
        out.sort_unstable_by_key(|(id, _)| *id);
        out.dedup_by_key(|(id, _)| *id);
        out
    }
}

fn remove_in<T>(node: &mut Node<T>, path: &[&str], id: u64) -> Option<T> {
    let Some((first, rest)) = path.split_first() else {
        let at = node.here.iter().position(|(i, _)| *i == id)?;
        return Some(node.here.swap_remove(at).1);
    };
    match *first {
        "*" | "#" => {
            let child = if *first == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            let c = child.as_deref_mut()?;
            let removed = remove_in(c, rest, id);
            if c.is_empty() {
                *child = None;
            }
            removed
        }
        literal => {
            let c = node.literal.get_mut(literal)?;
            let removed = remove_in(c, rest, id);
            if c.is_empty() {
                node.literal.remove(literal);
            }
            removed
        }
    }
}

/// One lookup's walk through the trie. Positions are byte offsets of the
/// next topic word; past the end (`topic.len() + 1`) no words remain.
struct Walk<'w, F> {
    topic: &'w str,
    /// States already visited, kept only once a `#` made several paths
    /// possible: (node, position).
    seen: Seen,
    f: &'w mut F,
}

impl<F> Walk<'_, F> {
    /// `node` reached with the topic from `at` still to match; `forked` once
    /// a `#` was passed (paths may meet again); `absorbing` when `node` is a
    /// `#` that may take one more word.
    fn visit<'a, T>(&mut self, node: &'a Node<T>, at: usize, forked: bool, absorbing: bool)
    where
        F: FnMut(u64, &'a T),
    {
        if forked && !self.seen.insert((node as *const Node<T> as usize, at)) {
            return;
        }
        if at > self.topic.len() {
            for (id, v) in &node.here {
                (self.f)(*id, v);
            }
        } else {
            let end = self.topic[at..]
                .find('.')
                .map_or(self.topic.len(), |i| at + i);
            let word = &self.topic[at..end];
            if let Some(c) = node.literal.get(word) {
                self.visit(c, end + 1, forked, false);
            }
            if let Some(c) = &node.star {
                self.visit(c, end + 1, forked, false);
            }
            if absorbing {
                self.visit(node, end + 1, true, true);
            }
        }
        if let Some(h) = &node.hash {
            // `#` starts with zero words; it takes more as `absorbing`.
            self.visit(h, at, true, true);
        }
    }
}

/// A small set of walk states: on the stack until it outgrows it.
#[derive(Default)]
struct Seen {
    inline: [(usize, usize); 8],
    len: usize,
    spill: HashSet<(usize, usize)>,
}

impl Seen {
    /// False when `key` was there already.
    fn insert(&mut self, key: (usize, usize)) -> bool {
        if self.inline[..self.len].contains(&key) || self.spill.contains(&key) {
            return false;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = key;
            self.len += 1;
        } else {
            self.spill.insert(key);
        }
        true
    }
}

/// Collects the registrations at and below `node` that share a topic with
/// `query[at..]`; `pending` when `node` was reached through a `#` that may
/// still take more of the query's words.
fn overlap_visit<'a, T>(
    node: &'a Node<T>,
    query: &[&str],
    at: usize,
    pending: bool,
    seen: &mut HashSet<(usize, usize, bool)>,
    out: &mut Vec<(u64, &'a T)>,
) {
    if !seen.insert((node as *const Node<T> as usize, at, pending)) {
        return;
    }
    // Both sides exhausted (what is left of the query is `#` at most).
    if query[at..].iter().all(|w| *w == "#") {
        out.extend(node.here.iter().map(|(id, v)| (*id, v)));
    }
    // The stored `#` that led here takes one more of the query's words.
    if pending && at < query.len() && query[at] != "#" {
        overlap_visit(node, query, at + 1, true, seen, out);
    }
    if at < query.len() && query[at] == "#" {
        // The query's `#` takes nothing more …
        overlap_visit(node, query, at + 1, pending, seen, out);
        // … or the word of a stored branch, staying where it is.
        for child in node.literal.values().chain(node.star.as_deref()) {
            overlap_visit(child, query, at, false, seen, out);
        }
    }
    if let Some(h) = node.hash.as_deref() {
        overlap_visit(h, query, at, true, seen, out);
    }
    if at < query.len() && query[at] != "#" {
        let word = query[at];
        if word == "*" {
            for child in node.literal.values() {
                overlap_visit(child, query, at + 1, false, seen, out);
            }
        } else if let Some(child) = node.literal.get(word) {
            overlap_visit(child, query, at + 1, false, seen, out);
        }
        if let Some(s) = node.star.as_deref() {
            overlap_visit(s, query, at + 1, false, seen, out);
        }
    }
}
