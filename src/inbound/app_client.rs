//! The client side of inbound: plain HTTP to the local app, HTTP/1.1 over a
//! pool of keep-alive connections, or h2c over one shared connection.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::http::h2_client::{self, H2Connection};
use crate::http::server::HeaderLimits;
use crate::http::{Body, ProxyError};

/// Idle HTTP/1.1 connections to the app are closed after this long. Short,
/// like Linkerd's 3s, so the pool gives up a connection before the app's own
/// keep-alive timeout does (Node.js closes after 5s): a request never lands
/// on a connection the app is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends requests to the app.
#[derive(Debug)]
pub struct AppClient {
    addr: SocketAddr,
    connect_timeout: Duration,
    limits: HeaderLimits,
    http1: Client<HttpConnector, Body>,
    http2: H2Connection,
}

impl AppClient {
    /// A client for the app at `addr`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration, limits: HeaderLimits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http1_max_buf_size(limits.max_bytes.max(8192))
            .http1_max_headers(limits.max_count)
            // Keep the Host field the caller sent.
            .set_host(false)
            .build(connector);
        Self {
            addr,
            connect_timeout,
            limits,
            http1,
            http2: H2Connection::new(),
        }
    }

    /// Sends `req` (whose URI already points at the app) in `version`.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        version: Version,
    ) -> Result<Response<Incoming>, ProxyError> {
        *req.version_mut() = version;
        if version == Version::HTTP_2 {
            return self
                .http2
                .send(self.addr, req, || self.connect_h2())
                .await;
        }
        self.http1
            .request(req)
            .await
            .map_err(|err| self.classify(err))
    }

    async fn connect_h2(
        &self,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, ProxyError> {
        let addr = self.addr;
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout {
                addr,
                after: self.connect_timeout,
            })?
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        h2_client::handshake(TokioIo::new(tcp), addr, self.limits).await
    }

    /// Turns the pooled client's error into a proxy error.
    fn classify(&self, err: hyper_util::client::legacy::Error) -> ProxyError {
        let addr = self.addr;
        if err.is_connect() {
            if let Some(io) = find_io_error(&err) {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return ProxyError::ConnectTimeout {
                        addr,
                        after: self.connect_timeout,
                    };
                }
                return ProxyError::Connect {
                    addr,
                    source: std::io::Error::new(io.kind(), io.to_string()),
                };
            }
        }
        ProxyError::Upstream {
            addr,
            source: err.into(),
        }
    }
}

fn find_io_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}
