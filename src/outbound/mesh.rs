//! The connection to one mesh endpoint: a peer sidecar's inbound port,
//! reached over a single multiplexed HTTP/2 connection on mTLS that all
//! requests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::Scheme;
use http::{Request, Response, Version};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::info;

use crate::http::h2_client::{self, H2Connection};
use crate::http::headers::{ORIG_PROTO, ORIG_PROTO_HTTP1};
use crate::http::server::HeaderLimits;
use crate::http::{Body, Direction, ProxyError, uri};
use crate::metrics::TlsMetrics;
use crate::tls::Derived;

/// How to reach the endpoints of one destination.
#[derive(Debug)]
pub struct EndpointSettings {
    /// TLS client config that verifies the destination's identity, rebuilt
    /// when the credentials rotate.
    pub tls: Derived<ClientConfig>,
    /// SNI sent in the handshake.
    pub server_name: ServerName<'static>,
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// The connection closes after this long without requests.
    pub idle_timeout: Duration,
    /// Header limits for responses coming back.
    pub limits: HeaderLimits,
    /// Handshake counters.
    pub metrics: TlsMetrics,
}

/// A peer sidecar and the shared connection to it.
#[derive(Debug)]
pub struct MeshConn {
    addr: SocketAddr,
    settings: Arc<EndpointSettings>,
    connection: H2Connection,
}

impl MeshConn {
    /// An endpoint at `addr`; nothing is connected yet.
    pub fn new(addr: SocketAddr, settings: Arc<EndpointSettings>) -> Self {
        Self {
            addr,
            connection: H2Connection::new(settings.idle_timeout),
            settings,
        }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request over the shared connection, connecting if needed.
    /// `app_spoke_http1` is recorded so the far side can speak HTTP/1.1 to
    /// its app although the link is HTTP/2.
    pub async fn send(
        &self,
        req: Request<Body>,
        app_spoke_http1: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let req = for_mesh_link(req, app_spoke_http1)?;
        self.connection
            .send(self.addr, req, || self.connect())
            .await
            .map(|response| response.map(Body::Incoming))
    }

    /// Whether a connection is open (a request would not wait for one).
    pub fn is_connected(&self) -> bool {
        self.connection.is_open()
    }

    /// TCP, then TLS with the destination's identity check, then HTTP/2,
    /// all within the connect timeout.
    async fn connect(&self) -> Result<SendRequest<Body>, ProxyError> {
        let addr = self.addr;
        let settings = &self.settings;
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ProxyError::Connect { addr, source })?;
            // Small request/response frames must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(settings.tls.get())
                .connect(settings.server_name.clone(), tcp)
                .await
                .map_err(|source| {
                    let reason = crate::tls::classify_error(&source);
                    settings.metrics.failure(Direction::Outbound, reason);
                    ProxyError::Tls { addr, source }
                })?;
            let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
            settings.metrics.handshake(Direction::Outbound, resumed);
            if tls.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN_H2) {
                return Err(ProxyError::NotH2 { addr });
            }
            h2_client::handshake(TokioIo::new(tls), addr, settings.limits).await
        };
        let timeout = settings.connect_timeout;
        let sender = tokio::time::timeout(timeout, connect).await.map_err(|_| {
            ProxyError::ConnectTimeout {
                addr,
                after: timeout,
            }
        })??;
        info!(endpoint = %addr, "connected to mesh endpoint");
        Ok(sender)
    }
}

/// Rewrites a request for the HTTP/2 mesh link: an absolute URI with the
/// authority the app asked for (HTTP/2 carries it there, so `Host` goes),
/// and the app's HTTP version recorded in `pilotfish-orig-proto`.
fn for_mesh_link(req: Request<Body>, app_spoke_http1: bool) -> Result<Request<Body>, ProxyError> {
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
    Ok(Request::from_parts(parts, body))
}
