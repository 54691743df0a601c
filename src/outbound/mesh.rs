//! The connections to one mesh endpoint, a peer sidecar's inbound port, on
//! mTLS. The link is one multiplexed HTTP/2 connection that all requests
//! share (the default), or with `protocol: http1` a pool of HTTP/1.1
//! keep-alive connections, one request at a time on each.
//!
//! HTTP/2 is the default because it costs less CPU under load, though it
//! runs more instructions per request (callgrind, a pair: 157k against
//! 121k): many requests' frames leave in one TLS record and one `writev`,
//! where HTTP/1.1 needs a read and a write per request on each link
//! connection. The README's Performance section has the runs.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::Scheme;
use http::{Request, Response, Version};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::info;

use crate::config::UpstreamProtocol;
use crate::http::h1_pool::{Dial, H1Pool, PoolSettings, Tcp};
use crate::http::h2_client::{self, H2Connection};
use crate::http::headers::{ORIG_PROTO, ORIG_PROTO_HTTP1};
use crate::http::outcome::Outcome;
use crate::http::upgrade;
use crate::http::{Body, Direction, ProxyError, uri};
use crate::metrics::TlsMetrics;
use crate::tls::{ALPN_H2, ALPN_HTTP11, Derived};
use crate::tunnel::BoxIo;

/// The HTTP version between the sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// One multiplexed connection.
    Http2,
    /// Pooled keep-alive connections.
    Http1,
}

impl Link {
    /// The link a destination's `protocol` asks for: `http1` the pooled
    /// HTTP/1.1 one; `auto` and `http2` the HTTP/2 one.
    pub fn of(protocol: UpstreamProtocol) -> Self {
        match protocol {
            UpstreamProtocol::Http1 => Self::Http1,
            // Tunnels of opaque destinations are streams of the HTTP/2 link.
            UpstreamProtocol::Auto | UpstreamProtocol::Http2 | UpstreamProtocol::Opaque => {
                Self::Http2
            }
        }
    }

    /// Its ALPN id, offered in the handshake.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Self::Http2 => ALPN_H2,
            Self::Http1 => ALPN_HTTP11,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Http2 => "h2",
            Self::Http1 => "http/1.1",
        }
    }
}

/// How to reach the endpoints of one destination.
#[derive(Debug)]
pub struct EndpointSettings {
    /// TLS client config that verifies the destination's identity and
    /// offers the link's ALPN id, rebuilt when the credentials rotate.
    pub tls: Derived<ClientConfig>,
    /// SNI sent in the handshake.
    pub server_name: ServerName<'static>,
    /// The link.
    pub link: Link,
    /// Connect timeout (TCP plus TLS), idle timeout, the most HTTP/1.1
    /// connections, and header limits for responses.
    pub pool: PoolSettings,
    /// Handshake counters.
    pub metrics: TlsMetrics,
}

/// A peer sidecar and the connections to it.
#[derive(Debug)]
pub struct MeshConn {
    addr: SocketAddr,
    settings: Arc<EndpointSettings>,
    conns: Conns,
}

/// The link's connections.
#[derive(Debug)]
enum Conns {
    Http2(H2Connection),
    Http1(Arc<H1Pool<MeshDial>>),
}

