//! Every error the proxy produces itself is caused here for real, and comes
//! back as a 4xx/5xx with the `pilotfish-error` header and a short body:
//! plain text, or JSON with the same fields for a client that asks for
//! JSON (`Accept`) or sent JSON.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// An orders sidecar whose `users` destination is at `endpoint`.
fn orders_to(certs: &Certs, endpoint: SocketAddr, extra: &str) -> Sidecar {
    Sidecar::start(&SidecarConfig::new("orders", certs).service("users", &[endpoint], extra))
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn assert_proxy_error(response: &Collected, status: u16, reason: &str) {
    assert_eq!(response.status, status, "body: {}", response.text());
    assert_eq!(
        response.header("pilotfish-error"),
        Some(reason),
        "{}",
        response.text()
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(response.text().contains("pilotfish"), "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_destination_gets_no_route() {
    let certs = Certs::new();
    let orders = orders_to(&certs, closed_port(), "");
    let response = collect(send_h1(orders.outbound(), get("nowhere", "/")).await).await;
    assert_proxy_error(&response, 503, "no-route");
    assert!(response.text().contains("nowhere"));

    // A request without any Host cannot be routed either (HTTP/1.0 style).
    let mut req = get("users", "/");
    req.headers_mut().remove("host");
    *req.version_mut() = http::Version::HTTP_10;
    let response = collect(send_h1(orders.outbound(), req).await).await;
    assert_proxy_error(&response, 400, "bad-request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_gets_connect_refused() {
    let certs = Certs::new();
    let orders = orders_to(&certs, closed_port(), "");
    let response = collect(send_h1(orders.outbound(), get("users", "/")).await).await;
    assert_proxy_error(&response, 503, "connect-refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_is_down_gets_connect_refused_from_the_inbound_side() {
    let certs = Certs::new();
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(closed_port()));
    let orders = orders_to(&certs, users.inbound(), "");
    let response = collect(send_h1(orders.outbound(), get("users", "/")).await).await;
    assert_proxy_error(&response, 503, "connect-refused");
    assert!(
        response.text().contains("pilotfish inbound"),
        "{}",
        response.text()
    );
}

/// Sends `req` with `Accept: application/json` and reads the JSON error.
async fn json_error(addr: SocketAddr, mut req: http::Request<TestBody>) -> serde_json::Value {
    req.headers_mut()
        .insert("accept", "application/json".parse().unwrap());
    let response = collect(send_h1(addr, req).await).await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(
        body["error"].as_str(),
        response.header("pilotfish-error"),
        "the body says what the header says: {body}"
    );
    assert_eq!(body["status"], response.status.as_u16());
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_asks_for_json_gets_its_errors_as_json() {
    let certs = Certs::new();
    // Made by this sidecar.
    let orders = orders_to(&certs, closed_port(), "");
    let error = json_error(orders.outbound(), get("nowhere", "/")).await;
    assert_eq!(error["error"], "no-route");
    assert_eq!(error["proxy"], "pilotfish outbound");
    assert!(error["message"].as_str().unwrap().contains("nowhere"));

    // Made by the far sidecar: its app is down, or the caller may not.
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(closed_port())
            .inbound_extra("  authorization:\n    rules:\n      - from: [{ service: orders }]\n        paths: [\"/users/*\"]\n"),
    );
    let orders = orders_to(&certs, users.inbound(), "");
    let error = json_error(orders.outbound(), get("users", "/users/1")).await;
    assert_eq!(error["error"], "connect-refused");
    assert_eq!(error["proxy"], "pilotfish inbound");
    let error = json_error(orders.outbound(), get("users", "/admin")).await;
    assert_eq!(error["error"], "forbidden");
    assert_eq!(error["authz"], "path-not-allowed");

    // A request that is JSON itself gets JSON back, without asking.
    let req = http::Request::post("/")
        .header("host", "nowhere")
        .header("content-type", "application/json")
        .body(crate::support::body("{}"))
        .expect("request");
    let response = collect(send_h1(orders.outbound(), req).await).await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["error"], "no-route");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_does_not_speak_tls_gets_tls_failed() {
    let certs = Certs::new();
    // A plain HTTP server where a sidecar's mTLS port should be.
    let plain = TestApp::start().await;
    let orders = orders_to(&certs, plain.addr, "");
    let response = collect(send_h1(orders.outbound(), get("users", "/")).await).await;
    assert_proxy_error(&response, 502, "tls-failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_from_another_ca_gets_tls_failed() {
    let certs = Certs::new();
    let rogue = Certs::new();
    let app = TestApp::start().await;
    let impostor = Sidecar::start(&SidecarConfig::new("users", &rogue).inbound(app.addr));
    let orders = orders_to(&certs, impostor.inbound(), "");
    let response = collect(send_h1(orders.outbound(), get("users", "/")).await).await;
    assert_proxy_error(&response, 502, "tls-failed");
    assert!(app.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_finishes_the_handshake_gets_connect_timeout() {
    let certs = Certs::new();
    // Accepts TCP, then says nothing: the TLS handshake never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let orders = orders_to(&certs, addr, "      connect_timeout: 300ms\n");
    let started = Instant::now();
    let response = collect(send_h1(orders.outbound(), get("users", "/")).await).await;
    assert_proxy_error(&response, 504, "connect-timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_app_gets_response_timeout() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let orders = orders_to(&certs, users.inbound(), "      timeout: 300ms\n");
    let started = Instant::now();
    let response = collect(send_h1(orders.outbound(), get("users", "/slow?ms=5000")).await).await;
    assert_proxy_error(&response, 504, "response-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_drops_the_connection_gets_upstream_reset() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let orders = orders_to(&certs, users.inbound(), "");
    let response = collect(send_h1(orders.outbound(), get("users", "/reset")).await).await;
    assert_proxy_error(&response, 502, "upstream-reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_sidecar_that_dies_mid_request_gets_upstream_reset() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    // No retries: a GET cut by a reset would otherwise be retried (and
    // then find the sidecar gone: connect-refused).
    let orders = orders_to(&certs, users.inbound(), "      retries: { attempts: 1 }\n");
    let outbound = orders.outbound();
    let request = tokio::spawn(async move {
        collect(send_h1(outbound, get("users", "/slow?ms=3000")).await).await
    });
    // Once the request is in the app, kill the users sidecar outright.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.seen().is_empty() {
        assert!(Instant::now() < deadline, "request never reached the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    users.signal(Signal::SIGKILL);
    let response = request.await.expect("request task");
    assert_proxy_error(&response, 502, "upstream-reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_headers_get_431_not_502() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let orders = orders_to(&certs, users.inbound(), "");

    // 100 fields pass (the default limit) through both sidecars.
    let mut req = get("users", "/echo");
    for i in 0..98 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).expect("name"),
            "v".parse().expect("value"),
        );
    }
    let response = collect(send_h1(orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());

    // 120 fields: 431 over HTTP/1.1 (from hyper) and HTTP/2 (from us).
    let many = |mut req: http::Request<TestBody>| {
        for i in 0..120 {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).expect("name"),
                "v".parse().expect("value"),
            );
        }
        req
    };
    let response = send_h1(orders.outbound(), many(get("users", "/echo"))).await;
    assert_eq!(response.status(), 431);
    let req = http::Request::get("http://users/echo")
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(orders.outbound(), many(req)).await).await;
    assert_proxy_error(&response, 431, "headers-too-large");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_headers_pass_up_to_64k_and_get_431_beyond_on_both_protocols() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let orders = orders_to(&certs, users.inbound(), "");
    let cookie = |len: usize| "c=".to_owned() + &"x".repeat(len);

    // A 40 KiB cookie (a large but real-world token) passes both ways.
    let mut req = get("users", "/echo");
    req.headers_mut()
        .insert("cookie", cookie(40 * 1024).parse().expect("value"));
    let response = collect(send_h1(orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let req = http::Request::get("http://users/echo")
        .header("cookie", cookie(40 * 1024))
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());

    // 80 KiB is over the 64 KiB limit: 431 on both protocols.
    let mut req = get("users", "/echo");
    req.headers_mut()
        .insert("cookie", cookie(80 * 1024).parse().expect("value"));
    assert_eq!(send_h1(orders.outbound(), req).await.status(), 431);
    let req = http::Request::get("http://users/echo")
        .header("cookie", cookie(80 * 1024))
        .body(empty())
        .expect("request");
    assert_eq!(send_h2c(orders.outbound(), req).await.status(), 431);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_no_host_goes_to_the_catch_all_route_when_there_is_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let legacy = TestApp::start().await;
    let orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("legacy", &[legacy.addr], "      transport: plaintext\n")
            .routes("    - { host: \"*\", service: legacy }\n"),
    );
    let mut tcp = tokio::net::TcpStream::connect(orders.outbound())
        .await
        .expect("connect");
    tcp.write_all(b"GET /echo HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    let seen = legacy.last();
    assert_eq!(seen.path, "/echo");
    assert_eq!(
        seen.headers["host"], "legacy",
        "the upstream is told where it is"
    );
}
