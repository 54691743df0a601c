//! Faults, each caused by a test: the app crashes with requests in flight;
//! the peer sidecar dies mid-stream; the DNS server stops answering; the
//! certificate files become unreadable; a second SIGTERM arrives during
//! the drain; the disk of the access log fills. Each must leave the
//! sidecar up (`/live` answers, new requests are served), answer the
//! requests it hits with a clear proxy answer (a 5xx with
//! `pilotfish-error`, or a body cut so that the client sees an error, never
//! a clean end), and pass without a restart once the fault is gone.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use nix::sys::signal::Signal;
use tokio::net::UdpSocket;

use crate::support::files::read;
use crate::support::origins::{Hops, Origins, call};
use crate::support::test_app::BoxError;
use crate::support::*;

/// Long enough for anything the sidecar does in the background (the file
/// poll is every 5 s), short enough to keep a failing test quick.
const SOON: Duration = Duration::from_secs(15);

/// Asserts that the admin port says the process is alive.
async fn assert_live(sidecar: &Sidecar) {
    let response = collect(send_h1(sidecar.admin, get("admin", "/live")).await).await;
    assert_eq!(response.status, 200, "/live: {}", response.text());
}

/// Asserts a response the proxy made itself: `status` and
/// `pilotfish-error: reason`, one of `reasons`.
#[track_caller]
fn assert_proxy_error(response: &Collected, reasons: &[(u16, &str)], what: &str) {
    let got = (
        response.status.as_u16(),
        response.header("pilotfish-error").unwrap_or("(none)"),
    );
    assert!(
        reasons.iter().any(|(s, r)| (*s, *r) == got),
        "{what}: got {} with pilotfish-error {}, want one of {reasons:?}: {}",
        got.0,
        got.1,
        response.text()
    );
    assert!(
        response.text().contains("pilotfish"),
        "{what}: the body does not say who answered: {}",
        response.text()
    );
}

