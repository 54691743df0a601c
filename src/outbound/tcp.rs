//! Tunnels to a destination: a raw TCP connection to one of its endpoints,
//! for CONNECT and opaque destinations. The endpoint is picked as for a
//! request (balanced, ejected ones skipped), a connect failure counts
//! toward its ejection and tries another, and a connection that succeeds
//! counts as a success.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::balance::{learn, pick};
use super::destination::Destination;
use super::endpoint::Endpoint;
use crate::http::ProxyError;
use crate::http::outcome::Outcome;
use crate::tunnel::BoxIo;

impl Destination {
    /// Opens a tunnel to `port` behind one of the endpoints (a mesh
    /// endpoint's sidecar carries it to that port on its host; a plain
    /// endpoint is connected to as it is). Returns the stream and the
    /// endpoint.
    pub async fn open_tunnel(&self, port: u16) -> Result<(BoxIo, SocketAddr), ProxyError> {
        let settings = &self.balancing;
        let config = &self.key().config;
        let attempts = (*config.retries.attempts.get()).max(1);
        let mut endpoints = settings.endpoints.endpoints();
        if endpoints.is_empty() {
            settings.endpoints.first_answer().await;
            endpoints = settings.endpoints.endpoints();
        }
        let mut avoid = None;
        let mut attempt = 1;
        loop {
            let picked = pick(
                settings.kind,
                &endpoints,
                avoid,
                Instant::now(),
                &self.turn,
                &settings.typical,
            )
            .ok_or_else(|| ProxyError::NoEndpoints {
                service: settings.service.clone(),
            })?;
            // A probe after an ejection is this connection; its outcome
            // below decides.
            let endpoint = picked.endpoint;
            let result = endpoint.tunnel(port, config.connect_timeout.0).await;
            let outcome = outcome(&result);
            learn(settings, &endpoint, &endpoints, outcome);
            match result {
                Ok(io) => return Ok((io, endpoint.addr())),
                // Nothing was sent: another endpoint may take it. Not a
                // refusal, though: that is the far side's answer.
                Err(err) if attempt < attempts && outcome.unreached() && !refused(&err) => {
                    settings.metrics.retry("connect-failure");
                    avoid = Some(endpoint.addr());
                    attempt += 1;
                    tracing::debug!(error = %err, "tunnel connect failed; trying another endpoint");
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Destination {
    /// The endpoint a connection captured on its way to `original` was
    /// meant for: a mesh endpoint on the same host (its sidecar carries
    /// the connection to that port), or a plain endpoint at that address.
    pub fn endpoint_for(&self, original: SocketAddr) -> Option<Arc<Endpoint>> {
        let host = original.ip().to_canonical();
        let endpoints = self.balancing.endpoints.endpoints();
        endpoints
            .iter()
            .find(|e| match e.in_mesh() {
                true => e.addr().ip().to_canonical() == host,
                false => e.addr() == original,
            })
            .cloned()
    }

    /// Opens a tunnel to `port` behind `endpoint` itself, the one the app
    /// chose (a database's primary is not any replica); its outcome counts
    /// toward the endpoint's health like any connection's.
    pub async fn open_tunnel_via(
        &self,
        endpoint: Arc<Endpoint>,
        port: u16,
    ) -> Result<(BoxIo, SocketAddr), ProxyError> {
        let config = &self.key().config;
        let result = endpoint.tunnel(port, config.connect_timeout.0).await;
        let outcome = outcome(&result);
        let settings = &self.balancing;
        learn(
            settings,
            &endpoint,
            &settings.endpoints.endpoints(),
            outcome,
        );
        result.map(|io| (io, endpoint.addr()))
    }
}

/// Whether the far sidecar refused the tunnel (4xx: its policy, a port
/// it does not open). Its answer is the same on every try, so the
/// connection fails at once rather than asking again.
fn refused(err: &ProxyError) -> bool {
    matches!(err, ProxyError::TunnelRefused { status, .. } if status.is_client_error())
}

/// A tunnel's connect, as the balancer and ejection learn it: an open
/// tunnel is a success, as a 200 would be.
fn outcome(result: &Result<BoxIo, ProxyError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Response {
            status: 200,
            grpc: None,
        },
        Err(err) => Outcome::of_error(err),
    }
}
