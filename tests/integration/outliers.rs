//! Every attempt's end reaches its endpoint: one that hangs is timed out,
//! counted as failing, and ejected, whether the per-try timeout or the
//! request's deadline gave up on it; a client that leaves says nothing
//! about the endpoint. Through one sidecar and through a sidecar pair.

use std::time::{Duration, Instant};

use crate::support::origins::{Hops, Origins, call, delta};
use crate::support::*;

const EJECTIONS: &str = r#"pilotfish_outlier_ejections_total{service="users"}"#;

/// The destination view of the caller's admin port.
async fn endpoints_view(caller: &Sidecar) -> Vec<serde_json::Value> {
    let view = collect(send_h1(caller.admin, get("admin", "/destinations")).await)
        .await
        .json();
    view[0]["endpoints"].as_array().expect("endpoints").clone()
}

/// Origin 0 hangs; `yaml` sets how long the caller waits. Requests go on
/// until it is ejected; after that none reaches it.
async fn a_hung_endpoint_is_ejected(hops: Hops, yaml: &str, expect_ok: bool) {
    let certs = Certs::new();
    let origins = Origins::start(&certs, hops, 3);
    origins.knobs(0, "hang=1").await;
    let caller = origins.caller(&certs, yaml);
    let hung = origins.endpoints()[0];

    let started = Instant::now();
    while metric(&caller, EJECTIONS).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hung endpoint was never ejected; logs:\n{}",
            caller.logs().join("\n")
        );
        let response = call(&caller, "/echo").await;
        if expect_ok {
            assert_eq!(response.status, 200, "{}", response.text());
        }
    }
    let view = endpoints_view(&caller).await;
    let ejected = view
        .iter()
        .find(|e| e["addr"] == hung.to_string())
        .expect("listed");
    assert!(ejected["ejected_for_ms"].as_u64().is_some(), "{view:?}");
    assert!(
        caller
            .logs()
            .iter()
            .any(|l| l.contains("endpoint ejected") && l.contains("timeout")),
        "the log says why"
    );

    // Ejected, it gets nothing: every request is answered, and quickly.
    let before = origins.requests().await;
    for _ in 0..20 {
        let started = Instant::now();
        let response = call(&caller, "/echo").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let after = delta(&origins.requests().await, &before);
    assert_eq!(after[0], 0, "{after:?}");
}

/// With a per-try timeout, retried: the caller never sees the hang.
const PER_TRY: &str = "      per_try_timeout: 200ms
      retries: { attempts: 3, on: [per-try-timeout] }
";

/// With only the request's deadline and no retries: timed-out requests
/// get 504, and the endpoint still learns of each.
const DEADLINE: &str = "      timeout: 300ms
      retries: { attempts: 1 }
";

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_endpoint_is_ejected_after_per_try_timeouts_through_one_sidecar() {
    a_hung_endpoint_is_ejected(Hops::One, PER_TRY, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_endpoint_is_ejected_after_per_try_timeouts_through_a_pair() {
    a_hung_endpoint_is_ejected(Hops::Pair, PER_TRY, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_endpoint_is_ejected_after_deadlines_through_one_sidecar() {
    a_hung_endpoint_is_ejected(Hops::One, DEADLINE, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_endpoint_is_ejected_after_deadlines_through_a_pair() {
    a_hung_endpoint_is_ejected(Hops::Pair, DEADLINE, false).await;
}

/// Clients that give up on a slow origin do not get it ejected, and leave
/// nothing counted in flight.
async fn clients_leaving_say_nothing_about_the_endpoint(hops: Hops) {
    let certs = Certs::new();
    let origins = Origins::start(&certs, hops, 1);
    origins.knobs(0, "delay=2s").await;
    let caller = origins.caller(&certs, "");
    for _ in 0..8 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(150),
            try_send_h1(caller.outbound(), get("users", "/echo")),
        )
        .await;
        assert!(gave_up.is_err(), "the origin answered too soon");
    }
    // The sidecar notices each client leaving and drops its attempt.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = endpoints_view(&caller).await;
        if view[0]["in_flight"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still in flight: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&caller, EJECTIONS).await, 0.0);
    origins.knobs(0, "delay=0s").await;
    assert_eq!(call(&caller, "/echo").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_leaving_say_nothing_about_the_endpoint_through_one_sidecar() {
    clients_leaving_say_nothing_about_the_endpoint(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_leaving_say_nothing_about_the_endpoint_through_a_pair() {
    clients_leaving_say_nothing_about_the_endpoint(Hops::Pair).await;
}
