//! Looking at a sidecar from outside: its metrics, the certificates it
//! serves, the serials of certificate files.

use std::net::SocketAddr;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Sidecar, collect, get, send_h1, tls_connect};

/// The value of `selector` on `/metrics`, e.g.
/// `pilotfish_reloads_total{kind="config",result="applied"}`: the sum of
/// every series of that name carrying those labels (others may be there
/// too, in any order), as PromQL would sum them; 0 if none.
pub async fn metric(sidecar: &Sidecar, selector: &str) -> f64 {
    let text = collect(send_h1(sidecar.admin, get("admin", "/metrics")).await)
        .await
        .text();
    sum_matching(&text, selector)
}

/// Same as [`metric`]: a selector with fewer labels sums more series, e.g.
/// `pilotfish_requests_total{direction="inbound"}` over all statuses.
pub async fn metric_sum(sidecar: &Sidecar, selector: &str) -> f64 {
    metric(sidecar, selector).await
}

/// The sum of the series of exposition `text` that `selector` matches.
pub fn sum_matching(text: &str, selector: &str) -> f64 {
    let (name, labels) = match selector.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (selector, ""),
    };
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let have: Vec<&str> = series_labels.split(',').collect();
            let matches = series_name == name && wanted.iter().all(|w| have.contains(w));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
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
