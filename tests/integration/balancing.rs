//! The default balancer (peak-EWMA) shares traffic among equal endpoints
//! from the first request, and one slow answer costs an endpoint a moment,
//! not its share: through one sidecar and through a sidecar pair.

use std::time::Duration;

use crate::support::origins::{Hops, Origins, call, delta};
use crate::support::*;

/// `n` requests one after another, `gap` apart; each must succeed.
async fn paced(caller: &Sidecar, n: usize, gap: Duration) {
    for _ in 0..n {
        let response = call(caller, "/echo").await;
        assert_eq!(response.status, 200, "{}", response.text());
        tokio::time::sleep(gap).await;
    }
}

fn shares(counts: &[u64]) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    counts.iter().map(|c| c * 100 / total.max(1)).collect()
}

async fn equal_endpoints_share_traffic(hops: Hops) {
    let certs = Certs::new();
    let origins = Origins::start(&certs, hops, 3);
    let caller = origins.caller(&certs, "");

    // From the very first request: nothing is known, nothing is favoured.
    paced(&caller, 90, Duration::from_millis(20)).await;
    let at_start = shares(&origins.requests().await);
    assert!(at_start.iter().all(|s| *s >= 15), "at start: {at_start:?}%");

    // One origin answers slowly once (the request lands where it lands).
    let before = origins.requests().await;
    let slow = call(&caller, "/echo?delay=300ms").await;
    assert_eq!(slow.status, 200);
    let after_slow = origins.requests().await;
    let which = delta(&after_slow, &before)
        .iter()
        .position(|d| *d == 1)
        .expect("one origin answered it");

    // About 8 s of light traffic: it is avoided for a moment (about 1.5 s
    // for an answer 100 times slower than typical, longer on a loaded
    // machine where more answers are slow), then back to its share.
    paced(&caller, 360, Duration::from_millis(20)).await;
    let spread = shares(&delta(&origins.requests().await, &after_slow));
    assert!(
        spread.iter().all(|s| *s >= 15),
        "after origin {which} answered slowly once: {spread:?}%"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn equal_endpoints_share_traffic_through_one_sidecar() {
    equal_endpoints_share_traffic(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn equal_endpoints_share_traffic_through_a_pair() {
    equal_endpoints_share_traffic(Hops::Pair).await;
}
