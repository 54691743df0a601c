//! A whole destination fails after healthy traffic. With the defaults the
//! retry budget holds retries to a share of the traffic of the moment from
//! the outage's first second (no reserve, no credit from the healthy
//! past), and an enabled breaker (`breaker: {}`) opens about 2 s in and
//! closes within its 5 s reset once the destination recovers. Through one
//! sidecar and through a sidecar pair.

use std::time::{Duration, Instant};

use crate::support::origins::{Hops, Origins, call};
use crate::support::*;

/// Requests one after another, `gap` apart, for `how_long`; returns how
/// many were sent.
async fn paced(caller: &Sidecar, how_long: Duration, gap: Duration) -> u64 {
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < how_long {
        call(caller, "/echo").await;
        sent += 1;
        tokio::time::sleep(gap).await;
    }
    sent
}

async fn retries_stay_within_the_budget_in_an_outage(hops: Hops) {
    let certs = Certs::new();
    let origins = Origins::start(&certs, hops, 2);
    // Every default: 2 attempts on connect failures, refused streams and
    // resets; the budget 20% of the last second, or 5 a second.
    let caller = origins.caller(&certs, "");
    let gap = Duration::from_millis(20);
    paced(&caller, Duration::from_secs(3), gap).await;

    // Every origin now drops every connection mid-request: each GET is
    // worth a retry, and only the budget says no.
    origins.knobs_all("reset=1").await;
    let before = origins.total().await;
    let started = Instant::now();
    let requests = paced(&caller, Duration::from_secs(4), gap).await;
    let seconds = started.elapsed().as_secs_f64();
    let retries = (origins.total().await - before).saturating_sub(requests);
    eprintln!("{hops:?}: {retries} retries for {requests} requests in {seconds:.1} s");
    let share = (0.2 * requests as f64).max(5.0 * seconds);
    // A second's worth of slack: the window's edges.
    let bound = share + (0.2 * requests as f64 / seconds).max(5.0);
    assert!(
        retries as f64 <= bound,
        "{retries} retries for {requests} requests in {seconds:.1} s (bound {bound:.0})"
    );
    assert!(
        retries as f64 >= 0.1 * requests as f64,
        "{retries} retries: the budget should allow some"
    );
    let exhausted = r#"pilotfish_retry_budget_exhausted_total{service="users"}"#;
    assert!(metric(&caller, exhausted).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stay_within_the_budget_in_an_outage_through_one_sidecar() {
    retries_stay_within_the_budget_in_an_outage(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stay_within_the_budget_in_an_outage_through_a_pair() {
    retries_stay_within_the_budget_in_an_outage(Hops::Pair).await;
}

async fn the_breaker_acts_within_seconds(hops: Hops) {
    let certs = Certs::new();
    let origins = Origins::start(&certs, hops, 2);
    let caller = origins.caller(&certs, "      breaker: {}\n");
    let gap = Duration::from_millis(20);
    // A full window of healthy traffic first.
    paced(&caller, Duration::from_secs(5), gap).await;

    origins.knobs_all("fail=1").await;
    let outage = Instant::now();
    loop {
        let response = call(&caller, "/echo").await;
        if response.header("pilotfish-error") == Some("breaker-open") {
            break;
        }
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(
            outage.elapsed() < Duration::from_secs(4),
            "the breaker is still closed {:?} into the outage",
            outage.elapsed()
        );
        tokio::time::sleep(gap).await;
    }
    let opened = outage.elapsed();
    eprintln!("{hops:?}: the breaker opened {opened:?} into the outage");
    assert!(
        opened >= Duration::from_millis(800),
        "opened after {opened:?}"
    );

    // Open, it fails fast and nothing reaches the origins.
    let before = origins.total().await;
    for _ in 0..10 {
        let started = Instant::now();
        let response = call(&caller, "/echo").await;
        assert_eq!(response.header("pilotfish-error"), Some("breaker-open"));
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(origins.total().await, before);

    // The origins recover; within the 5 s reset a probe closes it.
    origins.knobs_all("fail=0").await;
    let recovery = Instant::now();
    while call(&caller, "/echo").await.status != 200 {
        assert!(
            recovery.elapsed() < Duration::from_secs(8),
            "still refused {:?} after the recovery",
            recovery.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{hops:?}: closed {:?} after the recovery",
        recovery.elapsed()
    );
    let state = r#"pilotfish_breaker_state{service="users"}"#;
    assert_eq!(metric(&caller, state).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_acts_within_seconds_through_one_sidecar() {
    the_breaker_acts_within_seconds(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_acts_within_seconds_through_a_pair() {
    the_breaker_acts_within_seconds(Hops::Pair).await;
}
