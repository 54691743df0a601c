//! The accept loop every listener runs: hand each connection to a
//! handler, and survive accept errors (such as running out of file
//! descriptors) instead of spinning or dying; the per-listener connection
//! cap; the socket options of every connection; a captured connection's
//! original destination; and [`Metered`], which counts each accepted
//! connection and its bytes.

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

/// Whether the listener may take one more connection under `cap`. Over it,
/// the caller closes the connection at once; it is counted, and logged
/// the first time and then at every doubling, so a flood costs a few lines.
pub fn admit(counters: &ListenerCounters, cap: usize, name: &'static str) -> bool {
    let open = usize::try_from(counters.active.get()).unwrap_or(0);
    if open < cap {
        return true;
    }
    counters.refused.inc();
    let refused = counters.refused.get();
    if refused.is_power_of_two() {
        warn!(
            listener = name,
            open,
            max_connections = cap,
            refused,
            "connection refused: the listener holds its max_connections"
        );
    }
    false
}

/// Where the client meant to connect, when it was redirected here
/// (iptables `REDIRECT`, read with `SO_ORIGINAL_DST`); `None` for a
/// connection made to this listener itself, or without netfilter.
pub fn original_dst(tcp: &TcpStream) -> Option<SocketAddr> {
    let local = tcp.local_addr().ok()?;
    let socket = socket2::SockRef::from(tcp);
    let original = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    let original = original.ok()?.as_socket()?;
    // Without a redirect, conntrack reports the address itself.
    let itself = original.port() == local.port()
        && original.ip().to_canonical() == local.ip().to_canonical();
    (!itself).then_some(original)
}

/// How long a connection may be silent before the kernel probes it, how
/// often, and how many unanswered probes end it: a peer that vanished
/// without a FIN (a node gone, a NAT entry dropped) is noticed within
/// about 90 s instead of hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// The options every connection gets, accepted or dialled: no Nagle delay
/// (small requests and responses must not wait), and TCP keepalive.
pub fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_socket_gets_keepalive_and_no_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        tune(&tcp);
        let socket = socket2::SockRef::from(&tcp);
        assert!(tcp.nodelay().expect("nodelay"));
        assert!(socket.keepalive().expect("keepalive"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(
            socket.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("probes"),
            KEEPALIVE_PROBES
        );
    }
}
