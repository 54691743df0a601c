//! gRPC conventions on the outbound side: a client's `grpc-timeout`
//! shortens the deadline, and a `grpc-status` in the trailers can call for
//! a retry.

use std::time::{Duration, Instant};

use http::Request;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_shorter_grpc_timeout_from_the_client_is_the_deadline() {
    let pair = Pair::start_with("      timeout: 10s\n").await;
    let req = Request::post("http://users/slow?ms=5000")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "300m")
        .body(empty())
        .expect("request");
    let started = Instant::now();
    let response = collect(send_h2c(pair.orders.outbound(), req).await).await;
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("response-timeout"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}: grpc-timeout was ignored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_status_in_the_trailers_is_retried() {
    let pair = Pair::start_with(
        "      retries: { attempts: 2, on: [grpc-unavailable] }\n      retry_budget: { ratio: 10 }\n",
    )
    .await;
    for _ in 0..4 {
        let req = Request::post("http://users/grpc/flaky")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body(&b"\0\0\0\0\0"[..]))
            .expect("request");
        let response = collect(send_h2c(pair.orders.outbound(), req).await).await;
        assert_eq!(response.status, 200);
        let trailers = response.trailers.expect("trailers");
        assert_eq!(
            trailers["grpc-status"], "0",
            "the failed call was not retried"
        );
        assert_eq!(&response.body[..], b"\0\0\0\0\x02hi");
    }
    // Four calls, each failing once before it succeeded.
    assert_eq!(pair.app.seen().len(), 8);
}
