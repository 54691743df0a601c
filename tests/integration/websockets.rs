//! WebSockets (HTTP/1.1 upgrades) through one sidecar and through a
//! sidecar pair, over the HTTP/2 link (extended CONNECT, RFC 8441) and the
//! HTTP/1.1 link: every kind of message, ping and pong, a 1 MiB message,
//! the close handshake; a refused upgrade comes back as the server sent it;
//! the tunnel outlives a config reload, is logged once when it ends, and
//! keeps the drain waiting.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::websocket::*;
use crate::support::*;

/// How the caller's sidecar reaches the WebSocket server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Straight to it (`transport: plaintext`).
    OneSidecar,
    /// Through its own sidecar, over the HTTP/2 link.
    PairH2,
    /// Through its own sidecar, over the HTTP/1.1 link.
    PairH1,
}

/// The `chat` server behind `path`: the caller sidecar, and the far one.
fn mesh(
    certs: &Certs,
    server: SocketAddr,
    path: Path,
    caller_extra: &str,
) -> (Sidecar, Option<Sidecar>) {
    let far = (path != Path::OneSidecar)
        .then(|| Sidecar::start(&SidecarConfig::new("chat", certs).inbound(server)));
    let (endpoint, extra) = match (&far, path) {
        (None, _) => (server, "      transport: plaintext\n"),
        (Some(far), Path::PairH1) => (far.inbound(), "      protocol: http1\n"),
        (Some(far), _) => (far.inbound(), ""),
    };
    let caller = Sidecar::start(
        &SidecarConfig::new("orders", certs)
            .service("chat", &[endpoint], extra)
            .extra(caller_extra),
    );
    (caller, far)
}

async fn a_websocket_carries_everything(path: Path) {
    let certs = Certs::new();
    let server = WsServer::start().await;
    let (caller, far) = mesh(&certs, server.addr, path, "access_log: { format: json }\n");
    let ws = ws_connect(caller.outbound(), "ws://chat/socket").await;
    exercise(ws).await;
    assert_eq!(server.upgraded(), 1);
    assert_eq!(server.closed_cleanly(), 1);
    let seen = &server.seen()[0];
    assert_eq!(seen.header("sec-websocket-version"), Some("13"));
    if far.is_some() {
        assert_eq!(
            seen.header("pilotfish-client-id"),
            Some("spiffe://cluster.local/ns/default/sa/orders"),
            "the far sidecar said who called"
        );
    }
    // One access log line, once the tunnel ended, with bytes each way.
    let lines = caller.wait_access_log(1, Duration::from_secs(10));
    let line = &lines[0];
    assert_eq!(line["status"], 101, "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 1 << 20, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 1 << 20, "{line}");
    let tunnels = r#"pilotfish_tunnels_closed_total{direction="outbound",end="closed",kind="websocket",service="chat"}"#;
    wait_metric(&caller, tunnels, 1.0, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_carries_everything_through_one_sidecar() {
    a_websocket_carries_everything(Path::OneSidecar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_carries_everything_through_a_pair_over_http2() {
    a_websocket_carries_everything(Path::PairH2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_carries_everything_through_a_pair_over_http1() {
    a_websocket_carries_everything(Path::PairH1).await;
}

async fn a_refused_upgrade_comes_back_unchanged(path: Path) {
    let certs = Certs::new();
    let server = WsServer::refusing(
        Refusal::new(426, "upgrade to something else").header("x-reason", "old client"),
    )
    .await;
    let (caller, _far) = mesh(&certs, server.addr, path, "");
    let refused = upgrade_refused(caller.outbound(), "chat", "/socket").await;
    assert_eq!(refused.status, 426, "{}", refused.text());
    assert_eq!(refused.text(), "upgrade to something else");
    assert_eq!(refused.header("x-reason"), Some("old client"));
    assert_eq!(
        refused.header("pilotfish-error"),
        None,
        "the app's answer, not ours"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upgrade_comes_back_unchanged_through_one_sidecar() {
    a_refused_upgrade_comes_back_unchanged(Path::OneSidecar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upgrade_comes_back_unchanged_through_a_pair() {
    a_refused_upgrade_comes_back_unchanged(Path::PairH2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_far_sidecars_policy_decides_an_upgrade_like_a_get() {
    let certs = Certs::new();
    let server = WsServer::start().await;
    let far = Sidecar::start(
        &SidecarConfig::new("chat", &certs)
            .inbound(server.addr)
            .inbound_extra(
                "  authorization:\n    rules:\n      - from: [{ service: orders }]\n        paths: [\"/socket\"]\n        methods: [GET]\n",
            ),
    );
    let caller =
        Sidecar::start(&SidecarConfig::new("orders", &certs).service("chat", &[far.inbound()], ""));
    exercise(ws_connect(caller.outbound(), "ws://chat/socket").await).await;
    let refused = upgrade_refused(caller.outbound(), "chat", "/admin").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("pilotfish-authz"), Some("path-not-allowed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_outlives_a_config_reload_and_holds_the_drain() {
    let certs = Certs::new();
    let server = WsServer::start().await;
    let far = Sidecar::start(&SidecarConfig::new("chat", &certs).inbound(server.addr));
    let config = SidecarConfig::new("orders", &certs)
        .service("chat", &[far.inbound()], "")
        .extra("shutdown: { drain_timeout: 20s }\n");
    let mut caller = Sidecar::start(&config);
    let mut ws = ws_connect(caller.outbound(), "ws://chat/socket").await;
    assert_echo(&mut ws, tungstenite_text("before")).await;

    // A reload (the destination's timeout changes): the tunnel stays.
    let changed = config
        .yaml()
        .replace("    chat:\n", "    chat:\n      timeout: 3s\n");
    let staged = caller.config_path.with_extension("new");
    std::fs::write(&staged, changed).expect("write");
    std::fs::rename(&staged, &caller.config_path).expect("rename");
    wait_metric(
        &caller,
        r#"pilotfish_reloads_total{kind="config",result="applied"}"#,
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert_echo(&mut ws, tungstenite_text("after the reload")).await;

    // SIGTERM: the sidecar drains, and waits for the open WebSocket.
    caller.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        caller.wait_exit(Duration::from_millis(100)).is_none(),
        "it did not wait"
    );
    assert_echo(&mut ws, tungstenite_text("while draining")).await;
    close_cleanly(ws).await;
    let status = caller
        .wait_exit(Duration::from_secs(10))
        .expect("it exits once the tunnel ends");
    assert!(status.success(), "{status:?}");
}

fn tungstenite_text(text: &str) -> tokio_tungstenite::tungstenite::Message {
    tokio_tungstenite::tungstenite::Message::text(text)
}
