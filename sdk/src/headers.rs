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
///
/// All names and values of one message share one allocation of about
/// 0.6 KiB — up to 320 bytes of text and 12 pairs live in it, longer sets
/// take a second one — so making, sharing and dropping them costs one
/// allocation however many there are (messages cross threads, and an
/// allocation freed on another thread than the one that made it is the dear
/// kind: glibc takes the owning arena's lock for it). A [`Delivery`](crate::Delivery) keeps
/// them as they are: delivering headers allocates nothing more. The headers
/// of many messages made at once can share their allocations too: see
/// [`HeaderBlock`].
#[derive(Clone, Default)]
pub struct Headers {
    packed: Option<Arc<Packed>>,
    /// Which set of a block's these are (0 for headers of their own).
    set: usize,
}

/// Pairs whose bounds live beside the text without an allocation of their
/// own: the bridge's nine event headers and a `traceparent` fit.
const INLINE: usize = 12;

/// Names and values one after the other in `text`; `ends` holds where each
/// name and each value ends (a name starts where the previous value ended).
#[derive(Clone, Default)]
struct Packed {
    text: Text,
    ends: Ends,
    /// A block's sets: set `i` is the pairs from `starts[i]` to the next
    /// set's start (the last one: to the end). Empty: one set, every pair.
    starts: Vec<usize>,
    /// The id a bus gave the delivery these headers came with; not a header
    /// (never listed, compared or shown), kept here so a delivery with
    /// headers and an id holds one shared allocation, not two. Never set on
    /// a block.
    id: Option<Box<str>>,
}

/// Bytes of names and values kept inside the headers' own allocation; longer
/// text moves to one of its own.
const INLINE_TEXT: usize = 320;

/// The names and values: inline while they fit, then on the heap.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "inline is the point: one allocation for the whole set"
)]
enum Text {
    Inline(usize, [u8; INLINE_TEXT]),
    Heap(String),
}

impl Default for Text {
    fn default() -> Self {
        Text::Inline(0, [0; INLINE_TEXT])
    }
}

impl Text {
    fn len(&self) -> usize {
        match self {
            Text::Inline(len, _) => *len,
            Text::Heap(s) => s.len(),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline(len, bytes) => &bytes[..*len],
            Text::Heap(s) => s.as_bytes(),
        }
    }

    /// The text; only whole `&str`s are ever pushed, so inline bytes are
    /// always UTF-8 (checked here all the same, without `unsafe`).
    fn as_str(&self) -> &str {
        match self {
            Text::Inline(len, bytes) => std::str::from_utf8(&bytes[..*len]).unwrap_or_default(),
            Text::Heap(s) => s,
        }
    }

    fn push_str(&mut self, s: &str) {
        match self {
            Text::Inline(len, bytes) if *len + s.len() <= INLINE_TEXT => {
                bytes[*len..*len + s.len()].copy_from_slice(s.as_bytes());
                *len += s.len();
            }
            Text::Inline(..) => {
                let mut heap = String::with_capacity((self.len() + s.len()) * 2);
                heap.push_str(self.as_str());
                heap.push_str(s);
                *self = Text::Heap(heap);
            }
            Text::Heap(h) => h.push_str(s),
        }
    }
}

/// Bounds of the pairs: inline while they fit, then on the heap.
#[derive(Clone)]
enum Ends {
    Inline(usize, [(usize, usize); INLINE]),
    Heap(Vec<(usize, usize)>),
}

impl Default for Ends {
    fn default() -> Self {
        Ends::Inline(0, [(0, 0); INLINE])
    }
}

impl Ends {
    fn with_capacity(pairs: usize) -> Self {
        if pairs <= INLINE {
            Ends::default()
        } else {
            Ends::Heap(Vec::with_capacity(pairs))
        }
    }

    fn as_slice(&self) -> &[(usize, usize)] {
        match self {
            Ends::Inline(len, items) => &items[..*len],
            Ends::Heap(v) => v,
        }
    }

