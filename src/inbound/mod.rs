//! Mesh -> app. Another sidecar connects over mTLS; the handshake proves its
//! SPIFFE id; each request then goes to the local app over plain HTTP with
//! the caller's identity in the `pilotfish-client-id` header:
//!
//! ```text
//! TCP accept -> TLS handshake (client cert required) -> peer identity
//!   -> request -> to_app_request -> AppClient::send -> app
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::{InboundConfig, UpstreamProtocol};
use crate::http::headers::{self, CLIENT_ID, ORIG_PROTO};
use crate::http::plain_client::PlainClient;
use crate::http::server::HeaderLimits;
use crate::http::{Body, Direction, ProxyError};
use crate::identity::{ServiceName, SpiffeId};
use crate::metrics::RequestMetrics;

/// The calling workload, as proven by its certificate.
#[derive(Debug)]
pub struct Peer {
    /// Its socket address (another sidecar).
    pub addr: SocketAddr,
    /// Its SPIFFE id.
    pub identity: SpiffeId,
    /// The identity, ready to be put in a header.
    client_id: HeaderValue,
}

impl Peer {
    /// A peer at `addr` that proved `identity`.
    pub fn new(addr: SocketAddr, identity: SpiffeId) -> Self {
        // A SPIFFE id is checked ASCII without controls, so this cannot fail;
        // the fallback only keeps the type honest.
        let client_id = HeaderValue::from_str(identity.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self {
            addr,
            identity,
            client_id,
        }
    }
}

/// The inbound side: forwards identified mesh requests to the app.
#[derive(Debug)]
pub struct Inbound {
    service: ServiceName,
    app: PlainClient,
    app_protocol: UpstreamProtocol,
    handshake_timeout: Duration,
    limits: HeaderLimits,
    metrics: RequestMetrics,
}

impl Inbound {
    /// The inbound side for `service`; `limits` already include the
    /// headroom for the fields other sidecars add.
    pub fn new(
        service: ServiceName,
        config: &InboundConfig,
        limits: HeaderLimits,
        metrics: RequestMetrics,
    ) -> Self {
        Self {
            service,
            app: PlainClient::new(*config.app.get(), config.connect_timeout.0, limits),
            app_protocol: config.app_protocol,
            handshake_timeout: config.handshake_timeout.0,
            limits,
            metrics,
        }
    }

    /// Runs one accepted connection: TLS handshake, identity, then HTTP
    /// until the peer or a drain closes it.
    pub async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        addr: SocketAddr,
        tls: TlsAcceptor,
        http: Arc<auto::Builder<TokioExecutor>>,
        watch: crate::drain::Watch,
    ) {
        let _ = tcp.set_nodelay(true);
        let stream = match tokio::time::timeout(self.handshake_timeout, tls.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                info!(peer = %addr, error = %e, "inbound TLS handshake failed");
                return;
            }
            Err(_) => {
                info!(peer = %addr, "inbound TLS handshake timed out");
                return;
            }
        };
        let identity = match crate::tls::peer_identity(stream.get_ref().1) {
            Ok(identity) => identity,
            Err(why) => {
                warn!(peer = %addr, "refused inbound connection: {why}");
                return;
            }
        };
        debug!(peer = %addr, %identity, "inbound connection");
        let peer = Arc::new(Peer::new(addr, identity));
        let service = service_fn(move |req| {
            let inbound = self.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(inbound.handle(req, &peer).await) }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        if let Err(e) = watch.serve(connection).await {
            debug!(peer = %addr, error = %e, "inbound connection ended with an error");
        }
    }

    /// Handles one request from the mesh. Never fails: proxy errors become
    /// responses with the `pilotfish-error` header.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let start = Instant::now();
        let result = match self.to_app_request(req, peer) {
            Ok((req, version)) => self.app.send(req, version).await.map(to_response),
            Err(err) => Err(err),
        };
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                info!(
                    direction = "inbound",
                    peer = %peer.identity,
                    reason = err.reason().as_str(),
                    error = %err,
                    "request failed"
                );
                err.to_response(Direction::Inbound)
            }
        };
        self.metrics.record(
            Direction::Inbound,
            self.service.as_str(),
            response.status(),
            start.elapsed(),
        );
        response
    }

    /// Rewrites a mesh request for the app: the caller's identity (never a
    /// copy the caller sent), the forwarding trail, hop-by-hop fields
    /// removed, and the HTTP version the original caller spoke.
    fn to_app_request(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> Result<(Request<Body>, Version), ProxyError> {
        let (mut parts, body) = req.into_parts();
        let count = parts.headers.len();
        if count > self.limits.max_count {
            return Err(ProxyError::TooManyHeaders {
                count,
                limit: self.limits.max_count,
            });
        }
        let caller_spoke_http1 = parts.headers.remove(ORIG_PROTO).is_some();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(CLIENT_ID, peer.client_id.clone());
        headers::append_forwarded(&mut parts.headers, peer.addr.ip());
        let version = self.app_protocol.version(caller_spoke_http1, parts.version);
        Ok((Request::from_parts(parts, Body::Incoming(body)), version))
    }
}

/// Prepares the app's response for the mesh.
fn to_response(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::Incoming(body))
}
