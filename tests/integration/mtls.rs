//! The mesh link is mTLS both ways: the inbound port admits only clients
//! with a certificate from the mesh CA, and the outbound side admits only a
//! server that proves the identity expected for the destination.

use crate::support::*;

struct Inbound {
    _app: TestApp,
    users: Sidecar,
    certs: Certs,
}

async fn users_inbound() -> Inbound {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    Inbound {
        _app: app,
        users,
        certs,
    }
}

/// Sends `GET /echo` to the inbound port with this TLS config; `Ok` only
/// if an HTTP response came back.
async fn try_inbound(inbound: &Inbound, config: rustls::ClientConfig) -> Result<Collected, String> {
    let stream = tls_connect(inbound.users.inbound(), config, "users")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // With TLS 1.3 the server checks the client certificate after the
    // client considers the handshake done, so a refusal shows up here.
    let response = send_h1_over(stream, get("users", "/echo"))
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(collect(response).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mesh_client_certificate_is_admitted() {
    let inbound = users_inbound().await;
    let client = inbound.certs.issue("orders");
    let config = tls_config(&inbound.certs.ca(), Some(&client), false);
    let response = try_inbound(&inbound, config).await.expect("admitted");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["headers"]["pilotfish-client-id"][0],
        "spiffe://cluster.local/ns/default/sa/orders"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused() {
    let inbound = users_inbound().await;
    let config = tls_config(&inbound.certs.ca(), None, false);
    let err = try_inbound(&inbound, config).await.err().expect("refused");
    assert!(err.contains("request"), "{err}");
    inbound.users.wait_for_log(
        "inbound TLS handshake failed",
        std::time::Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_is_refused() {
    let inbound = users_inbound().await;
    let rogue = Certs::new();
    let impostor = rogue.issue("orders");
    // The client trusts the mesh CA (to reach the server) but presents a
    // certificate issued by another CA.
    let config = tls_config(&inbound.certs.ca(), Some(&impostor), false);
    assert!(
        try_inbound(&inbound, config).await.is_err(),
        "rogue certificate admitted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_is_refused() {
    let inbound = users_inbound().await;
    let client = inbound.certs.issue("orders");
    let config = tls_config(&inbound.certs.ca(), Some(&client), true);
    let err = try_inbound(&inbound, config).await.err().expect("refused");
    assert!(err.contains("handshake"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_http_to_the_mtls_port_gets_no_answer() {
    let inbound = users_inbound().await;
    let result = try_send_h1(inbound.users.inbound(), get("users", "/echo")).await;
    assert!(
        result.is_err(),
        "plaintext request was answered: {:?}",
        result.map(|r| r.status())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbound_side_refuses_a_server_that_names_another_service() {
    refuses_a_server_that_names_another_service("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http1_link_refuses_a_server_that_names_another_service() {
    refuses_a_server_that_names_another_service("      protocol: http1\n").await;
}

/// orders calls "users" (its destination with `users_extra`), whose
/// endpoint is a genuine mesh workload, but "payments".
async fn refuses_a_server_that_names_another_service(users_extra: &str) {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let payments = Sidecar::start(&SidecarConfig::new("payments", &certs).inbound(app.addr));
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[payments.inbound()],
        users_extra,
    ));
    let response = collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("peer-identity"));
    assert!(
        response
            .text()
            .contains("spiffe://cluster.local/ns/default/sa/payments"),
        "{}",
        response.text()
    );
    assert!(
        app.seen().is_empty(),
        "the request reached the wrong service"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_identity_can_be_configured() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let payments = Sidecar::start(&SidecarConfig::new("payments", &certs).inbound(app.addr));
    // The service is called "billing" by the app but runs as "payments".
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "billing",
        &[payments.inbound()],
        "      identity: spiffe://cluster.local/ns/default/sa/payments\n",
    ));
    let response = collect(send_h1(orders.outbound(), get("billing", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
}
