//! Mesh -> app tunnels. Upgrades (WebSockets) go through the request path
//! (see `Inbound::serve`); this file has the rest: a peer's CONNECT, a
//! raw TCP connection to one of the app's `opaque_ports`, authorized by
//! the caller's identity and the port; and the start of every tunnel.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::info;

use super::{Decision, Inbound, Peer};
use crate::http::{Body, DenyReason, ProxyError, dial};
use crate::observe::{Exchange, TunnelRecord};
use crate::tunnel::{self, Lent, Pending, Side};

impl Inbound {
    /// A peer's CONNECT: a raw TCP connection to `inbound.app`'s host on
    /// the port it names, when the port is one of `opaque_ports` and the
    /// policy admits the caller to it; 200, then the bytes.
    pub(super) async fn open_tcp(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Result<(Response<Body>, Option<Pending>), ProxyError> {
        let port = req
            .uri()
            .authority()
            .and_then(|a| a.port_u16())
            .ok_or(ProxyError::NoAuthority)?;
        self.admit_tcp(peer, port)?;
        let addr = SocketAddr::new(self.app_key.0.ip(), port);
        let tcp = dial::tcp_within(addr, self.app_key.1.connect_timeout).await?;
        exchange.upstream(Some(addr), 1);
        let pending = Pending {
            client: Side::Upgrade(hyper::upgrade::on(&mut req)),
            upstream: Side::Open(Box::new(tcp)),
            kind: "opaque",
        };
        Ok((Response::new(Body::Empty), Some(pending)))
    }

    /// Whether the caller may open a raw TCP connection to `port`.
    fn admit_tcp(&self, peer: &Peer, port: u16) -> Result<(), ProxyError> {
        let decision = match self.opaque_ports.contains(&port) {
            true => self.policy.decide_tunnel(&peer.identity, port),
            false => Decision::Deny(DenyReason::PortNotAllowed),
        };
        let Decision::Deny(reason) = decision else {
            return Ok(());
        };
        self.metrics
            .authz
            .denied(peer.identity.as_str(), reason.as_str());
        info!(
            caller = %peer.identity,
            port,
            reason = reason.as_str(),
            "connection denied by the authorization policy"
        );
        Err(ProxyError::Forbidden {
            caller: peer.identity.clone(),
            method: http::Method::CONNECT,
            path: format!(":{port}"),
            reason,
        })
    }

    /// Runs a tunnel the response is about to open.
    pub(super) fn start_tunnel(&self, pending: Pending, record: TunnelRecord, lent: Option<Lent>) {
        let labels = tunnel::Labels {
            direction: "inbound",
            service: self.service.as_str().into(),
        };
        let settings = tunnel::Settings {
            metrics: self.metrics.tunnels.clone(),
            idle: self.timeouts.tunnel_idle,
        };
        pending.spawn(labels, settings, Some(record), lent.map(|l| l.0));
    }
}
