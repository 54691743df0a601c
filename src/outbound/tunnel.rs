//! App -> mesh tunnels that are not upgrades (those go through the request
//! path, see `Outbound::forward`): a CONNECT from the app (an HTTPS client
//! behind `HTTPS_PROXY`), to a host the config has a destination for, and
//! connections to an opaque destination's `listen` address. Both become a
//! raw TCP connection to one of the destination's endpoints
//! ([`Destination::open_tunnel`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::info;

use super::destination::Destination;
use super::routes::Action;
use super::{Outbound, Sender};
use crate::config::{LimitDirection, UnknownDestinations};
use crate::drain;
use crate::http::{Body, Direction, ErrorFormat, ProxyError, dial};
use crate::observe::{Exchange, TunnelRecord};
use crate::routing::Target;
use crate::tunnel::{self, BoxIo, Pending, Side};

/// What a CONNECT gets: the destination and route name matched, and the
/// response with the tunnel it opens, if any.
type Connected<'a> = (
    Option<(&'a Arc<Destination>, &'a str)>,
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
    ) -> Connected<'_> {
        let Some(target) = req
            .uri()
            .authority()
            .and_then(|a| Target::parse(a.as_str()))
        else {
            return (None, Err(ProxyError::NoAuthority));
        };
        // A route that forwards to one destination, as a request to it would
        // take; a split, a redirect or a fixed answer carries no tunnel.
        let backend = self.routes.find(Some(&target), &req).and_then(|found| {
            match &self.resolve(found.to).action {
                Action::Forward {
                    backends,
                    split: None,
                } => backends.first(),
                _ => None,
            }
        });
        let (Some(port), Some(backend)) = (target.port, backend) else {
            let host = target.host.into_owned();
            return (None, Err(ProxyError::TunnelNotAllowed { host }));
        };
        let destination = &self.destinations[backend.destination];
        let policy = &backend.policy;
        let matched = Some((destination, &*policy.label));
        exchange.routed(destination.name().as_str(), Some(&policy.label));
        let sender = Sender {
            client: client.ip(),
            direction: LimitDirection::Outbound,
            claims: None,
            scheme: "http",
        };
        if let Err(limited) = self.check_limits(&req, &sender, destination, policy).await {
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
        let open = destination.open_tunnel(port);
        self.carry_to(io, client, (name, format!("{name}:{port}")), open, watch)
            .await;
    }

    /// A connection captured on its way to `original` that is not HTTP
    /// (TLS, opaque): to a destination's endpoint on that host, carried
    /// to that endpoint (over mTLS to the same port behind its sidecar);
    /// anywhere else, straight to `original` ([`PASSTHROUGH`]). Counted
    /// and logged as a CONNECT either way.
    pub async fn carry_captured(
        &self,
        io: BoxIo,
        client: SocketAddr,
        original: SocketAddr,
        watch: drain::Watch,
    ) {
        let found = self
            .destinations
            .iter()
            .find_map(|d| d.endpoint_for(original).map(|e| (d, e)));
        match found {
            Some((destination, endpoint)) => {
                let name = destination.name().as_str();
                let authority = format!("{name}:{}", original.port());
                let open = destination.open_tunnel_via(endpoint, original.port());
                self.carry_to(io, client, (name, authority), open, watch)
                    .await;
            }
            None if self.unknown == UnknownDestinations::Refuse => {
                // Closed, and logged as the CONNECT it stands for.
                let host = original.to_string();
                let open = std::future::ready(Err(ProxyError::TunnelNotAllowed { host }));
                let labels = (UNKNOWN, original.to_string());
                self.carry_to(io, client, labels, open, watch).await;
            }
            None => {
                let open = passthrough(original);
                let labels = (PASSTHROUGH, original.to_string());
                self.carry_to(io, client, labels, open, watch).await;
            }
        }
    }

    /// Runs a raw connection from the app through the tunnel `open`
    /// gives, as a CONNECT to `authority` of the destination `name`.
    async fn carry_to(
        &self,
        io: BoxIo,
        client: SocketAddr,
        (name, authority): (&str, String),
        open: impl Future<Output = Result<(BoxIo, SocketAddr), ProxyError>>,
        watch: drain::Watch,
    ) {
        let mut req = Request::connect(authority).body(()).unwrap_or_default();
        let mut exchange = self.observer.begin(Direction::Outbound, &mut req);
        exchange.routed(name, None);
        match open.await {
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

/// The destination label of captured connections to addresses no
/// destination has: they go where the app meant, outside the mesh.
pub const PASSTHROUGH: &str = "passthrough";

/// How long a passthrough connect may take: the address may be far away
/// (Istio's passthrough cluster allows 10s).
pub(super) const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The service label of captured connections refused for going to an
/// address no destination has (`unknown_destinations: refuse`), as for
/// requests no route matched.
pub const UNKNOWN: &str = "unknown";

/// A plain TCP connection to `addr`.
async fn passthrough(addr: SocketAddr) -> Result<(BoxIo, SocketAddr), ProxyError> {
    let tcp = dial::tcp_within(addr, PASSTHROUGH_CONNECT_TIMEOUT).await?;
    Ok((Box::new(tcp), addr))
}
