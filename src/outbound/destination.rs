//! A destination service: its endpoints, the identity they must prove, and
//! the choice of endpoint for each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

use super::endpoint::{EndpointSettings, MeshEndpoint};
use crate::app::BuildError;
use crate::config::DestinationConfig;
use crate::http::server::HeaderLimits;
use crate::http::{Body, ProxyError};
use crate::identity::{ServiceName, SpiffeId};
use crate::tls::{self, Credentials};

/// One destination service and its endpoints.
#[derive(Debug)]
pub struct Destination {
    name: ServiceName,
    identity: SpiffeId,
    endpoints: Vec<MeshEndpoint>,
    /// Round-robin cursor.
    next: AtomicUsize,
    timeout: Duration,
}

impl Destination {
    /// Builds a destination whose endpoints must prove `identity`.
    pub fn new(
        name: ServiceName,
        config: &DestinationConfig,
        identity: SpiffeId,
        namespace: &str,
        creds: &Credentials,
        limits: HeaderLimits,
    ) -> Result<Self, BuildError> {
        if config.endpoints.is_empty() {
            return Err(BuildError::Config(format!("service {name} has no endpoints")));
        }
        let server_name = ServerName::try_from(format!("{name}.{namespace}.svc.cluster.local"))
            .map_err(|e| BuildError::Config(format!("server name for {name}: {e}")))?;
        let settings = Arc::new(EndpointSettings {
            tls: tls::client_config(creds, identity.clone())?,
            server_name,
            connect_timeout: config.connect_timeout.0,
            limits,
        });
        let endpoints = config
            .endpoints
            .iter()
            .map(|addr| MeshEndpoint::new(*addr.get(), settings.clone()))
            .collect();
        Ok(Self {
            name,
            identity,
            endpoints,
            next: AtomicUsize::new(0),
            timeout: config.timeout.0,
        })
    }

    /// The service name.
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    /// The identity its endpoints must prove.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Sends a request to one of the endpoints (round robin) and waits for
    /// the response headers at most the destination's timeout.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let endpoint = self.pick();
        match tokio::time::timeout(self.timeout, endpoint.send(req)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::ResponseTimeout {
                addr: endpoint.addr(),
                after: self.timeout,
            }),
        }
    }

    fn pick(&self) -> &MeshEndpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }
}