    fn push(&mut self, end: (usize, usize)) {
        match self {
            Ends::Inline(len, items) if *len < INLINE => {
                items[*len] = end;
                *len += 1;
            }
            Ends::Inline(len, items) => {
                let mut v = Vec::with_capacity(INLINE * 2);
                v.extend_from_slice(&items[..*len]);
                v.push(end);
                *self = Ends::Heap(v);
            }
            Ends::Heap(v) => v.push(end),
        }
    }
}

impl Packed {
    fn with_capacity(pairs: usize) -> Self {
        Packed {
            // Inline until the text outgrows it.
            text: Text::default(),
            ends: Ends::with_capacity(pairs),
            starts: Vec::new(),
            id: None,
        }
    }

    /// Where the pairs of `set` are in `ends`.
    fn range(&self, set: usize) -> std::ops::Range<usize> {
        debug_assert!(
            set < self.starts.len().max(1),
            "set {set} of a block of {}",
            self.starts.len()
        );
        let all = self.ends.as_slice().len();
        match self.starts.get(set) {
            None => 0..all,
            Some(&start) => start..self.starts.get(set + 1).copied().unwrap_or(all),
        }
    }

    fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    /// Where the name of pair `i` starts (where the pair before ended).
    fn start_of(&self, i: usize) -> usize {
        i.checked_sub(1)
            .map_or(0, |before| self.ends.as_slice()[before].1)
    }

    /// Where the name of pair `i` starts and ends.
    fn name_bounds(&self, i: usize) -> (usize, usize) {
        (self.start_of(i), self.ends.as_slice()[i].0)
    }

    /// The pairs of `set`, in order.
    fn iter(&self, set: usize) -> impl Iterator<Item = (&str, &str)> {
        let range = self.range(set);
        let mut start = self.start_of(range.start);
        let text = self.text.as_str();
        self.ends.as_slice()[range]
            .iter()
            .map(move |&(name_end, value_end)| {
                let pair = (&text[start..name_end], &text[name_end..value_end]);
                start = value_end;
                pair
            })
    }

    /// Where the pair of `set` named `name` is, comparing bytes (the text is
    /// not checked as UTF-8 to look a name up).
    fn position(&self, set: usize, name: &str) -> Option<usize> {
        let bytes = self.text.as_bytes();
        self.range(set).find(|&i| {
            let (start, end) = self.name_bounds(i);
            bytes.get(start..end) == Some(name.as_bytes())
        })
    }

    /// The value of the pair at `at` (only its bytes are checked as UTF-8).
    fn value(&self, at: usize) -> Option<&str> {
        let &(name_end, value_end) = self.ends.as_slice().get(at)?;
        std::str::from_utf8(self.text.as_bytes().get(name_end..value_end)?).ok()
    }

    /// `set` on its own, with the value of its `at`th pair replaced (`Some`)
    /// or the pair removed (`at` past the end: every pair as it is).
    fn rebuilt(&self, set: usize, at: usize, value: Option<&str>) -> Packed {
        let mut out = Packed::with_capacity(self.range(set).len());
        out.id = self.id.clone();
        for (i, (k, v)) in self.iter(set).enumerate() {
            match (i == at, value) {
                (false, _) => out.push(k, v),
                (true, Some(new)) => out.push(k, new),
                (true, None) => {}
            }
        }
        out
    }
}

/// Header names whose values `Debug` hides.
const SECRET_WORDS: [&str; 5] = ["token", "authorization", "password", "secret", "cookie"];

impl Headers {
    /// No headers (allocates nothing).
    pub const fn new() -> Self {
        Headers {
            packed: None,
            set: 0,
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.range(self.set).len())
    }

    /// The value of `name` (names are compared exactly).
    pub fn get(&self, name: &str) -> Option<&str> {
        let packed = self.packed.as_ref()?;
        packed.value(packed.position(self.set, name)?)
    }

