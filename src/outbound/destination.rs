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
use crate::metrics::TlsMetrics;
use crate::tls::{self, CredentialStore, Derived, TlsSettings};

/// The endpoints of a destination, by transport.
#[derive(Debug)]
enum Endpoints {
    /// Pilotfish sidecars proving the destination's identity.
    Mesh { endpoints: Vec<MeshEndpoint> },
    /// Plain HTTP servers outside the mesh.
    Plain {
        protocol: UpstreamProtocol,
        endpoints: Vec<PlainClient>,
    },
}

/// Everything a destination is built from: when a config reload leaves
/// it equal, the destination (its connections, and later its breaker and
/// limiter state) carries over unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationKey {
    /// The service name.
    pub name: ServiceName,
    /// Its config section.
    pub config: DestinationConfig,
    /// The identity its endpoints must prove.
    pub identity: SpiffeId,
    /// Its namespace.
    pub namespace: String,
    /// Header limits.
    pub limits: HeaderLimits,
    /// TLS settings.
    pub tls: Option<TlsSettings>,
}

/// One destination service and its endpoints.
#[derive(Debug)]
pub struct Destination {
    key: DestinationKey,
    endpoints: Endpoints,
    /// Round-robin cursor.
    next: AtomicUsize,
    timeout: Duration,
}

impl Destination {
    /// Builds a destination; mesh endpoints must prove `key.identity`
    /// with certificates from `creds`.
    pub fn new(
        key: DestinationKey,
        creds: Option<&Arc<CredentialStore>>,
        metrics: &TlsMetrics,
    ) -> Result<Self, BuildError> {
        let name = &key.name;
        let config = &key.config;
        if config.endpoints.is_empty() {
            return Err(BuildError::Config(format!(
                "service {name} has no endpoints"
            )));
        }
        let addrs = config.endpoints.iter().map(|addr| *addr.get());
        let endpoints = match (*config.transport, creds, key.tls) {
            (Transport::Mtls, Some(creds), Some(settings)) => {
                let sni = format!("{name}.{}.svc.cluster.local", key.namespace);
                let server_name = ServerName::try_from(sni)
                    .map_err(|e| BuildError::Config(format!("server name for {name}: {e}")))?;
                let identity = key.identity.clone();
                let tls = Derived::new(creds.clone(), move |c| {
                    tls::client_config(c, identity.clone(), settings)
                })?;
                let settings = Arc::new(EndpointSettings {
                    tls,
                    server_name,
                    connect_timeout: config.connect_timeout.0,
                    limits: key.limits,
                    metrics: metrics.clone(),
                });
                Endpoints::Mesh {
                    endpoints: addrs
                        .map(|addr| MeshEndpoint::new(addr, settings.clone()))
                        .collect(),
                }
            }
            (Transport::Mtls, _, _) => {
                return Err(BuildError::Config(format!(
                    "service {name} needs `tls:` for mTLS"
                )));
            }
            (Transport::Plaintext, _, _) => Endpoints::Plain {
                protocol: *config.protocol,
                endpoints: addrs
                    .map(|addr| PlainClient::new(addr, config.connect_timeout.0, key.limits))
                    .collect(),
            },
        };
        Ok(Self {
            timeout: config.timeout.0,
            key,
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    /// What it was built from.
    pub fn key(&self) -> &DestinationKey {
        &self.key
    }

    /// The service name.
    pub fn name(&self) -> &ServiceName {
        &self.key.name
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
