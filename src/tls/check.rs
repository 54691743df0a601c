//! The certificate files a config names, checked as the sidecar will load
//! them and reported as config errors (`FILE:LINE:COLUMN`, at the field
//! that names the file). The config loader runs it through the hook it
//! takes ([`FileCheck`](crate::config::FileCheck)): reading certificates is
//! this module's, which sits above `config`.

use std::path::Path;
use std::time::SystemTime;

use super::{Credentials, TlsFile};
use crate::config::{Config, ConfigError};

/// Checks that the certificate files exist, hold a usable certificate and
/// key, and are for this sidecar. Returns every problem found.
pub fn check_certificates(config: &Config, file: &Path) -> Vec<ConfigError> {
    let error = |position, message| ConfigError {
        file: file.to_owned(),
        position,
        message,
    };
    let mut errors = Vec::new();
    // The gateway's server certificate: any chain, its key, its dates.
    if let Some(tls) = config.gateway.as_ref().and_then(|g| g.tls.as_ref()) {
        if let Err(e) = super::load_server_certificate(&tls.cert, &tls.key, SystemTime::now()) {
            let position = match e.file() {
                TlsFile::Key => tls.key.position(),
                _ => tls.cert.position(),
            };
            errors.push(error(position, format!("gateway.tls: {e}")));
        }
    }
    errors.extend(check_mesh_certificates(config, file));
    errors
}

/// The mesh certificate, key and CA of `tls:`.
fn check_mesh_certificates(config: &Config, file: &Path) -> Vec<ConfigError> {
    let Some(tls) = &config.tls else {
        return Vec::new();
    };
    let error = |position, message| ConfigError {
        file: file.to_owned(),
        position,
        message,
    };
    match Credentials::load(tls, SystemTime::now()) {
        Ok(creds) => {
            let own = config.identity();
            if creds.identity == own {
                return Vec::new();
            }
            vec![error(
                tls.cert.position(),
                format!(
                    "the certificate is for {} but this sidecar is {own}; \
                     peers would refuse it",
                    creds.identity
                ),
            )]
        }
        Err(e) => {
            let position = match e.file() {
                TlsFile::Ca => tls.ca.position(),
                TlsFile::Cert => tls.cert.position(),
                TlsFile::Key => tls.key.position(),
            };
            vec![error(position, e.to_string())]
        }
    }
}
