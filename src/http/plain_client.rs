//! Plain HTTP to one address (the local app, or a destination outside the
//! mesh): HTTP/1.1 over a pool of keep-alive connections, or h2c over one
//! shared connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::h1_pool::{H1Pool, PoolSettings};
use super::h2_client::{self, H2Connection};
use super::{Body, ProxyError, uri};

/// Sends plain HTTP requests to one address.
#[derive(Debug)]
pub struct PlainClient {
    addr: SocketAddr,
    authority: Authority,
    settings: PoolSettings,
    http1: Arc<H1Pool>,
    http2: H2Connection,
}

impl PlainClient {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        // A socket address always forms a valid authority.
        let authority = Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Self {
            addr,
            authority,
            settings,
            http1: Arc::new(H1Pool::new(addr, settings)),
            http2: H2Connection::new(settings.idle_timeout),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the client was built with.
    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.http1.open_connections() + usize::from(self.http2.is_open())
    }

    /// Connections ready to take a request without connecting first.
    pub fn idle_connections(&self) -> usize {
        self.http1.idle_connections() + usize::from(self.http2.is_open())
    }

    /// Sends `req` in `version`. The authority the caller asked for is
    /// kept: in `Host` for HTTP/1.1, in the URI for HTTP/2; the connection
    /// goes to this client's address either way.
    pub async fn send(
        &self,
        req: Request<Body>,
        version: Version,
    ) -> Result<Response<Body>, ProxyError> {
        let req = self.address(req, version)?;
        if version == Version::HTTP_2 {
            return self
                .http2
                .send(self.addr, req, || self.connect_h2())
                .await
                .map(|response| response.map(Body::Incoming));
        }
        self.http1.send(req).await
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
            // HTTP/1.1 carries it in Host, and the request line has only
            // the path (origin form).
            if let (false, Some(asked)) = (parts.headers.contains_key(HOST), asked) {
                if let Ok(host) = HeaderValue::from_str(asked.as_str()) {
                    parts.headers.insert(HOST, host);
                }
            }
            parts.uri = uri::origin_form(&parts.uri);
            parts.version = version;
            return Ok(Request::from_parts(parts, body));
        };
        parts.uri = uri::absolute(Scheme::HTTP, authority, &parts.uri)?;
        parts.version = version;
        Ok(Request::from_parts(parts, body))
    }

    async fn connect_h2(
        &self,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, ProxyError> {
        let addr = self.addr;
        let timeout = self.settings.connect_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout {
                addr,
                after: timeout,
            })?
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        h2_client::handshake(TokioIo::new(tcp), addr, self.settings.limits).await
    }
}
