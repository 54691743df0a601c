//! Nothing from outside forges a proxy decision or crashes a task: apps and
//! plaintext upstreams cannot speak for the proxy, numbers from the wire
//! are bounded, routing sees the normalized path, the admin port shows no
//! secrets and takes changes from loopback only, and Redis answering
//! nonsense is a fallback, not a panic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A caller sidecar whose `users` destination is the plaintext `app`;
/// `extra` under the destination.
fn to_plaintext(certs: &Certs, app: SocketAddr, extra: &str) -> Sidecar {
    Sidecar::start(&SidecarConfig::new("orders", certs).service(
        "users",
        &[app],
        &format!("      transport: plaintext\n{extra}"),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_cannot_write_or_send_the_proxys_own_fields() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[users.inbound()],
        "",
    ));
    // The calling app claims to be someone else and to be a retry.
    let req = Request::get("/echo")
        .header("host", "users")
        .header(
            "pilotfish-client-id",
            "spiffe://cluster.local/ns/default/sa/admin",
        )
        .header("pilotfish-attempt", "9")
        .header("pilotfish-orig-proto", "HTTP/2.0")
        .body(empty())
        .expect("request");
    let seen = collect(send_h1(orders.outbound(), req).await).await.json();
    let headers = &seen["headers"];
    assert_eq!(
        headers["pilotfish-client-id"][0],
        "spiffe://cluster.local/ns/default/sa/orders"
    );
    assert!(headers["pilotfish-attempt"].is_null(), "{headers}");
    assert_eq!(seen["version"], "HTTP/1.1");

    // The far app answers as if it were a proxy: none of it reaches the
    // caller, through the mesh or from a plaintext upstream.
    let forged = "/status/200?set=pilotfish-error:forbidden&set=pilotfish-authz:no-rule-for-caller&set=pilotfish-fallback:static";
    let direct = to_plaintext(&certs, app.addr, "");
    for caller in [&orders, &direct] {
        let response = collect(send_h1(caller.outbound(), get("users", forged)).await).await;
        assert_eq!(response.status, 200);
        for field in ["pilotfish-error", "pilotfish-authz", "pilotfish-fallback"] {
            assert_eq!(response.header(field), None, "{field} came through");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_retry_after_is_a_bounded_wait_not_a_crash() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let caller = to_plaintext(
        &certs,
        app.addr,
        "      timeout: 2s\n      retries: { attempts: 3, on: [\"503\"] }\n",
    );
    let huge = format!("/status/503?set=retry-after:{}", u64::MAX);
    for path in [
        huge.as_str(),
        "/status/503?set=retry-after:Fri,%2031%20Dec%209999%2023:59:59%20GMT",
    ] {
        let started = Instant::now();
        let response = collect(send_h1(caller.outbound(), get("users", path)).await).await;
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(started.elapsed() < Duration::from_secs(1), "it waited");
    }
    // Not retried (the wait outlasts the request), and still serving.
    assert_eq!(app.seen().len(), 2);
    let live = collect(send_h1(caller.admin, get("admin", "/live")).await).await;
    assert_eq!(live.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_match_the_normalized_path() {
    let certs = Certs::new();
    let users = TestApp::start().await;
    let admin = TestApp::start().await;
    let caller = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.addr], "      transport: plaintext\n")
            .service("admin-api", &[admin.addr], "      transport: plaintext\n")
            .routes("    - { host: users, path_prefix: /status, service: admin-api }\n"),
    );
    for path in [
        "/x/../status/200",
        "/%73tatus/200",
        "/./status/200",
        "/status/x/%2e%2e/200",
    ] {
        let response = collect(send_h1(caller.outbound(), get("users", path)).await).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
    }
    let paths: Vec<String> = admin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths, ["/status/200"; 4],
        "the route and the upstream saw one path"
    );
    assert!(users.seen().is_empty());
}