impl MeshConn {
    /// An endpoint at `addr`; nothing is connected yet.
    pub fn new(addr: SocketAddr, settings: Arc<EndpointSettings>) -> Self {
        let conns = match settings.link {
            Link::Http2 => Conns::Http2(H2Connection::new(settings.pool.idle_timeout)),
            Link::Http1 => {
                let dial = MeshDial {
                    settings: settings.clone(),
                };
                Conns::Http1(Arc::new(H1Pool::new(addr, settings.pool, dial)))
            }
        };
        Self {
            addr,
            settings,
            conns,
        }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request on the link, connecting if needed. On the HTTP/2
    /// link `app_spoke_http1` is recorded, so the far side can speak
    /// HTTP/1.1 to its app; on the HTTP/1.1 link it goes without saying.
    /// The peer, having proven its identity, may say how reaching its own
    /// app failed; that account goes beside the response.
    pub async fn send(
        &self,
        req: Request<Body>,
        app_spoke_http1: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let mut response = self.send_on_link(req, app_spoke_http1).await?;
        Outcome::from_peer(&mut response);
        Ok(response)
    }

    async fn send_on_link(
        &self,
        req: Request<Body>,
        app_spoke_http1: bool,
    ) -> Result<Response<Body>, ProxyError> {
        match &self.conns {
            Conns::Http2(conn) => {
                let upgrade_to = upgrade::requested(&req);
                let req = for_h2_link(req, app_spoke_http1, upgrade_to.as_ref())?;
                let response = conn
                    .send(self.addr, req, || self.connect_h2())
                    .await?
                    .map(Body::Incoming);
                Ok(match upgrade_to {
                    // Seen from above, an upgrade over the link is answered
                    // as HTTP/1.1 answers it.
                    Some(protocol) if upgrade::accepted(response.status(), true) => {
                        upgrade::accept(response, &protocol, false)
                    }
                    _ => response,
                })
            }
            Conns::Http1(pool) => {
                let (mut parts, body) = req.into_parts();
                uri::to_http1(&mut parts);
                pool.send(Request::from_parts(parts, body)).await
            }
        }
    }

    /// A raw TCP connection to `port` on the peer's host, through the
    /// peer sidecar: a CONNECT on the link (a stream of the HTTP/2 one, or
    /// a connection of the HTTP/1.1 pool), authorized by the peer.
    pub async fn tunnel(&self, port: u16) -> Result<BoxIo, ProxyError> {
        let authority = format!("127.0.0.1:{port}");
        let mut req = Request::connect(authority.as_str())
            .body(Body::Empty)
            .map_err(|_| ProxyError::NoAuthority)?;
        let response = match &self.conns {
            Conns::Http2(conn) => {
                *req.version_mut() = Version::HTTP_2;
                conn.send(self.addr, req, || self.connect_h2())
                    .await?
                    .map(Body::Incoming)
            }
            Conns::Http1(pool) => {
                if let Ok(host) = http::HeaderValue::from_str(&authority) {
                    req.headers_mut().insert(HOST, host);
                }
                pool.send(req).await?
            }
        };
        if !response.status().is_success() {
            return Err(ProxyError::TunnelRefused {
                addr: self.addr,
                status: response.status(),
                reason: response
                    .headers()
                    .get(crate::http::ERROR_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| ProxyError::upstream(self.addr, e))?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }

    /// Whether a request could go out now without waiting for a new
    /// connection.
    pub fn is_connected(&self) -> bool {
        match &self.conns {
            Conns::Http2(conn) => conn.is_open(),
            Conns::Http1(pool) => pool.idle_connections() > 0,
        }
    }

    /// Connections open to the endpoint.
    pub fn open_connections(&self) -> usize {
        match &self.conns {
            Conns::Http2(conn) => usize::from(conn.is_open()),
            Conns::Http1(pool) => pool.open_connections(),
        }
    }

    /// TCP, then TLS with the destination's identity check, then HTTP/2,
    /// all within the connect timeout.
    async fn connect_h2(&self) -> Result<SendRequest<Body>, ProxyError> {
        let addr = self.addr;
        let settings = &self.settings;
        let connect = async {
            let tls = dial_tls(settings, addr).await?;
            h2_client::handshake(TokioIo::new(tls), addr, settings.pool.limits).await
        };
        let timeout = settings.pool.connect_timeout;
        let sender = tokio::time::timeout(timeout, connect).await.map_err(|_| {
            ProxyError::ConnectTimeout {
                addr,
                after: timeout,
            }
        })??;
        info!(endpoint = %addr, link = "h2", "connected to mesh endpoint");
        Ok(sender)
    }
}

/// Opens the HTTP/1.1 link's connections (the pool bounds the time).
#[derive(Debug)]
struct MeshDial {
    settings: Arc<EndpointSettings>,
}

impl Dial for MeshDial {
    type Io = TokioIo<TlsStream<TcpStream>>;

    async fn dial(&self, addr: SocketAddr) -> Result<Self::Io, ProxyError> {
        Ok(TokioIo::new(dial_tls(&self.settings, addr).await?))
    }
}

/// TCP, then a TLS handshake that proves the endpoint's identity and
/// agrees on the link's ALPN id.
async fn dial_tls(
    settings: &EndpointSettings,
    addr: SocketAddr,
) -> Result<TlsStream<TcpStream>, ProxyError> {
    let tcp = Tcp.dial(addr).await?.into_inner();
    let tls = TlsConnector::from(settings.tls.get())
        .connect(settings.server_name.clone(), tcp)
        .await
        .map_err(|source| {
            let reason = crate::tls::classify_error(&source);
            settings
                .metrics
                .failure(Direction::Outbound.as_str(), reason.as_str());
            ProxyError::Tls { addr, source }
        })?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    settings
        .metrics
        .handshake(Direction::Outbound.as_str(), resumed);
    if tls.get_ref().1.alpn_protocol() != Some(settings.link.alpn()) {
        let wanted = settings.link.name();
        return Err(ProxyError::Alpn { addr, wanted });
    }
    Ok(tls)
}

/// Rewrites a request for the HTTP/2 mesh link: an absolute URI with the
/// authority the app asked for (HTTP/2 carries it there, so `Host` goes),
/// the app's HTTP version recorded in `pilotfish-orig-proto`, and an
/// upgrade as an extended CONNECT (RFC 8441).
fn for_h2_link(
    req: Request<Body>,
    app_spoke_http1: bool,
    upgrade_to: Option<&http::HeaderValue>,
) -> Result<Request<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme().is_none() || parts.uri.authority().is_none() {
        let authority = uri::requested_authority(&parts).ok_or(ProxyError::NoAuthority)?;
        let scheme = parts.uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        parts.uri = uri::absolute(scheme, authority, &parts.uri)?;
    }
    parts.headers.remove(HOST);
    if app_spoke_http1 {
        parts.headers.insert(ORIG_PROTO, ORIG_PROTO_HTTP1);
    }
    parts.version = Version::HTTP_2;
    if let Some(protocol) = upgrade_to {
        upgrade::as_extended_connect(&mut parts, protocol);
    }
    Ok(Request::from_parts(parts, body))
}
