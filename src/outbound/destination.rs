//! A destination service: its endpoints (static or from DNS), how they are
//! reached (mTLS to Pilotfish sidecars, or plain HTTP outside the mesh),
//! and the stack of policies every request to it passes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use http::Request;
use rustls::pki_types::ServerName;
use tokio::time::Instant;
use tower::ServiceExt;

use super::balance::{Balance, BalanceSettings};
use super::discovery::{EndpointSet, MakeEndpoint, Source};
use super::endpoint::{Conn, Endpoint};
use super::load::Typical;
use super::mesh::{EndpointSettings, Link, MeshConn};
use super::outlier::OutlierPolicy;
use super::policy::ResponseFuture;
use super::policy::breaker::{Breaker, BreakerPolicy, BreakerState};
use super::policy::budget::RetryBudget;
use super::policy::limit::Limits;
use super::stack::{self, Stack};
use crate::authority::parse_dns_target;
use crate::build::BuildError;
use crate::config::{DestinationConfig, Transport};
use crate::http::Body;
use crate::http::h1_pool::PoolSettings;
use crate::http::plain_client::PlainClient;
use crate::http::server::HeaderLimits;
use crate::identity::{ServiceName, SpiffeId};
use crate::metrics::Metrics;
use crate::tls::{self, CredentialStore, Derived, TlsSettings};

/// Everything a destination is built from: when a config reload leaves
/// it equal, the destination (its connections, breaker, limits, budget,
/// endpoint health) carries over unchanged.
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

/// One destination service.
pub struct Destination {
    key: DestinationKey,
    /// Where its endpoints come from.
    source: Source,
    /// What its balancer works with, for tunnels too.
    pub(super) balancing: Arc<BalanceSettings>,
    /// Round robin's turn, for tunnels.
    pub(super) turn: AtomicUsize,
    stack: Stack,
    endpoints: Arc<EndpointSet>,
    limits: Arc<Limits>,
    breaker: Option<Arc<Breaker>>,
    typical: Arc<Typical>,
}

impl Destination {
    /// Builds a destination; mesh endpoints must prove `key.identity`
    /// with certificates from `creds`. `replaces`, the destination of the
    /// same name in the config before a reload, lends the endpoints its DNS
    /// lookups found when the lookup is the same.
    pub fn new(
        key: DestinationKey,
        creds: Option<&Arc<CredentialStore>>,
        metrics: &Metrics,
        replaces: Option<&Destination>,
    ) -> Result<Self, BuildError> {
        let config = &key.config;
        let service = key.name.to_string();
        let make = make_endpoint(&key, creds, metrics)?;
        let source = match &config.dns {
            Some(dns) => {
                let (host, port) = parse_dns_target(dns).map_err(BuildError::Config)?;
                Source::Dns {
                    host,
                    port,
                    refresh: config.dns_refresh.0,
                }
            }
            None => Source::Static(config.endpoints.iter().map(|a| *a.get()).collect()),
        };
        let known: Vec<SocketAddr> = match replaces {
            Some(old) if old.source == source => {
                old.endpoints.endpoints().iter().map(|e| e.addr()).collect()
            }
            _ => Vec::new(),
        };
        let endpoints = EndpointSet::new(&source, make, &known);
        let limits = Arc::new(Limits::new(
            config.limits.max_requests,
            config.limits.max_pending,
        ));
        let breaker = config
            .breaker
            .as_ref()
            .map(|b| Arc::new(Breaker::new(BreakerPolicy::from_config(b), Instant::now())));
        let budget = &config.retry_budget;
        let budget = Arc::new(RetryBudget::new(
            *budget.ratio.get(),
            budget.min_per_second,
            budget.window.0,
            Instant::now(),
        ));
        let metrics = metrics.resilience.for_service(&service);
        let typical = Arc::new(Typical::default());
        let balancing = Arc::new(BalanceSettings {
            service: service.clone(),
            endpoints: endpoints.clone(),
            kind: config.load_balancer,
            outlier: OutlierPolicy::from_config(&config.outlier_detection),
            limits: limits.clone(),
            metrics: metrics.clone(),
            typical: typical.clone(),
        });
        let balance = Balance::new(balancing.clone());
        let stack = stack::build(stack::Parts {
            service,
            breaker: breaker.clone(),
            limits: limits.clone(),
            budget,
            metrics,
            balance,
        });
        Ok(Self {
            key,
            source,
            balancing,
            turn: AtomicUsize::new(0),
            stack,
            endpoints,
            limits,
            breaker,
            typical,
        })
    }

