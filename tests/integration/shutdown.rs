//! Graceful shutdown: on SIGTERM (or `POST /shutdown` on the admin port)
//! a sidecar fails readiness, refuses new mesh connections, keeps taking
//! its app's calls until the app is gone, lets in-flight requests finish,
//! and exits 0 within the drain timeout.

use std::time::{Duration, Instant};

use http::Request;
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
            // No grace for the app's calls: this is about the drain.
            .extra("shutdown:\n  drain_timeout: 500ms\n  outbound_grace: 0s\n"),
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

/// Stopped together with its app (Compose, a pod without native
/// sidecars), the sidecar stops taking mesh traffic at once but goes on
/// taking the app's calls while the app finishes, and closes as soon as
/// the app is gone, well before the grace ends.
#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_the_apps_calls_are_taken_until_the_app_is_gone() {
    let certs = Certs::new();
    let users_app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(users_app.addr));
    let orders_app = TestApp::start().await;
    let mut orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .inbound(orders_app.addr)
            .service("users", &[users.inbound()], "")
            .extra("shutdown:\n  outbound_grace: 30s\n"),
    );
    orders.signal(Signal::SIGTERM);
    await_ready_status(&orders, 503).await;
    // Mesh traffic goes elsewhere: the inbound listener closes at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(orders.inbound())
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the inbound listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The app, still finishing its work, still calls out.
    for _ in 0..3 {
        let response = collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The app exits: the sidecar follows, without waiting out its 30 s.
    let gone = Instant::now();
    drop(orders_app);
    let status = orders.wait_exit(Duration::from_secs(25)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", orders.logs().join("\n"));
    assert!(
        gone.elapsed() < Duration::from_secs(15),
        "took {:?}",
        gone.elapsed()
    );
    orders.wait_for_log("the app is gone", Duration::from_secs(1));
}

/// A Job's app, done, stops its sidecar: `POST /shutdown` on the admin
/// port (from inside the pod) drains it and it exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn post_shutdown_on_the_admin_port_drains_and_exits_zero() {
    let certs = Certs::new();
    let mut orders = Sidecar::start(&SidecarConfig::new("orders", &certs).outbound());
    let only_post = collect(send_h1(orders.admin, get("admin", "/shutdown")).await).await;
    assert_eq!(only_post.status, 405, "{}", only_post.text());
    let stop = Request::post("/shutdown")
        .header("host", "admin")
        .body(empty())
        .expect("request");
    let asked = collect(send_h1(orders.admin, stop).await).await;
    assert_eq!(asked.status, 202, "{}", asked.text());
    let status = orders.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", orders.logs().join("\n"));
    orders.wait_for_log(
        "shutdown asked through the admin port",
        Duration::from_secs(1),
    );
}

/// An app that does not exit within `shutdown.outbound_grace`: the
/// sidecar stops waiting for it, closes the outbound listener and drains.
#[tokio::test(flavor = "multi_thread")]
async fn the_outbound_grace_ends_even_if_the_app_stays() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let mut orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .inbound(app.addr)
            .service("users", &[free_addr()], "")
            .extra("shutdown:\n  outbound_grace: 1s\n"),
    );
    let signalled = Instant::now();
    orders.signal(Signal::SIGTERM);
    let status = orders.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", orders.logs().join("\n"));
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "did not wait for the app: {:?}",
        signalled.elapsed()
    );
    orders.wait_for_log("outbound grace over", Duration::from_secs(1));
    drop(app);
}
