//! `[message-bus.<id>] class = "rabbit-mq"`: what the RabbitMQ bus reads from config.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use telamon_sdk::FullPolicy;

use telamon_sdk::duration;

/// Default `url`.
pub const DEFAULT_URL: &str = "amqp://127.0.0.1:5672/%2f";
/// Default `exchange`.
pub const DEFAULT_EXCHANGE: &str = "telamon";

/// Delivery guarantee of a RabbitMQ bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// No publisher confirms, transient messages, consumer auto-ack.
    AtMostOnce,
    /// Publisher confirms with a bounded window (unconfirmed messages are
    /// re-sent after a reconnect), persistent messages, consumer ack after the
    /// subscriber's queue took the message. Consumers may see duplicates.
    AtLeastOnce,
}

/// A string that never appears in `Debug` or logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Many(Vec<String>),
}

/// The RabbitMQ bus config. `Debug` hides passwords, also inside URLs.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct RabbitMqConfig {
    #[serde(rename = "url")]
    urls: Urls,
    /// Replaces the password of every URL (so it can come from the environment).
    pub password: Option<Secret>,
    /// The topic exchange; routing key = topic.
    pub exchange: String,
    /// Declare the exchange durable, so bindings of durable (at-least-once)
    /// queues survive a broker restart. Everyone declaring an exchange must
    /// agree; Caryatid declares its exchange non-durable, so set `false` to
    /// share one with Caryatid.
    pub exchange_durable: bool,
    /// Unacknowledged deliveries a consumer may hold.
    pub prefetch: u16,
    /// `"at-most-once"` or `"at-least-once"`.
    pub delivery: DeliveryMode,
    /// Publisher confirms outstanding at once (at-least-once).
    pub confirm_window: usize,
    /// Deadline of one connection attempt: TCP, AMQP handshake, channels and
    /// declarations. A node silent for longer is skipped for the next URL.
    #[serde(deserialize_with = "duration::deserialize")]
    pub connection_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect-max`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(deserialize_with = "duration::deserialize")]
    pub reconnect_max: Duration,
    /// At-least-once subscription queues outlive a lost connection by this
    /// long (`x-expires`), so nothing published meanwhile is lost; a clean stop
    /// deletes them at once.
    #[serde(deserialize_with = "duration::deserialize")]
    pub queue_expiry: Duration,
    /// Largest encoded message accepted, in bytes: larger publishes and
    /// requests are refused; larger deliveries are rejected as malformed.
    pub max_message_size: usize,
    /// How `()` (and a JSON `null`) is written: `"null"`, or `"empty-array"`
    /// as Caryatid writes it. Both are read either way.
    pub cbor_unit: crate::codec::CborUnit,
    /// Deepest nesting (arrays, maps, tags) a received body may have;
    /// deeper bodies are rejected as malformed before they are decoded.
    pub max_nesting_depth: usize,
    /// Subscription pattern → consumer group: subscriptions with that pattern
    /// share one durable queue named `<exchange>.group.<group>`, so instances
    /// share the work instead of each getting every message.
    pub consumer_groups: HashMap<String, String>,
    /// Serve this process's subscriptions (outside consumer groups) from one
    /// queue with a binding per distinct pattern, dispatched locally: a message
    /// that matches several subscriptions crosses the network once, and 10 000
    /// subscriptions are one queue on the broker. `false`: a queue and a
    /// consumer per subscription, so a slow `wait` subscriber holds back only
    /// itself.
    pub shared_queue: bool,
    /// Where rejected (malformed) messages go; none: they are dropped.
    pub dead_letter_exchange: Option<String>,
    /// Local queue capacity of each subscription.
    pub subscriber_queue_size: usize,
    /// `"wait"` or `"drop-oldest"` for the local queue.
    pub full_policy: FullPolicy,
    /// Local queue capacity of each request handler.
    pub request_queue_size: usize,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        RabbitMqConfig {
            urls: Urls::One(DEFAULT_URL.to_owned()),
            password: None,
            exchange: DEFAULT_EXCHANGE.to_owned(),
            exchange_durable: true,
            prefetch: 256,
            delivery: DeliveryMode::AtLeastOnce,
            confirm_window: 1024,
            connection_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            queue_expiry: Duration::from_secs(60),
            max_message_size: crate::codec::DEFAULT_MAX_SIZE,
            max_nesting_depth: crate::codec::DEFAULT_MAX_DEPTH,
            cbor_unit: crate::codec::CborUnit::Null,
            consumer_groups: HashMap::new(),
            shared_queue: true,
            dead_letter_exchange: None,
            subscriber_queue_size: 1024,
            full_policy: FullPolicy::Wait,
            request_queue_size: 1024,
        }
    }
}

impl RabbitMqConfig {
    /// The broker URLs, in the order they are tried, with `password` applied.
    pub fn urls(&self) -> Vec<String> {
        let list = match &self.urls {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(v) => v.clone(),
        };
        match &self.password {
            None => list,
            Some(p) => list.iter().map(|u| with_password(u, p.expose())).collect(),
        }
    }

    /// The limits every received body is checked against.
    pub fn decode_limits(&self) -> crate::codec::DecodeLimits {
        crate::codec::DecodeLimits::new(self.max_message_size, self.max_nesting_depth)
    }

    /// Checks values serde cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        let urls = self.urls();
        if urls.is_empty() {
            return Err("`url` lists no broker".into());
        }
        for u in &urls {
            let tls = u.starts_with("amqps://");
            if !(u.starts_with("amqp://") || tls) {
                return Err(format!("`{}` is not an amqp:// or amqps:// URL", redact(u)));
            }
            if tls && !cfg!(feature = "tls") {
                return Err(format!(
                    "`{}`: amqps:// needs telamon-process built with the `tls` feature",
                    redact(u)
                ));
            }
        }
        if self.exchange.is_empty() {
            return Err("`exchange` must not be empty".into());
        }
        if self.prefetch == 0 || self.confirm_window == 0 {
            return Err("`prefetch` and `confirm-window` must be at least 1".into());
        }
        if self.max_nesting_depth == 0 || self.max_message_size == 0 {
            return Err("`max-nesting-depth` and `max-message-size` must be at least 1".into());
        }
        if self.max_nesting_depth > crate::codec::MAX_SAFE_DEPTH {
            return Err(format!(
                "`max-nesting-depth` {} is more than {}: decoding that deep can overflow the stack",
                self.max_nesting_depth,
                crate::codec::MAX_SAFE_DEPTH
            ));
        }
        if self.subscriber_queue_size == 0 || self.request_queue_size == 0 {
            return Err("queue sizes must be at least 1".into());
        }
        if self.connection_timeout.is_zero() {
            return Err("`connection-timeout` must be > 0".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err("`reconnect-min` must be > 0 and <= `reconnect-max`".into());
        }
        let mut groups: Vec<&String> = self.consumer_groups.values().collect();
        groups.sort();
        if let Some(w) = groups.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "consumer-groups: group `{}` is named for two patterns; a group's queue carries one pattern",
                w[0]
            ));
        }
        for (pattern, group) in &self.consumer_groups {
            telamon_sdk::Pattern::new(pattern)
                .map_err(|e| format!("consumer-groups: `{pattern}`: {e}"))?;
            if group.is_empty() {
                return Err(format!(
                    "consumer-groups: `{pattern}` has an empty group name"
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls().iter().map(|u| redact(u)).collect();
        f.debug_struct("RabbitMqConfig")
            .field("urls", &urls)
            .field("password", &self.password)
            .field("exchange", &self.exchange)
            .field("delivery", &self.delivery)
            .field("prefetch", &self.prefetch)
            .field("confirm_window", &self.confirm_window)
            .field("consumer_groups", &self.consumer_groups)
            .field("shared_queue", &self.shared_queue)
            .finish_non_exhaustive()
    }
}

/// `amqp://user:secret@host/` → `amqp://user:***@host/`.
///
/// Everything up to the *last* `@` counts as user info, so a password that
/// holds `/`, `@` or `:` is still hidden.
pub fn redact(url: &str) -> String {
    match userinfo(url) {
        Some((start, end)) => match url[start..end].find(':') {
            Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[end..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Byte range of `user[:password]` in the URL, if it has one.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let at = url[start..].rfind('@')?;
    Some((start, start + at))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn with_password(url: &str, password: &str) -> String {
    let password = percent_encode(password);
    match userinfo(url) {
        Some((start, end)) => {
            let user = url[start..end].split(':').next().unwrap_or("");
            format!("{}{user}:{password}{}", &url[..start], &url[end..])
        }
        None => match url.find("://") {
            Some(i) => format!("{}guest:{password}@{}", &url[..i + 3], &url[i + 3..]),
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_debug_output() {
        let mut c = RabbitMqConfig {
            urls: Urls::Many(vec![
                "amqp://bob:hunter2@a:5672/%2f".into(),
                "amqp://b:5672".into(),
            ]),
            ..Default::default()
        };
        c.password = Some(Secret("s3cr3t".into()));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert_eq!(c.urls()[0], "amqp://bob:s3cr3t@a:5672/%2f");
        assert_eq!(c.urls()[1], "amqp://guest:s3cr3t@b:5672");
        assert_eq!(redact("amqp://bob:hunter2@a/"), "amqp://bob:***@a/");
        assert_eq!(
            redact("amqp://bob:pa/ss@word@a:5672/%2f"),
            "amqp://bob:***@a:5672/%2f"
        );
        let odd = RabbitMqConfig {
            password: Some(Secret("p/a@s:s%#?".into())),
            ..Default::default()
        };
        let url = &odd.urls()[0];
        assert_eq!(
            url,
            "amqp://guest:p%2Fa%40s%3As%25%23%3F@127.0.0.1:5672/%2f"
        );
        assert!(!format!("{odd:?}").contains("p%2F"), "{odd:?}");
    }
}
