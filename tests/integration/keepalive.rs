//! Keep-alive connections that the upstream closes: the proxy must never
//! turn the upstream's connection management into errors for the client.

use std::time::Duration;

use crate::support::*;

/// An orders sidecar whose `legacy` destination is a plain server at `addr`.
fn orders_to_plain(certs: &Certs, addr: std::net::SocketAddr, extra: &str) -> Sidecar {
    Sidecar::start(&SidecarConfig::new("orders", certs).service(
        "legacy",
        &[addr],
        &format!("      transport: plaintext\n      protocol: http1\n{extra}"),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_closed_at_random_moments_cause_no_client_errors() {
    let certs = Certs::new();
    let upstream = TestApp::start_closing_connections_at_random().await;
    let orders = orders_to_plain(&certs, upstream.addr, "");
    let load = Load::start(orders.outbound(), "legacy", "/echo", 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop().await;
    assert!(report.failures.is_empty(), "failed: {:?}", report.failures);
    assert!(report.ok > 200, "too little load: {}", report.ok);
    assert!(
        upstream.connections() > 20,
        "the upstream should have closed many connections: {}",
        upstream.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_advertised_keep_alive_timeout_is_respected() {
    let certs = Certs::new();
    // The server says `Keep-Alive: timeout=2` and closes idle connections
    // after 2 s; the pool must stop using them a second before.
    let upstream = TestApp::start_with_keep_alive_timeout(Duration::from_secs(2)).await;
    let orders = orders_to_plain(&certs, upstream.addr, "      retries: { attempts: 1 }\n");
    for i in 0..3 {
        let response = collect(send_h1(orders.outbound(), get("legacy", "/echo")).await).await;
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        tokio::time::sleep(Duration::from_millis(1900)).await;
    }
    assert_eq!(
        upstream.connections(),
        3,
        "a connection idle past its advertised timeout was reused"
    );

    // Within the timeout the connection is reused.
    for _ in 0..3 {
        let response = collect(send_h1(orders.outbound(), get("legacy", "/echo")).await).await;
        assert_eq!(response.status, 200);
    }
    assert_eq!(upstream.connections(), 4);
}
