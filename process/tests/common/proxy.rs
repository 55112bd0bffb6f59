//! A TCP proxy in front of the broker that a test can freeze, cut and close,
//! to play a broker that stops answering or a network that fails, for one
//! process only (other tests keep their connections): the testkit's
//! [`TcpProxy`](telamon_testkit::TcpProxy) pointed at the test broker.

use telamon_testkit::TcpProxy;

use super::rabbit::broker_address;

/// The proxy; stops when dropped.
pub struct Proxy(TcpProxy);

impl Proxy {
    /// Listens on a free loopback port and forwards to the test broker.
    pub async fn start() -> Proxy {
        let target = tokio::net::lookup_host(broker_address())
            .await
            .unwrap()
            .next()
            .unwrap();
        Proxy(TcpProxy::start(target).await.unwrap())
    }

    /// An AMQP URL through the proxy.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.0.address())
    }

    /// Holds back everything the broker sends (confirms, replies, deliveries).
    pub fn freeze(&self) {
        self.0.freeze();
    }

    /// Ends every connection now; new ones are still accepted.
    pub fn cut(&self) {
        self.0.cut();
    }

    /// Ends every connection and closes new ones at once, until `admit`.
    #[allow(dead_code)]
    pub fn refuse(&self) {
        self.0.refuse();
    }

    /// Forwards new connections again.
    #[allow(dead_code)]
    pub fn admit(&self) {
        self.0.admit();
    }

    /// Ends every connection and accepts no more.
    pub fn close(&self) {
        self.0.close();
    }
}
