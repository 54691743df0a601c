//! Bodies stream through both sidecars without being buffered whole: a
//! large upload and download pass with memory staying flat, and a
//! server-sent stream arrives event by event.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;

use crate::support::*;

const MIB: u64 = 1024 * 1024;

/// A body of `total` bytes made on the fly, 64 KiB at a time.
fn generated_body(total: u64) -> TestBody {
    struct Generated {
        left: u64,
        chunk: Bytes,
    }
    impl http_body::Body for Generated {
        type Data = Bytes;
        type Error = crate::support::test_app::BoxError;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            if this.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let len = this.left.min(this.chunk.len() as u64);
            this.left -= len;
            let data = this.chunk.slice(..len as usize);
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
        }
    }
    Generated {
        left: total,
        chunk: Bytes::from(vec![b'u'; 64 * 1024]),
    }
    .boxed()
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_upload_passes_with_flat_memory() {
    let pair = Pair::start_with("      timeout: 60s\n").await;
    // Warm up so the baseline includes connections and TLS state.
    collect(send_h1(pair.orders.outbound(), get("users", "/echo")).await).await;
    let before = [
        peak_rss_bytes(pair.orders.pid()),
        peak_rss_bytes(pair.users.pid()),
    ];

    let total = 100 * MIB;
    let req = Request::post("/echo")
        .header("host", "users")
        .body(generated_body(total))
        .expect("request");
    let response = collect(send_h1(pair.orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["body_bytes"], total);

    let after = [
        peak_rss_bytes(pair.orders.pid()),
        peak_rss_bytes(pair.users.pid()),
    ];
    for (b, a) in before.iter().zip(after) {
        // Buffering the body would cost 100 MiB; flow control keeps a few.
        assert!(
            a - b < 16 * MIB,
            "peak RSS grew by {} MiB during a 100 MiB upload",
            (a - b) / MIB
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_download_streams_through() {
    let pair = Pair::start_with("      timeout: 60s\n").await;
    let total = 64 * MIB;
    for use_h2 in [false, true] {
        let response = if use_h2 {
            let req = Request::get(format!("http://users/bytes?n={total}"))
                .body(empty())
                .expect("request");
            send_h2c(pair.orders.outbound(), req).await
        } else {
            send_h1(
                pair.orders.outbound(),
                get("users", &format!("/bytes?n={total}")),
            )
            .await
        };
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                received += data.len() as u64;
            }
        }
        assert_eq!(received, total, "h2 = {use_h2}");
    }
    assert!(
        peak_rss_bytes(pair.orders.pid()) < 48 * MIB,
        "the download was buffered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_arrive_one_by_one() {
    let pair = Pair::start_with("      timeout: 60s\n").await;
    let response = send_h1(
        pair.orders.outbound(),
        get("users", "/sse?n=4&interval_ms=300"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            arrivals.push(Instant::now());
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(
        text,
        "data: event 0\n\ndata: event 1\n\ndata: event 2\n\ndata: event 3\n\n"
    );
    // Buffered, all events would arrive together at the end (~900 ms in).
    assert!(
        arrivals.len() >= 4,
        "events were coalesced: {} frames",
        arrivals.len()
    );
    let spread = *arrivals.last().expect("last") - arrivals[0];
    assert!(
        spread >= Duration::from_millis(600),
        "events arrived within {spread:?}"
    );
}
