//! Reloads without restarts. The config file and the certificate files are
//! watched (by folder, so symlink swaps count) and also polled every few
//! seconds as a backstop; SIGHUP reloads the config at once.
//!
//! - A new config is validated and built beside the one in force, reusing
//!   every part whose settings did not change, then swapped in; listeners
//!   whose address changed are rebound. A bad one is refused with the same
//!   `FILE:LINE:COLUMN` messages as `pilotfish check`, and the old stays.
//! - New certificate files are checked (PEM, key matches, SPIFFE id, dates)
//!   and put in force for the next handshakes; bad ones are refused and the
//!   last good set stays. Open connections are never cut.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::Signal;
use tracing::{error, info, warn};

use super::listeners::{Context, Listeners};
use super::state::{ProxyState, load_credentials};
use crate::config;
use crate::metrics::Metrics;
use crate::telemetry::LogControl;
use crate::tls::{self, Credentials};
use crate::watch::FileWatcher;

/// How often the files are checked even without a watch event.
const POLL: Duration = Duration::from_secs(5);
/// How often a certificate near its expiry is warned about again.
const EXPIRY_NAG: Duration = Duration::from_secs(3600);

/// Reacts to file changes and SIGHUP until shutdown.
pub struct Reloader {
    config_path: Option<PathBuf>,
    metrics: Metrics,
    log: Option<LogControl>,
    /// Digest of the config file in force, and of the last one refused.
    config_digest: Option<u64>,
    rejected_config: Option<u64>,
    rejected_creds: Option<u64>,
    /// Since when the certificate files could not be read, and whether
    /// that was reported.
    unreadable: Option<(Instant, bool)>,
    last_expiry_warning: Option<Instant>,
}

/// How long certificate files may stay unreadable before it is reported:
/// a symlink swap leaves them missing for a moment.
const UNREADABLE_GRACE: Duration = Duration::from_secs(2);

impl Reloader {
    /// A reloader for the config file in force (none: only certificates).
    pub fn new(source: Option<ConfigSource>, metrics: Metrics, log: Option<LogControl>) -> Self {
        let (config_path, config_digest) = match source {
            Some(source) => (Some(source.path), Some(source.digest)),
            None => (None, None),
        };
        Self {
            config_path,
            metrics,
            log,
            config_digest,
            rejected_config: None,
            rejected_creds: None,
            unreadable: None,
            last_expiry_warning: None,
        }
    }

    /// Runs until `shutdown` completes. `hangup` is the SIGHUP stream,
    /// installed at start-up so an early SIGHUP cannot kill the process.
    pub async fn run(
        &mut self,
        listeners: &mut Listeners,
        ctx: &Context,
        mut hangup: Option<Signal>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watcher = FileWatcher::new(self.watched(ctx));
        let mut shutdown = std::pin::pin!(shutdown);
        self.check_expiry(ctx);
        loop {
            let forced = tokio::select! {
                () = &mut shutdown => return,
                Some(()) = recv(&mut hangup) => {
                    info!(signal = "SIGHUP", "reloading the config");
                    true
                }
                () = watcher.changed() => false,
                _ = poll.tick() => false,
            };
            self.reload_config(listeners, ctx, forced).await;
            self.reload_credentials(ctx);
            self.reload_gateway_files(ctx);
            self.check_expiry(ctx);
            let wanted = self.watched(ctx);
            if wanted != watcher.paths() {
                watcher = FileWatcher::new(wanted);
            }
        }
    }

    /// The config file, the certificate files, and the gateway's
    /// certificate and token key files.
    fn watched(&self, ctx: &Context) -> Vec<PathBuf> {
        let state = ctx.live.load();
        let mut paths: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        if let Some(tls) = &state.config.tls {
            paths.extend([tls.ca.get(), tls.cert.get(), tls.key.get()].map(Clone::clone));
        }
        if let Some(gateway) = &state.gateway {
            paths.extend(gateway.files());
        }
        paths
    }

    /// Puts the gateway's changed certificate and token key files in force
    /// if they load; else the ones in force stay.
    fn reload_gateway_files(&mut self, ctx: &Context) {
        let Some(gateway) = ctx.live.gateway() else {
            return;
        };
        match gateway.reload_files() {
            Ok(true) => self.metrics.reloads.reload("gateway", true),
            Ok(false) => {}
            // Once per refused contents: the gateway does not try them again.
            Err(e) => {
                error!(
                    "new gateway certificate or token keys refused, the ones in force stay: {e}"
                );
                self.metrics.reloads.reload("gateway", false);
            }
        }
    }

