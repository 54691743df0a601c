//! DNS discovery: a destination given as a name whose answers change.
//! The orders sidecar runs in a private mount namespace (root) where
//! `/etc/hosts` is a file this test rewrites: endpoints join and leave
//! without a restart, and a name that stops resolving keeps the last ones.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

const INBOUND: &str = r#"pilotfish_requests_total{direction="inbound",service="users""#;

/// Rewrites the hosts file in place (a bind mount follows the inode, not
/// the name, so no rename).
fn hosts(path: &Path, ips: &[&str]) {
    let text: String = ips.iter().map(|ip| format!("{ip} users.test\n")).collect();
    std::fs::write(path, text).expect("write hosts");
}

/// The endpoint addresses the orders sidecar is using, from `/destinations`.
async fn endpoints(orders: &Sidecar) -> Vec<String> {
    let view = collect(send_h1(orders.admin, get("admin", "/destinations")).await)
        .await
        .json();
    let mut addrs: Vec<String> = view[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["addr"].as_str().expect("addr").to_owned())
        .collect();
    addrs.sort();
    addrs
}

async fn wait_for_endpoints(orders: &Sidecar, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = endpoints(orders).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints are {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_follow_the_dns_answers() {
    let certs = Certs::new();
    let leaf = certs.issue("users");
    // Two users sidecars on the same port of two loopback addresses, as
    // two pods behind a headless Service.
    let app = DemoApp::start("users", &[]);
    let first = Sidecar::start(
        &SidecarConfig::with_leaf("users", &certs, leaf.clone())
            .inbound(app.addr)
            .inbound_listen("127.0.0.2:0".parse().expect("addr")),
    );
    let port = first.inbound().port();
    let second_addr: SocketAddr = format!("127.0.0.3:{port}").parse().expect("addr");
    let second = Sidecar::start(
        &SidecarConfig::with_leaf("users", &certs, leaf)
            .inbound(app.addr)
            .inbound_listen(second_addr),
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let hosts_file = dir.path().join("hosts");
    hosts(&hosts_file, &["127.0.0.2"]);
    let orders = Sidecar::start_with_hosts(
        &SidecarConfig::new("orders", &certs).service(
            "users",
            &[],
            &format!("      dns: users.test:{port}\n      dns_refresh: 200ms\n"),
        ),
        &hosts_file,
    );
    let only_first = vec![first.inbound().to_string()];
    wait_for_endpoints(&orders, &only_first).await;
    let load = Load::start(orders.outbound(), "users", "/echo", 2);

    // A second address joins.
    hosts(&hosts_file, &["127.0.0.2", "127.0.0.3"]);
    wait_for_endpoints(
        &orders,
        &[first.inbound().to_string(), second_addr.to_string()],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(&second, INBOUND).await < 5.0 {
        assert!(Instant::now() < deadline, "the new endpoint got no traffic");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The first leaves: it is drained, the second takes everything.
    hosts(&hosts_file, &["127.0.0.3"]);
    wait_for_endpoints(&orders, &[second_addr.to_string()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = metric_sum(&first, INBOUND).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric_sum(&first, INBOUND).await,
        before,
        "a removed endpoint still gets requests"
    );

    // The name stops resolving: the last known endpoints stay.
    hosts(&hosts_file, &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(endpoints(&orders).await, vec![second_addr.to_string()]);
    orders.wait_for_log("DNS lookup failed", Duration::from_secs(5));

    let report = load.stop().await;
    assert!(report.failures.is_empty(), "failed: {:?}", report.failures);
}
