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

/// After a burst of concurrent requests the pool holds that many idle
/// connections; with no more traffic they are closed when they expire,
/// toward the app (inbound) and toward a plaintext upstream (outbound).
#[tokio::test(flavor = "multi_thread")]
async fn idle_pooled_connections_close_when_they_expire_without_traffic() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .inbound_extra("  idle_timeout: 2s\n"),
    );
    let direct = TestApp::start().await;
    let orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "")
            .service(
                "direct",
                &[direct.addr],
                "      transport: plaintext\n      idle_timeout: 2s\n",
            ),
    );
    let burst = |host: &'static str| {
        let outbound = orders.outbound();
        (0..8).map(move |_| {
            tokio::spawn(async move {
                collect(send_h1(outbound, get(host, "/slow?ms=300")).await)
                    .await
                    .status
            })
        })
    };
    for request in burst("users").chain(burst("direct")).collect::<Vec<_>>() {
        assert_eq!(request.await.expect("request"), 200);
    }
    assert!(app.open_connections() >= 4, "{}", app.open_connections());
    assert!(
        direct.open_connections() >= 4,
        "{}",
        direct.open_connections()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.open_connections() + direct.open_connections() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still open: {} to the app, {} to the upstream",
            app.open_connections(),
            direct.open_connections()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
