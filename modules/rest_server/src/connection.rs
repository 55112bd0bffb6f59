//! Connections the server can cut: each accepted socket carries a switch
//! that makes its next read or write fail, so hyper drops the connection.
//!
//! An event stream uses it on a client that fell behind: ending the stream
//! alone would not do, because hyper waits — forever, for a client that
//! stopped reading — to write what it already holds before it looks at the
//! stream again.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts TCP connections that can be cut.
#[derive(Debug)]
pub(crate) struct CuttableListener(pub(crate) TcpListener);

/// What a handler knows of its connection: the peer, and the switch.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    pub(crate) cut: Cut,
}

/// The switch: thrown once, it wakes the connection's task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cut(Arc<CutState>);

#[derive(Debug, Default)]
struct CutState {
    thrown: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    /// Makes the connection's next read or write fail.
    pub(crate) fn cut(&self) {
        self.0.thrown.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// Ready once thrown; registers `cx` to be woken then.
    fn poll(&self, cx: &mut Context<'_>) -> bool {
        if self.0.thrown.load(Ordering::Acquire) {
            return true;
        }
        self.0.waker.register(cx.waker());
        self.0.thrown.load(Ordering::Acquire)
    }
}

impl Listener for CuttableListener {
    type Io = CuttableIo;
    type Addr = Connection;

    async fn accept(&mut self) -> (CuttableIo, Connection) {
        let (stream, peer) = Listener::accept(&mut self.0).await;
        let cut = Cut::default();
        let io = CuttableIo {
            cut: cut.clone(),
            stream,
        };
        (io, Connection { peer, cut })
    }

    fn local_addr(&self) -> io::Result<Connection> {
        Ok(Connection {
            peer: self.0.local_addr()?,
            cut: Cut::default(),
        })
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream whose reads and writes fail once its switch is thrown.
#[derive(Debug)]
pub(crate) struct CuttableIo {
    stream: TcpStream,
    cut: Cut,
}

impl CuttableIo {
    /// `pending` from the socket, unless the switch is thrown (checked only
    /// then, so a busy connection pays nothing for it).
    fn or_cut<T>(&self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if self.cut.poll(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "cut by the server",
            ))),
            other => other,
        }
    }
}

impl AsyncRead for CuttableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.or_cut(cx, polled)
    }
}

impl AsyncWrite for CuttableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.or_cut(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.or_cut(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.or_cut(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
