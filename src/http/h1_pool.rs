//! A pool of HTTP/1.1 keep-alive connections to one address, over plain
//! TCP or, for the mesh link, over mTLS (see [`Dial`]).
//!
//! Written for the proxy rather than taken from hyper-util's pooled client,
//! because a proxy needs three things that client does not give:
//! - an idle connection is never used after the server's own keep-alive
//!   timeout (learned from `Keep-Alive: timeout=N`) or our idle timeout;
//! - a request that a dying pooled connection never sent comes back and
//!   goes out again on a fresh connection, and the caller learns whether a
//!   failed request may have reached the server (for safe retries);
//! - the number of open connections is known, to enforce a limit.

use std::net::SocketAddr;
use std::pin::Pin;

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderMap};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::debug;

use super::server::HeaderLimits;
use super::{Body, BoxError, ProxyError};

/// Idle connections kept at most.
const MAX_IDLE: usize = 512;
/// An advertised keep-alive timeout is cut by this much, so we stop using
/// a connection before the server may close it.
const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

/// Settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Bound on the TCP connect.
    pub connect_timeout: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Header limits for responses.
    pub limits: HeaderLimits,
}

/// How a pool opens a connection: the TCP connect and anything layered on
/// it before HTTP/1.1 starts (TLS, for the mesh link). The pool bounds it
/// by its connect timeout.
pub trait Dial: Send + Sync + 'static {
    /// What hyper reads and writes.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Opens a connection to `addr`.
    fn dial(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Io, ProxyError>> + Send;
}

/// Plain TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Dial for Tcp {
    type Io = TokioIo<TcpStream>;

    async fn dial(&self, addr: SocketAddr) -> Result<Self::Io, ProxyError> {
        Ok(TokioIo::new(super::dial::tcp(addr).await?))
    }
}

/// HTTP/1.1 connections to one address.
#[derive(Debug)]
pub struct H1Pool<D = Tcp> {
    addr: SocketAddr,
    settings: PoolSettings,
    dial: D,
    idle: Mutex<IdleList>,
    /// One permit per connection open or being dialled.
    slots: Arc<Semaphore>,
}

/// The idle connections, and whether a task closes them when they expire.
#[derive(Debug, Default)]
struct IdleList {
    conns: Vec<Idle>,
    reaping: bool,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    expires: Instant,
}

