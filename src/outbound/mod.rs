//! App -> mesh. The app sends plain HTTP/1.1 or h2c to the outbound listener;
//! each request is routed by its authority and path to a destination
//! service, and goes to one of its endpoints: over the shared mTLS HTTP/2
//! connection to a Pilotfish sidecar, or as plain HTTP to a service outside
//! the mesh (`transport: plaintext`).
//!
//! ```text
//! request -> Observer::begin -> normalize_request -> Target::of -> RouteTable::find -> RateLimits::check
//!         -> Destination::call -> endpoint
//!         <- Exchange::finish <- from_upstream_response <------------------------ (peer's inbound)
//! ```

pub mod balance;
pub mod destination;
pub mod discovery;
pub mod endpoint;
pub mod load;
pub mod mesh;
pub mod outlier;
pub mod policy;
pub mod routes;
pub mod stack;
pub mod tcp;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::info;

use self::destination::{Destination, DestinationKey};
use self::policy::trace::AttemptTrace;
use self::policy::{RequestContext, RoutePolicy};
use self::routes::{Action, Route, direct_response, redirect_response};
use crate::build::BuildError;
use crate::config::{Config, LimitDirection, OutboundConfig, RouteConfig, UnknownDestinations};
use crate::http::headers::{self, PROXY_ADDED_HEADERS};
use crate::http::lifetime::{self, Timeouts};
use crate::http::server::{self, HeaderLimits};
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::http::{dial, upgrade, uri};
use crate::identity::ServiceName;
use crate::metrics::{Metrics, RequestLabels, RequestMetrics, TunnelMetrics};
use crate::observe::{Exchange, Observer};
use crate::ratelimit::{RateLimits, Subject};
use crate::routing::filters;
use crate::routing::{RouteRef, RouteTable, Target};
use crate::tls::{CredentialStore, TlsSettings};
use crate::tunnel::{Lent, Pending, Side};

/// Metric label for requests that matched no destination.
const UNKNOWN_SERVICE: &str = "unknown";
/// Metric label for requests a route answered itself (a redirect, a
/// fixed response, a refusal at the gateway).
pub const NO_UPSTREAM: &str = "none";

/// The outbound side: routes and destinations.
#[derive(Debug)]
pub struct Outbound {
    routes: RouteTable,
    /// `outbound.routes`, compiled.
    compiled: Vec<Arc<Route>>,
    /// Each destination as matched by its name.
    by_name: Vec<Arc<Route>>,
    destinations: Vec<Arc<Destination>>,
    limits: HeaderLimits,
    metrics: RequestMetrics,
    observer: Arc<Observer>,
    rate_limits: Arc<RateLimits>,
    http: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    max_connections: usize,
    tunnel_metrics: TunnelMetrics,
    detect_timeout: Duration,
    opaque_ports: Vec<u16>,
    unknown: UnknownDestinations,
}