    /// Loads, checks and applies the config file if it changed (or if
    /// `forced`, on SIGHUP).
    async fn reload_config(&mut self, listeners: &mut Listeners, ctx: &Context, forced: bool) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let Ok(digest) = file_digest(&path) else {
            // Mid-swap, or gone: the next event or poll tries again.
            return;
        };
        if !forced && (Some(digest) == self.config_digest || Some(digest) == self.rejected_config) {
            return;
        }
        match self.apply_config(&path, listeners, ctx).await {
            Ok(loaded) => {
                self.config_digest = Some(loaded);
                self.rejected_config = None;
                self.metrics.reloads.reload("config", true);
            }
            Err(why) => {
                error!("config reload refused, the config in force stays:\n{why}");
                self.rejected_config = Some(digest);
                self.metrics.reloads.reload("config", false);
            }
        }
    }

    async fn apply_config(
        &self,
        path: &std::path::Path,
        listeners: &mut Listeners,
        ctx: &Context,
    ) -> Result<u64, String> {
        let (new, digest) =
            config::load_file(path, crate::app::check_files).map_err(|e| e.to_string())?;
        let current = ctx.live.load();
        if new.runtime.worker_threads != current.config.runtime.worker_threads {
            warn!("runtime.worker_threads takes effect at the next restart");
        }
        if new.log.format != current.config.log.format {
            warn!("log.format takes effect at the next restart");
        }
        let log_changed = new.log.level != current.config.log.level;
        let state = ProxyState::build(new, &self.metrics, Some(&current))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let prepared = listeners
            .prepare(&state.config)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let (true, Some(log)) = (log_changed, &self.log) {
            if let Err(e) = log.set_filter(&state.config.log.level) {
                warn!("log.level not changed: {e}");
            }
        }
        self.metrics.reloads.config_loaded(state.loaded_at);
        ctx.live.store(state);
        listeners.commit(prepared, ctx);
        info!(file = %path.display(), "config reloaded");
        Ok(digest)
    }

    /// Puts changed certificate files in force, if they pass every check.
    fn reload_credentials(&mut self, ctx: &Context) {
        let state = ctx.live.load();
        let (Some(tls), Some(store)) = (&state.config.tls, &state.creds) else {
            return;
        };
        let digest = match tls::digest_files(tls) {
            Ok(digest) => {
                self.unreadable = None;
                digest
            }
            Err(e) => {
                // Mid-swap, or gone: reported once, when it stays so.
                let now = Instant::now();
                let (since, reported) = self.unreadable.get_or_insert((now, false));
                if !*reported && now.duration_since(*since) >= UNREADABLE_GRACE {
                    *reported = true;
                    error!("certificate files cannot be read, the ones in force stay: {e}");
                    self.metrics.reloads.reload("certificates", false);
                }
                return;
            }
        };
        if digest == store.current().digest || Some(digest) == self.rejected_creds {
            return;
        }
        match load_credentials(&state.config, tls, SystemTime::now()) {
            Ok(creds) => {
                log_certificate("certificates reloaded", &creds);
                self.metrics.tls.set_expiry(creds.leaf.not_after);
                store.replace(creds);
                self.rejected_creds = None;
                self.last_expiry_warning = None;
                self.metrics.reloads.reload("certificates", true);
            }
            Err(e) => {
                error!("new certificate files refused, the ones in force stay: {e}");
                self.rejected_creds = Some(digest);
                self.metrics.reloads.reload("certificates", false);
            }
        }
    }

    /// Warns, at most hourly, while less than the configured share of the
    /// certificate's lifetime is left.
    fn check_expiry(&mut self, ctx: &Context) {
        let state = ctx.live.load();
        let (Some(tls), Some(store)) = (&state.config.tls, &state.creds) else {
            return;
        };
        let creds = store.current();
        let Some(left) = share_left(&creds, SystemTime::now()) else {
            return;
        };
        if left >= *tls.expiry_warning {
            return;
        }
        if self
            .last_expiry_warning
            .is_some_and(|t| t.elapsed() < EXPIRY_NAG)
        {
            return;
        }
        self.last_expiry_warning = Some(Instant::now());
        warn!(
            cert = %tls.cert.display(),
            not_after = %humantime::format_rfc3339_seconds(creds.leaf.not_after),
            share_left = format!("{:.0}%", left * 100.0),
            "the certificate expires soon and has not been rotated"
        );
    }
}

/// The share of the certificate's lifetime left at `now` (0 when expired).
pub fn share_left(creds: &Credentials, now: SystemTime) -> Option<f64> {
    let life = creds
        .leaf
        .not_after
        .duration_since(creds.leaf.not_before)
        .ok()?;
    let left = creds.leaf.not_after.duration_since(now).unwrap_or_default();
    (!life.is_zero()).then(|| left.as_secs_f64() / life.as_secs_f64())
}

/// Logs the certificate in force.
pub fn log_certificate(message: &str, creds: &Credentials) {
    info!(
        identity = %creds.identity,
        serial = %creds.leaf.serial,
        not_after = %humantime::format_rfc3339_seconds(creds.leaf.not_after),
        "{message}"
    );
}

fn file_digest(path: &std::path::Path) -> std::io::Result<u64> {
    Ok(config::digest(&std::fs::read(path)?))
}

/// The config file a sidecar runs from, and the digest of the text it
/// loaded from it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// Digest of the text in force.
    pub digest: u64,
}

async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
