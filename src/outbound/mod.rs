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
pub mod route;
pub mod stack;
pub mod tcp;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::info;

use self::destination::{Destination, DestinationKey};
use self::policy::trace::AttemptTrace;
use self::policy::{Fallback, RequestContext, RetryPolicy, RoutePolicy};
use self::route::{RouteTable, Target};
use crate::build::BuildError;
use crate::config::{
    Config, DestinationConfig, LimitDirection, OutboundConfig, RouteConfig, UnknownDestinations,
};
use crate::http::headers::{self, PROXY_ADDED_HEADERS};
use crate::http::lifetime::{self, Timeouts};
use crate::http::server::{self, HeaderLimits};
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::http::{dial, upgrade, uri};
use crate::identity::ServiceName;
use crate::metrics::{Metrics, RequestLabels, RequestMetrics, TunnelMetrics};
use crate::observe::{Exchange, Observer};
use crate::ratelimit::{RateLimits, Subject};
use crate::tls::{CredentialStore, TlsSettings};
use crate::tunnel::{Lent, Pending, Side};

/// Metric label for requests that matched no destination.
const UNKNOWN_SERVICE: &str = "unknown";

/// The outbound side: routes and destinations.
#[derive(Debug)]
pub struct Outbound {
    routes: RouteTable,
    destinations: Vec<Arc<Destination>>,
    /// The settings of requests that matched a destination by its name.
    defaults: Vec<Arc<RoutePolicy>>,
    /// The settings of requests that matched an explicit route.
    route_policies: Vec<Arc<RoutePolicy>>,
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
        let find = |name: &str| {
            destinations
                .iter()
                .find(|d| d.name().as_str() == name)
                .cloned()
        };
        let defaults = outbound
            .services
            .values()
            .map(|dst| Arc::new(default_policy(dst, &find)))
            .collect();
        let route_policies = outbound
            .routes
            .iter()
            .map(|route| {
                let dst = route
                    .service
                    .as_ref()
                    .and_then(|s| outbound.services.get(s.as_str()));
                Arc::new(route_policy(route, dst.map(|d| d.get()), &find))
            })
            .collect();
        Ok(Self {
            routes: RouteTable::build(outbound, &config.namespace),
            destinations,
            defaults,
            route_policies,
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
        })
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

