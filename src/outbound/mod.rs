//! App -> mesh. The app sends plain HTTP/1.1 or h2c to the outbound listener;
//! each request is routed by its authority and path to a destination
//! service, and goes to one of its endpoints over the shared mTLS HTTP/2
//! connection:
//!
//! ```text
//! request -> Target::of -> RouteTable::find -> to_mesh_request -> Destination::send
//!         <- from_mesh_response <------------------------------- (peer's inbound)
//! ```

pub mod destination;
pub mod endpoint;
pub mod route;

use std::time::Instant;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tracing::info;

use self::destination::Destination;
use self::route::{RouteTable, Target};
use crate::app::BuildError;
use crate::config::{Config, OutboundConfig};
use crate::http::headers::{self, ORIG_PROTO, ORIG_PROTO_HTTP1};
use crate::http::server::HeaderLimits;
use crate::http::{Body, Direction, ProxyError};
use crate::identity::ServiceName;
use crate::metrics::RequestMetrics;
use crate::tls::Credentials;

/// Metric label for requests that matched no destination.
const UNKNOWN_SERVICE: &str = "unknown";

/// The outbound side: routes and destinations.
#[derive(Debug)]
pub struct Outbound {
    routes: RouteTable,
    destinations: Vec<Destination>,
    limits: HeaderLimits,
    metrics: RequestMetrics,
}

impl Outbound {
    /// Builds the outbound side of `config`.
    pub fn new(
        config: &Config,
        outbound: &OutboundConfig,
        creds: &Credentials,
        limits: HeaderLimits,
        metrics: RequestMetrics,
    ) -> Result<Self, BuildError> {
        let destinations = outbound
            .services
            .iter()
            .map(|(name, dst)| {
                let service = ServiceName::new(name).map_err(BuildError::config)?;
                let identity = crate::config::expected_identity(config, name, dst)
                    .map_err(BuildError::config)?;
                let namespace = dst.namespace.as_deref().unwrap_or(&config.namespace);
                Destination::new(service, dst, identity, namespace, creds, limits)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routes: RouteTable::build(outbound, &config.namespace),
            destinations,
            limits,
            metrics,
        })
    }

    /// Handles one request from the app. Never fails: proxy errors become
    /// responses with the `pilotfish-error` header.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let (service, result) = self.forward(req).await;
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                info!(
                    direction = "outbound",
                    service,
                    reason = err.reason().as_str(),
                    error = %err,
                    "request failed"
                );
                err.to_response(Direction::Outbound)
            }
        };
        self.metrics
            .record(Direction::Outbound, service, response.status(), start.elapsed());
        response
    }

    /// Routes and sends; returns the destination's name for metrics.
    async fn forward(
        &self,
        req: Request<Incoming>,
    ) -> (&str, Result<Response<Body>, ProxyError>) {
        let destination = match self.route(&req) {
            Ok(destination) => destination,
            Err(err) => return (UNKNOWN_SERVICE, Err(err)),
        };
        let name = destination.name().as_str();
        let result = match to_mesh_request(req) {
            Ok(req) => destination.send(req).await.map(from_mesh_response),
            Err(err) => Err(err),
        };
        (name, result)
    }

    /// Decides where a request goes, without touching it.
    fn route(&self, req: &Request<Incoming>) -> Result<&Destination, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::Unsupported("CONNECT (tunnelling)"));
        }
        // hyper enforces the count for HTTP/1 itself; this covers HTTP/2.
        let count = req.headers().len();
        if count > self.limits.max_count {
            return Err(ProxyError::TooManyHeaders {
                count,
                limit: self.limits.max_count,
            });
        }
        let target = Target::of(req)?;
        let index = self
            .routes
            .find(&target, req.uri().path())
            .ok_or_else(|| ProxyError::NoRoute {
                host: target.host.clone().into_owned(),
            })?;
        Ok(&self.destinations[index])
    }
}

/// Rewrites an app's request for the HTTP/2 mesh link: absolute URI with
/// the authority the app asked for, hop-by-hop fields removed, and the
/// app's HTTP version recorded so the far side can restore it.
fn to_mesh_request(req: Request<Incoming>) -> Result<Request<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme().is_none() || parts.uri.authority().is_none() {
        let authority = match parts.uri.authority() {
            Some(authority) => authority.clone(),
            None => parts
                .headers
                .get(HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .ok_or(ProxyError::NoAuthority)?,
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(parts.uri.scheme().cloned().unwrap_or(Scheme::HTTP))
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::NoAuthority)?;
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    // HTTP/2 carries the authority in the URI; a Host field would duplicate it.
    parts.headers.remove(HOST);
    if parts.version == Version::HTTP_2 {
        parts.headers.remove(ORIG_PROTO);
    } else {
        parts.headers.insert(ORIG_PROTO, ORIG_PROTO_HTTP1);
    }
    parts.version = Version::HTTP_2;
    Ok(Request::from_parts(parts, Body::Incoming(body)))
}

/// Prepares a response from the mesh for the app.
fn from_mesh_response(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::Incoming(body))
}
