//! Start-up and shutdown, in the order they happen: load certificates,
//! build both directions, bind *every* listener (a port in use stops
//! start-up before anything serves), serve, and on the shutdown signal fail
//! readiness, stop accepting, and drain in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::admin::{self, AdminState, Phase};
use crate::config::{Config, TlsFiles};
use crate::drain;
use crate::http::server::{self, HeaderLimits};
use crate::inbound::Inbound;
use crate::listener;
use crate::metrics::RequestMetrics;
use crate::outbound::Outbound;
use crate::tls::{self, CredentialError, Credentials};

/// Header fields a sidecar may add on the way to the app (identity,
/// forwarding trail, original protocol), allowed on top of the limits.
const PROXY_ADDED_HEADERS: usize = 4;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config is inconsistent in a way validation did not catch.
    #[error("config: {0}")]
    Config(String),
    /// The certificate files cannot be used.
    #[error("certificates: {0}")]
    Credentials(#[from] CredentialError),
    /// rustls refused the TLS settings.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {name}: {source}")]
    Bind {
        /// Which listener.
        name: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl BuildError {
    /// A config problem, from any displayable error.
    pub fn config(err: impl std::fmt::Display) -> Self {
        Self::Config(err.to_string())
    }
}

/// The addresses the listeners are bound to (useful with port 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// Admin listener.
    pub admin: SocketAddr,
    /// Inbound (mTLS) listener, if configured.
    pub inbound: Option<SocketAddr>,
    /// Outbound (plain) listener, if configured.
    pub outbound: Option<SocketAddr>,
}

/// A sidecar with every listener bound, ready to serve.
pub struct App {
    admin: Arc<AdminState>,
    admin_listener: TcpListener,
    inbound: Option<InboundSide>,
    outbound: Option<OutboundSide>,
    drain_timeout: Duration,
}

struct InboundSide {
    listener: TcpListener,
    inbound: Arc<Inbound>,
    tls: TlsAcceptor,
    http: Arc<auto::Builder<TokioExecutor>>,
}

struct OutboundSide {
    listener: TcpListener,
    outbound: Arc<Outbound>,
    http: Arc<auto::Builder<TokioExecutor>>,
}

impl App {
    /// Loads certificates, builds both directions and binds every listener.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        let loaded_at = SystemTime::now();
        let creds = match &config.tls {
            Some(files) => Some(load_credentials(files, &config, loaded_at)?),
            None => None,
        };
        let registry = Registry::new();
        let metrics = RequestMetrics::register(&registry)?;
        let limits = HeaderLimits::from_config(&config.http);

        let admin_listener = bind("admin", *config.admin.listen).await?;
        let inbound = match &config.inbound {
            Some(inbound) => {
                let mesh_limits = limits.with_headroom(PROXY_ADDED_HEADERS);
                Some(InboundSide {
                    listener: bind("inbound", *inbound.listen).await?,
                    inbound: Arc::new(Inbound::new(
                        config.service.get().clone(),
                        inbound,
                        mesh_limits,
                        metrics.clone(),
                    )),
                    tls: TlsAcceptor::from(tls::server_config(need(&creds)?)?),
                    http: Arc::new(server::builder(mesh_limits)),
                })
            }
            None => None,
        };
        let outbound = match &config.outbound {
            Some(outbound) => Some(OutboundSide {
                listener: bind("outbound", *outbound.listen).await?,
                outbound: Arc::new(Outbound::new(
                    &config,
                    outbound,
                    creds.as_ref(),
                    limits.with_headroom(PROXY_ADDED_HEADERS),
                    metrics,
                )?),
                http: Arc::new(server::builder(limits)),
            }),
            None => None,
        };
        Ok(Self {
            admin: Arc::new(AdminState::new(&config, loaded_at, registry)),
            admin_listener,
            inbound,
            outbound,
            drain_timeout: config.shutdown.drain_timeout.0,
        })
    }

    /// Where the listeners are bound.
    pub fn local_addrs(&self) -> BoundAddrs {
        let addr = |l: &TcpListener| l.local_addr().ok();
        BoundAddrs {
            admin: addr(&self.admin_listener).unwrap_or_else(|| SocketAddr::from(([0; 4], 0))),
            inbound: self.inbound.as_ref().and_then(|s| addr(&s.listener)),
            outbound: self.outbound.as_ref().and_then(|s| addr(&s.listener)),
        }
    }

    /// Serves until `shutdown` completes, then drains: readiness fails,
    /// listeners close (new connections are refused), open connections
    /// finish their requests, bounded by the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let addrs = self.local_addrs();
        let (drain, watch) = drain::channel();
        let admin_task = tokio::spawn(admin::serve(self.admin_listener, self.admin.clone()));
        let mut accept_tasks: Vec<JoinHandle<()>> = Vec::new();
        if let Some(side) = self.outbound {
            accept_tasks.push(tokio::spawn(accept_outbound(side, watch.clone())));
        }
        if let Some(side) = self.inbound {
            accept_tasks.push(tokio::spawn(accept_inbound(side, watch.clone())));
        }
        drop(watch);
        info!(listener = "admin", addr = %addrs.admin, "listening");
        if let Some(addr) = addrs.outbound {
            info!(listener = "outbound", %addr, "listening");
        }
        if let Some(addr) = addrs.inbound {
            info!(listener = "inbound", %addr, "listening");
        }
        self.admin.set_phase(Phase::Ready);
        info!("ready");

        shutdown.await;
        self.admin.set_phase(Phase::Draining);
        for task in &accept_tasks {
            task.abort();
        }
        for task in accept_tasks {
            let _ = task.await; // the listeners close here
        }
        info!(
            connections = drain.open(),
            timeout = %humantime::format_duration(self.drain_timeout),
            "draining"
        );
        let open = drain.open();
        match tokio::time::timeout(self.drain_timeout, drain.drain()).await {
            Ok(()) => info!("drained; exiting"),
            Err(_) => warn!(
                connections_at_start = open,
                "drain timeout reached; closing the remaining connections"
            ),
        }
        admin_task.abort();
    }
}

