//! The state built from one config — credentials, inbound, outbound — and
//! the handle through which every request reads the state in force. A
//! config reload builds a new state, reusing every part whose settings did
//! not change, and swaps it in whole: new requests see the new config,
//! requests in flight finish with the old one.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::admin::StateView;
use crate::build::BuildError;
use crate::config::{Config, TlsConfig};
use crate::gateway::Gateway;
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::outbound::Outbound;
use crate::ratelimit::RateLimits;
use crate::tls::{CredentialStore, Credentials};

/// Everything requests need, built from one config.
#[derive(Debug)]
pub struct ProxyState {
    /// The config in force.
    pub config: Arc<Config>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The live credentials (absent without `tls:`).
    pub creds: Option<Arc<CredentialStore>>,
    /// Mesh -> app, if configured.
    pub inbound: Option<Arc<Inbound>>,
    /// App -> mesh, if configured.
    pub outbound: Option<Arc<Outbound>>,
    /// Clients from outside -> mesh, if configured.
    pub gateway: Option<Arc<Gateway>>,
    /// Ids, spans and access logs, for both sides.
    pub observer: Arc<Observer>,
    /// Rate limits, for both sides.
    pub rate_limits: Arc<RateLimits>,
}

impl ProxyState {
    /// Builds the state of `config`, reusing from `previous` the
    /// credential store (same files, same identity), the destinations and
    /// the app's connection pool that were built from the same settings.
    pub fn build(
        config: Config,
        metrics: &Metrics,
        previous: Option<&ProxyState>,
    ) -> Result<Self, BuildError> {
        let loaded_at = SystemTime::now();
        let creds = match &config.tls {
            Some(tls) => Some(credentials(&config, tls, previous, loaded_at)?),
            None => None,
        };
        if let Some(store) = &creds {
            metrics.tls.set_expiry(store.current().leaf.not_after);
        }
        let observer = Arc::new(Observer::build(
            &config,
            metrics,
            previous.map(|p| &*p.observer),
        )?);
        let rate_limits = Arc::new(RateLimits::build(
            &config,
            metrics,
            previous.map(|p| &*p.rate_limits),
        )?);
        let inbound = match (&config.inbound, &creds) {
            (Some(inbound), Some(creds)) => Some(Arc::new(Inbound::build(
                &config,
                inbound,
                creds,
                metrics,
                &observer,
                &rate_limits,
                previous.and_then(|p| p.inbound.as_deref()),
            )?)),
            (Some(_), None) => {
                return Err(BuildError::config("`tls:` is required with `inbound:`"));
            }
            (None, _) => None,
        };
        let outbound = match &config.outbound {
            Some(outbound) => Some(Arc::new(Outbound::build(
                &config,
                outbound,
                creds.as_ref(),
                metrics,
                &observer,
                &rate_limits,
                previous.and_then(|p| p.outbound.as_deref()),
            )?)),
            None => None,
        };
        let gateway = match (&config.gateway, &outbound) {
            (Some(gateway), Some(outbound)) => Some(Arc::new(Gateway::build(
                &config,
                gateway,
                outbound,
                metrics,
                previous.and_then(|p| p.gateway.as_deref()),
            )?)),
            (Some(_), None) => {
                return Err(BuildError::config("`gateway:` needs `outbound.services`"));
            }
            (None, _) => None,
        };
        Ok(Self {
            config: Arc::new(config),
            loaded_at,
            creds,
            inbound,
            outbound,
            gateway,
            observer,
            rate_limits,
        })
    }
}

/// The previous store when the files and identity are the same, else a
/// new store with freshly loaded credentials.
fn credentials(
    config: &Config,
    tls: &TlsConfig,
    previous: Option<&ProxyState>,
    now: SystemTime,
) -> Result<Arc<CredentialStore>, BuildError> {
    if let Some(previous) = previous {
        let same_files = previous
            .config
            .tls
            .as_ref()
            .is_some_and(|p| p.ca == tls.ca && p.cert == tls.cert && p.key == tls.key);
        if let (true, Some(store)) = (same_files, &previous.creds) {
            if store.current().identity == config.identity() {
                return Ok(store.clone());
            }
        }
    }
    Ok(Arc::new(CredentialStore::new(load_credentials(
        config, tls, now,
    )?)))
}

/// Loads the certificate files and checks they are for this workload.
pub fn load_credentials(
    config: &Config,
    tls: &TlsConfig,
    now: SystemTime,
) -> Result<Credentials, BuildError> {
    let creds = Credentials::load(tls, now)?;
    if creds.identity != config.identity() {
        return Err(BuildError::Config(format!(
            "the certificate {} is for {} but this sidecar is {}",
            tls.cert.display(),
            creds.identity,
            config.identity()
        )));
    }
    Ok(creds)
}

/// The state in force; cheap to clone, read once per request.
#[derive(Debug, Clone)]
pub struct Live(Arc<ArcSwap<ProxyState>>);

impl Live {
    /// A handle to `state`.
    pub fn new(state: ProxyState) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(state)))
    }

    /// The state in force.
    pub fn load(&self) -> Arc<ProxyState> {
        self.0.load_full()
    }

    /// The inbound side in force.
    pub fn inbound(&self) -> Option<Arc<Inbound>> {
        self.0.load().inbound.clone()
    }

    /// The outbound side in force.
    pub fn outbound(&self) -> Option<Arc<Outbound>> {
        self.0.load().outbound.clone()
    }

    /// The gateway in force.
    pub fn gateway(&self) -> Option<Arc<Gateway>> {
        self.0.load().gateway.clone()
    }

    /// Puts `state` in force for new requests.
    pub fn store(&self, state: ProxyState) {
        self.0.store(Arc::new(state));
    }
}

/// What the admin endpoints show: read from the state in force at each
/// request, so they follow reloads.
impl StateView for Live {
    fn config(&self) -> (Arc<Config>, SystemTime) {
        let state = self.0.load();
        (state.config.clone(), state.loaded_at)
    }

    fn outbound(&self) -> Option<Arc<Outbound>> {
        self.0.load().outbound.clone()
    }
}
