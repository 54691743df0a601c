//! The HTTP/1.1 mesh link (`protocol: http1` on an mTLS destination):
//! pooled keep-alive connections between the sidecars, each with the same
//! mTLS and identity checks as the default HTTP/2 link (a peer proving
//! the wrong identity over it: `mtls.rs`).

use std::time::Duration;

use http::Request;
use nix::sys::signal::Signal;

use crate::support::*;

const ORDERS_ID: &str = "spiffe://cluster.local/ns/default/sa/orders";
const HTTP1_LINK: &str = "      protocol: http1\n";

/// Handshakes the users sidecar has accepted.
async fn accepted(pair: &Pair) -> f64 {
    metric(
        &pair.users,
        r#"pilotfish_tls_handshakes_total{direction="inbound"}"#,
    )
    .await
}

/// Three requests that the app holds for a while, all in flight at once.
async fn three_slow_requests_at_once(pair: &Pair) {
    let slow = || async {
        collect(send_h1(pair.orders.outbound(), get("users", "/slow?ms=300")).await).await
    };
    let (a, b, c) = tokio::join!(slow(), slow(), slow());
    for response in [a, b, c] {
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_cross_the_http1_link_intact_with_the_callers_identity() {
    let pair = Pair::start_with(HTTP1_LINK).await;
    let req = Request::post("/echo?page=2")
        .header("host", "users")
        .header("x-custom", "kept")
        .body(body("hello link"))
        .expect("request");
    let response = collect(send_h1(pair.orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "page=2");
    assert_eq!(echo["body_bytes"], 10);
    let headers = &echo["headers"];
    assert_eq!(headers["host"][0], "users");
    assert_eq!(headers["x-custom"][0], "kept");
    assert_eq!(headers["pilotfish-client-id"][0], ORDERS_ID);
    assert!(headers["pilotfish-orig-proto"].is_null());

    // An HTTP/2 caller's request goes over the HTTP/1.1 link as HTTP/1.1:
    // the far app sees HTTP/1.1, which the HTTP/2 link would not do.
    let req = Request::get("http://users/echo")
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(pair.orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["version"], "HTTP/1.1");
    assert_eq!(response.json()["headers"]["host"][0], "users");
    assert_eq!(pair.app.last().version, http::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http1_link_keeps_connections_alive_and_opens_one_per_concurrent_request() {
    let pair = Pair::start_with(HTTP1_LINK).await;
    for _ in 0..5 {
        let response = collect(send_h1(pair.orders.outbound(), get("users", "/echo")).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        accepted(&pair).await,
        1.0,
        "five requests in a row share one kept-alive connection"
    );

    // Three at once: one connection carries one request at a time, so
    // two more are opened.
    three_slow_requests_at_once(&pair).await;
    assert_eq!(accepted(&pair).await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_link_multiplexes_concurrent_requests_on_one_connection() {
    let pair = Pair::start().await;
    three_slow_requests_at_once(&pair).await;
    assert_eq!(accepted(&pair).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_peer_on_the_http1_link_is_refused_not_waited_for() {
    let mut pair = Pair::start_with(HTTP1_LINK).await;
    let response = collect(send_h1(pair.orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());

    // The pooled connection dies with the peer: the next request must
    // not be sent on it, nor hang, and must say the peer is unreachable.
    pair.users.signal(Signal::SIGKILL);
    assert!(pair.users.wait_exit(Duration::from_secs(5)).is_some());
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        collect(send_h1(pair.orders.outbound(), get("users", "/echo")).await),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(
        response.header("pilotfish-error"),
        Some("connect-refused"),
        "{}",
        response.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_agrees_to_no_alpn_protocol_is_refused_on_either_link() {
    let certs = Certs::new();
    // The right identity, but a TLS server that ignores ALPN: not a
    // Pilotfish inbound port, so neither link may guess its protocol.
    let mut tls = mtls_server_config(&certs.ca(), &certs.issue("users"));
    tls.alpn_protocols.clear();
    let server = TestApp::start_tls(tls).await;
    for (link, wanted) in [("", "h2"), (HTTP1_LINK, "http/1.1")] {
        let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
            "users",
            &[server.addr],
            link,
        ));
        let response = collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
        assert_eq!(response.status, 502, "{wanted}: {}", response.text());
        assert_eq!(response.header("pilotfish-error"), Some("tls-failed"));
        assert!(
            response
                .text()
                .contains(&format!("did not negotiate ALPN {wanted}")),
            "{}",
            response.text()
        );
    }
    assert!(server.seen().is_empty(), "a request was sent anyway");
}
