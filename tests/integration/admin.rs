//! The admin listener: liveness, readiness, Prometheus metrics and the
//! effective config (key paths shown, key material never).

use crate::support::*;

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
    for line in [
        r#"pilotfish_requests_total{direction="outbound",service="users",status="200"} 2"#,
        r#"pilotfish_requests_total{direction="outbound",service="users",status="503"} 1"#,
        r#"pilotfish_requests_total{direction="outbound",service="unknown",status="503"} 1"#,
        r#"pilotfish_request_duration_seconds_count{direction="outbound",service="users"} 3"#,
        r#"pilotfish_request_duration_seconds_bucket{direction="outbound",service="users",le="0.0005"}"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let inbound = admin_get(users, "/metrics").await.text();
    assert!(
        inbound.contains(
            r#"pilotfish_requests_total{direction="inbound",service="users",status="200"} 2"#
        ),
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
