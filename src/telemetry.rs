//! Diagnostic logging: `tracing` to stderr, as JSON lines or readable text,
//! with a filter that can be changed while running.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::config::LogFormat;

/// Environment variable that overrides the configured log filter.
pub const LOG_ENV: &str = "PILOTFISH_LOG";

/// Changes the log filter of the running process.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogControl {
    /// Puts `filter` (`info`, `info,pilotfish::outbound=debug`) in force.
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        let parsed =
            EnvFilter::try_new(filter).map_err(|e| format!("bad filter {filter:?}: {e}"))?;
        match &self.handle {
            Some(handle) => handle.reload(parsed).map_err(|e| e.to_string()),
            None => Err("logging was set up elsewhere; its filter cannot be changed".to_owned()),
        }
    }

    /// The filter in force.
    pub fn filter(&self) -> Option<String> {
        self.handle
            .as_ref()
            .and_then(|h| h.with_current(|f| f.to_string()).ok())
    }
}

/// Installs the global subscriber. `level` is a `tracing` filter; the
/// `PILOTFISH_LOG` environment variable wins over it when set.
pub fn init(level: &str, format: LogFormat) -> LogControl {
    let from_env = std::env::var(LOG_ENV).ok().and_then(|env| {
        EnvFilter::try_new(&env)
            .map_err(|e| {
                // No subscriber yet: this one goes straight to stderr.
                eprintln!("pilotfish: ignoring {LOG_ENV}={env:?}: {e}; using log.level {level:?}");
            })
            .ok()
    });
    // `level` was validated with the config; "info" only guards the type.
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let json = (format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let text = (format == LogFormat::Text)
        .then(|| fmt::layer().with_ansi(false).with_writer(std::io::stderr));
    // A second init (tests, `demo` calling into `run`) keeps the first.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init()
        .is_ok();
    LogControl {
        handle: installed.then_some(handle),
    }
}

/// Logs a panic as an error line in the log's own format (with where it
/// happened) instead of a bare message on stderr. The panic then ends only
/// the task it happened in, one connection's or one request's (see
/// `panic` in Cargo.toml).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        tracing::error!(%location, "a task panicked, and ended: {message}");
    }));
}

/// The Kubernetes pod this sidecar runs in, as the downward API gives it
/// (`PILOTFISH_POD_NAME`, `PILOTFISH_POD_NAMESPACE`, `PILOTFISH_POD_IP`;
/// `deploy/kubernetes` sets them): named in the start-up log line and in
/// the spans' resource, so a span or a line leads to its pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `status.podIP`.
    pub ip: Option<String>,
}

impl Pod {
    /// From the environment; each field only when set and not empty.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            name: var("PILOTFISH_POD_NAME"),
            namespace: var("PILOTFISH_POD_NAMESPACE"),
            ip: var("PILOTFISH_POD_IP"),
        }
    }

    /// As OpenTelemetry resource attributes (the semantic conventions'
    /// `k8s.pod.name`, `k8s.namespace.name`, and the pod name as
    /// `service.instance.id`).
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attributes = Vec::new();
        if let Some(name) = &self.name {
            attributes.push(("k8s.pod.name", name.clone()));
            attributes.push(("service.instance.id", name.clone()));
        }
        if let Some(namespace) = &self.namespace {
            attributes.push(("k8s.namespace.name", namespace.clone()));
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_becomes_the_semantic_conventions_attributes() {
        let pod = Pod {
            name: Some("users-5d8f7c9b4-x2x7q".into()),
            namespace: Some("shop".into()),
            ip: Some("10.1.2.3".into()),
        };
        assert_eq!(
            pod.attributes(),
            [
                ("k8s.pod.name", "users-5d8f7c9b4-x2x7q".to_owned()),
                ("service.instance.id", "users-5d8f7c9b4-x2x7q".to_owned()),
                ("k8s.namespace.name", "shop".to_owned()),
            ]
        );
        assert!(Pod::default().attributes().is_empty());
    }
}
