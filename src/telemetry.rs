//! Diagnostic logging: `tracing` to stderr, as JSON lines or readable text.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Environment variable that overrides the configured log filter.
pub const LOG_ENV: &str = "PILOTFISH_LOG";

/// Installs the global subscriber. `level` is a `tracing` filter; the
/// `PILOTFISH_LOG` environment variable wins over it when set.
pub fn init(level: &str, format: LogFormat) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    // A second init (tests, `demo` calling into `run`) keeps the first.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
