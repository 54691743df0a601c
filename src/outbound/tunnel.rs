//! App -> mesh tunnels that are not upgrades (those go through the request
//! path, see `Outbound::forward`): a CONNECT from the app (an HTTPS client
//! behind `HTTPS_PROXY`), to a host the config has a destination for, and
//! connections to an opaque destination's `listen` address. Both become a
//! raw TCP connection to one of the destination's endpoints
//! ([`Destination::open_tunnel`]).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::info;

use super::Outbound;
use super::destination::Destination;
use super::policy::RoutePolicy;
use super::route::Target;
use crate::drain;
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::observe::{Exchange, TunnelRecord};
use crate::tunnel::{self, BoxIo, Pending, Side};

/// What `Outbound::forward` returns: the destination and route matched,
/// and the response with the tunnel it opens, if any.
type Forwarded<'a> = (
    Option<(&'a Arc<Destination>, &'a Arc<RoutePolicy>)>,
    Result<(Response<Body>, Option<Pending>), ProxyError>,
);

impl Outbound {
    /// An app's CONNECT: to a destination that answers to its host (by
    /// name or route), rate limited as a request to it; 200 once the
    /// tunnel to an endpoint is open, then the bytes. A mesh destination's
    /// sidecar carries it to the port asked for (one of its opaque ports);
    /// a plaintext destination's endpoint is connected to as it is.
    pub(super) async fn connect(
        &self,
        mut req: Request<Incoming>,
        client: SocketAddr,
        exchange: &mut Exchange,
    ) -> Forwarded<'_> {
        let Some(target) = req
            .uri()
            .authority()
            .and_then(|a| Target::parse(a.as_str()))
        else {
            return (None, Err(ProxyError::NoAuthority));
        };
        let (Some(port), Some(found)) = (target.port, self.routes.find(&target, "/")) else {
            let host = target.host.into_owned();
            return (None, Err(ProxyError::TunnelNotAllowed { host }));
        };
        let destination = &self.destinations[found.destination];
        let policy = match found.route {
            Some(route) => &self.route_policies[route],
            None => &self.defaults[found.destination],
        };
        let matched = Some((destination, policy));
        exchange.routed(destination.name().as_str(), Some(&policy.label));
        if let Err(limited) = self.check_limits(&req, client, destination, policy).await {
            return (matched, Err(limited));
        }
        let (upstream, endpoint) = match destination.open_tunnel(port).await {
            Ok(opened) => opened,
            Err(err) => return (matched, Err(err)),
        };
        exchange.upstream(Some(endpoint), 1);
        let pending = Pending {
            client: Side::Upgrade(hyper::upgrade::on(&mut req)),
            upstream: Side::Open(upstream),
            kind: "connect",
        };
        (matched, Ok((Response::new(Body::Empty), Some(pending))))
    }

    /// A connection to an opaque destination's `listen` address: carried
    /// to one of its endpoints, counted and logged as a CONNECT to it.
    pub async fn carry(
        &self,
        io: BoxIo,
        client: SocketAddr,
        listen: SocketAddr,
        watch: drain::Watch,
    ) {
        let Some(destination) = self.destinations.iter().find(|d| {
            d.key()
                .config
                .listen
                .as_ref()
                .is_some_and(|l| *l.get() == listen)
        }) else {
            return; // a reload removed it; the connection closes
        };
        let config = &destination.key().config;
        let port = config.port.as_ref().map_or(listen.port(), |p| *p.get());
        let name = destination.name().as_str();
        let mut req = Request::connect(format!("{name}:{port}"))
            .body(())
            .unwrap_or_default();
        let mut exchange = self.observer.begin(Direction::Outbound, &mut req);
        exchange.routed(name, None);
        match destination.open_tunnel(port).await {
            Ok((upstream, endpoint)) => {
                exchange.upstream(Some(endpoint), 1);
                let (_, record) = exchange.into_tunnel(Response::new(Body::Empty));
                let pending = Pending {
                    client: Side::Open(io),
                    upstream: Side::Open(upstream),
                    kind: "opaque",
                };
                self.start_tunnel(name, pending, Some(record), Some(watch));
            }
            Err(err) => {
                info!(
                    direction = "outbound",
                    service = name,
                    %client,
                    reason = err.reason().as_str(),
                    error = %err,
                    "opaque connection failed"
                );
                exchange.failed(err.reason().as_str());
                drop(exchange.finish(err.to_response(Direction::Outbound, ErrorFormat::Text)));
            }
        }
    }

    /// Runs a tunnel the response is about to open.
    pub(super) fn start_tunnel(
        &self,
        service: &str,
        pending: Pending,
        record: Option<TunnelRecord>,
        watch: Option<drain::Watch>,
    ) {
        let labels = tunnel::Labels {
            direction: "outbound",
            service: service.into(),
        };
        let settings = tunnel::Settings {
            metrics: self.tunnel_metrics.clone(),
            idle: self.timeouts.tunnel_idle,
        };
        pending.spawn(labels, settings, record, watch);
    }
}