impl Outbound {
    /// Builds the outbound side of `config`. Destinations that `previous`
    /// already has, built from the same settings, are kept as they are,
    /// with their connections, breaker, budget and endpoint health.
    pub fn build(
        config: &Config,
        outbound: &OutboundConfig,
        creds: Option<&Arc<CredentialStore>>,
        metrics: &Metrics,
        observer: &Arc<Observer>,
        rate_limits: &Arc<RateLimits>,
        previous: Option<&Outbound>,
    ) -> Result<Self, BuildError> {
        let server_limits = HeaderLimits::from_config(&config.http);
        // Room for the fields the far sidecar adds, so it never refuses
        // what this one admitted.
        let limits = server_limits.with_headroom(PROXY_ADDED_HEADERS);
        let tls = config.tls.as_ref().map(TlsSettings::from_config);
        let mut destinations = Vec::with_capacity(outbound.services.len());
        for (name, dst) in &outbound.services {
            let key = DestinationKey {
                name: ServiceName::new(name).map_err(BuildError::config)?,
                config: dst.get().clone(),
                identity: crate::config::expected_identity(config, name, dst)
                    .map_err(BuildError::config)?,
                namespace: dst
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.namespace.to_string()),
                // For responses, which the proxy adds nothing to.
                limits: server_limits,
                tls,
            };
            let before =
                previous.and_then(|p| p.destinations.iter().find(|d| d.name() == &key.name));
            let destination = match before {
                Some(same) if *same.key() == key => same.clone(),
                _ => Arc::new(Destination::new(key, creds, metrics, before.map(|d| &**d))?),
            };
            destinations.push(destination);
        }
        let mut outbound_side = Self {
            routes: RouteTable::default(),
            compiled: Vec::new(),
            by_name: Vec::new(),
            destinations,
            limits,
            metrics: metrics.requests.clone(),
            observer: observer.clone(),
            rate_limits: rate_limits.clone(),
            http: Arc::new(server::builder(server_limits, &config.http)),
            timeouts: Timeouts::new(&config.http),
            max_connections: *outbound.max_connections.get(),
            tunnel_metrics: metrics.tunnels.clone(),
            detect_timeout: outbound.detect_timeout.get().0,
            opaque_ports: outbound.opaque_ports.iter().map(|p| *p.get()).collect(),
            unknown: outbound.unknown_destinations,
        };
        let (routes, compiled) =
            outbound_side.compile_routes(config, outbound, &outbound.routes, true);
        let find = outbound_side.finder();
        let by_name = outbound
            .services
            .values()
            .enumerate()
            .map(|(i, dst)| Arc::new(Route::by_name(i, dst, &find)))
            .collect();
        drop(find);
        outbound_side.routes = routes;
        outbound_side.compiled = compiled;
        outbound_side.by_name = by_name;
        Ok(outbound_side)
    }

    /// Compiles `routes` (the sidecar's, or the gateway's) against this
    /// side's destinations: the table that matches requests, and each
    /// route ready to send with. `by_name`: the destinations answer to
    /// their names too (the app's side; never the gateway's, whose
    /// clients reach only what its routes name).
    pub fn compile_routes(
        &self,
        config: &Config,
        outbound: &OutboundConfig,
        routes: &[RouteConfig],
        by_name: bool,
    ) -> (RouteTable, Vec<Arc<Route>>) {
        let services: Vec<(&str, &str)> = outbound
            .services
            .iter()
            .map(|(name, dst)| {
                let ns = dst.namespace.as_deref().unwrap_or(&config.namespace);
                (name.as_str(), ns)
            })
            .collect();
        let find = self.finder();
        let compiled = routes
            .iter()
            .map(|route| Arc::new(Route::compile(route, &outbound.services, &find)))
            .collect();
        (RouteTable::build(routes, &services, by_name), compiled)
    }

    /// Looks a destination up by name (for fallbacks).
    fn finder(&self) -> impl Fn(&str) -> Option<Arc<Destination>> + '_ {
        |name: &str| {
            self.destinations
                .iter()
                .find(|d| d.name().as_str() == name)
                .cloned()
        }
    }

    /// The HTTP server settings for the app's connections.
    pub fn http(&self) -> &auto::Builder<TokioExecutor> {
        &self.http
    }

    /// How long the app's connections and bodies may live.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Most app connections the listener holds.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// How long a captured connection may take to send its first bytes.
    pub fn detect_timeout(&self) -> Duration {
        self.detect_timeout
    }

    /// Whether captured connections to `port` are opaque without looking.
    pub fn is_opaque_port(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port)
    }

    /// The destinations, in name order.
    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
    }

    /// Ids, spans and access logs.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// Handles one request from the app. Never fails: proxy errors become
    /// responses with the `pilotfish-error` header.
    /// `client` is the app's address (for limits keyed by it).
    pub async fn handle(&self, mut req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let start = Instant::now();
        let mut exchange = self.observer.begin(Direction::Outbound, &mut req);
        let format = ErrorFormat::of(req.headers());
        let lent = req.extensions_mut().remove::<Lent>();
        let (labels, result) = self.forward(req, client, &mut exchange).await;
        self.finish(
            Direction::Outbound,
            labels,
            result,
            exchange,
            format,
            start,
            lent,
        )
    }

    /// Records a request's end (metrics, its failure logged, the access
    /// log and span) and gives the response, starting the tunnel it opened.
    #[allow(clippy::too_many_arguments)] // one request's whole record
    pub fn finish(
        &self,
        direction: Direction,
        labels: Labels<'_>,
        result: Result<(Response<Body>, Option<Pending>), ProxyError>,
        mut exchange: Exchange,
        format: ErrorFormat,
        start: Instant,
        lent: Option<Lent>,
    ) -> Response<Body> {
        let Labels { service, route } = labels;
        let (response, pending) = match result {
            Ok(reply) => reply,
            Err(err) => {
                info!(
                    direction = direction.as_str(),
                    service,
                    reason = err.reason().as_str(),
                    error = %err,
                    request_id = exchange.ids().request_id(),
                    "request failed"
                );
                exchange.failed(err.reason().as_str());
                (err.to_response(direction, format), None)
            }
        };
        let labels = RequestLabels {
            direction: direction.as_str(),
            service,
            route,
            peer: "",
        };
        self.metrics
            .record(labels, response.status(), start.elapsed());
        match pending {
            None => exchange.finish(response),
            Some(pending) => {
                let (response, record) = exchange.into_tunnel(response);
                self.start_tunnel(service, pending, Some(record), lent.map(|l| l.0));
                response
            }
        }
    }

    /// Routes and sends; returns the destination and route it matched.
    async fn forward(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        exchange: &mut Exchange,
    ) -> Forwarded<'_> {
        if req.method() == Method::CONNECT && !upgrade::is_extended_connect(&req) {
            let (matched, result) = self.connect(req, client, exchange).await;
            let labels = match matched {
                Some((destination, route)) => Labels {
                    service: destination.name().as_str(),
                    route,
                },
                None => Labels::UNROUTED,
            };
            return (labels, result);
        }
        // Routes, timeouts and limits judge the path the upstream acts on.
        let req = match crate::http::path::normalize_request(req) {
            Ok(req) => req,
            Err(err) => return (Labels::UNROUTED, Err(err)),
        };
        match self.route(&req) {
            Ok((route, prefix)) => {
                let prefix = prefix.map(str::to_owned);
                let sender = Sender {
                    client: client.ip(),
                    direction: LimitDirection::Outbound,
                    claims: None,
                    scheme: "http",
                };
                self.send(req, route, prefix.as_deref(), &sender, exchange)
                    .await
            }
            Err(ProxyError::NoRoute { host }) => {
                // Captured on its way to an address the config does not
                // know: there, outside the mesh, when the config allows.
                let captured = req.extensions().get::<CapturedTo>().copied();
                match captured {
                    Some(CapturedTo(to)) if self.unknown == UnknownDestinations::Passthrough => {
                        exchange.routed(tunnel::PASSTHROUGH, None);
                        let reply = self.pass_through(req, to, exchange).await;
                        let labels = Labels {
                            service: tunnel::PASSTHROUGH,
                            route: "",
                        };
                        (labels, reply.map(|response| (response, None)))
                    }
                    _ => (Labels::UNROUTED, Err(ProxyError::NoRoute { host })),
                }
            }
            Err(err) => (Labels::UNROUTED, Err(err)),
        }
    }

    /// Sends a request on the route it matched (`prefix`: the path prefix
    /// it matched by, for a rewrite): a redirect or fixed answer at once;
    /// else to one of the route's destinations, after the limits, with the
    /// route's changes to the request and the response.
    pub async fn send<'a>(
        &'a self,
        mut req: Request<Incoming>,
        route: &'a Route,
        prefix: Option<&str>,
        sender: &Sender<'_>,
        exchange: &mut Exchange,
    ) -> Forwarded<'a> {
        let mut labels = Labels {
            service: NO_UPSTREAM,
            route: &route.label,
        };
        let (backends, split) = match &route.action {
            Action::Forward { backends, split } => (backends, split),
            Action::Redirect(redirect) => {
                exchange.routed(NO_UPSTREAM, Some(&route.label));
                let (parts, _) = req.into_parts();
                let reply = filters::redirect_location(&parts, redirect, prefix, sender.scheme)
                    .map(|location| (redirect_response(redirect, location), None))
                    .map_err(|_| ProxyError::InvalidPath);
                return (labels, reply);
            }
            Action::Respond(direct) => {
                exchange.routed(NO_UPSTREAM, Some(&route.label));
                let mut response = direct_response(direct);
                if let Some(ops) = &route.response_headers {
                    ops.apply(response.headers_mut());
                }
                return (labels, Ok((response, None)));
            }
        };
        let pick = split.as_ref().map(|split| split.pick(req.headers()));
        let Some(backend) = backends.get(pick.as_ref().map_or(0, |p| p.index)) else {
            return (
                labels,
                Err(ProxyError::NoRoute {
                    host: route.label.to_string(),
                }),
            );
        };
        let destination = &self.destinations[backend.destination];
        if destination.is_opaque() {
            // Not HTTP: reached through its `listen` address, or CONNECT.
            let host = destination.name().to_string();
            return (labels, Err(ProxyError::NoRoute { host }));
        }
        let policy = &backend.policy;
        labels.service = destination.name().as_str();
        exchange.routed(labels.service, Some(&policy.label));
        if let Some(limit) = route.max_body {
            if body_length(&req).is_some_and(|length| length > limit) {
                return (labels, Err(ProxyError::PayloadTooLarge { limit }));
            }
        }
        if let Err(limited) = self.check_limits(&req, sender, destination, policy).await {
            return (labels, Err(limited));
        }
        let asked = upgrade::requested(&req);
        let app_over_h2 = upgrade::is_extended_connect(&req);
        let app_side = asked.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if parts.uri.authority().is_none() && !parts.headers.contains_key(http::header::HOST) {
            // A request without Host went to a catch-all route: the
            // upstream gets the destination's name, as any other would.
            if let Ok(host) = http::HeaderValue::from_str(destination.name().as_str()) {
                parts.headers.insert(http::header::HOST, host);
            }
        }
        let app_spoke_http1 = parts.version != Version::HTTP_2;
        headers::strip_hop_by_hop(&mut parts.headers);
        // Only a sidecar may say what protocol the app spoke, count
        // attempts or name a caller.
        headers::strip_own(&mut parts.headers);
        if let Some(rewrite) = &route.rewrite {
            if filters::rewrite(&mut parts, rewrite, prefix).is_err() {
                return (labels, Err(ProxyError::InvalidPath));
            }
        }
        if let Some(ops) = &route.request_headers {
            ops.apply(&mut parts.headers);
        }
        if let Some(protocol) = &asked {
            upgrade::as_http1(&mut parts, protocol);
        }
        let mut ctx = RequestContext::new(policy.clone(), app_spoke_http1);
        ctx.trace = Some(Arc::new(AttemptTrace {
            tracer: exchange.tracer().clone(),
            parent: exchange.span_context().clone(),
        }));
        let tried = ctx.tried.clone();
        parts.extensions.insert(ctx);
        let mut body = exchange.count_request(body);
        if let Some(limit) = route.max_body {
            // A body without Content-Length, or longer than it said: cut
            // at the limit, and the request answered 413.
            body = Body::Boxed(UnsyncBoxBody::new(crate::http::limit::limited(body, limit)));
        }
        let body = lifetime::bound_request_body(body, self.timeouts.body_idle);
        let req = Request::from_parts(parts, body);
        let result =
            destination.call(req).await.map_err(
                |err| match crate::http::limit::BodyTooLarge::find(&err) {
                    Some(too_large) => ProxyError::PayloadTooLarge {
                        limit: too_large.limit,
                    },
                    None => err,
                },
            );
        {
            let tried = tried
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            exchange.upstream(tried.last().copied(), tried.len() as u32);
        }
        let reply = result.map(|mut response| match (asked, app_side) {
            (Some(protocol), Some(app_side)) if upgrade::accepted(response.status(), false) => {
                let pending = Pending {
                    client: Side::Upgrade(app_side),
                    upstream: Side::Upgrade(hyper::upgrade::on(&mut response)),
                    kind: crate::tunnel::upgrade_kind(protocol.as_bytes()),
                };
                (
                    upgrade::accept(response, &protocol, app_over_h2),
                    Some(pending),
                )
            }
            // Refused, or no upgrade at all: the answer as it came.
            _ => {
                let mut response = from_upstream_response(response);
                if let Some(ops) = &route.response_headers {
                    ops.apply(response.headers_mut());
                }
                if let Some(cookie) = pick.and_then(|p| p.set_cookie) {
                    response
                        .headers_mut()
                        .append(http::header::SET_COOKIE, cookie);
                }
                (response, None)
            }
        });
        (labels, reply)
    }

    /// The rate limits of the request's direction, destination and route.
    async fn check_limits<B>(
        &self,
        req: &Request<B>,
        sender: &Sender<'_>,
        destination: &Destination,
        policy: &RoutePolicy,
    ) -> Result<(), ProxyError> {
        if !self.rate_limits.any(sender.direction) {
            return Ok(());
        }
        let subject = Subject {
            caller: None,
            client: Some(sender.client),
            headers: req.headers(),
            service: Some(destination.name().as_str()),
            route: Some(&policy.label),
            claims: sender.claims,
        };
        match self.rate_limits.check(sender.direction, &subject).await {
            Some(limited) => Err(limited.into()),
            None => Ok(()),
        }
    }

    /// A captured request for an address no destination has, sent there
    /// as plain HTTP on a connection of its own, as the app would have
    /// sent it without a sidecar (the proxy's own fields removed).
    async fn pass_through(
        &self,
        req: Request<Incoming>,
        to: SocketAddr,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::strip_own(&mut parts.headers);
        let body =
            lifetime::bound_request_body(exchange.count_request(body), self.timeouts.body_idle);
        let tcp = dial::tcp_within(to, tunnel::PASSTHROUGH_CONNECT_TIMEOUT).await?;
        exchange.upstream(Some(to), 1);
        let io = TokioIo::new(tcp);
        let upstream = |e| ProxyError::upstream(to, e);
        let response = if parts.version == Version::HTTP_2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(upstream)?;
            tokio::spawn(connection);
            sender.send_request(Request::from_parts(parts, body)).await
        } else {
            uri::to_http1(&mut parts);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(upstream)?;
            tokio::spawn(connection);
            sender.send_request(Request::from_parts(parts, body)).await
        };
        Ok(response.map_err(upstream)?.map(Body::from))
    }

    /// The index of the HTTP destination with an endpoint at `original`
    /// (the same host for a mesh endpoint, whose sidecar forwards to the
    /// app there).
    fn destination_at(&self, original: SocketAddr) -> Option<usize> {
        self.destinations
            .iter()
            .position(|d| !d.is_opaque() && d.endpoint_for(original).is_some())
    }

    /// The route a match points at.
    fn resolve(&self, to: RouteRef) -> &Arc<Route> {
        match to {
            RouteRef::Route(i) => &self.compiled[i],
            RouteRef::Service(i) => &self.by_name[i],
        }
    }

    /// Decides which route a request takes, without touching it, and the
    /// path prefix it matched by.
    fn route<'a, B>(
        &'a self,
        req: &Request<B>,
    ) -> Result<(&'a Route, Option<&'a str>), ProxyError> {
        // hyper enforces the count for HTTP/1 itself; this covers HTTP/2.
        let count = req.headers().len();
        if count > self.limits.max_count {
            return Err(ProxyError::TooManyHeaders {
                count,
                limit: self.limits.max_count,
            });
        }
        match Target::of(req) {
            Ok(target) => match self.routes.find(Some(&target), req) {
                Some(found) => Ok((self.resolve(found.to), found.prefix)),
                // Captured on its way to an address (a pod's): the
                // destination with an endpoint there, if one has.
                None => req
                    .extensions()
                    .get::<CapturedTo>()
                    .and_then(|captured| self.destination_at(captured.0))
                    .map(|i| (&*self.by_name[i], None))
                    .ok_or_else(|| ProxyError::NoRoute {
                        host: target.host.clone().into_owned(),
                    }),
            },
            // No Host at all (HTTP/1.0): only a catch-all route (`*`) can
            // say where it goes.
            Err(ProxyError::NoAuthority) => self
                .routes
                .find(None, req)
                .map(|found| (&**self.resolve(found.to), found.prefix))
                .ok_or(ProxyError::NoAuthority),
            Err(err) => Err(err),
        }
    }
}

