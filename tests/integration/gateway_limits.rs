//! Per-client rate limits at the gateway: keyed on a token's claim, an
//! API-key header or the client's address (which a client cannot choose:
//! `X-Forwarded-For` counts only as far as the trusted hops), locally and
//! shared through Redis.

use std::time::Duration;

use http::Request;

use crate::support::gateway::*;
use crate::support::redis::Redis;
use crate::support::*;

/// A gateway in front of `orders` with HS256 tokens, every route needing
/// one except `/open`, the given `rate_limits:` and `trusted_hops`.
struct Limited {
    keys: TokenKeys,
    _orders: MeshService,
    gateway: Sidecar,
    _certs: Certs,
}

impl Limited {
    async fn start(limits: &str, trusted_hops: u32) -> Self {
        let certs = Certs::new();
        let keys = TokenKeys::new();
        let orders = MeshService::start(&certs, "orders").await;
        let yaml = GatewaySetup::new(&certs)
            .mesh("orders", &[orders.endpoint()])
            .gateway(&jwt_yaml(&keys.secret_only(), ""))
            .gateway(
                "  routes:
    - { name: open, path_prefix: /open, service: orders, auth: public }
    - { name: orders, path_prefix: /orders, service: orders }
",
            )
            .extra(limits)
            .yaml()
            .replacen(
                "trusted_hops: 0",
                &format!("trusted_hops: {trusted_hops}"),
                1,
            );
        let gateway = Sidecar::start_yaml(&yaml);
        Self {
            keys,
            _orders: orders,
            gateway,
            _certs: certs,
        }
    }

    fn token(&self, sub: &str) -> String {
        self.keys.hs256(&claims(sub, &["user"]))
    }

    /// The statuses of `n` requests built by `req`.
    async fn statuses(&self, n: usize, req: impl Fn() -> Request<TestBody>) -> Vec<u16> {
        let mut statuses = Vec::new();
        for _ in 0..n {
            statuses.push(call(&self.gateway, req()).await.status.as_u16());
        }
        statuses
    }
}

