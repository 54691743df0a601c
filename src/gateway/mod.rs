//! Clients from outside -> mesh: the edge gateway. It serves plain HTTP
//! and HTTPS, checks tokens, and sends requests into the mesh through the
//! sidecar's own destinations (`Outbound`: the same pools, retries,
//! breakers, limits, spans and access log), over mTLS with this process's
//! identity.
//!
//! ```text
//! request -> strip identity fields -> client address (X-Forwarded-For, trusted hops)
//!         -> Observer::begin -> RouteTable::find -> CORS preflight? -> token (auth.rs)
//!         -> Outbound::send (limits, filters, split, destination) -> CORS fields
//! ```

pub mod auth;
pub mod cors;
pub mod forwarded;
pub mod keys;
pub mod token_cache;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::header::ORIGIN;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use self::auth::{Auth, strip_identity};
use self::cors::Cors;
use self::keys::Keys;
use crate::build::BuildError;
use crate::config::{Config, GatewayConfig, JwtConfig, LimitDirection, RouteAuth};
use crate::http::lifetime::Timeouts;
use crate::http::server::{self, HeaderLimits};
use crate::http::{Body, Direction, ErrorFormat, ProxyError, upgrade};
use crate::metrics::{Metrics, TlsMetrics};
use crate::outbound::routes::Route;
use crate::outbound::{Forwarded, Labels, NO_UPSTREAM, Outbound, Sender};
use crate::routing::{RouteRef, RouteTable, Target};
use crate::tls::HandshakeFailure;
use crate::tunnel::Lent;

/// Streams one client may open at once on an HTTP/2 connection: Envoy's
/// recommendation for edge proxies, against stream floods.
const MAX_STREAMS: u32 = 100;
/// HTTP/2 flow-control windows for clients: Envoy's edge recommendation
/// (64 KiB a stream, 1 MiB a connection), so a slow reader pins little.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped,
/// as a slow header sender is.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway built from one config.
pub struct Gateway {
    outbound: Arc<Outbound>,
    table: RouteTable,
    routes: Vec<GatewayRoute>,
    auth: Option<ArcSwap<Auth>>,
    jwt: Option<JwtConfig>,
    tls: Option<ServerTls>,
    /// Digests of the key and certificate files in force, and of the
    /// contents last refused.
    files: Mutex<FilesSeen>,
    trusted_hops: u32,
    http: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    limits: HeaderLimits,
    max_connections: usize,
    tls_metrics: TlsMetrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.routes.len())
            .field("tls", &self.tls.is_some())
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

/// A gateway route: how it sends, who may call it, its CORS policy.
#[derive(Debug)]
struct GatewayRoute {
    route: Arc<Route>,
    auth: RouteAuth,
    cors: Option<Cors>,
}

/// What the gateway made of its files' contents.
#[derive(Debug, Default)]
struct FilesSeen {
    in_force: Option<u64>,
    refused: Option<u64>,
}

/// The HTTPS listener's certificate, swapped when its files change.
struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    config: ArcSwap<rustls::ServerConfig>,
}