    /// Every header, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.packed.iter().flat_map(|p| p.iter(self.set))
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        let packed = self.own();
        match packed.position(0, &name) {
            Some(at) => *packed = packed.rebuilt(0, at, Some(&value)),
            None => packed.push(&name, &value),
        }
        self
    }

    /// [`insert`](Self::insert), by value.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Headers of their own to change: a set of a block is copied out of it
    /// first (the others keep the block), shared ones are copied.
    fn own(&mut self) -> &mut Packed {
        if let Some(p) = &self.packed
            && !p.starts.is_empty()
        {
            let single = p.rebuilt(self.set, usize::MAX, None);
            *self = Headers {
                packed: Some(Arc::new(single)),
                set: 0,
            };
        }
        Arc::make_mut(self.packed.get_or_insert_with(Default::default))
    }

    /// The id of the delivery these headers came with (see [`Packed::id`]).
    pub(crate) fn delivery_id(&self) -> Option<&str> {
        self.packed.as_ref()?.id.as_deref()
    }

    /// Sets the delivery id; allocates only when that changes something.
    pub(crate) fn set_delivery_id(&mut self, id: Option<Box<str>>) {
        if id.is_none() && self.delivery_id().is_none() {
            return;
        }
        self.own().id = id;
    }

    /// The same headers without a delivery id.
    pub(crate) fn without_delivery_id(mut self) -> Self {
        self.set_delivery_id(None);
        self
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let packed = self.packed.as_ref()?;
        let at = packed.position(self.set, name)?;
        let value = packed.value(at).map(str::to_owned);
        // Its place within the set, which `own` may copy out of a block.
        let nth = at - packed.range(self.set).start;
        let packed = self.own();
        *packed = packed.rebuilt(0, nth, None);
        value
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

/// Later pairs replace earlier ones with the same name (the name keeps its
/// first place); linear in the number of pairs (a hostile peer's thousands
/// of headers cost no quadratic scan). Borrowed names and values are copied
/// once, into the shared buffer.
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut packed = Packed::with_capacity(iter.size_hint().0);
        for (k, v) in iter {
            packed.push(k.as_ref(), v.as_ref());
        }
        if packed.range(0).is_empty() {
            return Headers::new();
        }
        if let Some(unique) = deduplicated(&packed, 0) {
            packed = unique;
        }
        Headers {
            packed: Some(Arc::new(packed)),
            set: 0,
        }
    }
}

/// The headers of many messages made together, sharing their allocations:
/// a finished block is four (the shared handle, the text, the bounds and
/// where each set starts) however many messages it serves, instead of one
/// per message — for batches, as with
/// [`Context::publish_batch`](crate::Context::publish_batch). Inside a trace
/// `publish_batch` adds a `traceparent` of its own to each set that has
/// none, which copies that set out of the block (one allocation per message
/// again).
///
/// ```
/// use telamon_sdk::HeaderBlock;
/// let mut block = HeaderBlock::new();
/// block.push([("seq", "1"), ("tenant", "acme")]);
/// block.push([("seq", "2"), ("seq", "3")]);
/// block.push(std::iter::empty::<(&str, &str)>());
/// let sets: Vec<_> = block.finish().collect();
/// assert_eq!(sets[0].get("tenant"), Some("acme"));
/// assert_eq!(sets[1].iter().collect::<Vec<_>>(), [("seq", "3")]);
/// assert!(sets[2].is_empty());
/// assert!(block.is_empty());
/// ```
///
/// Each set behaves as [`Headers`] collected from the same pairs (a repeated
/// name keeps its first place and its last value). All sets of a block keep
/// the block alive until the last of them is dropped; changing one
/// ([`Headers::insert`], [`Headers::remove`]) copies it out of the block
/// first, and `headers.iter().collect::<Headers>()` makes a copy of its own.
pub struct HeaderBlock {
    /// Names and values of every set, one after the other.
    text: String,
    /// Where each name and value ends, as in [`Packed`].
    ends: Vec<(usize, usize)>,
    /// Where each set's pairs start in `ends`.
    starts: Vec<usize>,
    /// What the last finished block held (sets, pairs, bytes of text): room
    /// made for the next when its first set is pushed, not before.
    room: (usize, usize, usize),
}

