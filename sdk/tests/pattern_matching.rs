//! Topic patterns follow AMQP topic-exchange semantics exactly.

use proptest::prelude::*;
use telamon_sdk::bus::PatternIndex;
use telamon_sdk::{Pattern, Topic};

/// The simplest possible matcher, straight from the AMQP rules, as the reference.
fn reference(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((&"#", rest)) => (0..=topic.len()).any(|skip| reference(rest, &topic[skip..])),
        Some((&"*", rest)) => !topic.is_empty() && reference(rest, &topic[1..]),
        Some((word, rest)) => topic.first() == Some(word) && reference(rest, &topic[1..]),
    }
}

fn pattern_words() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..6)
}

fn topic_words() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..7)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn matches_like_the_reference(p in pattern_words(), t in topic_words()) {
        let pattern = Pattern::new(p.join(".")).unwrap();
        prop_assert_eq!(pattern.matches(&t.join(".")), reference(&p, &t), "pattern {:?} topic {:?}", p, t);
    }

}

fn short_pattern_words() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn overlap_means_a_shared_topic_exists(a in short_pattern_words(), b in short_pattern_words()) {
        let pa = Pattern::new(a.join(".")).unwrap();
        let pb = Pattern::new(b.join(".")).unwrap();
        // Any shared topic has a witness no longer than both patterns together
        // plus one, over the patterns' literals and one fresh word.
        let words = ["a", "b", "z"];
        let max = a.len() + b.len() + 1;
        let mut witness = false;
        let mut stack: Vec<Vec<&str>> = words.iter().map(|w| vec![*w]).collect();
        while let Some(t) = stack.pop() {
            if reference(&a, &t) && reference(&b, &t) {
                witness = true;
                break;
            }
            if t.len() < max {
                for w in words {
                    let mut next = t.clone();
                    next.push(w);
                    stack.push(next);
                }
            }
        }
        prop_assert_eq!(pa.overlaps(&pb), witness, "{:?} vs {:?}", a, b);
        prop_assert_eq!(pb.overlaps(&pa), witness);
    }
}

#[test]
fn star_needs_exactly_one_word() {
    let p = Pattern::new("a.*").unwrap();
    assert!(!p.matches("a"));
    assert!(p.matches("a.b"));
    assert!(!p.matches("a.b.c"));
    assert!(!Pattern::new("*").unwrap().matches(""));
}

#[test]
fn hash_takes_zero_or_more_words() {
    let p = Pattern::new("a.#").unwrap();
    assert!(p.matches("a"));
    assert!(p.matches("a.b.c"));
    assert!(!p.matches("b"));
    assert!(Pattern::new("#").unwrap().matches("x.y"));
    assert!(Pattern::new("#.b.#").unwrap().matches("b"));
    assert!(Pattern::new("a.#.c").unwrap().matches("a.c"));
    assert!(!Pattern::new("a.#.c").unwrap().matches("a.b"));
}

#[test]
fn bad_topics_and_patterns_are_rejected_with_the_reason() {
    assert!(Topic::new("").is_err());
    assert!(
        Topic::new("a..b")
            .unwrap_err()
            .to_string()
            .contains("empty word")
    );
    assert!(
        Topic::new("a.*")
            .unwrap_err()
            .to_string()
            .contains("wildcard")
    );
    assert!(
        Pattern::new("a.b*")
            .unwrap_err()
            .to_string()
            .contains("wildcard")
    );
    assert!(
        Topic::new("x".repeat(256))
            .unwrap_err()
            .to_string()
            .contains("256 bytes")
    );
    assert!(Pattern::new("a.#.*").is_ok());
}

#[test]
fn many_hashes_do_not_take_exponential_time() {
    let p = Pattern::new("#.#.a.#.b.#.c.#.d.#.e.#.f.#.x").unwrap();
    let topic = vec!["a"; 200].join(".");
    assert!(!p.matches(&topic));
    let hit = format!("{topic}.b.c.d.e.f.x");
    assert!(p.matches(&hit));
    assert!(Pattern::new("#.#").unwrap().matches("anything.at.all"));
}

fn index_patterns() -> impl Strategy<Value = Vec<Vec<&'static str>>> {
    prop::collection::vec(pattern_words(), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The index finds exactly the registrations the reference matcher
    /// accepts, each once — also after some are removed again.
    #[test]
    fn the_index_matches_like_the_reference(
        patterns in index_patterns(),
        removed in prop::collection::vec(any::<bool>(), 12),
        t in topic_words(),
    ) {
        let mut index = PatternIndex::new();
        for (id, p) in patterns.iter().enumerate() {
            index.insert(id as u64, &Pattern::new(p.join(".")).unwrap(), id);
        }
        for (id, p) in patterns.iter().enumerate() {
            if removed[id] {
                prop_assert_eq!(index.remove(id as u64, &Pattern::new(p.join(".")).unwrap()), Some(id));
            }
        }
        let expected: Vec<usize> = patterns
            .iter()
            .enumerate()
            .filter(|(id, p)| !removed[*id] && reference(p, &t))
            .map(|(id, _)| id)
            .collect();
        let found: Vec<usize> = index.matching(&t.join(".")).into_iter().map(|(_, v)| *v).collect();
        prop_assert_eq!(&found, &expected, "patterns {:?} topic {:?}", patterns, t);
        let first = index.first_match(&t.join("."), |_| true).copied();
        prop_assert_eq!(first, expected.first().copied());
        prop_assert_eq!(index.len(), patterns.len() - removed[..patterns.len()].iter().filter(|r| **r).count());
    }

    /// Overlap through the index agrees with overlap pattern by pattern.
    #[test]
    fn the_index_overlaps_like_the_patterns(
        patterns in prop::collection::vec(short_pattern_words(), 0..10),
        query in short_pattern_words(),
    ) {
        let mut index = PatternIndex::new();
        for (id, p) in patterns.iter().enumerate() {
            index.insert(id as u64, &Pattern::new(p.join(".")).unwrap(), id);
        }
        let q = Pattern::new(query.join(".")).unwrap();
        let expected: Vec<usize> = patterns
            .iter()
            .enumerate()
            .filter(|(_, p)| Pattern::new(p.join(".")).unwrap().overlaps(&q))
            .map(|(id, _)| id)
            .collect();
        let found: Vec<usize> = index.overlapping(&q).into_iter().map(|(_, v)| *v).collect();
        prop_assert_eq!(found, expected, "patterns {:?} query {:?}", patterns, query);
    }
}

#[test]
fn long_topics_and_many_hashes_stay_correct_in_the_index() {
    let mut index = PatternIndex::new();
    let p = Pattern::new("#.#.a.#.b.#.c.#.d.#.e.#.f.#.x").unwrap();
    index.insert(1, &p, ());
    index.insert(2, &Pattern::new("#").unwrap(), ());
    let topic = vec!["a"; 100].join(".");
    assert_eq!(index.matching(&topic).len(), 1);
    let hit = format!("{topic}.b.c.d.e.f.x");
    let ids: Vec<u64> = index.matching(&hit).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [1, 2]);
}