/// Sends `GET path` to `users` through `caller` until it answers 200,
/// then `more` times again, each of which must answer 200.
async fn until_served(caller: &Sidecar, path: &str, more: usize) {
    let deadline = Instant::now() + SOON;
    loop {
        let response = call(caller, path).await;
        if response.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {SOON:?}: {}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..more {
        let response = call(caller, path).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

/// How a streamed body ended: `Ok(bytes)` at a clean end, `Err(why)` if
/// it broke. Panics if it did neither within `within`.
async fn finish(body: &mut Incoming, within: Duration) -> Result<u64, String> {
    let read = async {
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(e) => return Err(format!("{e} ({e:?}) after {bytes} bytes")),
            }
        }
        Ok(bytes)
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("the body neither ended nor broke within {within:?}"))
}

/// Asserts that a body cut by a fault ends in an error the client sees,
/// not in a clean end (a silent truncation).
async fn assert_cut(what: &str, body: &mut Incoming) {
    match finish(body, Duration::from_secs(10)).await {
        Err(why) => eprintln!("{what}: cut as it should be: {why}"),
        Ok(bytes) => panic!(
            "{what}: the body ended cleanly after {bytes} more bytes: the client cannot tell it was cut"
        ),
    }
}

/// Reads the first data frame of a streaming response.
async fn first_bytes(what: &str, body: &mut Incoming) {
    let read = async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) if frame.data_ref().is_some_and(|d| !d.is_empty()) => return,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{what}: broke before the fault: {e}"),
                None => panic!("{what}: ended before the fault"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing streamed within 10 s"));
}

// ---------------------------------------------------------------------
// The app crashes, or restarts, with requests in flight.

/// POST (never retried once it may have reached the app) held `delay` by
/// the app.
fn slow_post(outbound: SocketAddr, delay: &str) -> tokio::task::JoinHandle<Collected> {
    let req = post_request(&format!("/echo?delay={delay}"));
    tokio::spawn(async move { collect(send_h1(outbound, req).await).await })
}

/// `GET` held `delay` by the app (retried if the app resets it).
fn slow_get(outbound: SocketAddr, delay: &str) -> tokio::task::JoinHandle<Collected> {
    let path = format!("/echo?delay={delay}");
    tokio::spawn(async move { collect(send_h1(outbound, get("users", &path)).await).await })
}

/// Requests the demo app at `addr` has received (`GET /stats`).
async fn stats_requests(addr: SocketAddr) -> u64 {
    collect(send_h1(addr, get("users", "/stats")).await)
        .await
        .json()["requests"]
        .as_u64()
        .expect("a count")
}

async fn an_app_that_crashes_with_requests_in_flight(hops: Hops) {
    let certs = Certs::new();
    let mut origins = Origins::start(&certs, hops, 1);
    let caller = origins.caller(&certs, "      timeout: 30s\n");
    until_served(&caller, "/echo", 2).await;
    let before = origins.total().await;

    // Requests in flight: POSTs and GETs the app holds, and a stream the
    // app has begun.
    let outbound = caller.outbound();
    let posts: Vec<_> = (0..3).map(|_| slow_post(outbound, "10s")).collect();
    let gets: Vec<_> = (0..2).map(|_| slow_get(outbound, "10s")).collect();
    let stream = send_h1(outbound, get("users", "/sse?n=10000&interval=20ms")).await;
    assert_eq!(stream.status(), 200);
    let mut stream = stream.into_body();
    first_bytes("the stream", &mut stream).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while origins.total().await < before + 6 {
        assert!(
            Instant::now() < deadline,
            "the requests never reached the app"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let addr = origins.apps[0].addr;
    let crashed = Instant::now();
    origins.apps[0].kill();

    // A POST that reached the app is not sent again: the reset is the
    // answer. A GET may be tried again, and then finds nobody listening.
    for held in posts {
        let response = held.await.expect("request task");
        assert_proxy_error(&response, &[(502, "upstream-reset")], "a POST in flight");
    }
    for held in gets {
        let response = held.await.expect("request task");
        eprintln!(
            "{hops:?}: a GET in flight got {} {:?}",
            response.status,
            response.header("pilotfish-error")
        );
        assert_proxy_error(
            &response,
            &[(502, "upstream-reset"), (503, "connect-refused")],
            "a GET in flight",
        );
    }
    assert_cut("a stream from the crashed app", &mut stream).await;
    assert!(
        crashed.elapsed() < Duration::from_secs(5),
        "the requests in flight took {:?} to be answered",
        crashed.elapsed()
    );

    // While the app is down, requests are refused, clearly.
    for _ in 0..3 {
        let response = call(&caller, "/echo").await;
        assert_proxy_error(
            &response,
            &[(503, "connect-refused")],
            "while the app is down",
        );
    }
    assert_live(&caller).await;
    for sidecar in &origins.sidecars {
        assert_live(sidecar).await;
    }

    // The app comes back on the same address: served again, from the
    // first request, without a restart.
    origins.apps[0] = DemoApp::start_at("users", addr, None, &[]);
    let response = call(&caller, "/echo").await;
    assert_eq!(
        response.status,
        200,
        "the first request: {}",
        response.text()
    );
    until_served(&caller, "/echo", 5).await;
    let response = collect(send_h1(outbound, get("users", "/sse?n=3&interval=10ms")).await).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text().matches("data: event").count(), 3);

    // It restarts between requests: the connections kept open to the old
    // process are not handed the next requests, not even a POST.
    origins.apps[0].kill();
    origins.apps[0] = DemoApp::start_at("users", addr, None, &[]);
    let response = collect(send_h1(outbound, post_request("/echo")).await).await;
    assert_eq!(
        response.status,
        200,
        "the first POST after a restart: {}",
        response.text()
    );
    for _ in 0..3 {
        let response = call(&caller, "/echo").await;
        assert_eq!(response.status, 200, "after a restart: {}", response.text());
    }
}

/// `POST path` to `users` with a small JSON body.
fn post_request(path: &str) -> Request<TestBody> {
    Request::post(path)
        .header("host", "users")
        .body(body("{}"))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_crashes_with_requests_in_flight_through_one_sidecar() {
    an_app_that_crashes_with_requests_in_flight(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_crashes_with_requests_in_flight_through_a_pair() {
    an_app_that_crashes_with_requests_in_flight(Hops::Pair).await;
}

// ---------------------------------------------------------------------
// The peer sidecar dies mid-stream.

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_sidecar_dies_mid_stream() {
    let certs = Certs::new();
    let leaf = certs.issue("users");
    let app = DemoApp::start("users", &[]);
    let far_config = SidecarConfig::with_leaf("users", &certs, leaf.clone()).inbound(app.addr);
    let mut far = Sidecar::start(&far_config);
    let inbound = far.inbound();
    let near = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[inbound],
        "      timeout: 60s\n",
    ));
    let outbound = near.outbound();
    until_served(&near, "/echo", 1).await;

    // Three streams on the one mesh connection: events over HTTP/1.1
    // (chunked), a GiB with a Content-Length over HTTP/1.1, events over h2c.
    let sse = send_h1(outbound, get("users", "/sse?n=10000&interval=20ms")).await;
    let big = send_h1(outbound, get("users", "/bytes?n=1073741824")).await;
    let h2 = send_h2c(
        outbound,
        Request::get("http://users/sse?n=10000&interval=20ms")
            .body(empty())
            .expect("request"),
    )
    .await;
    // And requests the far app has not answered yet.
    let held_post = slow_post(outbound, "10s");
    let held_get = slow_get(outbound, "10s");
    let mut streams = Vec::new();
    for (what, response) in [
        ("HTTP/1.1 events (chunked)", sse),
        ("HTTP/1.1 download (Content-Length)", big),
        ("h2c events", h2),
    ] {
        assert_eq!(response.status(), 200, "{what}");
        let mut body = response.into_body();
        first_bytes(what, &mut body).await;
        streams.push((what, body));
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while stats_requests(app.addr).await < 6 {
        assert!(
            Instant::now() < deadline,
            "the requests never reached the app"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    far.signal(Signal::SIGKILL);
    far.wait_exit(Duration::from_secs(5))
        .expect("the far sidecar died");
    for (what, body) in &mut streams {
        assert_cut(what, body).await;
    }
    let response = held_post.await.expect("request task");
    assert_proxy_error(&response, &[(502, "upstream-reset")], "a POST in flight");
    let response = held_get.await.expect("request task");
    eprintln!(
        "a GET in flight got {} {:?}",
        response.status,
        response.header("pilotfish-error")
    );
    // Its retry may reach the dying process's listener before it closes:
    // a connection reset, not a TLS problem.
    assert_proxy_error(
        &response,
        &[
            (502, "upstream-reset"),
            (503, "connect-refused"),
            (503, "connect-failed"),
        ],
        "a GET in flight",
    );

    // While it is down: refused, clearly, and the near sidecar stays up.
    for _ in 0..3 {
        let response = call(&near, "/echo").await;
        assert_proxy_error(
            &response,
            &[(503, "connect-refused")],
            "while the peer is down",
        );
    }
    assert_live(&near).await;

    // A new far sidecar on the same address: served again, from the
    // first request.
    let _far = Sidecar::start(&far_config.inbound_listen(inbound));
    let response = call(&near, "/echo").await;
    assert_eq!(
        response.status,
        200,
        "the first request: {}",
        response.text()
    );
    until_served(&near, "/echo", 5).await;
    let response = collect(send_h1(outbound, get("users", "/sse?n=3&interval=10ms")).await).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text().matches("data: event").count(), 3);
}

/// The far sidecar dies while a connection to it is being set up: the
/// kernel had accepted the TCP connection, and the process resets it
/// before its TLS handshake. That is a connection that failed, not a TLS
/// problem (no certificate was ever seen): `tls-failed` would send the
/// operator looking at certificates.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_dies_during_the_handshake_is_a_connection_failure() {
    let certs = Certs::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dying = tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = listener.accept().await {
                // Closed with the ClientHello unread: the kernel resets
                // the connection, as for a process killed mid-handshake.
                let _ = tcp.readable().await;
                drop(tcp);
            }
        }
    });
    let near = Sidecar::start(&SidecarConfig::new("orders", &certs).service("users", &[addr], ""));
    let response = call(&near, "/echo").await;
    dying.abort();
    assert_proxy_error(
        &response,
        &[
            (503, "connect-failed"),
            (503, "connect-refused"),
            (502, "upstream-reset"),
        ],
        "a peer that resets the connection before the handshake",
    );
    assert_live(&near).await;
}

// ---------------------------------------------------------------------
// The DNS server stops answering.

/// What the test DNS server does with queries for a name.
#[derive(Debug, Clone)]
enum Answer {
    /// A records (and no AAAA).
    Addrs(Vec<Ipv4Addr>),
    /// No answer at all: the resolver times out.
    Silent,
}

/// A DNS server on UDP port 53 of a loopback address of its own (a
/// `resolv.conf` takes no port), answering A queries for the names it is
/// given; other names get NXDOMAIN.
struct Dns {
    ip: Ipv4Addr,
    names: Arc<Mutex<HashMap<String, Answer>>>,
    queries: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Dns {
    async fn start() -> Self {
        for _ in 0..50 {
            let ip = Ipv4Addr::new(127, 53, fastrand::u8(1..255), fastrand::u8(1..255));
            if let Ok(socket) = UdpSocket::bind((ip, 53)).await {
                let mut dns = Self {
                    ip,
                    names: Arc::default(),
                    queries: Arc::default(),
                    task: None,
                };
                dns.serve(socket);
                return dns;
            }
        }
        panic!("no free loopback address for a DNS server on port 53");
    }

    fn serve(&mut self, socket: UdpSocket) {
        let (names, queries) = (self.names.clone(), self.queries.clone());
        self.task = Some(tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                queries.fetch_add(1, Ordering::Relaxed);
                let answer = dns_reply(&buf[..len], &names.lock().expect("names"));
                if let Some(reply) = answer {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        }));
    }

    /// Closes its socket: queries now meet a closed port.
    async fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address.
    async fn reopen(&mut self) {
        let socket = UdpSocket::bind((self.ip, 53)).await.expect("rebind");
        self.serve(socket);
    }

    fn set(&self, name: &str, answer: Answer) {
        self.names
            .lock()
            .expect("names")
            .insert(name.to_owned(), answer);
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    /// A `resolv.conf` naming only this server, with glibc's timeout cut
    /// from 5 s × 2 attempts to 1 s × 1, to keep the test short.
    fn resolv_conf(&self, dir: &Path) -> PathBuf {
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            format!("nameserver {}\noptions timeout:1 attempts:1\n", self.ip),
        )
        .expect("write resolv.conf");
        path
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The reply to one query, or `None` to stay silent.
fn dns_reply(query: &[u8], names: &HashMap<String, Answer>) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let (rcode, addrs) = match names.get(&labels.join(".")) {
        Some(Answer::Silent) => return None,
        Some(Answer::Addrs(addrs)) if qtype == 1 => (0, addrs.clone()),
        Some(Answer::Addrs(_)) => (0, Vec::new()),
        None => (3, Vec::new()),
    };
    let mut reply = query[..2].to_vec();
    // QR, the query's opcode and RD, AA; RA and the rcode.
    reply.push(0x80 | (query[2] & 0x79) | 0x04);
    reply.push(0x80 | rcode);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&u16::try_from(addrs.len()).ok()?.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for addr in addrs {
        // The name by pointer to the question, A, IN, TTL 0, 4 bytes.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&addr.octets());
    }
    Some(reply)
}

/// The endpoints of destination `service`, from `/destinations`.
async fn endpoints_of(sidecar: &Sidecar, service: &str) -> Vec<String> {
    let view = collect(send_h1(sidecar.admin, get("admin", "/destinations")).await)
        .await
        .json();
    let destination = view
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["service"] == service)
        .unwrap_or_else(|| panic!("no destination {service}: {view}"));
    let mut addrs: Vec<String> = destination["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["addr"].as_str().expect("addr").to_owned())
        .collect();
    addrs.sort();
    addrs
}

async fn wait_for_endpoints(sidecar: &Sidecar, service: &str, want: &[SocketAddr]) {
    let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
    want.sort();
    let deadline = Instant::now() + SOON;
    loop {
        let now = endpoints_of(sidecar, service).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service}: endpoints are {now:?}, want {want:?}; logs:\n{}",
            sidecar.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a log line holding every one of `needles`.
async fn wait_for_log_with(sidecar: &Sidecar, needles: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = sidecar.logs();
        if let Some(line) = logs.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with all of {needles:?} within {timeout:?}:\n{}",
            logs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dns_server_stops_answering() {
    let certs = Certs::new();
    let leaf = certs.issue("users");
    // Two users sidecars on one port of two loopback addresses, as two
    // pods behind a headless Service.
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
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));

    let mut dns = Dns::start().await;
    dns.set("users.test", Answer::Addrs(vec![a]));
    // A name that has never been answered: what its requests get.
    dns.set("ghost.test", Answer::Silent);
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dns.resolv_conf(dir.path());
    let config = SidecarConfig::new("orders", &certs)
        .service(
            "users",
            &[],
            &format!("      dns: users.test:{port}\n      dns_refresh: 200ms\n"),
        )
        .service(
            "ghost",
            &[],
            &format!(
                "      dns: ghost.test:{port}\n      dns_refresh: 200ms\n      identity: users\n"
            ),
        );
    let orders = Sidecar::launch(
        &config,
        &Launch::default().bind(&resolv, "/etc/resolv.conf"),
    );
    wait_for_endpoints(&orders, "users", &[first.inbound()]).await;
    until_served(&orders, "/echo", 1).await;
    let ghost = collect(send_h1(orders.outbound(), get("ghost", "/echo")).await).await;
    assert_proxy_error(&ghost, &[(503, "no-endpoints")], "a name never answered");
    let load = Load::start(orders.outbound(), "users", "/echo", 2);

    // The server stops answering: lookups time out, the endpoints last
    // known stay, requests go on, and a warning says why.
    dns.set("users.test", Answer::Silent);
    let silent_from = dns.queries();
    let warning = wait_for_log_with(
        &orders,
        &["DNS lookup failed", "users.test", "WARN"],
        Duration::from_secs(10),
    )
    .await;
    eprintln!("{warning}");
    assert!(dns.queries() > silent_from, "the sidecar stopped asking");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        endpoints_of(&orders, "users").await,
        [first.inbound().to_string()]
    );
    assert_live(&orders).await;

    // Its port closes altogether (queries meet ICMP port unreachable).
    dns.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        endpoints_of(&orders, "users").await,
        [first.inbound().to_string()]
    );
    assert_live(&orders).await;

    // It answers again, with a changed set: the endpoints follow, and the
    // name that had no answer gets its endpoint.
    dns.set("users.test", Answer::Addrs(vec![b]));
    dns.set("ghost.test", Answer::Addrs(vec![a]));
    dns.reopen().await;
    wait_for_endpoints(&orders, "users", &[second_addr]).await;
    wait_for_endpoints(&orders, "ghost", &[first.inbound()]).await;
    let before = metric_sum(&second, r#"pilotfish_requests_total{direction="inbound""#).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "requests failed while DNS was down: {:?}",
        report.failures
    );
    assert!(
        report.ok > 20,
        "too little load to mean anything: {}",
        report.ok
    );
    assert!(
        metric_sum(&second, r#"pilotfish_requests_total{direction="inbound""#).await > before,
        "the new endpoint got no traffic"
    );
    let ghost = collect(send_h1(orders.outbound(), get("ghost", "/echo")).await).await;
    assert_eq!(ghost.status, 200, "{}", ghost.text());
}

/// A config reload that changes a setting of a DNS destination while its
/// DNS server is silent: the endpoints last known must stay, as they do
/// without the reload.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_while_the_dns_server_is_silent_keeps_the_endpoints() {
    let certs = Certs::new();
    let app = DemoApp::start("users", &[]);
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .inbound_listen("127.0.0.2:0".parse().expect("addr")),
    );
    let port = users.inbound().port();
    let dns = Dns::start().await;
    dns.set(
        "users.test",
        Answer::Addrs(vec![Ipv4Addr::new(127, 0, 0, 2)]),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dns.resolv_conf(dir.path());
    let config = |timeout: &str| {
        SidecarConfig::new("orders", &certs).service(
            "users",
            &[],
            &format!(
                "      dns: users.test:{port}\n      dns_refresh: 200ms\n      timeout: {timeout}\n"
            ),
        )
    };
    let orders = Sidecar::launch(
        &config("15s"),
        &Launch::default().bind(&resolv, "/etc/resolv.conf"),
    );
    wait_for_endpoints(&orders, "users", &[users.inbound()]).await;
    until_served(&orders, "/echo", 1).await;

    dns.set("users.test", Answer::Silent);
    wait_for_log_with(
        &orders,
        &["DNS lookup failed", "users.test"],
        Duration::from_secs(10),
    )
    .await;

    // Its timeout changes (nothing about where it is), by a new file
    // renamed into place.
    let new = orders.config_path.with_extension("new");
    std::fs::write(&new, config("20s").yaml()).expect("write config");
    std::fs::rename(&new, &orders.config_path).expect("replace config");
    wait_metric(
        &orders,
        r#"pilotfish_reloads_total{kind="config",result="applied"}"#,
        1.0,
        SOON,
    )
    .await;
    // Long enough for the rebuilt destination's first lookup to time out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_live(&orders).await;
    let response = call(&orders, "/echo").await;
    let endpoints = endpoints_of(&orders, "users").await;
    assert!(
        response.status == 200 && endpoints == [users.inbound().to_string()],
        "after a reload during the DNS outage: {} {:?} ({}), endpoints {endpoints:?}, want {}",
        response.status,
        response.header("pilotfish-error"),
        response.text().trim(),
        users.inbound()
    );

    // And it follows the DNS answers again once they come back.
    dns.set(
        "users.test",
        Answer::Addrs(vec![Ipv4Addr::new(127, 0, 0, 2)]),
    );
    wait_for_endpoints(&orders, "users", &[users.inbound()]).await;
    until_served(&orders, "/echo", 2).await;
}