/// What `Outbound::forward` returns: the labels of the destination and
/// route matched, and the response with the tunnel it opens, if any.
pub type Forwarded<'a> = (
    Labels<'a>,
    Result<(Response<Body>, Option<Pending>), ProxyError>,
);

/// The service and route a request is counted under.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    /// The destination's name (`unknown`: none matched; `none`: the route
    /// answered itself).
    pub service: &'a str,
    /// The route's name (empty: none matched).
    pub route: &'a str,
}

impl Labels<'_> {
    /// A request that matched no route.
    pub const UNROUTED: Labels<'static> = Labels {
        service: UNKNOWN_SERVICE,
        route: "",
    };
}

/// Who sent a request, for rate limits and redirects.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The client's address (the app's; at the gateway, the client's as
    /// `trusted_hops` tells it).
    pub client: std::net::IpAddr,
    /// Which limits apply.
    pub direction: LimitDirection,
    /// The claims of the client's verified token (gateway).
    pub claims: Option<&'a serde_json::Value>,
    /// `http` or `https`, as the client reached the proxy.
    pub scheme: &'static str,
}

/// The body length a request declares, if it does.
fn body_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// On a request of a captured connection: the address the app connected
/// to (`SO_ORIGINAL_DST`). A request whose host no route knows goes to the
/// destination with an endpoint at that address, so an app may call a pod
/// by its address.
#[derive(Debug, Clone, Copy)]
pub struct CapturedTo(pub SocketAddr);

/// Prepares an upstream's response for the app.
fn from_upstream_response(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}
