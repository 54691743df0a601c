//! A destination service: its endpoints, how they are reached (mTLS to
//! Pilotfish sidecars, or plain HTTP outside the mesh), and the choice of
//! endpoint for each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

use super::endpoint::{EndpointSettings, MeshEndpoint};
use crate::app::BuildError;
use crate::config::{DestinationConfig, Transport, UpstreamProtocol};
use crate::http::plain_client::PlainClient;
use crate::http::server::HeaderLimits;
use crate::http::{Body, ProxyError};
use crate::identity::{ServiceName, SpiffeId};
use crate::tls::{self, Credentials};

/// The endpoints of a destination, by transport.
#[derive(Debug)]
enum Endpoints {
    /// Pilotfish sidecars proving `identity`.
    Mesh {
        identity: SpiffeId,
        endpoints: Vec<MeshEndpoint>,
    },
    /// Plain HTTP servers outside the mesh.
    Plain {
        protocol: UpstreamProtocol,
        endpoints: Vec<PlainClient>,
    },
}

/// One destination service and its endpoints.
#[derive(Debug)]
pub struct Destination {
    name: ServiceName,
    endpoints: Endpoints,
    /// Round-robin cursor.
    next: AtomicUsize,
    timeout: Duration,
}

impl Destination {
    /// Builds a destination; mesh endpoints must prove `identity`.
    pub fn new(
        name: ServiceName,
        config: &DestinationConfig,
        identity: SpiffeId,
        namespace: &str,
        creds: Option<&Credentials>,
        limits: HeaderLimits,
    ) -> Result<Self, BuildError> {
        if config.endpoints.is_empty() {
            return Err(BuildError::Config(format!(
                "service {name} has no endpoints"
            )));
        }
        let addrs = config.endpoints.iter().map(|addr| *addr.get());
        let endpoints = match *config.transport {
            Transport::Mtls => {
                let sni = format!("{name}.{namespace}.svc.cluster.local");
                let server_name = ServerName::try_from(sni)
                    .map_err(|e| BuildError::Config(format!("server name for {name}: {e}")))?;
                let settings = Arc::new(EndpointSettings {
                    tls: tls::client_config(
                        creds.ok_or_else(|| {
                            BuildError::Config(format!("service {name} needs `tls:` for mTLS"))
                        })?,
                        identity.clone(),
                    )?,
                    server_name,
                    connect_timeout: config.connect_timeout.0,
                    limits,
                });
                Endpoints::Mesh {
                    identity,
                    endpoints: addrs
                        .map(|addr| MeshEndpoint::new(addr, settings.clone()))
                        .collect(),
                }
            }
            Transport::Plaintext => Endpoints::Plain {
                protocol: *config.protocol,
                endpoints: addrs
                    .map(|addr| PlainClient::new(addr, config.connect_timeout.0, limits))
                    .collect(),
            },
        };
        Ok(Self {
            name,
            endpoints,
            next: AtomicUsize::new(0),
            timeout: config.timeout.0,
        })
    }

    /// The service name.
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    /// The identity its endpoints must prove (`None` outside the mesh).
    pub fn identity(&self) -> Option<&SpiffeId> {
        match &self.endpoints {
            Endpoints::Mesh { identity, .. } => Some(identity),
            Endpoints::Plain { .. } => None,
        }
    }

    /// Sends a request to one of the endpoints (round robin) and waits for
    /// the response headers at most the destination's timeout.
    /// `app_spoke_http1` is the version the app used.
    pub async fn send(
        &self,
        req: Request<Body>,
        app_spoke_http1: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.endpoints {
            Endpoints::Mesh { endpoints, .. } => {
                let endpoint = &endpoints[turn % endpoints.len()];
                let sent = endpoint.send(req, app_spoke_http1);
                within(self.timeout, endpoint.addr(), sent).await
            }
            Endpoints::Plain {
                protocol,
                endpoints,
            } => {
                let endpoint = &endpoints[turn % endpoints.len()];
                let version = protocol.version(app_spoke_http1, req.version());
                within(self.timeout, endpoint.addr(), endpoint.send(req, version)).await
            }
        }
    }
}

/// Waits for the response headers at most `timeout`.
async fn within(
    timeout: Duration,
    addr: std::net::SocketAddr,
    sent: impl Future<Output = Result<Response<Incoming>, ProxyError>>,
) -> Result<Response<Incoming>, ProxyError> {
    tokio::time::timeout(timeout, sent)
        .await
        .unwrap_or(Err(ProxyError::ResponseTimeout {
            addr,
            after: timeout,
        }))
}
