//! `tls:` the workload's certificate files and the TLS settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Located;

/// Certificates and TLS settings. Relative paths are read from the config
/// file's directory. The files are watched: a change takes effect for new
/// handshakes within seconds, without a restart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle: the trust anchor(s) for peers in both directions.
    pub ca: Located<PathBuf>,
    /// This workload's certificate chain (leaf first).
    pub cert: Located<PathBuf>,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: Located<PathBuf>,
    /// Lowest TLS version accepted and offered: `"1.3"` (default) or
    /// `"1.2"` (then TLS 1.2 with ECDHE key exchange and AEAD ciphers only).
    #[serde(default)]
    pub min_version: Located<TlsVersion>,
    /// Warn (log and metric) when less than this share of the
    /// certificate's lifetime is left: rotation is overdue (default 0.25).
    #[serde(default = "super::defaults::expiry_warning")]
    pub expiry_warning: Located<f64>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}
