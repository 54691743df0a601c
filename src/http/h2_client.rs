//! One shared HTTP/2 client connection: opened on first use, shared by every
//! request (streams are multiplexed), reopened when it closes, and let go
//! after `idle_timeout` without requests (hyper then closes it once its
//! last stream ends).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tracing::debug;

use super::server::HeaderLimits;
use super::{Body, ProxyError};

/// A lazily made, shared HTTP/2 connection.
#[derive(Debug)]
pub struct H2Connection {
    shared: Arc<Shared>,
    /// Held while connecting, so concurrent requests share one handshake.
    connecting: tokio::sync::Mutex<()>,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    /// The live connection (with its number), cloned per request.
    current: Mutex<Option<(u64, SendRequest<Body>)>>,
    connections: AtomicU64,
    /// Milliseconds after `base` of the last request.
    last_used: AtomicU64,
    base: Instant,
}

impl Shared {
    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_used.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_used.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<(u64, SendRequest<Body>)>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl H2Connection {
    /// No connection yet; one made later is let go after `idle_timeout`
    /// without requests.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: Mutex::new(None),
                connections: AtomicU64::new(0),
                last_used: AtomicU64::new(0),
                base: Instant::now(),
            }),
            connecting: tokio::sync::Mutex::new(()),
            idle_timeout,
        }
    }

    /// Whether a live connection is open.
    pub fn is_open(&self) -> bool {
        self.live().is_some()
    }

    /// Sends `req` on the live connection, connecting with `connect` first
    /// if there is none. If the pooled connection turns out to be dead
    /// before the request was handed to it (the peer closed it, or sent
    /// GOAWAY, at the same moment), hyper gives the request back untouched
    /// and it goes out once more on a new connection: the caller never sees
    /// that race.
    pub async fn send<F, Fut>(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        connect: F,
    ) -> Result<Response<Incoming>, ProxyError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<SendRequest<Body>, ProxyError>>,
    {
        let upstream = |e| ProxyError::upstream(addr, e);
        self.shared.touch();
        let mut sender = self.sender(&connect).await?;
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response),
            Err(mut err) => match err.take_message() {
                Some(req) => {
                    debug!(%addr, "pooled HTTP/2 connection was closed; reconnecting");
                    self.forget_dead();
                    let mut sender = self.sender(&connect).await?;
                    sender.send_request(req).await.map_err(upstream)
                }
                None => Err(upstream(err.into_error())),
            },
        }
    }

    async fn sender<F, Fut>(&self, connect: &F) -> Result<SendRequest<Body>, ProxyError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<SendRequest<Body>, ProxyError>>,
    {
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        // Another request may have connected while we waited.
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        // Boxed: the connect future (TCP, TLS and HTTP/2 handshakes) is
        // kilobytes, and inline it would make every request's future, moved
        // at each layer, that big.
        let sender = Box::pin(connect()).await?;
        let number = self.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        *self.shared.current() = Some((number, sender.clone()));
        tokio::spawn(let_go_when_idle(
            Arc::downgrade(&self.shared),
            number,
            self.idle_timeout,
        ));
        Ok(sender)
    }

    fn live(&self) -> Option<SendRequest<Body>> {
        let current = self.shared.current();
        current
            .as_ref()
            .filter(|(_, s)| !s.is_closed())
            .map(|(_, s)| s.clone())
    }

    /// Drops the pooled connection if it can no longer take requests (it
    /// may already have been replaced by a healthy one).
    fn forget_dead(&self) {
        let mut current = self.shared.current();
        if current
            .as_ref()
            .is_some_and(|(_, s)| s.is_closed() || !s.is_ready())
        {
            *current = None;
        }
    }
}

/// Drops the handle of connection `number` once it has been idle for
/// `idle_timeout`; hyper closes the connection when its streams are done.
async fn let_go_when_idle(shared: std::sync::Weak<Shared>, number: u64, idle_timeout: Duration) {
    let mut wait = idle_timeout;
    loop {
        tokio::time::sleep(wait).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut current = shared.current();
        if current.as_ref().is_none_or(|(n, _)| *n != number) {
            return; // replaced or gone
        }
        let idle = shared.idle_for();
        if idle >= idle_timeout {
            debug!(
                idle_ms = idle.as_millis() as u64,
                "letting an idle HTTP/2 connection go"
            );
            *current = None;
            return;
        }
        wait = idle_timeout - idle;
    }
}

/// Runs the HTTP/2 handshake on `io` and spawns the connection task.
pub async fn handshake<IO>(
    io: IO,
    addr: SocketAddr,
    limits: HeaderLimits,
) -> Result<SendRequest<Body>, ProxyError>
where
    IO: Read + Write + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(limits.h2_list_size())
        // Notice a peer that vanished without a FIN.
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(io)
        .await
        .map_err(|e| ProxyError::upstream(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(%addr, error = %e, "HTTP/2 connection ended");
        }
    });
    Ok(sender)
}
