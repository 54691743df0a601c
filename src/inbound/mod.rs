//! Mesh -> app. Another sidecar connects over mTLS; the handshake proves its
//! SPIFFE id; each request then goes to the local app over plain HTTP with
//! the caller's identity in the `pilotfish-client-id` header:
//!
//! ```text
//! TCP accept -> Inbound::handshake (client cert required, identity, trust domain)
//!   -> request -> Observer::begin (ids, span) -> admit (path normalized,
//!   authorization policy) -> rate limits -> to_app_request
//!   -> PlainClient::send -> app
//! ```

mod authz;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rustls::{HandshakeKind, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

pub use self::authz::{Decision, Policy};
use crate::build::BuildError;
use crate::config::{Config, InboundConfig, LimitDirection, UpstreamProtocol};
use crate::http::h1_pool::PoolSettings;
use crate::http::headers::{self, CLIENT_ID, ORIG_PROTO, PROXY_ADDED_HEADERS};
use crate::http::lifetime::{self, Timeouts};
use crate::http::outcome::{OUTCOME_HEADER, Outcome};
use crate::http::plain_client::PlainClient;
use crate::http::server::{self, HeaderLimits};
use crate::http::upgrade;
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::identity::{ServiceName, SpiffeId};
use crate::listener::Metered;
use crate::metrics::{Metrics, RequestLabels};
use crate::observe::{Exchange, Observer};
use crate::ratelimit::{RateLimits, Subject};
use crate::tls::{CredentialStore, Derived, HandshakeFailure, TlsSettings};
use crate::tunnel::{Pending, Side};

/// The calling workload, as proven by its certificate.
#[derive(Debug)]
pub struct Peer {
    /// Its socket address (another sidecar).
    pub addr: SocketAddr,
    /// Its SPIFFE id.
    pub identity: SpiffeId,
    /// The identity, ready to be put in a header.
    client_id: HeaderValue,
    /// Its address, ready for the forwarding headers.
    forwarded: headers::Forwarded,
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
            forwarded: headers::Forwarded::for_peer(addr.ip()),
        }
    }
}

/// The inbound side: admits identified mesh callers and forwards their
/// requests to the app.
#[derive(Debug)]
pub struct Inbound {
    service: ServiceName,
    trust_domain: String,
    app: Arc<PlainClient>,
    app_key: (SocketAddr, PoolSettings),
    app_protocol: UpstreamProtocol,
    handshake_timeout: Duration,
    limits: HeaderLimits,
    policy: Policy,
    tls: Arc<Derived<ServerConfig>>,
    tls_key: (usize, TlsSettings),
    http: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    app_timeout: Duration,
    max_connections: usize,
    opaque_ports: Vec<u16>,
    metrics: Metrics,
    observer: Arc<Observer>,
    rate_limits: Arc<RateLimits>,
}

impl Inbound {
    /// Builds the inbound side of `config`. The app's connection pool and
    /// the TLS config carry over from `previous` when their settings did
    /// not change.
    pub fn build(
        config: &Config,
        inbound: &InboundConfig,
        creds: &Arc<CredentialStore>,
        metrics: &Metrics,
        observer: &Arc<Observer>,
        rate_limits: &Arc<RateLimits>,
        previous: Option<&Inbound>,
    ) -> Result<Self, BuildError> {
        // Room for the fields the calling sidecar added.
        let limits = HeaderLimits::from_config(&config.http).with_headroom(PROXY_ADDED_HEADERS);
        let app_key = (
            *inbound.app.get(),
            PoolSettings {
                connect_timeout: inbound.connect_timeout.0,
                idle_timeout: inbound.idle_timeout.0,
                max_connections: *inbound.max_app_connections.get(),
                // For the app's responses, which the proxy adds nothing to.
                limits: HeaderLimits::from_config(&config.http),
            },
        );
        let app = match previous.filter(|p| p.app_key == app_key) {
            Some(previous) => previous.app.clone(),
            None => Arc::new(PlainClient::new(app_key.0, app_key.1)),
        };
        let settings = config
            .tls
            .as_ref()
            .map(TlsSettings::from_config)
            .ok_or_else(|| BuildError::config("`tls:` is required with `inbound:`"))?;
        // The store's address tells whether it is the same store.
        let tls_key = (Arc::as_ptr(creds) as usize, settings);
        let tls = match previous.filter(|p| p.tls_key == tls_key) {
            Some(previous) => previous.tls.clone(),
            None => Arc::new(Derived::new(creds.clone(), move |c| {
                crate::tls::server_config(c, settings)
            })?),
        };
        let policy = Policy::new(
            inbound.authorization.as_ref(),
            &config.trust_domain,
            &config.namespace,
        )
        .map_err(BuildError::config)?;
        Ok(Self {
            service: config.service.get().clone(),
            trust_domain: config.trust_domain.to_string(),
            app,
            app_key,
            app_protocol: inbound.app_protocol,
            handshake_timeout: inbound.handshake_timeout.0,
            limits,
            policy,
            tls,
            tls_key,
            http: Arc::new(server::builder(limits, &config.http)),
            timeouts: Timeouts::new(&config.http),
            app_timeout: inbound.timeout.0,
            max_connections: *inbound.max_connections.get(),
            opaque_ports: inbound.opaque_ports.iter().map(|p| *p.get()).collect(),
            metrics: metrics.clone(),
            observer: observer.clone(),
            rate_limits: rate_limits.clone(),
        })
    }

