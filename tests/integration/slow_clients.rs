//! Slow, idle and too many clients: header read deadline, idle timeout,
//! maximum age, HTTP/2 pings, body idle timeout, the inbound side's wait
//! for the app, and the listeners' connection caps. Each is caused here,
//! with the settings shortened so the tests stay short.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A sidecar calling the plaintext `app` as `users`, with `http` (top-level
/// YAML lines under `http:`) and `outbound` (lines under `outbound:`).
fn sidecar(certs: &Certs, app: SocketAddr, http: &str) -> Sidecar {
    Sidecar::start(
        &SidecarConfig::new("orders", certs)
            .service("users", &[app], "      transport: plaintext\n")
            .extra(&format!("http:\n{http}")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let sidecar = sidecar(
        &certs,
        app.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 30s\n",
    );
    // A slow loris: a header byte every 200 ms, never the blank line.
    let head = b"GET /echo HTTP/1.1\r\nHost: users\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (took, mut tcp) = trickle_head(sidecar.outbound(), head).await;
    let end = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(end.is_some(), "still open after {took:?}");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    assert!(app.seen().is_empty());

    // A client that connects and says nothing is cut at the same deadline.
    let mut quiet = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    let quiet_end = closed_within(&mut quiet, Duration::from_secs(10)).await;
    assert!(
        quiet_end.is_some_and(|t| t < Duration::from_secs(5)),
        "{quiet_end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_deadline() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let sidecar = sidecar(
        &certs,
        app.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 3s\n",
    );
    let mut tcp = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: users\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut buf).await.expect("response");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Idle for twice the header deadline: still usable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: users\r\n\r\n")
        .await
        .expect("write");
    let n = tcp.read(&mut buf).await.expect("response");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the idle connection was cut"
    );
    // Then idle past the idle timeout: closed.
    let end = closed_within(&mut tcp, Duration::from_secs(8)).await;
    assert!(
        end.is_some_and(|t| t >= Duration::from_secs(2)),
        "closed after {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_gets_goaway_and_a_silent_one_is_dropped() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let sidecar = sidecar(
        &certs,
        app.addr,
        "  idle_timeout: 2s\n  h2_keepalive: 30s\n",
    );
    // A real HTTP/2 client, idle after one request: GOAWAY, then closed.
    let tcp = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = Request::get("http://users/echo")
        .body(empty())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A peer that sends the preface and then never answers a ping is
    // dropped after two keep-alive periods, idle timeout or not.
    let sidecar = sidecar_with_pings(&certs, app.addr);
    let mut tcp = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let end = closed_within(&mut tcp, Duration::from_secs(10)).await;
    assert!(end.is_some_and(|t| t < Duration::from_secs(6)), "{end:?}");
}

fn sidecar_with_pings(certs: &Certs, app: SocketAddr) -> Sidecar {
    sidecar(certs, app, "  idle_timeout: 60s\n  h2_keepalive: 1s\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn old_connections_are_closed_after_their_requests() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let sidecar = sidecar(&certs, app.addr, "  max_connection_age: 1s\n");
    let mut tcp = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    let mut buf = vec![0u8; 64 * 1024];
    // A request in flight when the connection comes of age still finishes.
    tcp.write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: users\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        let n = read.expect("closed once of age").expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("slow done"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_stops_moving_is_cut() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let sidecar = sidecar(&certs, app.addr, "  body_idle_timeout: 1s\n");
    let mut tcp = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: users\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut answer = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the stalled upload held the connection"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The app never got a whole body; whatever the client saw was not a 200.
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inbound_side_stops_waiting_for_a_hung_app() {
    let certs = Certs::new();
    let app = DemoApp::start("users", &[("DEMO_HANG", "1")]);
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .inbound_extra("  timeout: 500ms\n"),
    );
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[users.inbound()],
        "      timeout: 10s\n      retries: { attempts: 1 }\n",
    ));
    let started = Instant::now();
    let response = collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("response-timeout"));
    assert!(
        response.text().contains("pilotfish inbound"),
        "{}",
        response.text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_over_its_cap_closes_new_connections_and_keeps_serving() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let sidecar = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[app.addr], "      transport: plaintext\n")
            .outbound_extra("  max_connections: 3\n"),
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(sidecar.outbound())
            .await
            .expect("connect");
        tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: users\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 8192];
        assert!(tcp.read(&mut buf).await.expect("response") > 0);
        held.push(tcp);
    }
    // The fourth is closed at once, without an answer.
    let mut fourth = TcpStream::connect(sidecar.outbound())
        .await
        .expect("connect");
    let _ = fourth
        .write_all(b"GET /echo HTTP/1.1\r\nHost: users\r\n\r\n")
        .await;
    let end = closed_within(&mut fourth, Duration::from_secs(5)).await;
    assert!(end.is_some(), "the fourth connection was served");
    let refused = r#"pilotfish_tcp_connections_refused_total{listener="outbound"}"#;
    assert_eq!(metric(&sidecar, refused).await, 1.0);
    // One closes; a new one is served again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = collect(send_h1(sidecar.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200);
}
