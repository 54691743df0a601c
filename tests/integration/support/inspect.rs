//! Looking at a sidecar from outside: its metrics, the certificates it
//! serves, the serials of certificate files.

use std::net::SocketAddr;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Sidecar, collect, get, send_h1, tls_connect};

/// The value of one series on `/metrics`, e.g.
/// `pilotfish_reloads_total{kind="config",result="applied"}`; 0 if absent.
pub async fn metric(sidecar: &Sidecar, series: &str) -> f64 {
    let text = collect(send_h1(sidecar.admin, get("admin", "/metrics")).await)
        .await
        .text();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

/// The sum of every series on `/metrics` that starts with `prefix`, e.g.
/// `pilotfish_requests_total{direction="inbound"` over all statuses.
pub async fn metric_sum(sidecar: &Sidecar, prefix: &str) -> f64 {
    let text = collect(send_h1(sidecar.admin, get("admin", "/metrics")).await)
        .await
        .text();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `series` on `/metrics` reaches `value`; panics after
/// `timeout` with the value last seen.
pub async fn wait_metric(
    sidecar: &Sidecar,
    series: &str,
    value: f64,
    timeout: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now = metric(sidecar, series).await;
        if now >= value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} is {now}, not {value}, after {timeout:?}; logs:\n{}",
            sidecar.logs().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The serial number (lowercase hex) of a DER certificate.
pub fn serial_of_der(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).expect("x509");
    cert.raw_serial_as_string().replace(':', "")
}

/// The serial number of the first certificate in a PEM file.
pub fn serial_of_file(path: &Path) -> String {
    let der = CertificateDer::from_pem_file(path).expect("certificate file");
    serial_of_der(der.as_ref())
}

/// The serial of the certificate a fresh TLS client (no session cache)
/// gets from `addr`.
pub async fn served_serial(addr: SocketAddr, config: rustls::ClientConfig) -> String {
    let stream = tls_connect(addr, config, "users")
        .await
        .expect("TLS handshake");
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate");
    serial_of_der(certs[0].as_ref())
}
