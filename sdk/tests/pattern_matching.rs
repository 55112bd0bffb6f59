//! Topic patterns follow AMQP topic-exchange semantics exactly.

use proptest::prelude::*;
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
