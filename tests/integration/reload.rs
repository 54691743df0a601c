//! Config reloads without restarts: a changed file (or SIGHUP) takes
//! effect for new requests with no request failing and no connection
//! dropped; a broken file is refused and the old config keeps serving.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

const APPLIED: &str = r#"pilotfish_reloads_total{kind="config",result="applied"}"#;
const REJECTED: &str = r#"pilotfish_reloads_total{kind="config",result="rejected"}"#;
const FULL_HANDSHAKES: &str = r#"pilotfish_tls_handshakes_total{direction="outbound",kind="full"}"#;
const SOON: Duration = Duration::from_secs(15);

/// Replaces a config file the way editors and kubectl do: write a new file,
/// rename it over the old one.
fn rewrite(sidecar: &Sidecar, yaml: &str) {
    let tmp = sidecar.config_path.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write config");
    std::fs::rename(&tmp, &sidecar.config_path).expect("rename config");
}

fn users_rules(paths: &str) -> String {
    format!(
        "  authorization:\n    rules:\n      - from: [{{ service: orders }}]\n        paths: {paths}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_rules_change_under_load_without_a_failed_request() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let other = TestApp::start().await;
    let users_leaf = certs.issue("users");
    let users_config = |paths: &str| {
        SidecarConfig::with_leaf("users", &certs, users_leaf.clone())
            .inbound(app.addr)
            .inbound_extra(&users_rules(paths))
    };
    let users = Sidecar::start(&users_config("[\"/echo\"]"));
    let orders_leaf = certs.issue("orders");
    let orders_config = || {
        SidecarConfig::with_leaf("orders", &certs, orders_leaf.clone()).service(
            "users",
            &[users.inbound()],
            "",
        )
    };
    let orders = Sidecar::start(&orders_config());
    let load = Load::start(orders.outbound(), "users", "/echo", 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new destination and route on orders.
    assert_eq!(
        send_h1(orders.outbound(), get("other", "/echo"))
            .await
            .status(),
        503
    );
    let with_other =
        orders_config().service("other", &[other.addr], "      transport: plaintext\n");
    rewrite(&orders, &with_other.yaml());
    wait_metric(&orders, APPLIED, 1.0, SOON).await;
    let response = collect(send_h1(orders.outbound(), get("other", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());

    // A wider rule on users, applied to the mesh connection already open.
    let denied = collect(send_h1(orders.outbound(), get("users", "/status/204")).await).await;
    assert_eq!(denied.status, 403);
    rewrite(&users, &users_config("[\"/echo\", \"/status/*\"]").yaml());
    wait_metric(&users, APPLIED, 1.0, SOON).await;
    let allowed = collect(send_h1(orders.outbound(), get("users", "/status/204")).await).await;
    assert_eq!(allowed.status, 204, "{}", allowed.text());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert!(report.ok > 50, "too little load: {}", report.ok);
    // The unchanged users destination kept its one mesh connection.
    assert_eq!(metric(&orders, FULL_HANDSHAKES).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_is_refused_with_its_position_and_the_old_one_keeps_serving() {
    let pair = Pair::start().await;
    let before = collect(send_h1(pair.orders.admin, get("admin", "/config")).await)
        .await
        .text();
    let broken = std::fs::read_to_string(&pair.orders.config_path)
        .expect("config")
        .replace("log:\n", "log:\n  colour: blue\n");
    rewrite(&pair.orders, &broken);
    wait_metric(&pair.orders, REJECTED, 1.0, SOON).await;
    let line = pair
        .orders
        .wait_for_log("config reload refused", Duration::from_secs(1));
    let path = path_str(&pair.orders.config_path);
    assert!(line.contains(&format!("{path}:")), "{line}");
    assert!(line.contains("unknown field `colour`"), "{line}");

    let response = collect(send_h1(pair.orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let after = collect(send_h1(pair.orders.admin, get("admin", "/config")).await)
        .await
        .text();
    assert_eq!(before, after, "/config must still show the config in force");
    assert_eq!(metric(&pair.orders, APPLIED).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config_and_config_shows_when() {
    let pair = Pair::start().await;
    let first = collect(send_h1(pair.orders.admin, get("admin", "/config")).await)
        .await
        .text();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pair.orders.signal(Signal::SIGHUP);
    wait_metric(&pair.orders, APPLIED, 1.0, SOON).await;
    let second = collect(send_h1(pair.orders.admin, get("admin", "/config")).await)
        .await
        .text();
    let loaded_at = |text: &str| text.lines().next().expect("first line").to_owned();
    assert!(
        second.starts_with("# effective config, loaded at "),
        "{second}"
    );
    assert_ne!(
        loaded_at(&first),
        loaded_at(&second),
        "the load time must move"
    );
    let response = collect(send_h1(pair.orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_listener_address_is_rebound() {
    let certs = Certs::new();
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).outbound());
    let old = orders.outbound();
    let yaml = std::fs::read_to_string(&orders.config_path).expect("config");
    // Any loopback address works on Linux: 127.0.0.2 is a second "host".
    let moved = yaml.replace(
        "outbound:\n  listen: 127.0.0.1:0",
        "outbound:\n  listen: 127.0.0.2:0",
    );
    assert_ne!(yaml, moved);
    rewrite(&orders, &moved);
    let line = orders.wait_for_log("\"addr\":\"127.0.0.2:", SOON);
    let new: std::net::SocketAddr = line
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|a| a.parse().ok())
        .expect("new address");
    let response = collect(send_h1(new, get("nowhere", "/")).await).await;
    assert_eq!(
        response.header("pilotfish-error"),
        Some("no-route"),
        "the new listener serves"
    );
    assert!(
        tokio::net::TcpStream::connect(old).await.is_err(),
        "the old listener still accepts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_mounted_from_a_kubernetes_configmap_reloads_on_its_symlink_swap() {
    let certs = Certs::new();
    let leaf = certs.issue("orders");
    let config = |extra: &str| {
        SidecarConfig::with_leaf("orders", &certs, leaf.clone())
            .outbound()
            .extra(extra)
            .yaml()
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut mount = K8sMount::new(
        &work.path().join("config"),
        &[("pilotfish.yaml", config("").into_bytes())],
    );
    // Start from the mounted path (a symlink into ..data).
    let mut orders = Sidecar::start_at(&mount.path("pilotfish.yaml"));
    mount.swap(&[(
        "pilotfish.yaml",
        config("shutdown:\n  drain_timeout: 7s\n").into_bytes(),
    )]);
    wait_metric(&orders, APPLIED, 1.0, SOON).await;
    let shown = collect(send_h1(orders.admin, get("admin", "/config")).await)
        .await
        .text();
    assert!(shown.contains("drain_timeout: 7s"), "{shown}");
    orders.signal(Signal::SIGTERM);
    assert_eq!(orders.wait_exit(SOON).and_then(|s| s.code()), Some(0));
}
