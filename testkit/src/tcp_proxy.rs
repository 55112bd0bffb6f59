//! A TCP proxy a test puts between a client and a server, to play a network
//! that goes silent or breaks for that one client while others keep their
//! connections: [`freeze`](TcpProxy::freeze) holds back everything the server
//! sends without closing anything (a half-open connection, a stalled
//! server), [`cut`](TcpProxy::cut) ends every connection at once (a reset),
//! [`close`](TcpProxy::close) also stops accepting (the server is gone).
//!
//! ```
//! use telamon_testkit::{AxonTestServer, TcpProxy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AxonTestServer::builder().start().await?;
//! let proxy = TcpProxy::start(server.address()).await?;
//! // Point the client at `proxy.address()`; later:
//! proxy.freeze(); // the client hears nothing more, and nothing is closed
//! proxy.thaw();
//! proxy.cut(); // every connection through the proxy ends
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    /// Bumped by `cut`: connections of an older generation end.
    generation: u64,
    /// Server → client bytes are held back.
    frozen: bool,
    /// New connections are accepted.
    open: bool,
    /// New connections are closed as soon as they are accepted.
    refusing: bool,
}

/// The proxy; it stops (and ends every connection) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    state: watch::Sender<State>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    ///
    /// # Errors
    /// When the listening socket cannot be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (state, mut rx) = watch::channel(State {
            generation: 0,
            frozen: false,
            open: true,
            refusing: false,
        });
        let watcher = state.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = rx.wait_for(|s| !s.open) => return,
                };
                let Ok((inbound, _)) = accepted else { return };
                if watcher.borrow().refusing {
                    drop(inbound);
                    continue;
                }
                let _ = inbound.set_nodelay(true);
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = outbound.set_nodelay(true);
                let generation = watcher.borrow().generation;
                let (ci, co) = inbound.into_split();
                let (si, so) = outbound.into_split();
                tokio::spawn(pump(ci, so, watcher.clone(), generation, false));
                tokio::spawn(pump(si, co, watcher.clone(), generation, true));
            }
        });
        Ok(TcpProxy { address, state })
    }

    /// Where clients connect.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Holds back everything the server sends, on current and new
    /// connections, until [`thaw`](Self::thaw) or [`cut`](Self::cut).
    pub fn freeze(&self) {
        self.state.send_modify(|s| s.frozen = true);
    }

    /// Lets the server's bytes through again (held bytes follow in order).
    pub fn thaw(&self) {
        self.state.send_modify(|s| s.frozen = false);
    }

    /// Ends every connection now; new ones are still accepted (and not frozen).
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.generation += 1;
            s.frozen = false;
        });
    }

    /// Ends every connection and closes new ones at once, until
    /// [`admit`](Self::admit): a server that is down for a while.
    pub fn refuse(&self) {
        self.state.send_modify(|s| {
            s.generation += 1;
            s.frozen = false;
            s.refusing = true;
        });
    }

    /// Forwards new connections again after [`refuse`](Self::refuse).
    pub fn admit(&self) {
        self.state.send_modify(|s| s.refusing = false);
    }

    /// Ends every connection and accepts no more.
    pub fn close(&self) {
        self.cut();
        self.state.send_modify(|s| s.open = false);
    }
}

impl Drop for TcpProxy {
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
    from_server: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if from_server {
            let resumed = state
                .wait_for(|s| !s.frozen || s.generation != generation)
                .await;
            if resumed.map_or(true, |s| s.generation != generation) {
                return;
            }
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            changed = state.wait_for(|s| s.generation != generation || (from_server && s.frozen)) => {
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
