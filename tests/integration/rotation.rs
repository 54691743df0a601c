//! Certificates rotate without restarts and without failed requests: new
//! files (swapped in the Kubernetes way) take effect for new handshakes,
//! the trust anchor itself can be replaced through a two-CA bundle, bad
//! files are refused, and expiry is watched.

use std::path::Path;
use std::time::Duration;

use crate::support::files::read;
use crate::support::*;

const APPLIED: &str = r#"pilotfish_reloads_total{kind="certificates",result="applied"}"#;
const REJECTED: &str = r#"pilotfish_reloads_total{kind="certificates",result="rejected"}"#;
const SOON: Duration = Duration::from_secs(15);

/// The three files of a workload, as a mount holds them.
fn files(ca: &[u8], leaf: &Leaf) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ca.crt", ca.to_vec()),
        ("tls.crt", read(&leaf.cert)),
        ("tls.key", read(&leaf.key)),
    ]
}

fn mounted(mount: &K8sMount) -> Leaf {
    Leaf {
        cert: mount.path("tls.crt"),
        key: mount.path("tls.key"),
    }
}

fn concat(a: &Path, b: &Path) -> Vec<u8> {
    [read(a), read(b)].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_and_the_ca_rotate_under_load_without_a_failed_request() {
    let (old, new) = (Certs::new(), Certs::new());
    let (users_old, orders_old) = (old.issue("users"), old.issue("orders"));
    let (users_new, orders_new) = (new.issue("users"), new.issue("orders"));
    let work = tempfile::tempdir().expect("temp dir");
    let mut users_mount = K8sMount::new(
        &work.path().join("users"),
        &files(&read(&old.ca()), &users_old),
    );
    let mut orders_mount = K8sMount::new(
        &work.path().join("orders"),
        &files(&read(&old.ca()), &orders_old),
    );

    // A mesh endpoint of the new CA, reached only at the end: its first
    // handshake shows which certificate orders presents by then.
    let probe = TestApp::start_tls(mtls_server_config(&new.ca(), &new.issue("probe"))).await;
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::with_files("users", users_mount.path("ca.crt"), mounted(&users_mount))
            .inbound(app.addr),
    );
    let orders = Sidecar::start(
        &SidecarConfig::with_files(
            "orders",
            orders_mount.path("ca.crt"),
            mounted(&orders_mount),
        )
        .service("users", &[users.inbound()], "")
        .service("probe", &[probe.addr], ""),
    );
    let load = Load::start(orders.outbound(), "users", "/echo", 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Both sides trust the old and the new CA.
    let both = concat(&old.ca(), &new.ca());
    users_mount.swap(&files(&both, &users_old));
    orders_mount.swap(&files(&both, &orders_old));
    wait_metric(&users, APPLIED, 1.0, SOON).await;
    wait_metric(&orders, APPLIED, 1.0, SOON).await;

    // 2. Both get certificates from the new CA.
    users_mount.swap(&files(&both, &users_new));
    orders_mount.swap(&files(&both, &orders_new));
    wait_metric(&users, APPLIED, 2.0, SOON).await;
    wait_metric(&orders, APPLIED, 2.0, SOON).await;
    let fresh_client = tls_config(&new.ca(), Some(&orders_new), false);
    assert_eq!(
        served_serial(users.inbound(), fresh_client).await,
        serial_of_file(&users_new.cert),
        "new handshakes must present the new certificate"
    );

    // 3. The old CA is removed.
    users_mount.swap(&files(&read(&new.ca()), &users_new));
    orders_mount.swap(&files(&read(&new.ca()), &orders_new));
    wait_metric(&users, APPLIED, 3.0, SOON).await;
    wait_metric(&orders, APPLIED, 3.0, SOON).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert!(
        report.ok > 100,
        "too little load to mean anything: {}",
        report.ok
    );

    // orders' new handshakes present its new certificate...
    let response = collect(send_h1(orders.outbound(), get("probe", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(probe.client_serials(), [serial_of_file(&orders_new.cert)]);
    // ...and users no longer admits what only the old CA vouches for.
    let stale = tls_config(&new.ca(), Some(&orders_old), false);
    let stream = tls_connect(users.inbound(), stale, "users")
        .await
        .expect("handshake");
    assert!(send_h1_over(stream, get("users", "/echo")).await.is_err());
    assert_eq!(metric(&users, REJECTED).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_mismatched_replacement_is_refused_and_the_old_set_keeps_serving() {
    let certs = Certs::new();
    let users_leaf = certs.issue("users");
    let work = tempfile::tempdir().expect("temp dir");
    let mut mount = K8sMount::new(
        &work.path().join("users"),
        &files(&read(&certs.ca()), &users_leaf),
    );
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::with_files("users", mount.path("ca.crt"), mounted(&mount))
            .inbound(app.addr),
    );
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[users.inbound()],
        "",
    ));
    let client = tls_config(&certs.ca(), Some(&certs.issue("client")), false);
    let serial = serial_of_file(&users_leaf.cert);

    let mut corrupt = files(&read(&certs.ca()), &users_leaf);
    corrupt[1].1 =
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n".to_vec();
    mount.swap(&corrupt);
    wait_metric(&users, REJECTED, 1.0, SOON).await;
    users.wait_for_log("new certificate files refused", Duration::from_secs(1));

    // A valid certificate with somebody else's key.
    let mut mismatched = files(&read(&certs.ca()), &users_leaf);
    mismatched[2].1 = read(&certs.issue("other").key);
    mount.swap(&mismatched);
    wait_metric(&users, REJECTED, 2.0, SOON).await;
    users.wait_for_log("does not belong to the certificate", Duration::from_secs(1));

    // An expired certificate.
    let expired = certs.issue_with("users-expired", &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut old = files(&read(&certs.ca()), &expired);
    old[1].1 = read(&expired.cert);
    mount.swap(&old);
    wait_metric(&users, REJECTED, 3.0, SOON).await;

    assert_eq!(
        served_serial(users.inbound(), client).await,
        serial,
        "the old certificate stays"
    );
    let response = collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(metric(&users, APPLIED).await, 0.0);
}

#[test]
fn start_up_with_an_expired_certificate_fails_naming_the_file_and_dates() {
    let certs = Certs::new();
    let leaf = certs.issue_with("users", &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("users.yaml");
    std::fs::write(
        &config,
        format!(
            "service: users\ntls:\n  ca: {}\n  cert: {}\n  key: {}\ninbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\nadmin:\n  listen: 127.0.0.1:0\n",
            path_str(&certs.ca()),
            path_str(&leaf.cert),
            path_str(&leaf.key)
        ),
    )
    .expect("write config");
    let output = std::process::Command::new(bin())
        .args(["run", "--config", path_str(&config)])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(path_str(&leaf.cert)), "{err}");
    assert!(
        err.contains("certificate has expired: valid from 20"),
        "{err}"
    );
    assert!(err.contains(", now 20"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nearly_expired_certificate_warns_and_exports_its_expiry() {
    let certs = Certs::new();
    let leaf = certs.issue_with("users", &["--ttl", "10m"]);
    let app = TestApp::start().await;
    // 10 minutes left of 11 (with the minute of backdating): 91% left, so
    // warn below 95%.
    let users = Sidecar::start(
        &SidecarConfig::with_leaf("users", &certs, leaf.clone())
            .inbound(app.addr)
            .extra_tls("  expiry_warning: 0.95\n"),
    );
    users.wait_for_log("the certificate expires soon", SOON);
    let expiry = metric(&users, "pilotfish_certificate_expiry_timestamp_seconds").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (expiry - (now + 600.0)).abs() < 30.0,
        "expiry {expiry}, now {now}"
    );
}

#[test]
fn start_up_with_a_certificate_not_valid_yet_fails_naming_the_dates() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(dir.join("ca.pem")).expect("ca"),
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).expect("key"))
            .expect("ca key"),
    )
    .expect("issuer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["users".to_owned()]).expect("params");
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://cluster.local/ns/default/sa/users"
            .try_into()
            .expect("uri"),
    ));
    let now = std::time::SystemTime::now();
    params.not_before = (now + Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(7200)).into();
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let (cert_path, key_path) = (dir.join("future.pem"), dir.join("future-key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    let config = dir.join("users.yaml");
    std::fs::write(
        &config,
        format!(
            "service: users\ntls:\n  ca: {}\n  cert: {}\n  key: {}\ninbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\nadmin:\n  listen: 127.0.0.1:0\n",
            path_str(&certs.ca()),
            path_str(&cert_path),
            path_str(&key_path)
        ),
    )
    .expect("config");
    let output = std::process::Command::new(bin())
        .args(["run", "--config", path_str(&config)])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!(
            "{}: certificate is not valid yet: valid from",
            path_str(&cert_path)
        )),
        "{err}"
    );
}
