//! Plain HTTP to one address (the local app, or a destination outside the
//! mesh): HTTP/1.1 over a pool of keep-alive connections, or h2c over one
//! shared connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Version};
use hyper_util::rt::TokioIo;

use super::h1_pool::{H1Pool, PoolSettings, Tcp};
use super::h2_client::{self, H2Connection};
use super::{Body, ProxyError, dial, uri};

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
            http1: Arc::new(H1Pool::new(addr, settings, Tcp)),
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
        if version != Version::HTTP_2 {
            uri::to_http1(&mut parts);
            return Ok(Request::from_parts(parts, body));
        }
        // h2c carries the authority in the URI; Host would repeat it.
        let authority = uri::requested_authority(&parts).unwrap_or_else(|| self.authority.clone());
        parts.headers.remove(HOST);
        parts.uri = uri::absolute(Scheme::HTTP, authority, &parts.uri)?;
        parts.version = version;
        Ok(Request::from_parts(parts, body))
    }

    async fn connect_h2(
        &self,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, ProxyError> {
        let addr = self.addr;
        let tcp = dial::tcp_within(addr, self.settings.connect_timeout).await?;
        h2_client::handshake(TokioIo::new(tcp), addr, self.settings.limits).await
    }
}