    /// The HTTP server settings for mesh connections.
    pub fn http(&self) -> &auto::Builder<TokioExecutor> {
        &self.http
    }

    /// How long mesh connections and bodies may live.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Most mesh connections the listener holds.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The TLS handshake of an accepted connection, then the caller's
    /// identity. `None` (logged and counted) when either fails.
    pub async fn handshake(
        &self,
        tcp: Metered<TcpStream>,
        addr: SocketAddr,
    ) -> Option<(TlsStream<Metered<TcpStream>>, Arc<Peer>)> {
        let acceptor = TlsAcceptor::from(self.tls.get());
        let failed = |reason: HandshakeFailure, detail: &dyn std::fmt::Display| {
            self.metrics
                .tls
                .failure(Direction::Inbound.as_str(), reason.as_str());
            info!(peer = %addr, reason = reason.as_str(), "inbound TLS handshake failed: {detail}");
        };
        let stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                failed(crate::tls::classify_error(&e), &e);
                return None;
            }
            Err(_) => {
                failed(
                    HandshakeFailure::Timeout,
                    &"no handshake within the timeout",
                );
                return None;
            }
        };
        let conn = stream.get_ref().1;
        let identity = match crate::tls::peer_identity(conn) {
            Ok(identity) => identity,
            Err(why) => {
                self.metrics.tls.failure(
                    Direction::Inbound.as_str(),
                    HandshakeFailure::NoSpiffeId.as_str(),
                );
                warn!(peer = %addr, "refused inbound connection: {why}");
                return None;
            }
        };
        if identity.trust_domain() != self.trust_domain {
            self.metrics.tls.failure(
                Direction::Inbound.as_str(),
                HandshakeFailure::ForeignTrustDomain.as_str(),
            );
            warn!(
                peer = %addr,
                %identity,
                "refused inbound connection: the caller is in trust domain {:?}, not {:?}",
                identity.trust_domain(),
                self.trust_domain
            );
            return None;
        }
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        self.metrics
            .tls
            .handshake(Direction::Inbound.as_str(), resumed);
        debug!(peer = %addr, %identity, resumed, "inbound connection");
        Some((stream, Arc::new(Peer::new(addr, identity))))
    }

    /// Handles one request from the mesh. Never fails: proxy errors become
    /// responses with the `pilotfish-error` header. A request that opens a
    /// tunnel (an upgrade, a CONNECT) is logged when the tunnel ends.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let start = Instant::now();
        let mut exchange = self.observer.begin(Direction::Inbound, &mut req);
        exchange.peer(peer.identity.as_str(), peer.addr);
        exchange.routed(self.service.as_str(), None);
        let format = ErrorFormat::of(req.headers());
        let lent = req.extensions_mut().remove::<crate::tunnel::Lent>();
        let (response, pending) = match self.serve(req, peer, &mut exchange).await {
            Ok(reply) => reply,
            Err(err) => (self.failed(err, peer, &mut exchange, format), None),
        };
        let labels = RequestLabels {
            direction: Direction::Inbound.as_str(),
            service: self.service.as_str(),
            route: "",
            peer: peer.identity.as_str(),
        };
        self.metrics
            .requests
            .record(labels, response.status(), start.elapsed());
        match pending {
            None => exchange.finish(response),
            Some(pending) => {
                let (response, record) = exchange.into_tunnel(response);
                self.start_tunnel(pending, record, lent);
                response
            }
        }
    }

    /// Carries a request to the app: authorized, rate limited, rewritten,
    /// sent; an upgrade the app accepts, or a CONNECT, opens a tunnel.
    async fn serve(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Result<(Response<Body>, Option<Pending>), ProxyError> {
        if req.method() == http::Method::CONNECT && !upgrade::is_extended_connect(&req) {
            return self.open_tcp(req, peer, exchange).await;
        }
        let mut req = self.admit(req, peer)?;
        self.rate_limit(&req, peer).await?;
        let asked = upgrade::requested(&req);
        let peer_over_h2 = req.version() == Version::HTTP_2;
        let peer_side = asked.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (req, version) = self.to_app_request(req, peer, exchange, asked.as_ref())?;
        let mut response = self.send_to_app(req, version).await?;
        exchange.upstream(Some(self.app_key.0), 1);
        match (asked, peer_side) {
            (Some(protocol), Some(peer_side)) if upgrade::accepted(response.status(), false) => {
                let app_side = hyper::upgrade::on(&mut response);
                let pending = Pending {
                    client: Side::Upgrade(peer_side),
                    upstream: Side::Upgrade(app_side),
                    kind: crate::tunnel::upgrade_kind(protocol.as_bytes()),
                };
                let response = upgrade::accept(strip_app_fields(response), &protocol, peer_over_h2);
                Ok((response, Some(pending)))
            }
            // Refused (or not an upgrade at all): the app's answer as it is.
            _ => Ok((to_response(response), None)),
        }
    }

    /// The response for a failed request, logged, with the account of how
    /// reaching the app failed for the calling sidecar.
    fn failed(
        &self,
        err: ProxyError,
        peer: &Peer,
        exchange: &mut Exchange,
        format: ErrorFormat,
    ) -> Response<Body> {
        let outcome = Outcome::of_error(&err);
        info!(
            direction = "inbound",
            peer = %peer.identity,
            reason = err.reason().as_str(),
            error = %err,
            request_id = exchange.ids().request_id(),
            "request failed"
        );
        exchange.failed(err.reason().as_str());
        let mut response = err.to_response(Direction::Inbound, format);
        // How reaching the app failed, for the calling sidecar's retries,
        // ejection and breaker.
        if let Some(account) = outcome.for_peer() {
            response.headers_mut().insert(OUTCOME_HEADER, account);
        }
        response
    }

    /// Sends to the app, waiting at most `inbound.timeout` for its
    /// response headers.
    async fn send_to_app(
        &self,
        req: Request<Body>,
        version: Version,
    ) -> Result<Response<Body>, ProxyError> {
        match tokio::time::timeout(self.app_timeout, self.app.send(req, version)).await {
            Ok(sent) => sent,
            Err(_) => Err(ProxyError::ResponseTimeout {
                service: self.service.to_string(),
                after: self.app_timeout,
            }),
        }
    }

    /// The inbound rate limits, keyed by the verified caller.
    async fn rate_limit(&self, req: &Request<Incoming>, peer: &Peer) -> Result<(), ProxyError> {
        if !self.rate_limits.any(LimitDirection::Inbound) {
            return Ok(());
        }
        let subject = Subject {
            caller: Some(&peer.identity),
            client: Some(peer.addr.ip()),
            headers: req.headers(),
            service: None,
            route: None,
            claims: None,
        };
        match self
            .rate_limits
            .check(LimitDirection::Inbound, &subject)
            .await
        {
            Some(limited) => Err(limited.into()),
            None => Ok(()),
        }
    }

    /// Normalizes the path and asks the authorization policy; a denied
    /// request is logged, counted, and answered with 403.
    fn admit(&self, req: Request<Incoming>, peer: &Peer) -> Result<Request<Incoming>, ProxyError> {
        let req = crate::http::path::normalize_request(req)?;
        // An upgrade over HTTP/2 is an extended CONNECT; it was a GET, and
        // the rules judge it as one.
        let method = match upgrade::is_extended_connect(&req) {
            true => &http::Method::GET,
            false => req.method(),
        };
        match self.policy.decide(&peer.identity, method, req.uri().path()) {
            Decision::Allow(_) => Ok(req),
            Decision::Deny(reason) => {
                self.metrics
                    .authz
                    .denied(peer.identity.as_str(), reason.as_str());
                info!(
                    caller = %peer.identity,
                    method = %req.method(),
                    path = req.uri().path(),
                    reason = reason.as_str(),
                    "request denied by the authorization policy"
                );
                Err(ProxyError::Forbidden {
                    caller: peer.identity.clone(),
                    method: req.method().clone(),
                    path: req.uri().path().to_owned(),
                    reason,
                })
            }
        }
    }

    /// Rewrites a mesh request for the app: the caller's identity (never a
    /// copy the caller sent), the forwarding trail, hop-by-hop fields
    /// removed, and the HTTP version the original caller spoke.
    fn to_app_request(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
        upgrade_to: Option<&HeaderValue>,
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
        headers::append_forwarded(&mut parts.headers, &peer.forwarded);
        // The app's calls, carrying these headers on, are children of
        // this hop's span.
        exchange.inject(&mut parts.headers);
        let mut version = self.app_protocol.version(caller_spoke_http1, parts.version);
        if let Some(protocol) = upgrade_to {
            // Upgrades reach the app in HTTP/1.1, whatever the link spoke.
            upgrade::as_http1(&mut parts, protocol);
            version = Version::HTTP_11;
        }
        Ok((
            Request::from_parts(
                parts,
                lifetime::bound_request_body(exchange.count_request(body), self.timeouts.body_idle),
            ),
            version,
        ))
    }
}

/// Prepares the app's response for the mesh. The calling sidecar believes
/// Pilotfish's own fields from this one, so the app may not write them.
fn to_response(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_own(&mut parts.headers);
    Response::from_parts(parts, body)
}

/// The app's response without Pilotfish's own fields (an upgrade's 101
/// keeps its hop-by-hop fields until it is answered).
fn strip_app_fields(mut response: Response<Body>) -> Response<Body> {
    headers::strip_own(response.headers_mut());
    response
}
