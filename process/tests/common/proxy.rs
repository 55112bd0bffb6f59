//! A TCP proxy in front of the broker that a test can freeze, cut and close,
//! to play a broker that stops answering or a network that fails, for one
//! process only (other tests keep their connections).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::rabbit::broker_address;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    /// Bumped by `cut`: connections of an older generation end.
    generation: u64,
    /// Broker → client bytes are held back.
    frozen: bool,
    /// New connections are accepted.
    open: bool,
}

/// The proxy; stops when dropped.
pub struct Proxy {
    port: u16,
    state: watch::Sender<State>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to the test broker.
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, mut rx) = watch::channel(State {
            generation: 0,
            frozen: false,
            open: true,
        });
        let target = broker_address();
        let watcher = state.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = rx.wait_for(|s| !s.open) => return,
                };
                let Ok((inbound, _)) = accepted else { return };
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let generation = watcher.borrow().generation;
                let (ci, co) = inbound.into_split();
                let (bi, bo) = outbound.into_split();
                tokio::spawn(pump(ci, bo, watcher.clone(), generation, false));
                tokio::spawn(pump(bi, co, watcher.clone(), generation, true));
            }
        });
        Proxy { port, state }
    }

    /// An AMQP URL through the proxy.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Holds back everything the broker sends (confirms, replies, deliveries).
    pub fn freeze(&self) {
        self.state.send_modify(|s| s.frozen = true);
    }

    /// Ends every connection now; new ones are still accepted (and not frozen).
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.generation += 1;
            s.frozen = false;
        });
    }

    /// Ends every connection and accepts no more.
    pub fn close(&self) {
        self.cut();
        self.state.send_modify(|s| s.open = false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
    }
}

/// Copies one direction until either side closes or the connection is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    generation: u64,
    from_broker: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if from_broker {
            let resumed = state
                .wait_for(|s| !s.frozen || s.generation != generation)
                .await;
            if resumed.map_or(true, |s| s.generation != generation) {
                return;
            }
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            changed = state.wait_for(|s| s.generation != generation || (from_broker && s.frozen)) => {
                if changed.map_or(true, |s| s.generation != generation) {
                    return;
                }
                continue;
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