/// This machine's address on a non-loopback interface.
fn outside_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    // Connecting a UDP socket sends nothing; it only picks the route.
    socket
        .connect("10.255.255.1:9")
        .expect("a route off the machine");
    let ip = socket.local_addr().expect("addr").ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_reads_for_anyone_changes_for_loopback_and_hides_secrets() {
    let certs = Certs::new();
    let sidecar = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[free_addr()], "")
            .extra(
                "rate_limits:
  - name: shared
    direction: outbound
    service: users
    rate: 100
    key: { header: x-api-key }
    overrides: [{ value: key-of-a-big-customer, rate: 500 }]
    global: { redis: \"redis://app:hunter2@127.0.0.1:1\" }
",
            )
            .admin_listen("0.0.0.0:0".parse().unwrap()),
    );
    let outside = SocketAddr::new(outside_address(), sidecar.admin.port());
    let local = SocketAddr::new([127, 0, 0, 1].into(), sidecar.admin.port());
    let set_level = || {
        Request::post("/log-level?level=debug")
            .header("host", "admin")
            .body(empty())
            .expect("request")
    };
    // Probes and scrapes work from anywhere; changes only from loopback.
    for path in ["/live", "/ready", "/metrics", "/config"] {
        let response = collect(send_h1(outside, get("admin", path)).await).await;
        assert_eq!(response.status, 200, "{path}");
    }
    let refused = collect(send_h1(outside, set_level()).await).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("loopback"));
    // Nor can anyone outside the pod stop the sidecar.
    let stop = Request::post("/shutdown")
        .header("host", "admin")
        .body(empty())
        .expect("request");
    let refused = collect(send_h1(outside, stop).await).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let ready = collect(send_h1(local, get("admin", "/ready")).await).await;
    assert_eq!(ready.status, 200, "still serving");
    let allowed = collect(send_h1(local, set_level()).await).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());

    let config = collect(send_h1(outside, get("admin", "/config")).await)
        .await
        .text();
    assert!(!config.contains("hunter2"), "{config}");
    assert!(!config.contains("key-of-a-big-customer"), "{config}");
    assert!(
        config.contains("redis://app:<redacted>@127.0.0.1:1"),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_admin_client_is_cut_off() {
    let certs = Certs::new();
    let sidecar = Sidecar::start(&SidecarConfig::new("orders", &certs).outbound());
    let mut tcp = tokio::net::TcpStream::connect(sidecar.admin)
        .await
        .expect("connect");
    tcp.write_all(b"GET /live HTTP/1.1\r\nHost: admin\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // Never finishing the headers, the connection is closed on us.
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(read.is_ok(), "still open after 15 s");
    assert!(took >= Duration::from_secs(3), "closed after {took:?}");
}

/// A server on a free port that speaks just enough of Redis's protocol to
/// answer every script call with `reply`, and anything else with OK.
async fn broken_redis(reply: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                    // A command per array; a pipeline brings several.
                    for command in text.split('*').skip(1) {
                        let answer: &[u8] = if command.contains("EVAL") {
                            reply
                        } else {
                            b"+OK\r\n"
                        };
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_answering_nonsense_is_a_fallback_not_a_crash() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let replies: [&'static [u8]; 4] = [
        b"*0\r\n",
        b"*1\r\n:3\r\n",
        b"-ERR broken\r\n",
        b"$5\r\nhello\r\n",
    ];
    for reply in replies {
        let redis = broken_redis(reply).await;
        let caller = Sidecar::start(
            &SidecarConfig::new("orders", &certs)
                .service("users", &[app.addr], "      transport: plaintext\n")
                .extra(&format!(
                    "rate_limits:
  - name: shared
    direction: outbound
    service: users
    rate: 1000
    global: {{ redis: \"redis://{redis}\", timeout: 200ms }}
"
                )),
        );
        for _ in 0..20 {
            let response = collect(send_h1(caller.outbound(), get("users", "/echo")).await).await;
            assert_eq!(response.status, 200, "{}", response.text());
        }
        wait_metric(
            &caller,
            r#"pilotfish_rate_limit_degraded{limit="shared"}"#,
            1.0,
            Duration::from_secs(10),
        )
        .await;
        let live = collect(send_h1(caller.admin, get("admin", "/live")).await).await;
        assert_eq!(live.status, 200);
        assert!(
            !caller.logs().iter().any(|l| l.contains("panicked")),
            "{}",
            caller.logs().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_with_bare_lf_line_ends_is_refused_and_forwards_nothing() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let caller = to_plaintext(&certs, app.addr, "");
    for head in [
        &b"GET /echo HTTP/1.1\nHost: users\n\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: users\nX-Smuggled: 1\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(caller.outbound())
            .await
            .expect("connect");
        tcp.write_all(head).await.expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "still open");
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains("200 OK"), "{text}");
    }
    assert!(app.seen().is_empty(), "forwarded: {:?}", app.seen().len());
    // A body may hold bare LFs: it is the app's business.
    let req = Request::post("/echo")
        .header("host", "users")
        .body(body("line one\nline two\n"))
        .expect("request");
    let response = collect(send_h1(caller.outbound(), req).await).await;
    assert_eq!(response.status, 200);
}
