//! One shared HTTP/2 client connection: opened on first use, shared by every
//! request (streams are multiplexed), reopened when it closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::debug;

use super::server::HeaderLimits;
use super::{Body, ProxyError};

/// A lazily made, shared HTTP/2 connection.
#[derive(Debug, Default)]
pub struct H2Connection {
    /// The live connection, cloned per request (a cheap handle).
    current: Mutex<Option<SendRequest<Body>>>,
    /// Held while connecting, so concurrent requests share one handshake.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Connection {
    /// No connection yet.
    pub fn new() -> Self {
        Self::default()
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
        let upstream = |source: hyper::Error| ProxyError::Upstream {
            addr,
            source: source.into(),
        };
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
        let sender = connect().await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    fn live(&self) -> Option<SendRequest<Body>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Drops the pooled connection if it can no longer take requests (it
    /// may already have been replaced by a healthy one).
    fn forget_dead(&self) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|s| s.is_closed() || !s.is_ready())
        {
            *current = None;
        }
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
        .map_err(|source| ProxyError::Upstream {
            addr,
            source: source.into(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(%addr, error = %e, "HTTP/2 connection ended");
        }
    });
    Ok(sender)
}