impl Default for HeaderBlock {
    fn default() -> Self {
        HeaderBlock::new()
    }
}

impl fmt::Debug for HeaderBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderBlock")
            .field("sets", &self.len())
            .finish_non_exhaustive()
    }
}

impl HeaderBlock {
    /// An empty block (allocates nothing until the first set).
    pub fn new() -> Self {
        HeaderBlock {
            text: String::new(),
            ends: Vec::new(),
            starts: Vec::new(),
            room: (0, 0, 0),
        }
    }

    /// How many sets it holds.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when it holds no set.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Adds the headers of one more message.
    pub fn push<K: AsRef<str>, V: AsRef<str>>(&mut self, pairs: impl IntoIterator<Item = (K, V)>) {
        if self.starts.is_empty() {
            let (sets, pairs, text) = self.room;
            self.starts.reserve(sets);
            self.ends.reserve(pairs);
            self.text.reserve(text);
        }
        let (first, text) = (self.ends.len(), self.text.len());
        self.starts.push(first);
        for (k, v) in pairs {
            self.push_pair(k.as_ref(), v.as_ref());
        }
        if repeats(self.text.as_bytes(), &self.ends[first..], text) {
            // Rare: the set again, through `Headers`' own rule for repeats.
            let mut start = text;
            let unique: Headers = self.ends[first..]
                .iter()
                .map(|&(name_end, value_end)| {
                    let pair = (&self.text[start..name_end], &self.text[name_end..value_end]);
                    start = value_end;
                    pair
                })
                .collect();
            self.text.truncate(text);
            self.ends.truncate(first);
            for (k, v) in unique.iter() {
                self.push_pair(k, v);
            }
        }
    }

    // Inlined into `push`, which is generic and so built in the caller's crate.
    #[inline]
    fn push_pair(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    /// The sets, in the order they were pushed; the block is empty again,
    /// holding no memory, and can be reused (its next first set makes room
    /// for as much as this one held).
    pub fn finish(&mut self) -> HeaderSets {
        let sets = self.starts.len();
        self.room = (sets, self.ends.len(), self.text.len());
        let packed = Packed {
            text: Text::Heap(std::mem::take(&mut self.text)),
            ends: Ends::Heap(std::mem::take(&mut self.ends)),
            starts: std::mem::take(&mut self.starts),
            id: None,
        };
        HeaderSets {
            packed: (!packed.ends.as_slice().is_empty()).then(|| Arc::new(packed)),
            next: 0,
            sets,
        }
    }
}

/// The [`Headers`] of a finished [`HeaderBlock`], one per message.
pub struct HeaderSets {
    packed: Option<Arc<Packed>>,
    next: usize,
    sets: usize,
}

impl Iterator for HeaderSets {
    type Item = Headers;