/// A limit of `burst` requests and then (practically) none, so the test
/// does not race the refill.
fn limit(name: &str, key: &str, burst: u32, global: &str) -> String {
    format!(
        "rate_limits:\n  - {{ name: {name}, direction: gateway, key: {key}, rate: 0.001, burst: {burst}{global} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_user_has_a_bucket_of_their_own_by_the_token_s_subject() {
    let edge = Limited::start(&limit("per-user", "{ claim: sub }", 3, ""), 0).await;
    let alice = edge.token("alice");
    let statuses = edge
        .statuses(4, || get_with("/orders/1", Some(&alice)))
        .await;
    assert_eq!(statuses, [200, 200, 200, 429], "alice's bucket");
    let limited = call(&edge.gateway, get_with("/orders/1", Some(&alice))).await;
    assert_eq!(limited.header("pilotfish-error"), Some("rate-limited"));
    assert!(limited.header("retry-after").is_some(), "429 says when");
    // Bob is not slowed by Alice.
    let bob = edge.token("bob");
    let statuses = edge.statuses(3, || get_with("/orders/1", Some(&bob))).await;
    assert_eq!(statuses, [200, 200, 200], "bob's bucket");
    // The access log says whose requests they were.
    let lines = edge.gateway.wait_access_log(8, Duration::from_secs(5));
    let users: Vec<&str> = lines.iter().filter_map(|l| l["user"].as_str()).collect();
    assert_eq!(users, [["alice"; 5].as_slice(), &["bob"; 3]].concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_header_keys_its_own_bucket() {
    let edge = Limited::start(&limit("per-key", "{ header: x-api-key }", 2, ""), 0).await;
    let with_key = |key: &'static str| {
        move || {
            request("GET", "/open/x")
                .header("x-api-key", key)
                .body(empty())
                .expect("request")
        }
    };
    assert_eq!(edge.statuses(3, with_key("k1")).await, [200, 200, 429]);
    assert_eq!(edge.statuses(2, with_key("k2")).await, [200, 200]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_pick_its_own_address_with_x_forwarded_for() {
    // No proxy trusted: every forged X-Forwarded-For is the same client,
    // the peer.
    let edge = Limited::start(&limit("per-client", "client-address", 2, ""), 0).await;
    let forged = |n: usize| {
        request("GET", "/open/x")
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .body(empty())
            .expect("request")
    };
    let mut statuses = Vec::new();
    for n in 0..3 {
        statuses.push(call(&edge.gateway, forged(n)).await.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "forged addresses share the peer's bucket"
    );

    // One trusted proxy in front: the address it appended is the client.
    let edge = Limited::start(&limit("per-client", "client-address", 2, ""), 1).await;
    let behind = |client: &'static str| {
        move || {
            request("GET", "/open/x")
                .header("x-forwarded-for", format!("6.6.6.6, {client}"))
                .body(empty())
                .expect("request")
        }
    };
    assert_eq!(edge.statuses(3, behind("192.0.2.1")).await, [200, 200, 429]);
    // Another client behind the same proxy, whatever it claims further left.
    assert_eq!(edge.statuses(2, behind("192.0.2.2")).await, [200, 200]);
    // The access log names the client so found.
    let lines = edge.gateway.wait_access_log(5, Duration::from_secs(5));
    let clients: Vec<&str> = lines.iter().filter_map(|l| l["client"].as_str()).collect();
    assert_eq!(
        clients,
        [
            "192.0.2.1",
            "192.0.2.1",
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.2"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_a_user_s_budget_through_redis() {
    let redis = Redis::start();
    let global = format!(
        ", global: {{ redis: \"{}\", sync_interval: 50ms, timeout: 500ms }}",
        redis.url()
    );
    let limits = limit("per-user", "{ claim: sub }", 4, &global);
    let one = Limited::start(&limits, 0).await;
    let two = Limited::start(&limits, 0).await;
    // Each gateway knows its own signing secret; the subject is the same.
    let token = one.token("alice");
    let token_two = two.token("alice");
    let mut passed = 0;
    for i in 0..12 {
        let (gateway, token) = if i % 2 == 0 {
            (&one.gateway, &token)
        } else {
            (&two.gateway, &token_two)
        };
        let status = call(gateway, get_with("/orders/1", Some(token)))
            .await
            .status;
        if status == 200 {
            passed += 1;
        } else {
            assert_eq!(status, 429);
        }
    }
    // One budget of 4 for alice across both (batched reservations may let
    // a request or two more through, never each gateway's whole burst).
    assert!((4..=6).contains(&passed), "{passed} of 12 passed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_over_its_connection_cap_closes_the_next_client_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let gateway = GatewaySetup::new(&certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway("  max_connections: 2\n  routes:\n    - { path_prefix: /, service: orders }\n")
        .start();
    let addr = plain(&gateway);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 8192];
        assert!(tcp.read(&mut buf).await.expect("response") > 0);
        held.push(tcp);
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = third
        .write_all(b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut third, Duration::from_secs(5))
            .await
            .is_some(),
        "the third connection was served"
    );
    let refused = r#"pilotfish_tcp_connections_refused_total{listener="gateway"}"#;
    assert_eq!(
        crate::support::inspect::metric(&gateway, refused).await,
        1.0
    );
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(call(&gateway, get_with("/x", None)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_tls_handshake_is_dropped() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let server = ServerCert::new();
    let gateway = GatewaySetup::new(&certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway(&server.yaml())
        .gateway("  routes:\n    - { path_prefix: /, service: orders }\n")
        .start();
    let addr = gateway.gateway_tls.expect("gateway-tls listener");
    // Connected, and silent: no ClientHello.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let closed = closed_within(&mut silent, Duration::from_secs(30)).await;
    let after = closed.expect("the silent client was still connected after 30 s");
    assert!(
        after >= Duration::from_secs(5),
        "dropped too soon: {after:?}"
    );
    let failures =
        r#"pilotfish_tls_handshake_failures_total{direction="gateway",reason="timeout"}"#;
    assert_eq!(
        crate::support::inspect::metric(&gateway, failures).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_get_the_edge_s_stream_cap() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let gateway = GatewaySetup::new(&certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway("  routes:\n    - { path_prefix: /, service: orders, auth: public }\n")
        .start();
    let tcp = tokio::net::TcpStream::connect(plain(&gateway))
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::get("http://api.test/x")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(req, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    // The server's SETTINGS arrived with the first answer: 100 streams at
    // once per client, Envoy's advice for an edge (a sidecar allows 1024).
    assert_eq!(client.current_max_send_streams(), 100);
}