impl<D: Dial> H1Pool<D> {
    /// An empty pool for `addr`, whose connections `dial` opens.
    pub fn new(addr: SocketAddr, settings: PoolSettings, dial: D) -> Self {
        Self {
            addr,
            settings,
            dial,
            idle: Mutex::new(IdleList::default()),
            slots: Arc::new(Semaphore::new(
                settings.max_connections.min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        let max = self.settings.max_connections.min(Semaphore::MAX_PERMITS);
        max - self.slots.available_permits()
    }

    /// Idle connections waiting in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle_list().conns.len()
    }

    /// Sends `req` (whose URI and headers are ready) on an idle connection,
    /// or a new one. A pooled connection the server closed as we picked it
    /// up is no error of the request's: if the request was not sent, or is
    /// an idempotent request without a body, it goes out again on a fresh
    /// connection (as Go's client does), and the caller never notices.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed, the rare path: see `connect_boxed`.
                None => (self.connect_boxed().await?, false),
            };
            // Kept only when a replay may be needed: a reused connection
            // and a request that is safe and cheap to send twice.
            let again = (reused && replayable(&req)).then(|| req_head(&req));
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.pooled(response, sender)),
                Err(mut err) => match (err.take_message(), again) {
                    (Some(unsent), _) if reused => {
                        debug!(addr = %self.addr, "pooled connection closed before use; reconnecting");
                        req = unsent;
                    }
                    (None, Some(head)) if closed_early(err.error()) => {
                        debug!(addr = %self.addr, "pooled connection closed as it was used; resending");
                        let fresh = self.connect_boxed().await?;
                        return self
                            .send_once(fresh, Request::from_parts(head, Body::Empty))
                            .await;
                    }
                    _ => return Err(self.upstream(err.into_error())),
                },
            }
        }
    }

    /// Sends on `sender`, no second chances.
    async fn send_once(
        self: &Arc<Self>,
        mut sender: SendRequest<Body>,
        req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        match sender.send_request(req).await {
            Ok(response) => Ok(self.pooled(response, sender)),
            Err(err) => Err(self.upstream(err)),
        }
    }

    fn upstream(&self, err: hyper::Error) -> ProxyError {
        ProxyError::upstream(self.addr, err)
    }

    /// The most recently used idle connection that is still good.
    async fn checkout(&self) -> Option<SendRequest<Body>> {
        loop {
            let idle = { self.idle_list().conns.pop()? };
            if idle.sender.is_closed() || idle.expires <= Instant::now() {
                continue; // dropping it closes the connection
            }
            let mut sender = idle.sender;
            // The connection finishes the previous response a moment after
            // its body ends; this wait is that moment.
            match tokio::time::timeout(Duration::from_secs(1), sender.ready()).await {
                Ok(Ok(())) => return Some(sender),
                _ => continue,
            }
        }
    }

    /// A new connection, its future on the heap: inline, the connect and
    /// handshake futures would make every request's future (moved into a
    /// box at each layer of the stack) that much bigger.
    fn connect_boxed(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<SendRequest<Body>, ProxyError>> + Send + '_>> {
        Box::pin(self.connect())
    }

    async fn connect(&self) -> Result<SendRequest<Body>, ProxyError> {
        let addr = self.addr;
        // Counted before dialling, so connects under way count too and
        // concurrent ones cannot pass the cap together.
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProxyError::Overloaded {
                limit: "max-connections",
            })?;
        let timeout = self.settings.connect_timeout;
        let io = tokio::time::timeout(timeout, self.dial.dial(addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout {
                addr,
                after: timeout,
            })??;
        let limits = self.settings.limits;
        let mut builder = http1::Builder::new();
        builder.max_buf_size(limits.max_bytes.max(8192));
        if let Some(max) = limits.h1_max_headers() {
            builder.max_headers(max);
        }
        let (sender, connection) = builder
            .handshake(io)
            .await
            .map_err(|e| ProxyError::upstream(addr, e))?;
        tokio::spawn(async move {
            // An upgrade (a 101, or a CONNECT's 2xx) hands the connection
            // to the tunnel instead of ending it.
            if let Err(e) = connection.with_upgrades().await {
                debug!(%addr, error = %e, "HTTP/1.1 connection ended");
            }
            drop(slot);
        });
        Ok(sender)
    }

    /// Wraps the response so its connection returns to the pool once the
    /// body has been read to the end (if the server keeps it alive).
    fn pooled(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
    ) -> Response<Body> {
        // A connection that switched protocols is the tunnel's now.
        let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            || response
                .extensions()
                .get::<hyper::upgrade::OnUpgrade>()
                .is_some();
        let keep =
            keep_alive_for(response.headers(), self.settings.idle_timeout).filter(|_| !switched);
        let (parts, body) = response.into_parts();
        let give_back = keep.map(|for_how_long| GiveBack {
            pool: self.clone() as Arc<dyn Checkin>,
            sender,
            expires: Instant::now() + for_how_long,
        });
        let body = PooledBody {
            inner: body,
            give_back,
        };
        Response::from_parts(parts, Body::pooled(body))
    }
}

/// Whether a request may be sent a second time without a second thought:
/// an idempotent method (RFC 9110) and no body.
fn replayable(req: &Request<Body>) -> bool {
    use http::Method;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE
    ) && http_body::Body::is_end_stream(req.body())
}

/// A copy of the request's head.
fn req_head(req: &Request<Body>) -> http::request::Parts {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    // No extensions: the replay goes straight to the connection.
    head.into_parts().0
}

/// The connection closed before any of the response arrived.
fn closed_early(err: &hyper::Error) -> bool {
    err.is_incomplete_message() || err.is_canceled() || err.is_closed()
}

