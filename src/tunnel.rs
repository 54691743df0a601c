//! A tunnel: bytes both ways between two streams until both sides are
//! done, for upgraded HTTP connections (WebSockets), CONNECT, and opaque
//! TCP. Half-close is carried: when one side ends its writing, the other
//! side's write half is shut down and bytes keep flowing the other way. A
//! tunnel in which no byte moves for `idle` is closed.
//!
//! [`spawn`] runs one in its own task, once both sides are ready (an HTTP
//! upgrade completes after the 101 has been sent), counts it, and writes
//! its access log line when it ends. It holds a drain watch: a drain waits
//! for open tunnels, up to the drain timeout. A config reload leaves them
//! alone.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use crate::drain;
use crate::metrics::{TunnelLabels, TunnelMetrics};
use crate::observe::TunnelRecord;

/// A stream a tunnel carries: a socket, a TLS stream, an upgraded HTTP
/// connection, a stream of the HTTP/2 link.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// One side of a tunnel: open already, or an HTTP upgrade that completes
/// once its response has been sent.
pub enum Side {
    /// Connected.
    Open(BoxIo),
    /// Waiting for hyper to hand over the connection.
    Upgrade(OnUpgrade),
}

impl Side {
    async fn open(self) -> Result<BoxIo, hyper::Error> {
        match self {
            Self::Open(io) => Ok(io),
            Self::Upgrade(upgrade) => Ok(Box::new(TokioIo::new(upgrade.await?))),
        }
    }
}

/// A tunnel agreed on and not yet running: what a handler returns beside
/// the response that opens it.
pub struct Pending {
    /// The client's side.
    pub client: Side,
    /// The upstream's side.
    pub upstream: Side,
    /// `websocket`, `upgrade`, `connect` or `opaque`.
    pub kind: &'static str,
}

/// A drain watch a listener lends to requests that may open a tunnel, so
/// the drain waits for the tunnel (a request's connection ends when it is
/// upgraded).
#[derive(Debug, Clone)]
pub struct Lent(pub drain::Watch);

/// Whose tunnel it is, for its metrics and log line.
#[derive(Debug, Clone)]
pub struct Labels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The destination, or this service.
    pub service: Arc<str>,
}

/// Where a tunnel reports, and how long it may sit idle.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Its metrics.
    pub metrics: TunnelMetrics,
    /// No byte either way for this long closes it.
    pub idle: Duration,
}

/// The kind of an upgrade, by its `Upgrade` token: only names from a fixed
/// set, so metric labels stay bounded.
pub fn upgrade_kind(token: &[u8]) -> &'static str {
    if token.eq_ignore_ascii_case(b"websocket") {
        "websocket"
    } else {
        "upgrade"
    }
}

impl Pending {
    /// Runs the tunnel in its own task; `watch` holds a drain open until it
    /// ends.
    pub fn spawn(
        self,
        labels: Labels,
        settings: Settings,
        record: Option<TunnelRecord>,
        watch: Option<drain::Watch>,
    ) {
        tokio::spawn(run(self, labels, settings, record, watch));
    }
}

async fn run(
    pending: Pending,
    labels: Labels,
    settings: Settings,
    record: Option<TunnelRecord>,
    _watch: Option<drain::Watch>,
) {
    let Pending {
        client,
        upstream,
        kind,
    } = pending;
    let metric_labels = TunnelLabels {
        direction: labels.direction,
        service: &labels.service,
        kind,
    };
    let (client, upstream) = tokio::join!(client.open(), upstream.open());
    let (client, upstream) = match (client, upstream) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(e), _) | (_, Err(e)) => {
            debug!(service = %labels.service, kind, error = %e, "tunnel never opened");
            if let Some(record) = record {
                record.done(0, 0, Some("tunnel-reset"));
            }
            return;
        }
    };
    settings.metrics.opened(metric_labels);
    let started = Instant::now();
    let carried = splice(client, upstream, settings.idle, std::future::pending()).await;
    debug!(
        service = %labels.service,
        kind,
        sent = carried.sent,
        received = carried.received,
        end = carried.end.as_str(),
        "tunnel closed"
    );
    settings.metrics.closed(
        metric_labels,
        carried.end.as_str(),
        (carried.sent, carried.received),
        started.elapsed(),
    );
    if let Some(record) = record {
        record.done(carried.sent, carried.received, carried.end.error());
    }
}

/// How a tunnel ended, and what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// Bytes from the first stream to the second (client to upstream).
    pub sent: u64,
    /// Bytes from the second to the first (upstream to client).
    pub received: u64,
    /// Why it ended.
    pub end: End,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A side failed (a reset).
    Error,
    /// The sidecar is stopping: the drain timeout passed.
    Shutdown,
}

impl End {
    /// The error an access log line and a span show for a tunnel that did
    /// not simply close.
    pub fn error(self) -> Option<&'static str> {
        match self {
            Self::Closed => None,
            Self::Idle => Some("tunnel-idle"),
            Self::Error => Some("tunnel-reset"),
            Self::Shutdown => Some("shutdown"),
        }
    }

    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle",
            Self::Error => "error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Carries bytes between `a` and `b` until both are done, no byte moves
/// for `idle`, or `stop` completes.
pub async fn splice<A, B>(
    a: A,
    b: B,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Carried
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut a = Counted::new(a, &activity);
    let mut b = Counted::new(b, &activity);
    let (sent, received) = (a.count.clone(), b.count.clone());
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy, stop);
    let end = loop {
        tokio::select! {
            result = &mut copy => break match result {
                Ok(_) => End::Closed,
                Err(_) => End::Error,
            },
            () = &mut stop => break End::Shutdown,
            () = tokio::time::sleep_until(activity.last() + idle) => {
                if activity.last() + idle <= Instant::now() {
                    break End::Idle;
                }
            }
        }
    };
    Carried {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        end,
    }
}

/// When a byte last moved, either way.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// A side of the tunnel that counts the bytes read from it.
struct Counted<T> {
    io: T,
    count: Arc<AtomicU64>,
    activity: Arc<Activity>,
}

impl<T> Counted<T> {
    fn new(io: T, activity: &Arc<Activity>) -> Self {
        Self {
            io,
            count: Arc::default(),
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.count.fetch_add(n as u64, Ordering::Relaxed);
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_close_is_carried() {
        let (mut client, near) = tokio::io::duplex(64 * 1024);
        let (far, mut server) = tokio::io::duplex(64 * 1024);
        let tunnel = tokio::spawn(splice(
            near,
            far,
            Duration::from_secs(60),
            std::future::pending(),
        ));
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap(); // the client is done sending
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "the half-close reached the server");
        // The server still answers, after the client's half-close.
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        let carried = tunnel.await.unwrap();
        assert_eq!(
            carried,
            Carried {
                sent: 4,
                received: 5,
                end: End::Closed
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_nothing_moves_in_is_closed() {
        let (_client, near) = tokio::io::duplex(1024);
        let (far, _server) = tokio::io::duplex(1024);
        let started = Instant::now();
        let carried = splice(near, far, Duration::from_secs(30), std::future::pending()).await;
        assert_eq!(carried.end, End::Idle);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }
}
