//! Plain HTTP to one address (the local app, or a destination outside the
//! mesh): HTTP/1.1 over a pool of keep-alive connections, or h2c over one
//! shared connection.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::h2_client::{self, H2Connection};
use super::server::HeaderLimits;
use super::{Body, ProxyError, uri};

/// Idle HTTP/1.1 connections are closed after this long. Short, like
/// Linkerd's 3s, so the pool gives up a connection before the server's own
/// keep-alive timeout does (Node.js closes after 5s): a request never lands
/// on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends plain HTTP requests to one address.
#[derive(Debug)]
pub struct PlainClient {
    addr: SocketAddr,
    authority: Authority,
    connect_timeout: Duration,
    limits: HeaderLimits,
    http1: Client<HttpConnector, Body>,
    http2: H2Connection,
}

impl PlainClient {
    /// A client for the server at `addr`.
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
        // A socket address always forms a valid authority.
        let authority = Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Self {
            addr,
            authority,
            connect_timeout,
            limits,
            http1,
            http2: H2Connection::new(),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` in `version`. The authority the caller asked for is
    /// kept: in `Host` for HTTP/1.1, in the URI for HTTP/2; the connection
    /// goes to this client's address either way.
    pub async fn send(
        &self,
        req: Request<Body>,
        version: Version,
    ) -> Result<Response<Incoming>, ProxyError> {
        let req = self.address(req, version)?;
        if version == Version::HTTP_2 {
            return self.http2.send(self.addr, req, || self.connect_h2()).await;
        }
        self.http1
            .request(req)
            .await
            .map_err(|err| self.classify(err))
    }

    /// Sets the version and the URI for this server.
    fn address(&self, req: Request<Body>, version: Version) -> Result<Request<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let asked = uri::requested_authority(&parts);
        let authority = if version == Version::HTTP_2 {
            // h2c carries the authority in the URI; Host would repeat it.
            parts.headers.remove(HOST);
            asked.unwrap_or_else(|| self.authority.clone())
        } else {
            // HTTP/1.1 carries it in Host; the URI names this server so the
            // pool connects here.
            if let (false, Some(asked)) = (parts.headers.contains_key(HOST), asked) {
                if let Ok(host) = HeaderValue::from_str(asked.as_str()) {
                    parts.headers.insert(HOST, host);
                }
            }
            self.authority.clone()
        };
        parts.uri = uri::absolute(Scheme::HTTP, authority, &parts.uri)?;
        parts.version = version;
        Ok(Request::from_parts(parts, body))
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

fn find_io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}