    fn next(&mut self) -> Option<Headers> {
        if self.next >= self.sets {
            return None;
        }
        let set = self.next;
        self.next += 1;
        Some(match &self.packed {
            Some(p) if !p.range(set).is_empty() => Headers {
                packed: Some(p.clone()),
                set,
            },
            _ => Headers::new(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.sets - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for HeaderSets {}

impl fmt::Debug for HeaderSets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderSets")
            .field("left", &(self.sets - self.next))
            .finish_non_exhaustive()
    }
}

/// `set` with each name once, in its first place, with its last value;
/// `None` when no name occurs twice (the common case, found without
/// allocating).
fn deduplicated(packed: &Packed, set: usize) -> Option<Packed> {
    let range = packed.range(set);
    let ends = &packed.ends.as_slice()[range.clone()];
    if !repeats(packed.text.as_bytes(), ends, packed.start_of(range.start)) {
        return None;
    }
    let mut last: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (k, v) in packed.iter(set) {
        last.insert(k, v);
    }
    let mut out = Packed::with_capacity(last.len());
    for (k, _) in packed.iter(set) {
        if let Some(v) = last.remove(k) {
            out.push(k, v);
        }
    }
    Some(out)
}

/// Up to this many pairs, repeats are looked for by comparing every two.
const SMALL: usize = 16;

/// True when two of the pairs bounded by `ends` (see [`Packed`]), whose
/// first name starts at `start` in `text`, have the same name. A hash of
/// each name's length and last two bytes picks one of 64 bits
/// ([`name_bit`]): when no two names pick the same bit, none repeats, found
/// without comparing any two (the bridge's nine event headers and
/// `traceparent` pick ten bits). Otherwise a few names are compared every
/// two, many through a set: linear, so a hostile peer's thousands of
/// headers cost no quadratic scan.
fn repeats(text: &[u8], ends: &[(usize, usize)], start: usize) -> bool {
    let name = |i: usize| {
        let from = i.checked_sub(1).map_or(start, |before| ends[before].1);
        &text[from..ends[i].0]
    };
    let mut seen = 0u64;
    let distinct = (0..ends.len()).all(|i| {
        let bit = name_bit(name(i));
        let new = seen & bit == 0;
        seen |= bit;
        new
    });
    if distinct {
        false
    } else if ends.len() <= SMALL {
        (0..ends.len()).any(|i| (i + 1..ends.len()).any(|j| name(i) == name(j)))
    } else {
        let mut names = std::collections::HashSet::with_capacity(ends.len());
        !(0..ends.len()).all(|i| names.insert(name(i)))
    }
}

/// One of 64 bits for a name, picked by a hash of its length and last two
/// bytes: names with different bits differ.
fn name_bit(name: &[u8]) -> u64 {
    let byte = |back: usize| {
        name.len()
            .checked_sub(back)
            .map_or(0, |i| u64::from(name[i]))
    };
    let key = name.len() as u64 | byte(1) << 8 | byte(2) << 16;
    1 << (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
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
        assert!(h.packed.is_none() && h.is_empty() && h.get("x").is_none());
        let a = Headers::new().with("a", "1").with("b", "2");
        assert_eq!(a.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        let mut b = a.clone();
        assert!(Arc::ptr_eq(
            a.packed.as_ref().unwrap(),
            b.packed.as_ref().unwrap()
        ));
        b.insert("a", "9");
        assert_eq!((a.get("a"), b.get("a")), (Some("1"), Some("9")));
        assert_eq!(b.remove("b").as_deref(), Some("2"));
        assert_eq!(b.iter().collect::<Vec<_>>(), [("a", "9")]);
    }

    #[test]
    fn collected_repeats_keep_the_first_place_and_the_last_value() {
        let small: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(small.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
        let mut pairs: Vec<(String, String)> =
            (0..40).map(|i| (format!("k{i}"), i.to_string())).collect();
        pairs.push(("k3".into(), "last".into()));
        let large: Headers = pairs.into_iter().collect();
        assert_eq!((large.len(), large.get("k3")), (40, Some("last")));
        assert_eq!(large.iter().nth(3), Some(("k3", "last")));
        let distinct: Headers = (0..40).map(|i| (format!("k{i}"), "v")).collect();
        assert_eq!(distinct.len(), 40);
    }

    #[test]
    fn any_text_round_trips_and_edits_keep_the_rest() {
        let pairs = [
            ("", "empty name"),
            ("ünï", "ŵ€ird välue"),
            ("e", ""),
            ("n", "1"),
        ];
        let mut h: Headers = pairs.into_iter().collect();
        assert_eq!(h.iter().collect::<Vec<_>>(), pairs);
        h.insert("ünï", "x");
        assert_eq!(h.remove("e").as_deref(), Some(""));
        h.insert("z", "last");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("", "empty name"), ("ünï", "x"), ("n", "1"), ("z", "last")]
        );
        assert_eq!(h.remove("missing"), None);
    }

    #[test]
    fn long_text_and_many_pairs_leave_the_inline_room_intact() {
        let long = "é".repeat(INLINE_TEXT);
        let mut h = Headers::new().with("a", "1").with("long", long.clone());
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get("long"), Some(long.as_str()));
        for i in 0..INLINE * 2 {
            h.insert(format!("k{i}"), i.to_string());
        }
        assert_eq!(h.len(), 2 + INLINE * 2);
        assert_eq!(h.get("k20"), Some("20"));
        assert_eq!(h.remove("long").as_deref(), Some(long.as_str()));
        assert_eq!(h.iter().next(), Some(("a", "1")));
    }

    #[test]
    fn block_sets_are_headers_of_their_own_until_changed() {
        let mut block = HeaderBlock::new();
        block.push([("a", "1"), ("b", "2")]);
        block.push([("a", "x"), ("a", "y"), ("c", "3")]);
        block.push(std::iter::empty::<(&str, &str)>());
        block.push([("b", "4")]);
        let finished = block.finish();
        assert_eq!(finished.len(), 4);
        let mut sets: Vec<Headers> = finished.collect();
        assert!(block.is_empty());
        // A finished block holds nothing until its next set.
        assert_eq!(block.text.capacity() + block.ends.capacity(), 0);
        assert_eq!(sets[0].iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!(sets[1].iter().collect::<Vec<_>>(), [("a", "y"), ("c", "3")]);
        assert!(sets[2].is_empty() && sets[2].packed.is_none());
        assert_eq!(
            (sets[3].len(), sets[3].get("b"), sets[3].get("a")),
            (1, Some("4"), None)
        );
        assert!(Arc::ptr_eq(
            sets[0].packed.as_ref().unwrap(),
            sets[3].packed.as_ref().unwrap()
        ));
        assert_eq!(sets[0], [("b", "2"), ("a", "1")].into_iter().collect());
        // Changing one copies it out; the others keep the block as it was.
        sets[0].insert("b", "9");
        assert_eq!(sets[1].remove("a").as_deref(), Some("y"));
        assert_eq!(sets[0].iter().collect::<Vec<_>>(), [("a", "1"), ("b", "9")]);
        assert_eq!(sets[1].iter().collect::<Vec<_>>(), [("c", "3")]);
        assert_eq!(sets[3].iter().collect::<Vec<_>>(), [("b", "4")]);
        // Many names: repeats found through a set, not every two.
        let mut many: Vec<(String, String)> =
            (0..40).map(|i| (format!("k{i}"), i.to_string())).collect();
        many.push(("k3".into(), "last".into()));
        let mut big = HeaderBlock::new();
        big.push(many.clone());
        big.push(many[..40].to_vec());
        let big: Vec<Headers> = big.finish().collect();
        assert_eq!((big[0].len(), big[0].get("k3")), (40, Some("last")));
        assert_eq!(big[0].iter().nth(3), Some(("k3", "last")));
        assert_eq!((big[1].len(), big[1].get("k3")), (40, Some("3")));
        // The block is reused: the next sets are new ones, with room made
        // for as much as the last block held.
        block.push([("d", "5")]);
        assert!(block.text.capacity() >= 10 && block.starts.capacity() >= 4);
        let next: Vec<Headers> = block.finish().collect();
        assert_eq!(next[0].iter().collect::<Vec<_>>(), [("d", "5")]);
    }

    #[test]
    fn the_bridges_names_are_told_apart_without_comparing() {
        let names = [
            "axon-token",
            "axon-message-id",
            "axon-timestamp",
            "axon-processor",
            "axon-payload-type",
            "axon-payload-revision",
            "axon-aggregate-id",
            "axon-aggregate-type",
            "axon-sequence",
            "traceparent",
        ];
        let bits = names
            .iter()
            .fold(0u64, |bits, n| bits | name_bit(n.as_bytes()));
        assert_eq!(bits.count_ones() as usize, names.len());
        // Names that pick the same bit are compared, and kept when they differ.
        assert_eq!(name_bit(b"userId"), name_bit(b"spanId"));
        let mut block = HeaderBlock::new();
        block.push([("userId", "u"), ("spanId", "s"), ("", "e")]);
        let sets: Vec<Headers> = block.finish().collect();
        assert_eq!(
            sets[0].iter().collect::<Vec<_>>(),
            [("userId", "u"), ("spanId", "s"), ("", "e")]
        );
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