    /// Handles one request from the app. Never fails: proxy errors become
    /// responses with the `pilotfish-error` header.
    /// `client` is the app's address (for limits keyed by it).
    pub async fn handle(&self, mut req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let start = Instant::now();
        let mut exchange = self.observer.begin(Direction::Outbound, &mut req);
        let format = ErrorFormat::of(req.headers());
        let lent = req.extensions_mut().remove::<Lent>();
        let (policy, result) = self.forward(req, client, &mut exchange).await;
        let (service, route) = match policy {
            Some((destination, policy)) => (destination.name().as_str(), &*policy.label),
            None => (UNKNOWN_SERVICE, ""),
        };
        let (response, pending) = match result {
            Ok(reply) => reply,
            Err(err) => {
                info!(
                    direction = "outbound",
                    service,
                    reason = err.reason().as_str(),
                    error = %err,
                    request_id = exchange.ids().request_id(),
                    "request failed"
                );
                exchange.failed(err.reason().as_str());
                (err.to_response(Direction::Outbound, format), None)
            }
        };
        let labels = RequestLabels {
            direction: Direction::Outbound.as_str(),
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
    ) -> (
        Option<(&Arc<Destination>, &Arc<RoutePolicy>)>,
        Result<(Response<Body>, Option<Pending>), ProxyError>,
    ) {
        if req.method() == Method::CONNECT && !upgrade::is_extended_connect(&req) {
            return self.connect(req, client, exchange).await;
        }
        // Routes, timeouts and limits judge the path the upstream acts on.
        let mut req = match crate::http::path::normalize_request(req) {
            Ok(req) => req,
            Err(err) => return (None, Err(err)),
        };
        let asked = upgrade::requested(&req);
        let app_over_h2 = upgrade::is_extended_connect(&req);
        let app_side = asked.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (destination, policy) = match self.route(&req) {
            Ok(found) => found,
            Err(ProxyError::NoRoute { host }) => {
                // Captured on its way to an address the config does not
                // know: there, outside the mesh, when the config allows.
                let captured = req.extensions().get::<CapturedTo>().copied();
                return match captured {
                    Some(CapturedTo(to)) if self.unknown == UnknownDestinations::Passthrough => {
                        exchange.routed(tunnel::PASSTHROUGH, None);
                        let reply = self.pass_through(req, to, exchange).await;
                        (None, reply.map(|response| (response, None)))
                    }
                    _ => (None, Err(ProxyError::NoRoute { host })),
                };
            }
            Err(err) => return (None, Err(err)),
        };
        exchange.routed(destination.name().as_str(), Some(&policy.label));
        if let Err(limited) = self.check_limits(&req, client, destination, policy).await {
            return (Some((destination, policy)), Err(limited));
        }
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
        let body =
            lifetime::bound_request_body(exchange.count_request(body), self.timeouts.body_idle);
        let req = Request::from_parts(parts, body);
        let result = destination.call(req).await;
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
            _ => (from_upstream_response(response), None),
        });
        (Some((destination, policy)), reply)
    }

    /// The outbound rate limits of the request's destination and route.
    async fn check_limits<B>(
        &self,
        req: &Request<B>,
        client: SocketAddr,
        destination: &Destination,
        policy: &RoutePolicy,
    ) -> Result<(), ProxyError> {
        if !self.rate_limits.any(LimitDirection::Outbound) {
            return Ok(());
        }
        let subject = Subject {
            caller: None,
            client: Some(client.ip()),
            headers: req.headers(),
            service: Some(destination.name().as_str()),
            route: Some(&policy.label),
        };
        match self
            .rate_limits
            .check(LimitDirection::Outbound, &subject)
            .await
        {
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

    /// The HTTP destination with an endpoint at `original` (the same host
    /// for a mesh endpoint, whose sidecar forwards to the app there).
    fn destination_at(&self, original: SocketAddr) -> Option<route::RouteMatch> {
        let index = self
            .destinations
            .iter()
            .position(|d| !d.is_opaque() && d.endpoint_for(original).is_some())?;
        Some(route::RouteMatch {
            destination: index,
            route: None,
        })
    }

    /// Decides where a request goes, without touching it.
    fn route(
        &self,
        req: &Request<Incoming>,
    ) -> Result<(&Arc<Destination>, &Arc<RoutePolicy>), ProxyError> {
        // hyper enforces the count for HTTP/1 itself; this covers HTTP/2.
        let count = req.headers().len();
        if count > self.limits.max_count {
            return Err(ProxyError::TooManyHeaders {
                count,
                limit: self.limits.max_count,
            });
        }
        let path = req.uri().path();
        let found = match Target::of(req) {
            Ok(target) => match self.routes.find(&target, path) {
                Some(found) => found,
                // Captured on its way to an address (a pod's): the
                // destination with an endpoint there, if one has.
                None => req
                    .extensions()
                    .get::<CapturedTo>()
                    .and_then(|captured| self.destination_at(captured.0))
                    .ok_or_else(|| ProxyError::NoRoute {
                        host: target.host.clone().into_owned(),
                    })?,
            },
            // No Host at all (HTTP/1.0): only a catch-all route (`*`) can
            // say where it goes.
            Err(ProxyError::NoAuthority) => self
                .routes
                .find_any_host(path)
                .ok_or(ProxyError::NoAuthority)?,
            Err(err) => return Err(err),
        };
        let destination = &self.destinations[found.destination];
        if destination.is_opaque() {
            // Not HTTP: reached through its `listen` address, or CONNECT.
            return Err(ProxyError::NoRoute {
                host: destination.name().to_string(),
            });
        }
        let policy = match found.route {
            Some(route) => &self.route_policies[route],
            None => &self.defaults[found.destination],
        };
        Ok((destination, policy))
    }
}

/// On a request of a captured connection: the address the app connected
/// to (`SO_ORIGINAL_DST`). A request whose host no route knows goes to the
/// destination with an endpoint at that address, so an app may call a pod
/// by its address.
#[derive(Debug, Clone, Copy)]
pub struct CapturedTo(pub SocketAddr);

/// The settings of requests to a destination matched by its name.
fn default_policy(
    dst: &DestinationConfig,
    find: &impl Fn(&str) -> Option<Arc<Destination>>,
) -> RoutePolicy {
    RoutePolicy {
        label: Arc::from("default"),
        timeout: dst.timeout.0,
        per_try_timeout: dst.per_try_timeout.map(|t| t.0),
        retries: Arc::new(RetryPolicy::from_config(&dst.retries)),
        fallback: dst
            .fallback
            .as_ref()
            .and_then(|f| Fallback::from_config(f, find)),
    }
}

/// The destination's settings with a route's overrides.
fn route_policy(
    route: &RouteConfig,
    dst: Option<&DestinationConfig>,
    find: &impl Fn(&str) -> Option<Arc<Destination>>,
) -> RoutePolicy {
    let base = dst.map(|d| default_policy(d, find)).unwrap_or(RoutePolicy {
        label: Arc::from("default"),
        timeout: std::time::Duration::from_secs(15),
        per_try_timeout: None,
        retries: Arc::default(),
        fallback: None,
    });
    RoutePolicy {
        label: Arc::from(route.label()),
        timeout: route.timeout.map_or(base.timeout, |t| t.0),
        per_try_timeout: route.per_try_timeout.map(|t| t.0).or(base.per_try_timeout),
        retries: route
            .retries
            .as_ref()
            .map_or(base.retries, |r| Arc::new(RetryPolicy::from_config(r))),
        fallback: match &route.fallback {
            Some(f) => Fallback::from_config(f, find),
            None => base.fallback,
        },
    }
}

/// Prepares an upstream's response for the app.
fn from_upstream_response(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}
