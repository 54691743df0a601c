//! Why the sidecar could not start, or a config could not be applied: the
//! one error of building state from a config. Its own module, below every
//! part that builds something (tracing, rate limits, both directions), so
//! none of them needs `app`, which assembles them.

use std::net::SocketAddr;

use crate::tls::CredentialError;

/// Why the sidecar could not start, or a config could not be applied.
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