// ---------------------------------------------------------------------
// The certificate files become unreadable.

const APPLIED: &str = r#"pilotfish_reloads_total{kind="certificates",result="applied"}"#;
const REJECTED: &str = r#"pilotfish_reloads_total{kind="certificates",result="rejected"}"#;

/// How the certificate files become unreadable (root reads through any
/// mode bits, so none is a chmod).
#[derive(Debug, Clone, Copy)]
enum CertFault {
    /// The whole folder is removed.
    FolderRemoved,
    /// `..data` points at a generation that is gone: every file is a
    /// dangling symlink.
    DanglingLinks,
    /// The key is a directory.
    KeyIsADirectory,
    /// The key is garbage bytes.
    GarbageKey,
}

/// The three files of a workload, as a Secret mount holds them.
fn secret(ca: &Path, leaf: &Leaf) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ca.crt", read(ca)),
        ("tls.crt", read(&leaf.cert)),
        ("tls.key", read(&leaf.key)),
    ]
}

/// Points the mount's `..data` at `target`, as the kubelet swaps it.
fn repoint(dir: &Path, target: &str) {
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(target, &tmp).expect("link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
}

/// A generation folder `name` in the mount with the CA and certificate
/// of `files` and `key` made by `make_key`, swapped in.
fn swap_in_broken(dir: &Path, name: &str, files: &[(&str, Vec<u8>)], make_key: impl Fn(&Path)) {
    let folder = dir.join(name);
    std::fs::create_dir(&folder).expect("generation folder");
    for (file, contents) in files.iter().filter(|(f, _)| *f != "tls.key") {
        std::fs::write(folder.join(file), contents).expect("write");
    }
    make_key(&folder.join("tls.key"));
    repoint(dir, name);
}

async fn unreadable_certificates(fault: CertFault) {
    let certs = Certs::new();
    let old = certs.issue("users");
    // The certificate it rotates to: the same identity issued again, kept
    // in a folder of its own.
    let next = certs.dir.path().join("next");
    pilotfish(&[
        "certs",
        "issue",
        "--ca",
        path_str(certs.dir.path()),
        "--service",
        "users",
        "--out",
        path_str(&next),
    ]);
    let new = Leaf {
        cert: next.join("users.pem"),
        key: next.join("users-key.pem"),
    };
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("users");
    let mut mount = K8sMount::new(&dir, &secret(&certs.ca(), &old));
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::with_files(
            "users",
            mount.path("ca.crt"),
            Leaf {
                cert: mount.path("tls.crt"),
                key: mount.path("tls.key"),
            },
        )
        .inbound(app.addr),
    );
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[users.inbound()],
        "",
    ));
    let client_leaf = certs.issue("client");
    let fresh_client = || tls_config(&certs.ca(), Some(&client_leaf), false);
    until_served(&orders, "/echo", 1).await;
    let old_serial = serial_of_file(&old.cert);
    assert_eq!(
        served_serial(users.inbound(), fresh_client()).await,
        old_serial
    );

    // The fault.
    let logs_before = users.logs().len();
    match fault {
        CertFault::FolderRemoved => std::fs::remove_dir_all(&dir).expect("remove the folder"),
        CertFault::DanglingLinks => repoint(&dir, "..gone"),
        CertFault::KeyIsADirectory => {
            swap_in_broken(&dir, "..broken", &secret(&certs.ca(), &old), |key| {
                std::fs::create_dir(key).expect("a directory for a key");
            });
        }
        CertFault::GarbageKey => {
            swap_in_broken(&dir, "..broken", &secret(&certs.ca(), &old), |key| {
                let garbage: Vec<u8> = (0..2048).map(|_| fastrand::u8(..)).collect();
                std::fs::write(key, garbage).expect("garbage");
            });
        }
    }
    // The reloader sees it (by the folder watch, or by the 5 s poll).
    let deadline = Instant::now() + Duration::from_secs(7);
    while metric(&users, REJECTED).await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (+ 0.0: an empty sum is -0.)
    let rejected = metric(&users, REJECTED).await + 0.0;

    // Meanwhile the last good certificate serves: new handshakes, new
    // requests, on a live process.
    assert_live(&users).await;
    assert_eq!(
        served_serial(users.inbound(), fresh_client()).await,
        old_serial,
        "the last good certificate must keep serving"
    );
    until_served(&orders, "/echo", 3).await;

    // Good files return, with a new certificate: new handshakes use it.
    let good = secret(&certs.ca(), &new);
    let returned = Instant::now();
    match fault {
        CertFault::FolderRemoved => mount = K8sMount::new(&dir, &good),
        _ => mount.swap(&good),
    }
    wait_metric(&users, APPLIED, 1.0, SOON).await;
    eprintln!(
        "{fault:?}: the good files were applied {:?} after they returned",
        returned.elapsed()
    );
    assert_eq!(
        served_serial(users.inbound(), fresh_client()).await,
        serial_of_file(&new.cert),
        "new handshakes must present the new certificate"
    );
    until_served(&orders, "/echo", 3).await;
    drop(mount);

    // And the fault was noticed: counted and logged, naming the folder.
    let during: Vec<String> = users.logs()[logs_before..].to_vec();
    let logged = during
        .iter()
        .any(|l| (l.contains("\"ERROR\"") || l.contains("\"WARN\"")) && l.contains(path_str(&dir)));
    assert!(
        rejected >= 1.0 && logged,
        "{fault:?}: the refused reload must be counted ({REJECTED} is {rejected}) and logged \
         with the files' paths (logged: {logged}); logs since the fault:\n{}",
        during.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_unreadable_the_folder_is_removed() {
    unreadable_certificates(CertFault::FolderRemoved).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_unreadable_dangling_symlinks() {
    unreadable_certificates(CertFault::DanglingLinks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_unreadable_the_key_is_a_directory() {
    unreadable_certificates(CertFault::KeyIsADirectory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_unreadable_the_key_is_garbage() {
    unreadable_certificates(CertFault::GarbageKey).await;
}

// ---------------------------------------------------------------------
// A second signal during the drain.

/// `GET /ready` on the admin port: the status, or `None` if refused.
async fn ready_status(sidecar: &Sidecar) -> Option<u16> {
    try_send_h1(sidecar.admin, get("admin", "/ready"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn a_second_signal_ends_the_drain_at_once(second: Signal) {
    let certs = Certs::new();
    let app = DemoApp::start("users", &[]);
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let mut orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "      timeout: 60s\n")
            .extra("shutdown:\n  drain_timeout: 30s\n"),
    );
    let outbound = orders.outbound();
    let request = tokio::spawn(async move {
        let response = try_send_h1(outbound, get("users", "/echo?delay=10s")).await?;
        let status = response.status();
        let error = response.headers().get("pilotfish-error").cloned();
        response.into_body().collect().await?;
        Ok::<_, BoxError>((status, error))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats_requests(app.addr).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the app"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The first SIGTERM starts the drain, which waits for the request.
    orders.signal(Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready_status(&orders).await != Some(503) {
        assert!(Instant::now() < deadline, "/ready never answered 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        orders.wait_exit(Duration::ZERO).is_none(),
        "the first SIGTERM must drain, not exit: {}",
        orders.logs().join("\n")
    );
    assert_eq!(ready_status(&orders).await, Some(503), "still draining");
    assert!(!request.is_finished(), "the request in flight was cut");

    // The second ends it at once, with status 0, saying so.
    let logs_before = orders.logs().len();
    let signalled = Instant::now();
    orders.signal(second);
    let status = orders.wait_exit(Duration::from_secs(3));
    let took = signalled.elapsed();
    let logs = orders.logs();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 3 s after a second {second:?} during the drain; logs:\n{}",
            logs.join("\n")
        )
    });
    assert_eq!(status.code(), Some(0), "{}", logs.join("\n"));
    eprintln!("exited {took:?} after the second {second:?}");
    let said = logs[logs_before..]
        .iter()
        .any(|l| l.contains("drain") && !l.contains("drained; exiting"));
    assert!(
        said,
        "no log line says the drain was cut short:\n{}",
        logs.join("\n")
    );

    // The client of the request in flight sees its connection end.
    let outcome = tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .expect("the client of the request in flight is left hanging")
        .expect("request task");
    match outcome {
        Err(e) => eprintln!("the request in flight ended: {e}"),
        Ok((status, error)) => assert!(
            status != 200 && error.is_some(),
            "the request in flight got {status} (pilotfish-error {error:?})"
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_during_the_drain_ends_it_at_once() {
    a_second_signal_ends_the_drain_at_once(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigint_during_the_drain_ends_it_at_once() {
    a_second_signal_ends_the_drain_at_once(Signal::SIGINT).await;
}

// ---------------------------------------------------------------------
// The disk of the access log fills.

const DROPPED: &str = "pilotfish_access_log_dropped_total";

/// A sidecar calling a test app directly, with JSON access logs.
fn logging_caller(certs: &Certs, app: &TestApp, launch: &Launch) -> Sidecar {
    Sidecar::launch(
        &SidecarConfig::new("orders", certs)
            .service("users", &[app.addr], "      transport: plaintext\n")
            .extra("access_log:\n  format: json\n"),
        launch,
    )
}

/// `n` requests through `caller`, each with `x-request-id: {tag}-{i}`;
/// every one must be served.
async fn served(caller: &Sidecar, tag: &str, n: usize) {
    for i in 0..n {
        let req = Request::get("/echo")
            .header("host", "users")
            .header("x-request-id", format!("{tag}-{i}"))
            .body(empty())
            .expect("request");
        let response = collect(send_h1(caller.outbound(), req).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_disk_is_full() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let orders = logging_caller(
        &certs,
        &app,
        &Launch::default().stdout_to(Path::new("/dev/full")),
    );
    // Every write fails with ENOSPC; requests do not care.
    served(&orders, "full", 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    served(&orders, "full-more", 20).await;
    wait_metric(&orders, DROPPED, 20.0, Duration::from_secs(5)).await;
    assert_live(&orders).await;
    served(&orders, "still", 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_access_log_line_a_full_disk_refuses_is_counted() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let orders = logging_caller(
        &certs,
        &app,
        &Launch::default().stdout_to(Path::new("/dev/full")),
    );
    served(&orders, "full", 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    served(&orders, "full-more", 20).await;
    // Not one of the 40 lines was written: each must be counted, none lost
    // unseen (the writer's batches go out every 50 ms).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut dropped = metric(&orders, DROPPED).await;
    while dropped < 40.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        dropped = metric(&orders, DROPPED).await;
    }
    assert_eq!(
        dropped, 40.0,
        "40 lines could not be written, {DROPPED} counts {dropped}"
    );
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Lines of the access log file that are JSON, with their request ids.
fn logged_ids(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_disk_fills_then_has_room_again() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    // stdout is a file on a 256 KiB tmpfs of the sidecar's own, which the
    // test fills and empties through /proc/PID/root.
    let mount = tempfile::tempdir().expect("temp dir");
    let orders = logging_caller(
        &certs,
        &app,
        &Launch::default()
            .tmpfs(mount.path(), 256 * 1024)
            .stdout_to(&mount.path().join("access.log")),
    );
    let disk = Path::new(&format!("/proc/{}/root", orders.pid())).join(
        mount
            .path()
            .strip_prefix("/")
            .expect("an absolute temp path"),
    );
    let log = disk.join("access.log");

    served(&orders, "before", 5).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while logged_ids(&log).len() < 5 {
        assert!(Instant::now() < deadline, "nothing logged to the file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The disk fills.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = [b'f'; 4096];
        while file.write_all(&chunk).is_ok() {}
    }
    served(&orders, "full", 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    served(&orders, "full-more", 10).await;
    wait_metric(&orders, DROPPED, 10.0, Duration::from_secs(5)).await;
    assert_live(&orders).await;

    // Room again: lines are written again, without a restart.
    std::fs::remove_file(&filler).expect("free the disk");
    tokio::time::sleep(Duration::from_millis(200)).await;
    served(&orders, "after", 10).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = logged_ids(&log)
            .iter()
            .filter(|id| id.starts_with("after-"))
            .count();
        // The first may follow a line cut short by the full disk.
        if after >= 9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{after} of 10 requests logged after the disk had room again \
             ({DROPPED} = {}); the file ends with:\n{}\nstderr:\n{}",
            metric(&orders, DROPPED).await,
            tail(&std::fs::read_to_string(&log).unwrap_or_default(), 3),
            orders.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
