//! The admin listener: liveness, readiness, Prometheus metrics and the
//! effective config (key paths shown, key material never).

use http::Request;

use crate::support::*;

const SOON: std::time::Duration = std::time::Duration::from_secs(10);

async fn admin_get(sidecar: &Sidecar, path: &str) -> Collected {
    collect(send_h1(sidecar.admin, get("admin", path)).await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn live_ready_metrics_and_config() {
    let Pair { orders, users, .. } = &Pair::start().await;

    assert_eq!(admin_get(orders, "/live").await.status, 200);
    let ready = admin_get(orders, "/ready").await;
    assert_eq!(
        (ready.status.as_u16(), ready.text().as_str()),
        (200, "ready\n")
    );

    for path in ["/echo", "/echo", "/status/503"] {
        collect(send_h1(orders.outbound(), get("users", path)).await).await;
    }
    collect(send_h1(orders.outbound(), get("nowhere", "/")).await).await;

    let metrics = admin_get(orders, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for (selector, value) in [
        (
            r#"pilotfish_requests_total{direction="outbound",service="users",route="default",peer="",status="200"}"#,
            2.0,
        ),
        (
            r#"pilotfish_requests_total{direction="outbound",service="users",status="503"}"#,
            1.0,
        ),
        (
            r#"pilotfish_requests_total{direction="outbound",service="unknown",route="",status="503"}"#,
            1.0,
        ),
        (
            r#"pilotfish_request_duration_seconds_count{direction="outbound",service="users",route="default"}"#,
            3.0,
        ),
        (r#"pilotfish_build_info{version="0.1.0"}"#, 1.0),
        (
            r#"pilotfish_tcp_connections_opened_total{listener="outbound"}"#,
            4.0,
        ),
    ] {
        assert_eq!(
            sum_matching(&text, selector),
            value,
            "{selector} in:\n{text}"
        );
    }
    for family in [
        "pilotfish_request_duration_seconds_bucket{",
        "pilotfish_process_resident_memory_bytes ",
        "pilotfish_process_cpu_seconds_total ",
        "pilotfish_process_open_fds ",
        "pilotfish_tcp_connections_active{",
        "pilotfish_tcp_received_bytes_total{",
        "pilotfish_tcp_sent_bytes_total{",
        "pilotfish_spans_dropped_total",
    ] {
        assert!(text.contains(family), "missing {family:?} in:\n{text}");
    }
    let inbound = admin_get(users, "/metrics").await.text();
    let caller = r#"peer="spiffe://cluster.local/ns/default/sa/orders""#;
    assert_eq!(
        sum_matching(
            &inbound,
            &format!(
                r#"pilotfish_requests_total{{direction="inbound",service="users",{caller},status="200"}}"#
            )
        ),
        2.0,
        "{inbound}"
    );
    assert!(
        sum_matching(
            &inbound,
            r#"pilotfish_tcp_connections_opened_total{listener="inbound"}"#
        ) >= 1.0,
        "{inbound}"
    );

    let config = admin_get(orders, "/config").await;
    assert_eq!(config.status, 200);
    assert_eq!(
        config.header("content-type"),
        Some("application/yaml; charset=utf-8")
    );
    let yaml = config.text();
    assert!(yaml.starts_with("# effective config, loaded at "), "{yaml}");
    assert!(yaml.contains("service: orders"), "{yaml}");
    assert!(
        yaml.contains("orders-key.pem"),
        "the key path is shown: {yaml}"
    );
    assert!(yaml.contains("timeout: 15s"), "defaults are shown: {yaml}");
    assert!(!yaml.contains("PRIVATE KEY"), "key material leaked: {yaml}");

    assert_eq!(admin_get(orders, "/nope").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_level_changes_at_run_time() {
    let Pair { orders, .. } = &Pair::start().await;
    assert_eq!(admin_get(orders, "/log-level").await.text(), "info\n");

    let set = |query: &str| {
        Request::post(format!("/log-level?{query}"))
            .header("host", "admin")
            .body(empty())
            .expect("request")
    };
    let changed = collect(send_h1(orders.admin, set("level=debug")).await).await;
    assert_eq!(
        (changed.status.as_u16(), changed.text().as_str()),
        (200, "debug\n")
    );
    assert_eq!(admin_get(orders, "/log-level").await.text(), "debug\n");
    orders.wait_for_log("log filter changed through the admin port", SOON);
    // Debug lines now appear: a request to a destination logs its
    // connection at debug level.
    collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
    orders.wait_for_log(r#""level":"DEBUG""#, SOON);

    let bad = collect(send_h1(orders.admin, set("level=no%20such%3D%3Dfilter")).await).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("bad filter"), "{}", bad.text());
    let missing = collect(send_h1(orders.admin, set("other=1")).await).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        admin_get(orders, "/log-level").await.text(),
        "debug\n",
        "unchanged"
    );

    let back = collect(
        send_h1(
            orders.admin,
            set("level=info%2Cpilotfish%3A%3Aoutbound%3Dwarn"),
        )
        .await,
    )
    .await;
    assert_eq!(back.text(), "info,pilotfish::outbound=warn\n");
}
