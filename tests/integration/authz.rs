//! Authorization by caller identity on inbound, and the identity checks
//! behind it: trust domain, SPIFFE id, expiry, TLS version.

use std::time::Duration;

use http::Request;

use crate::support::*;

const RULES: &str = "  authorization:
    rules:
      - name: orders-reads-users
        from: [{ service: orders }]
        paths: [\"/users\", \"/users/*\"]
        methods: [GET]
";

/// users (with RULES) behind its sidecar; orders and payments can call it.
struct Mesh {
    app: TestApp,
    users: Sidecar,
    orders: Sidecar,
    payments: Sidecar,
    _certs: Certs,
}

async fn mesh() -> Mesh {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .inbound_extra(RULES),
    );
    let caller = |name| {
        Sidecar::start(&SidecarConfig::new(name, &certs).service("users", &[users.inbound()], ""))
    };
    let orders = caller("orders");
    let payments = caller("payments");
    Mesh {
        app,
        users,
        orders,
        payments,
        _certs: certs,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_are_admitted_by_identity_path_and_method() {
    let mesh = mesh().await;
    let allowed = collect(send_h1(mesh.orders.outbound(), get("users", "/users/7")).await).await;
    assert_eq!(
        allowed.status,
        404,
        "reached the test app: {}",
        allowed.text()
    );
    assert_eq!(mesh.app.last().path, "/users/7");

    let post = Request::post("/users/7")
        .header("host", "users")
        .body(body("{}"))
        .expect("request");
    let denied = collect(send_h1(mesh.orders.outbound(), post).await).await;
    assert_denied(&denied, "method-not-allowed");
    assert!(
        denied
            .text()
            .contains("spiffe://cluster.local/ns/default/sa/orders may not POST /users/7"),
        "{}",
        denied.text()
    );

    let denied = collect(send_h1(mesh.orders.outbound(), get("users", "/admin")).await).await;
    assert_denied(&denied, "path-not-allowed");

    let denied = collect(send_h1(mesh.payments.outbound(), get("users", "/users/7")).await).await;
    assert_denied(&denied, "no-rule-for-caller");

    assert_eq!(mesh.app.seen().len(), 1, "a denied request reached the app");
    let payments_denied = r#"pilotfish_authz_denied_total{caller="spiffe://cluster.local/ns/default/sa/payments",reason="no-rule-for-caller"}"#;
    assert_eq!(metric(&mesh.users, payments_denied).await, 1.0);
    mesh.users.wait_for_log(
        "request denied by the authorization policy",
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_judged_as_the_app_will_see_them() {
    let mesh = mesh().await;
    for sneaky in [
        "/users/../admin",
        "/users/%2e%2e/admin",
        "/users/./../admin",
    ] {
        let denied = collect(send_h1(mesh.orders.outbound(), get("users", sneaky)).await).await;
        assert_denied(&denied, "path-not-allowed");
    }
    // A `%` that starts no escape could build one from what is decoded
    // after it (`%%32e` would become `%2e`): such a path is refused.
    for stray in ["/users/%%32e%%32e/admin", "/users/100%"] {
        let refused = collect(send_h1(mesh.orders.outbound(), get("users", stray)).await).await;
        assert_eq!(refused.status, 400, "{stray}: {}", refused.text());
        assert_eq!(refused.header("pilotfish-error"), Some("bad-request"));
    }
    // A harmless spelling is normalized and passed on normalized.
    let ok =
        collect(send_h1(mesh.orders.outbound(), get("users", "/users/./%7Ebob?x=1")).await).await;
    assert_eq!(ok.status, 404, "{}", ok.text());
    let seen = mesh.app.last();
    assert_eq!(seen.path, "/users/~bob");
    assert!(mesh.app.seen().iter().all(|s| !s.path.contains("admin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_mesh_admits_any_identity_of_the_trust_domain() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .inbound_extra("  authorization:\n    default: allow-mesh\n"),
    );
    let anyone = Sidecar::start(&SidecarConfig::new("anyone", &certs).service(
        "users",
        &[users.inbound()],
        "",
    ));
    let response = collect(send_h1(anyone.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_the_right_ca_but_another_trust_domain_is_refused() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let foreign = certs.issue_with("orders", &["--trust-domain", "other.example"]);
    let config = tls_config(&certs.ca(), Some(&foreign), false);
    let stream = tls_connect(users.inbound(), config, "users")
        .await
        .expect("handshake");
    assert!(send_h1_over(stream, get("users", "/echo")).await.is_err());
    users.wait_for_log("trust domain \\\"other.example\\\"", Duration::from_secs(5));
    let series = r#"pilotfish_tls_handshake_failures_total{direction="inbound",reason="foreign-trust-domain"}"#;
    assert_eq!(metric(&users, series).await, 1.0);
    assert!(app.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_without_a_spiffe_id_is_refused_with_a_clear_log_line() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let plain = issue_without_spiffe_id(&certs);
    let config = tls_config(&certs.ca(), Some(&plain), false);
    let stream = tls_connect(users.inbound(), config, "users")
        .await
        .expect("handshake");
    assert!(send_h1_over(stream, get("users", "/echo")).await.is_err());
    users.wait_for_log(
        "the client certificate has no SPIFFE id",
        Duration::from_secs(5),
    );
    let series =
        r#"pilotfish_tls_handshake_failures_total{direction="inbound",reason="no-spiffe-id"}"#;
    assert_eq!(metric(&users, series).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_client_certificate_is_refused() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let short = certs.issue_with("orders", &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let config = tls_config(&certs.ca(), Some(&short), false);
    let stream = tls_connect(users.inbound(), config, "users")
        .await
        .expect("handshake");
    assert!(send_h1_over(stream, get("users", "/echo")).await.is_err());
    let series = r#"pilotfish_tls_handshake_failures_total{direction="inbound",reason="expired"}"#;
    assert_eq!(metric(&users, series).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_is_accepted_only_when_configured() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .extra_tls("  min_version: \"1.2\"\n"),
    );
    let client = certs.issue("orders");
    let config = tls_config(&certs.ca(), Some(&client), true);
    let stream = tls_connect(users.inbound(), config, "users")
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let response = collect(
        send_h1_over(stream, get("users", "/echo"))
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnecting_client_resumes_its_tls_session() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let client = certs.issue("orders");
    // One config, so one session cache, for both connections.
    let config = tls_config(&certs.ca(), Some(&client), false);
    for _ in 0..2 {
        let stream = tls_connect(users.inbound(), config.clone(), "users")
            .await
            .expect("handshake");
        let response = collect(
            send_h1_over(stream, get("users", "/echo"))
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(response.status, 200);
    }
    let resumed = r#"pilotfish_tls_handshakes_total{direction="inbound",kind="resumed"}"#;
    assert_eq!(metric(&users, resumed).await, 1.0);
}

/// A leaf signed by the test CA with DNS names only, no URI SAN.
fn issue_without_spiffe_id(certs: &Certs) -> Leaf {
    let dir = certs.dir.path();
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).expect("ca key"))
            .expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["orders".to_owned()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let leaf = Leaf {
        cert: dir.join("no-spiffe.pem"),
        key: dir.join("no-spiffe-key.pem"),
    };
    std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
    std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
    leaf
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_finishes_its_handshake_is_cut_off() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .inbound_extra("  handshake_timeout: 300ms\n"),
    );
    let mut silent = tokio::net::TcpStream::connect(users.inbound())
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the sidecar closed the connection in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let series = r#"pilotfish_tls_handshake_failures_total{direction="inbound",reason="timeout"}"#;
    assert_eq!(metric(&users, series).await, 1.0);
}
