//! Graceful shutdown: on SIGTERM a sidecar fails readiness, refuses new
//! connections, lets in-flight requests finish, and exits 0 within the
//! drain timeout.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// `GET /ready` on the admin port: the status, or `None` if refused.
async fn ready_status(sidecar: &Sidecar) -> Option<u16> {
    try_send_h1(sidecar.admin, get("admin", "/ready"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Waits until `GET /ready` answers `want`.
async fn await_ready_status(sidecar: &Sidecar, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready_status(sidecar).await != Some(want) {
        assert!(Instant::now() < deadline, "/ready never answered {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let drain = "shutdown:\n  drain_timeout: 20s\n";
    let mut users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .extra(drain),
    );
    let mut orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "")
            .extra(drain),
    );
    assert_eq!(ready_status(&orders).await, Some(200));

    // Two slow requests in flight: one drains through the outbound sidecar
    // (HTTP/1.1 from the app), one through the inbound sidecar (HTTP/2 link).
    let outbound = orders.outbound();
    let slow = |ms: u64| {
        tokio::spawn(async move {
            collect(send_h1(outbound, get("users", &format!("/slow?ms={ms}"))).await).await
        })
    };
    let first = slow(1500);
    let second = slow(1500);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.seen().len() < 2 {
        assert!(Instant::now() < deadline, "requests never reached the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let signalled = Instant::now();
    orders.signal(Signal::SIGTERM);
    users.signal(Signal::SIGTERM);

    // Readiness fails while draining, and new connections are refused.
    await_ready_status(&orders, 503).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(orders.outbound())
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the outbound listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for request in [first, second] {
        let response = request.await.expect("request task");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.text(), "slow done\n");
    }
    for sidecar in [&mut orders, &mut users] {
        let status = sidecar.wait_exit(Duration::from_secs(15)).expect("exited");
        assert_eq!(status.code(), Some(0), "{}", sidecar.logs().join("\n"));
    }
    assert!(signalled.elapsed() < Duration::from_secs(15));
    orders.wait_for_log("drained; exiting", Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_longer_than_the_drain_timeout_is_cut_and_the_exit_is_still_zero() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let mut orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "      timeout: 60s\n")
            .extra("shutdown:\n  drain_timeout: 500ms\n"),
    );
    let outbound = orders.outbound();
    let request =
        tokio::spawn(async move { try_send_h1(outbound, get("users", "/slow?ms=30000")).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.seen().is_empty() {
        assert!(Instant::now() < deadline, "request never reached the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    orders.signal(Signal::SIGTERM);
    let status = orders.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
    orders.wait_for_log("drain timeout reached", Duration::from_secs(1));
    assert!(
        request.await.expect("task").is_err(),
        "the cut request got a response"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_sidecar_exits_at_once_on_sigint() {
    let certs = Certs::new();
    let mut orders = Sidecar::start(&SidecarConfig::new("orders", &certs).outbound());
    let signalled = Instant::now();
    orders.signal(Signal::SIGINT);
    let status = orders.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        signalled.elapsed()
    );
}
