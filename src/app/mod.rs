//! Start-up and shutdown, in the order they happen: build the state from
//! the config (certificates, both directions), bind *every* listener (a
//! port in use stops start-up before anything serves), serve, reload on
//! file changes and SIGHUP, and on the shutdown signal fail readiness, stop
//! accepting, and drain in-flight requests.

mod listeners;
mod reload;
mod serve;
mod state;

use std::sync::Arc;

use prometheus::Registry;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

pub use self::listeners::Role;
use self::listeners::{Context, Listeners, Prepared};
pub use self::reload::ConfigSource;
use self::reload::Reloader;
pub use self::state::{Live, ProxyState};
use crate::admin::{AdminState, Phase};
use crate::build::BuildError;
use crate::config::Config;
use crate::drain;
use crate::metrics::Metrics;
use crate::telemetry::LogControl;

/// A sidecar with every listener bound, ready to serve.
pub struct App {
    live: Live,
    metrics: Metrics,
    admin: Arc<AdminState>,
    prepared: Prepared,
    source: Option<ConfigSource>,
    log: Option<LogControl>,
    hangup: Option<Signal>,
}

impl App {
    /// Builds the state of `config` and binds every listener. `source`,
    /// the file `config` came from, is watched for changes (none: no config
    /// reloads); `log` lets a reload change the log filter.
    pub async fn build(
        config: Config,
        source: Option<ConfigSource>,
        log: Option<LogControl>,
    ) -> Result<Self, BuildError> {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry)?;
        let state = ProxyState::build(config, &metrics, None)?;
        if let Some(store) = &state.creds {
            reload::log_certificate("certificates loaded", &store.current());
        }
        metrics.reloads.config_loaded(state.loaded_at);
        let prepared = Listeners::default().prepare(&state.config).await?;
        let live = Live::new(state);
        let admin = Arc::new(AdminState::new(live.clone(), registry, log.clone()));
        // Installed now, so a SIGHUP right after start-up reloads instead
        // of killing the process.
        let hangup = signal(SignalKind::hangup()).ok();
        Ok(Self {
            live,
            metrics,
            admin,
            prepared,
            source,
            log,
            hangup,
        })
    }

    /// Serves until the first shutdown signal (or `POST /shutdown` on the
    /// admin port), then drains: readiness
    /// fails, listeners close (new connections are refused), open
    /// connections finish their requests, bounded by the drain timeout. A
    /// second signal during the drain ends it at once.
    pub async fn run(self, mut shutdown: ShutdownSignal) {
        let (drain, watch) = drain::channel();
        let ctx = Context {
            live: self.live.clone(),
            admin: self.admin.clone(),
            watch,
            connections: self.metrics.connections.clone(),
        };
        let mut listeners = Listeners::default();
        listeners.commit(self.prepared, &ctx);
        self.admin.set_phase(Phase::Ready);
        let pod = crate::telemetry::Pod::from_env();
        info!(
            pod = pod.name.as_deref(),
            pod_namespace = pod.namespace.as_deref(),
            pod_ip = pod.ip.as_deref(),
            "ready"
        );

        let mut reloader = Reloader::new(self.source, self.metrics, self.log);
        let stop = async {
            tokio::select! {
                () = shutdown.next() => {}
                () = self.admin.shutdown_asked() => {}
            }
        };
        reloader.run(&mut listeners, &ctx, self.hangup, stop).await;

        // The admin port keeps answering (/ready says "draining") until exit.
        self.admin.set_phase(Phase::Draining);
        // Clients from outside stop with the mesh's: both reach this
        // process from elsewhere, which readiness now steers away.
        listeners
            .stop(&[Role::Inbound, Role::Gateway, Role::GatewayTls])
            .await;
        // The app may still be finishing requests that call out: its calls
        // go on being taken until it is gone (or the grace ends, or a
        // second signal says to hurry).
        let hurried = tokio::select! {
            () = serve_the_app_while_it_drains(&ctx) => false,
            () = shutdown.next() => true,
        };
        listeners.stop(&[Role::Outbound, Role::Opaque]).await;
        drop(ctx); // with the accept loops, every watch but the connections'
        let drain_timeout = self.live.load().config.shutdown.drain_timeout.0;
        let open = drain.open();
        info!(
            connections = open,
            timeout = %humantime::format_duration(drain_timeout),
            "draining"
        );
        if hurried {
            warn!(
                connections_at_start = open,
                "a second signal: closing the remaining connections now"
            );
        } else {
            tokio::select! {
                drained = tokio::time::timeout(drain_timeout, drain.drain()) => match drained {
                    Ok(()) => info!("drained; exiting"),
                    Err(_) => warn!(
                        connections_at_start = open,
                        "drain timeout reached; closing the remaining connections"
                    ),
                },
                () = shutdown.next() => warn!(
                    connections_at_start = open,
                    "a second signal during the drain: closing the remaining connections now"
                ),
            }
        }
        // Spans of the last requests, before the process ends.
        if let Some(exporter) = self.live.load().observer.tracer().exporter() {
            exporter.flush(std::time::Duration::from_secs(2)).await;
        }
        listeners.stop(&[Role::Admin]).await;
    }
}

/// Returns once the app beside this sidecar is gone, or after
/// `shutdown.outbound_grace`; at once without an outbound side. The app is
/// gone when its address refuses connections, or, for a sidecar with no
/// inbound side, when it holds no connection to the outbound listener.
async fn serve_the_app_while_it_drains(ctx: &Context) {
    let config = ctx.live.load().config.clone();
    let grace = config.shutdown.outbound_grace.0;
    if config.outbound.is_none() || grace.is_zero() {
        return;
    }
    let app = config.inbound.as_ref().map(|inbound| *inbound.app.get());
    let outbound = ctx.connections.for_listener("outbound");
    let started = tokio::time::Instant::now();
    let gone = async {
        loop {
            let gone = match app {
                Some(addr) => matches!(
                    tokio::net::TcpStream::connect(addr).await,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
                ),
                None => outbound.active.get() <= 0,
            };
            if gone {
                return;
            }
            tokio::time::sleep(APP_GONE_POLL).await;
        }
    };
    match tokio::time::timeout(grace, gone).await {
        Ok(()) => info!(
            after = ?started.elapsed(),
            "the app is gone; closing the outbound listener"
        ),
        Err(_) => info!(
            grace = %humantime::format_duration(grace),
            "outbound grace over; closing the outbound listener"
        ),
    }
}

/// How often the drain looks whether the app is gone.
const APP_GONE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The files a config names, checked as they will be read: the mesh and
/// gateway certificates (`tls`) and the gateway's token keys; the
/// [`FileCheck`](crate::config::FileCheck) of `pilotfish check`, start-up
/// and reloads.
pub fn check_files(config: &Config, file: &std::path::Path) -> Vec<crate::config::ConfigError> {
    let mut errors = crate::tls::check_certificates(config, file);
    errors.extend(crate::gateway::keys::check_files(config, file));
    errors
}

/// SIGTERM and SIGINT (Ctrl-C): the first starts the drain, a second one
/// ends it.
#[derive(Debug)]
pub struct ShutdownSignal {
    term: Signal,
    int: Signal,
}

impl ShutdownSignal {
    /// The next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = self.int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    }
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers at once, so that a
/// signal arriving right after start-up drains instead of killing the
/// process.
pub fn shutdown_signal() -> std::io::Result<ShutdownSignal> {
    Ok(ShutdownSignal {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    })
}