    /// The service name.
    pub fn name(&self) -> &ServiceName {
        &self.key.name
    }

    /// Whether it is reached by raw TCP (`protocol: opaque`), not HTTP.
    pub fn is_opaque(&self) -> bool {
        *self.key.config.protocol == crate::config::UpstreamProtocol::Opaque
    }

    /// What it was built from.
    pub fn key(&self) -> &DestinationKey {
        &self.key
    }

    /// Sends a request through the stack. The request carries its
    /// [`RequestContext`](super::policy::RequestContext).
    pub fn call(&self, req: Request<Body>) -> ResponseFuture {
        let stack = self.stack.clone();
        Box::pin(async move { stack.oneshot(req).await })
    }

    /// What the admin page shows.
    pub fn status(&self, now: Instant) -> DestinationStatus {
        DestinationStatus {
            service: self.key.name.to_string(),
            in_flight: self.limits.in_flight(),
            breaker: self.breaker.as_ref().map(|b| b.state(now)),
            endpoints: self
                .endpoints
                .endpoints()
                .iter()
                .map(|e| {
                    let health = e.health();
                    EndpointStatus {
                        addr: e.addr(),
                        ejected_for_ms: health
                            .ejected_until()
                            .map(|until| until.saturating_duration_since(now).as_millis() as u64),
                        probing: health.is_ejected() && health.ejected_until().is_none(),
                        in_flight: e.load.in_flight(),
                        latency_ms: e.load.latency(now, &self.typical).map(|ns| ns / 1e6),
                        connections: e.open_connections(),
                    }
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.key.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A destination as the admin page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestinationStatus {
    /// Its name.
    pub service: String,
    /// Requests in flight.
    pub in_flight: usize,
    /// Its breaker, if it has one.
    #[serde(serialize_with = "breaker_state")]
    pub breaker: Option<BreakerState>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointStatus>,
}

/// An endpoint as the admin page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// Milliseconds of ejection left, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Whether its probe after an ejection is pending.
    pub probing: bool,
    /// Requests in flight.
    pub in_flight: usize,
    /// The latency estimate (`null` before anything was measured).
    pub latency_ms: Option<f64>,
    /// Open connections.
    pub connections: usize,
}

fn breaker_state<S: serde::Serializer>(
    state: &Option<BreakerState>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match state {
        Some(state) => s.serialize_str(state.as_str()),
        None => s.serialize_none(),
    }
}

/// How to make the endpoint for an address of this destination.
fn make_endpoint(
    key: &DestinationKey,
    creds: Option<&Arc<CredentialStore>>,
    metrics: &Metrics,
) -> Result<MakeEndpoint, BuildError> {
    let name = &key.name;
    let config = &key.config;
    match (*config.transport, creds, key.tls) {
        (Transport::Mtls, Some(creds), Some(settings)) => {
            let sni = format!("{name}.{}.svc.cluster.local", key.namespace);
            let server_name = ServerName::try_from(sni)
                .map_err(|e| BuildError::Config(format!("server name for {name}: {e}")))?;
            let identity = key.identity.clone();
            let link = Link::of(*config.protocol);
            let tls = Derived::new(creds.clone(), move |c| {
                tls::client_config(c, identity.clone(), settings, link.alpn())
            })?;
            let settings = Arc::new(EndpointSettings {
                tls,
                server_name,
                link,
                pool: pool_settings(key),
                metrics: metrics.tls.clone(),
            });
            Ok(Arc::new(move |addr: SocketAddr| {
                Endpoint::new(addr, Conn::Mesh(MeshConn::new(addr, settings.clone())))
            }))
        }
        (Transport::Mtls, _, _) => Err(BuildError::Config(format!(
            "service {name} needs `tls:` for mTLS"
        ))),
        (Transport::Plaintext, _, _) => {
            let pool = pool_settings(key);
            let protocol = *config.protocol;
            Ok(Arc::new(move |addr: SocketAddr| {
                let client = PlainClient::new(addr, pool);
                Endpoint::new(addr, Conn::Plain { client, protocol })
            }))
        }
    }
}

/// Connection settings of a destination's endpoints.
fn pool_settings(key: &DestinationKey) -> PoolSettings {
    let config = &key.config;
    PoolSettings {
        connect_timeout: config.connect_timeout.0,
        idle_timeout: config.idle_timeout.0,
        max_connections: config.limits.max_connections,
        limits: key.limits,
    }
}
