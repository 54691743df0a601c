//! The accept loop every listener runs: hand each connection to a
//! handler, and survive accept errors (such as running out of file
//! descriptors) instead of spinning or dying; and [`Metered`], which
//! counts each accepted connection and its bytes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::metrics::ListenerCounters;

/// Accepts until aborted; an accept error (such as running out of file
/// descriptors) is logged and retried after a pause rather than fatal.
pub async fn accept_loop<F>(listener: &TcpListener, name: &'static str, mut on_connection: F)
where
    F: FnMut(TcpStream, SocketAddr),
{
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => on_connection(tcp, addr),
            Err(e) => {
                warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection that counts its bytes, and itself while open,
/// in its listener's metrics.
#[derive(Debug)]
pub struct Metered<T> {
    inner: T,
    counters: ListenerCounters,
}

impl<T> Metered<T> {
    /// Counts `inner` as opened now.
    pub fn new(inner: T, counters: ListenerCounters) -> Self {
        counters.opened.inc();
        counters.active.inc();
        Self { inner, counters }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T> Drop for Metered<T> {
    fn drop(&mut self) {
        self.counters.closed.inc();
        self.counters.active.dec();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.counters.received.inc_by(read as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            this.counters.sent.inc_by(written as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            this.counters.sent.inc_by(written as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
