//! From an HTTP method and path to a request topic.
//!
//! `GET /users/42/orders` under prefix `rest` is topic `rest.get.users.42.orders`:
//! the method in lower case, then each non-empty path segment, percent-decoded.
//! A segment that cannot be a topic word — one that holds `.`, `*` or `#`, or
//! is not UTF-8 once decoded — is refused with 400, not escaped: an escaped
//! word would be a topic nobody subscribes to on purpose, and `report.pdf`
//! turned into `report_pdf` would collide with a real `report_pdf`. A topic
//! longer than 255 bytes is refused with 414.

use axum::http::{Method, StatusCode};
use telamon_sdk::{Topic, TopicError};

/// Why a path has no topic: the status and the reason for the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

fn bad_request(reason: String) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

/// The path's words, percent-decoded; a segment that is not UTF-8 once
/// decoded, or holds `.` (it would split into two topic words), is refused.
/// Wildcards are left to [`Topic::new`], which refuses them in any topic.
pub(crate) fn path_words(path: &str) -> Result<Vec<String>, Refused> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let word = percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map_err(|_| {
                    bad_request(format!("path segment `{s}` is not UTF-8 once decoded"))
                })?;
            if word.contains('.') {
                return Err(bad_request(format!(
                    "path segment `{word}` holds `.`, which cannot be part of a topic word"
                )));
            }
            Ok(word.into_owned())
        })
        .collect()
}

/// The topic of a request with path words `words`.
pub(crate) fn request_topic(
    prefix: &str,
    method: &Method,
    words: &[String],
) -> Result<Topic, Refused> {
    if !method.as_str().bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad_request(format!(
            "method `{method}` cannot be a topic word"
        )));
    }
    let method = method.as_str().to_ascii_lowercase();
    let mut topic = String::with_capacity(prefix.len() + method.len() + 2 + words.len() * 8);
    topic.push_str(prefix);
    topic.push('.');
    topic.push_str(&method);
    for w in words {
        topic.push('.');
        topic.push_str(w);
    }
    Topic::new(&topic).map_err(|e| match e {
        TopicError::TooLong { len, .. } => Refused {
            status: StatusCode::URI_TOO_LONG,
            reason: format!("the path makes a topic of {len} bytes, more than 255"),
        },
        other => bad_request(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(method: Method, path: &str) -> Result<String, Refused> {
        request_topic("rest", &method, &path_words(path)?).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn method_and_words_make_the_topic() {
        assert_eq!(
            topic(Method::GET, "/users/42").unwrap(),
            "rest.get.users.42"
        );
        assert_eq!(topic(Method::POST, "/").unwrap(), "rest.post");
        assert_eq!(topic(Method::DELETE, "//a//b/").unwrap(), "rest.delete.a.b");
        assert_eq!(topic(Method::GET, "/caf%C3%A9").unwrap(), "rest.get.café");
    }

    #[test]
    fn words_that_cannot_be_topic_words_are_refused() {
        for path in ["/report.pdf", "/a/%2A", "/%23", "/a/%2e%2e", "/a*b"] {
            let r = topic(Method::GET, path).unwrap_err();
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        }
        assert_eq!(
            topic(Method::GET, "/%FF").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        for method in ["GET.X", "A*", "#"] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                topic(m, "/y").unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{method}"
            );
        }
        let long = format!("/{}", "w/".repeat(200));
        assert_eq!(
            topic(Method::GET, &long).unwrap_err().status,
            StatusCode::URI_TOO_LONG
        );
    }
}