/// How long the connection may stay idle after this response, or `None`
/// if the server closes it.
pub fn keep_alive_for(headers: &HeaderMap, idle_timeout: Duration) -> Option<Duration> {
    let closes = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| super::headers::tokens(v.as_bytes()))
        .any(|t| t.eq_ignore_ascii_case(b"close"));
    if closes {
        return None;
    }
    let advertised = headers
        .get(super::headers::KEEP_ALIVE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|param| {
                let (key, value) = param.split_once('=')?;
                (key.trim().eq_ignore_ascii_case("timeout"))
                    .then(|| value.trim().parse::<u64>().ok())
                    .flatten()
            })
        })
        .map(|secs| Duration::from_secs(secs).saturating_sub(KEEP_ALIVE_MARGIN));
    match advertised {
        Some(Duration::ZERO) => None,
        Some(advertised) => Some(advertised.min(idle_timeout)),
        None => Some(idle_timeout),
    }
}

/// Where a connection goes back to: its pool, whatever it dials.
trait Checkin: Send + Sync {
    fn give_back(self: Arc<Self>, sender: SendRequest<Body>, expires: Instant);
}

impl<D: Dial> Checkin for H1Pool<D> {
    fn give_back(self: Arc<Self>, sender: SendRequest<Body>, expires: Instant) {
        let mut idle = self.idle_list();
        let now = Instant::now();
        idle.conns
            .retain(|i| i.expires > now && !i.sender.is_closed());
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push(Idle { sender, expires });
        }
        if !std::mem::replace(&mut idle.reaping, true) {
            tokio::spawn(reap(Arc::downgrade(&self)));
        }
    }
}

impl<D> H1Pool<D> {
    fn idle_list(&self) -> std::sync::MutexGuard<'_, IdleList> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes a pool's idle connections as they expire, while it has any: an
/// app that never closes idle connections itself must not keep the
/// connections of a past peak open for good. Ends when the pool is empty
/// (the next idle connection starts another) or gone.
async fn reap<D: Dial>(pool: Weak<H1Pool<D>>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle_list();
            let now = Instant::now();
            // Dropping a connection's sender closes it.
            idle.conns
                .retain(|i| i.expires > now && !i.sender.is_closed());
            match idle.conns.iter().map(|i| i.expires).min() {
                Some(next) => next,
                None => {
                    idle.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

struct GiveBack {
    pool: Arc<dyn Checkin>,
    sender: SendRequest<Body>,
    expires: Instant,
}

/// A response body that hands its connection back when it ends.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    fn done(&mut self) {
        if let Some(g) = self.give_back.take() {
            g.pool.give_back(g.sender, g.expires);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            // A broken body means a broken connection: never reuse it.
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            _ => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn keep_alive_follows_what_the_server_says() {
        let idle = Duration::from_secs(60);
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Headers, Option<u64>)] = &[
            (&[], Some(60)),
            (&[("keep-alive", "timeout=5, max=100")], Some(4)),
            (&[("keep-alive", "max=5")], Some(60)),
            (&[("keep-alive", "timeout=120")], Some(60)),
            (&[("keep-alive", "timeout=1")], None),
            (&[("connection", "close")], None),
            (&[("connection", "keep-alive, Close")], None),
            (&[("keep-alive", "timeout=abc")], Some(60)),
        ];
        for (pairs, want) in cases {
            let got = keep_alive_for(&headers(pairs), idle).map(|d| d.as_secs());
            assert_eq!(got, *want, "{pairs:?}");
        }
    }

    /// A dial that takes its time, then fails.
    struct SlowRefusal;

    impl Dial for SlowRefusal {
        type Io = TokioIo<TcpStream>;

        async fn dial(&self, addr: SocketAddr) -> Result<Self::Io, ProxyError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(ProxyError::Connect {
                addr,
                source: std::io::ErrorKind::ConnectionRefused.into(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connects_under_way_count_toward_max_connections() {
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_connections: 2,
            limits: crate::http::server::HeaderLimits {
                max_bytes: 8192,
                max_count: 100,
            },
        };
        let pool = Arc::new(H1Pool::new(
            ([127, 0, 0, 1], 1).into(),
            settings,
            SlowRefusal,
        ));
        let sends: Vec<_> = (0..5)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.send(Request::new(Body::Empty)).await })
            })
            .collect();
        let mut overloaded = 0;
        for send in sends {
            match send.await.expect("task") {
                Err(ProxyError::Overloaded { .. }) => overloaded += 1,
                Err(ProxyError::Connect { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(overloaded, 3, "only two dials at once");
        assert_eq!(
            pool.open_connections(),
            0,
            "failed dials give their slot back"
        );
    }
}
