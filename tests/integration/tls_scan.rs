//! A real TLS scanner (sslyze, installed by scripts/install-test-deps.sh)
//! checks what the inbound mTLS port offers.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn sslyze() -> PathBuf {
    if let Some(path) = std::env::var_os("PILOTFISH_SSLYZE") {
        return path.into();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".test-tools/venv/bin/sslyze");
    assert!(
        path.exists(),
        "sslyze is not installed at {}: run scripts/install-test-deps.sh (or set PILOTFISH_SSLYZE)",
        path.display()
    );
    path
}

/// Scans `addr` with every protocol version; returns the server's result.
pub(crate) async fn scan(addr: std::net::SocketAddr) -> Value {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let out_path = out.path().to_owned();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(sslyze())
            .arg(format!("--json_out={}", out_path.display()))
            .args([
                "--quiet",
                "--sslv2",
                "--sslv3",
                "--tlsv1",
                "--tlsv1_1",
                "--tlsv1_2",
                "--tlsv1_3",
            ])
            .arg(addr.to_string())
            .status()
            .expect("run sslyze")
    })
    .await
    .expect("sslyze task");
    assert!(status.success(), "sslyze failed: {status}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.path()).expect("sslyze output")).expect("JSON");
    json["server_scan_results"][0].clone()
}

pub(crate) fn accepted(result: &Value, protocol: &str) -> Vec<String> {
    let scan = &result["scan_result"][protocol];
    assert_eq!(scan["status"], "COMPLETED", "{protocol}: {scan}");
    scan["result"]["accepted_cipher_suites"]
        .as_array()
        .expect("accepted suites")
        .iter()
        .map(|s| s["cipher_suite"]["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mtls_port_offers_only_tls_1_3_and_requires_a_client_certificate() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let result = scan(users.inbound()).await;
    let connectivity = &result["connectivity_result"];
    assert_eq!(
        connectivity["client_auth_requirement"], "REQUIRED",
        "{connectivity}"
    );
    assert_eq!(connectivity["highest_tls_version_supported"], "TLS_1_3");
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
        "tls_1_2_cipher_suites",
    ] {
        assert_eq!(
            accepted(&result, old),
            Vec::<String>::new(),
            "{old} must be refused"
        );
    }
    let tls13 = accepted(&result, "tls_1_3_cipher_suites");
    assert!(
        tls13.contains(&"TLS_AES_128_GCM_SHA256".to_owned()),
        "{tls13:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_when_enabled_offers_only_ecdhe_with_aead() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .extra_tls("  min_version: \"1.2\"\n"),
    );
    let result = scan(users.inbound()).await;
    assert_eq!(
        result["connectivity_result"]["client_auth_requirement"],
        "REQUIRED"
    );
    let tls12 = accepted(&result, "tls_1_2_cipher_suites");
    assert!(!tls12.is_empty(), "TLS 1.2 was enabled");
    for suite in &tls12 {
        assert!(suite.contains("_ECDHE_"), "{suite} has no forward secrecy");
        assert!(
            suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305"),
            "{suite} is not AEAD"
        );
    }
    for old in [
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert_eq!(
            accepted(&result, old),
            Vec::<String>::new(),
            "{old} must be refused"
        );
    }
}