/// Loads this workload's certificates and checks they are for it.
fn load_credentials(
    files: &TlsFiles,
    config: &Config,
    now: SystemTime,
) -> Result<Credentials, BuildError> {
    let creds = Credentials::load(files, now)?;
    if creds.identity != config.identity() {
        return Err(BuildError::Config(format!(
            "the certificate {} is for {} but this sidecar is {}",
            files.cert.display(),
            creds.identity,
            config.identity()
        )));
    }
    Ok(creds)
}

/// The credentials, where the config requires them (validation makes sure
/// they are configured then).
pub(crate) fn need(creds: &Option<Credentials>) -> Result<&Credentials, BuildError> {
    creds
        .as_ref()
        .ok_or_else(|| BuildError::Config("`tls:` is required for mTLS".to_owned()))
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BuildError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BuildError::Bind { name, addr, source })
}

async fn accept_outbound(side: OutboundSide, watch: drain::Watch) {
    listener::accept_loop(&side.listener, "outbound", |tcp, addr| {
        let _ = tcp.set_nodelay(true);
        let outbound = side.outbound.clone();
        let http = side.http.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let outbound = outbound.clone();
                async move { Ok::<_, Infallible>(outbound.handle(req).await) }
            });
            let connection = http.serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = watch.serve(connection).await {
                debug!(peer = %addr, error = %e, "outbound connection ended with an error");
            }
        });
    })
    .await;
}

async fn accept_inbound(side: InboundSide, watch: drain::Watch) {
    listener::accept_loop(&side.listener, "inbound", |tcp, addr| {
        tokio::spawn(side.inbound.clone().serve_connection(
            tcp,
            addr,
            side.tls.clone(),
            side.http.clone(),
            watch.clone(),
        ));
    })
    .await;
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers at once, so that a
/// signal arriving right after start-up drains instead of killing the
/// process, and returns a future that completes on the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    })
}
