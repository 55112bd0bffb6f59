//! Arbitrary text as a pattern and a topic: both parse or give an error, and
//! the matcher agrees with the AMQP rules written out as plainly as possible.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telamon_sdk::{Pattern, Topic};

/// AMQP topic matching as a table: `m[i][j]` = pattern words `i..` match
/// topic words `j..` (`*` one word, `#` zero or more).
fn reference(pattern: &[&str], topic: &[&str]) -> bool {
    let (p, t) = (pattern.len(), topic.len());
    let mut m = vec![vec![false; t + 1]; p + 1];
    m[p][t] = true;
    for i in (0..p).rev() {
        for j in (0..=t).rev() {
            m[i][j] = match pattern[i] {
                "#" => m[i + 1][j] || (j < t && m[i][j + 1]),
                "*" => j < t && m[i + 1][j + 1],
                word => j < t && topic[j] == word && m[i + 1][j + 1],
            };
        }
    }
    m[0][0]
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let (pattern, topic) = text.split_once('\n').unwrap_or((text, text));
    let parsed = (Pattern::new(pattern), Topic::new(topic));
    if let (Ok(p), Ok(t)) = parsed {
        let pw: Vec<&str> = p.as_str().split('.').collect();
        let tw: Vec<&str> = t.as_str().split('.').collect();
        assert_eq!(p.matches_topic(&t), reference(&pw, &tw), "{p} ~ {t}");
    }
});