impl Gateway {
    /// Builds the gateway of `config` on the sidecar's outbound side (its
    /// destinations). `previous` lends the fetches of the JWKS URLs both
    /// configs name, which go on undisturbed.
    pub fn build(
        config: &Config,
        gateway: &GatewayConfig,
        outbound: &Arc<Outbound>,
        metrics: &Metrics,
        previous: Option<&Gateway>,
    ) -> Result<Self, BuildError> {
        let outbound_config = config
            .outbound
            .as_ref()
            .ok_or_else(|| BuildError::config("`gateway:` needs `outbound.services`"))?;
        let (table, compiled) =
            outbound.compile_routes(config, outbound_config, &gateway.routes, false);
        let routes = gateway
            .routes
            .iter()
            .zip(compiled)
            .map(|(route, compiled)| GatewayRoute {
                route: compiled,
                auth: match (&route.auth, &gateway.jwt) {
                    (Some(auth), _) => auth.get().clone(),
                    // Tokens are checked wherever they can be.
                    (None, Some(_)) => RouteAuth::Required,
                    (None, None) => RouteAuth::Public,
                },
                cors: route.cors.as_ref().map(|c| Cors::new(c.get())),
            })
            .collect();
        let auth = match &gateway.jwt {
            Some(jwt) => {
                // The previous keys lend the fetches of the URLs both
                // name, whatever else changed.
                let reuse = previous
                    .and_then(|p| p.auth.as_ref())
                    .map(|a| a.load_full());
                let keys = Keys::load(jwt, reuse.as_ref().map(|a| a.keys()))?;
                Some(ArcSwap::from_pointee(Auth::new(jwt, keys)))
            }
            None => None,
        };
        let tls = match &gateway.tls {
            Some(tls) => Some(ServerTls {
                cert: tls.cert.get().clone(),
                key: tls.key.get().clone(),
                config: ArcSwap::new(server_config(&tls.cert, &tls.key)?),
            }),
            None => None,
        };
        let limits = HeaderLimits::from_config(&config.http);
        let mut http = server::builder(limits, &config.http);
        http.http2()
            .max_concurrent_streams(Some(MAX_STREAMS))
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW));
        let gateway_side = Self {
            outbound: outbound.clone(),
            table,
            routes,
            auth,
            jwt: gateway.jwt.clone(),
            tls,
            files: Mutex::default(),
            trusted_hops: *gateway.trusted_hops.get(),
            http: Arc::new(http),
            timeouts: Timeouts::new(&config.http),
            limits,
            max_connections: *gateway.max_connections.get(),
            tls_metrics: metrics.tls.clone(),
        };
        gateway_side
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_force = files_digest(&gateway_side.files());
        Ok(gateway_side)
    }

    /// The HTTP server settings for clients.
    pub fn http(&self) -> &auto::Builder<TokioExecutor> {
        &self.http
    }

    /// How long client connections and bodies may live.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Most client connections, both listeners together.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The TLS handshake of a client of the HTTPS listener, bounded by
    /// [`HANDSHAKE_TIMEOUT`]; `None` (logged, counted) if it fails.
    pub async fn handshake<S>(&self, tcp: S, addr: SocketAddr) -> Option<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let config = self.tls.as_ref()?.config.load_full();
        let failed = |reason: HandshakeFailure, detail: &dyn std::fmt::Display| {
            self.tls_metrics
                .failure(Direction::Gateway.as_str(), reason.as_str());
            debug!(peer = %addr, reason = reason.as_str(), "gateway TLS handshake failed: {detail}");
        };
        let accept = TlsAcceptor::from(config).accept(tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                failed(crate::tls::classify_error(&e), &e);
                None
            }
            Err(_) => {
                failed(
                    HandshakeFailure::Timeout,
                    &"no handshake within the timeout",
                );
                None
            }
        }
    }

    /// The files the gateway reads (certificate, key, token keys), to
    /// watch.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.jwt.as_ref().map(keys::files).unwrap_or_default();
        if let Some(tls) = &self.tls {
            files.extend([tls.cert.clone(), tls.key.clone()]);
        }
        files
    }

    /// Puts changed certificate and key files in force, if they all load;
    /// else the ones in force stay. `Ok(true)`: they changed; `Err`: new
    /// contents were refused, which is reported once (the same contents
    /// are not tried again).
    pub fn reload_files(&self) -> Result<bool, BuildError> {
        let Some(digest) = files_digest(&self.files()) else {
            // Unreadable mid-swap: the next look tries again.
            return Ok(false);
        };
        let mut seen = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if Some(digest) == seen.in_force || Some(digest) == seen.refused {
            return Ok(false);
        }
        // Both loaded before either is put in force.
        let loaded = self.load_tls().and_then(|tls| Ok((tls, self.load_auth()?)));
        let (tls, auth) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                seen.refused = Some(digest);
                return Err(e);
            }
        };
        if let (Some(server), Some(current)) = (tls, &self.tls) {
            current.config.store(server);
        }
        if let (Some(new), Some(current)) = (auth, &self.auth) {
            current.store(Arc::new(new));
        }
        *seen = FilesSeen {
            in_force: Some(digest),
            refused: None,
        };
        info!("gateway certificate and token keys reloaded");
        Ok(true)
    }

    /// The HTTPS listener's config from its files, if it has one.
    fn load_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, BuildError> {
        match &self.tls {
            Some(tls) => Ok(Some(server_config(&tls.cert, &tls.key)?)),
            None => Ok(None),
        }
    }

    /// The token checks with their key files read again (a JWKS URL's
    /// fetch goes on), if tokens are checked.
    fn load_auth(&self) -> Result<Option<Auth>, BuildError> {
        let (Some(jwt), Some(auth)) = (&self.jwt, &self.auth) else {
            return Ok(None);
        };
        let keys = Keys::load(jwt, Some(auth.load().keys()))?;
        Ok(Some(Auth::new(jwt, keys)))
    }

    /// Handles one client request. Never fails: refusals and proxy errors
    /// become responses. `peer` is the connection's remote address;
    /// `https`: it came over the TLS listener.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> Response<Body> {
        let start = Instant::now();
        let auth = self.auth.as_ref().map(ArcSwap::load_full);
        // Before anything reads them: identity fields come from a verified
        // token only, on every route.
        strip_identity(
            req.headers_mut(),
            auth.as_deref()
                .map_or(auth::DEFAULT_IDENTITY_HEADERS, Auth::identity_headers),
        );
        let client = forwarded::client_address(req.headers(), peer.ip(), self.trusted_hops);
        forwarded::append(req.headers_mut(), peer.ip(), https);
        let mut exchange = self.outbound.observer().begin(Direction::Gateway, &mut req);
        exchange.client(client);
        let format = ErrorFormat::of(req.headers());
        let origin = req.headers().get(ORIGIN).cloned();
        let lent = req.extensions_mut().remove::<Lent>();
        let sender = Sender {
            client,
            direction: LimitDirection::Gateway,
            claims: None,
            scheme: if https { "https" } else { "http" },
        };
        let (cors, (labels, result)) = self
            .forward(req, auth.as_deref(), sender, &mut exchange)
            .await;
        let mut response = self.outbound.finish(
            Direction::Gateway,
            labels,
            result,
            exchange,
            format,
            start,
            lent,
        );
        if let Some(cors) = cors {
            cors.respond(origin.as_ref(), response.headers_mut());
        }
        response
    }

    /// Routes, checks the token, and sends.
    async fn forward<'a>(
        &'a self,
        req: Request<Incoming>,
        auth: Option<&Auth>,
        mut sender: Sender<'_>,
        exchange: &mut crate::observe::Exchange,
    ) -> (Option<&'a Cors>, Forwarded<'a>) {
        if req.method() == http::Method::CONNECT && !upgrade::is_extended_connect(&req) {
            // The gateway is no forward proxy: clients from outside open
            // no tunnels through it (WebSockets over HTTP/2, an extended
            // CONNECT, are routed as requests).
            let host = req
                .uri()
                .authority()
                .map_or_else(String::new, |a| a.to_string());
            return (
                None,
                (Labels::UNROUTED, Err(ProxyError::TunnelNotAllowed { host })),
            );
        }
        let mut req = match crate::http::path::normalize_request(req) {
            Ok(req) => req,
            Err(err) => return (None, (Labels::UNROUTED, Err(err))),
        };
        let count = req.headers().len();
        if count > self.limits.max_count {
            let err = ProxyError::TooManyHeaders {
                count,
                limit: self.limits.max_count,
            };
            return (None, (Labels::UNROUTED, Err(err)));
        }
        let preflight = Cors::is_preflight(req.method(), req.headers());
        let found = match self.find(&req, preflight) {
            Ok(found) => found,
            Err(err) => return (None, (Labels::UNROUTED, Err(err))),
        };
        let (route, prefix) = found;
        let prefix = prefix.map(str::to_owned);
        let labels = Labels {
            service: NO_UPSTREAM,
            route: &route.route.label,
        };
        let cors = route.cors.as_ref();
        if let (true, Some(cors)) = (preflight, cors) {
            exchange.routed(NO_UPSTREAM, Some(&route.route.label));
            return (None, (labels, Ok((cors.preflight(req.headers()), None))));
        }
        let verified = match (&route.auth, auth) {
            (RouteAuth::Public, _) | (_, None) => None,
            (required, Some(auth)) => {
                let (parts, body) = req.into_parts();
                let checked = auth.check(required, &parts);
                req = Request::from_parts(parts, body);
                match checked {
                    Ok(verified) => verified,
                    Err(refused) => {
                        exchange.routed(NO_UPSTREAM, Some(&route.route.label));
                        return (cors, (labels, Err(ProxyError::from(refused))));
                    }
                }
            }
        };
        if let Some(auth) = auth {
            if let Some(verified) = &verified {
                auth.set_identity(verified, req.headers_mut());
            }
            // A token in the query goes no further than here, whatever
            // the route (a public one does not look at it).
            if let Some(uri) = auth.without_query_token(req.uri()) {
                *req.uri_mut() = uri;
            }
        }
        if let Some(subject) = verified.as_ref().and_then(|v| v.subject()) {
            exchange.user(subject);
        }
        sender.claims = verified.as_ref().map(|v| &v.claims);
        let sent = self
            .outbound
            .send(req, &route.route, prefix.as_deref(), &sender, exchange)
            .await;
        (cors, sent)
    }

    /// The route for a request; a CORS preflight is routed as the request
    /// it asks about would be.
    fn find<'a>(
        &'a self,
        req: &Request<Incoming>,
        preflight: bool,
    ) -> Result<(&'a GatewayRoute, Option<&'a str>), ProxyError> {
        let target = match Target::of(req) {
            Ok(target) => Some(target),
            Err(ProxyError::NoAuthority) => None,
            Err(err) => return Err(err),
        };
        let asked = preflight
            .then(|| Cors::requested_method(req.headers()))
            .flatten();
        let found = match asked {
            Some(method) => {
                let mut probe = Request::new(());
                *probe.method_mut() = method;
                *probe.uri_mut() = req.uri().clone();
                *probe.headers_mut() = req.headers().clone();
                self.table.find(target.as_ref(), &probe)
            }
            None => self.table.find(target.as_ref(), req),
        };
        let no_route = || ProxyError::NotFound {
            path: req.uri().path().to_owned(),
        };
        // The table knows no service names here: only routes.
        match found.map(|found| (found.to, found.prefix)) {
            Some((RouteRef::Route(i), prefix)) => {
                Ok((self.routes.get(i).ok_or_else(no_route)?, prefix))
            }
            _ => Err(no_route()),
        }
    }
}

/// The HTTPS listener's rustls config, from its certificate files.
fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, BuildError> {
    let key = crate::tls::load_server_certificate(cert, key, SystemTime::now())?;
    crate::tls::edge_server_config(key).map_err(BuildError::config)
}

/// A digest of the files' contents, or `None` if one cannot be read.
fn files_digest(files: &[PathBuf]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        std::fs::read(file).ok()?.hash(&mut hasher);
    }
    Some(hasher.finish())
}
