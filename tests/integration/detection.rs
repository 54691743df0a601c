//! Protocol detection for connections captured on their way elsewhere:
//! iptables redirects the app's TCP to the outbound listener, which reads
//! the original destination (`SO_ORIGINAL_DST`) and tells HTTP/1, HTTP/2
//! with prior knowledge, TLS and everything else apart by the first bytes.
//! HTTP goes by its host, as it does when sent to the listener itself; the
//! rest is carried to where the app meant: over the mTLS link to the same
//! port behind a meshed pod's sidecar, or straight there outside the mesh.
//! Ports where the server speaks first skip the wait; elsewhere a client
//! that sends nothing is carried after the detection timeout.
//!
//! A private network namespace stands in for the pods (root): the caller
//! sidecar runs as the proxy's own user, whose connections the capture
//! rules let through, and `pilotfish capture install` sets those rules up
//! as a pod's init step does.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;
use crate::support::{netns, process_tree};

/// How long a test waits for what should come at once.
const PATIENCE: Duration = Duration::from_secs(10);
/// The user the caller's sidecar runs as; capture lets its connections by.
const PROXY_UID: u32 = 2102;
/// The far pod: its sidecar's inbound listener and its servers.
const POD: [u8; 4] = [10, 77, 0, 2];
/// A host outside the mesh.
const OUTSIDE: [u8; 4] = [10, 77, 0, 9];
/// The far sidecar's inbound port.
const INBOUND_PORT: u16 = 15006;
/// Ports the far sidecar opens to the mesh: SMTP on its standard port and
/// another, Redis off its standard port, TLS.
const SMTP: u16 = 25;
const SMTP_ELSEWHERE: u16 = 2525;
const REDIS_ELSEWHERE: u16 = 7379;
const TLS_PORT: u16 = 8443;

fn at(host: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((host, port))
}

/// The namespace with the pod and the outside host on its loopback.
fn namespace() -> Netns {
    let ns = Netns::new();
    ns.add_address("10.77.0.2/32");
    ns.add_address("10.77.0.9/32");
    ns
}

/// The caller (`orders`, capturing) and the far pod's sidecar (`users`,
/// in front of `app`, with the opaque ports above).
struct Pods {
    caller: Sidecar,
    far: Sidecar,
    _certs: Certs,
}

impl Pods {
    fn start(ns: &Netns, app: SocketAddr, caller_extra: &str) -> Self {
        let certs = Certs::new();
        let far = SidecarConfig::new("users", &certs)
            .inbound(app)
            .inbound_listen(at(POD, INBOUND_PORT))
            .inbound_extra(&format!(
                "  opaque_ports: [{SMTP}, {SMTP_ELSEWHERE}, {REDIS_ELSEWHERE}, {TLS_PORT}]\n"
            ))
            .extra("access_log: { format: json }\n");
        let caller = SidecarConfig::new("orders", &certs)
            .service("users", &[at(POD, INBOUND_PORT)], "")
            .outbound_extra(caller_extra)
            .extra("access_log: { format: json }\n");
        // The proxy's user reads its certificate and key.
        netns::give(certs.dir.path(), PROXY_UID);
        let far = Sidecar::launch(&far, &Launch::default().netns(ns, None));
        let caller = Sidecar::launch(&caller, &Launch::default().netns(ns, Some(PROXY_UID)));
        // What the pod's init step runs: the app's TCP (anything but the
        // proxy's own and loopback) goes to the caller's outbound listener.
        let to = caller.outbound().port().to_string();
        let uid = PROXY_UID.to_string();
        capture(
            ns,
            &["install", "--proxy-uid", &uid, "--outbound-port", &to],
        );
        Self {
            caller,
            far,
            _certs: certs,
        }
    }

    async fn detected(&self, protocol: &str, by: &str) -> f64 {
        let series =
            format!("pilotfish_protocol_detected_total{{protocol=\"{protocol}\",by=\"{by}\"}}");
        metric(&self.caller, &series).await
    }
}

#[test]
fn http1_and_http2_captured_on_their_way_to_a_pod_go_by_their_host_or_its_address() {
    let ns = namespace();
    ns.run(|| async {
        let app = TestApp::start().await;
        let pods = Pods::start(&ns, app.addr, "");

        // The app calls the pod's address, as a client that resolved
        // `users` would; the capture rule sends it to the sidecar.
        let response = collect(send_h1(at(POD, 8080), get("users", "/echo?one")).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let response = collect(send_h2c(at(POD, 8080), get("users", "/echo?two")).await).await;
        assert_eq!(response.status, 200, "{}", response.text());

        let seen = app.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].path, "/echo");
        assert_eq!(seen[1].path, "/echo");
        assert_eq!(
            seen[1].version,
            http::Version::HTTP_2,
            "HTTP/2 stays HTTP/2"
        );
        for request in &seen {
            assert_eq!(
                request.headers["pilotfish-client-id"],
                "spiffe://cluster.local/ns/default/sa/orders",
                "the request crossed the mTLS link"
            );
        }
        assert_eq!(pods.detected("http1", "first-bytes").await, 1.0);
        assert_eq!(pods.detected("http2", "first-bytes").await, 1.0);

        // Sent to the listener itself, a request is HTTP without looking.
        let direct =
            collect(send_h1(pods.caller.outbound(), get("users", "/echo?three")).await).await;
        assert_eq!(direct.status, 200);
        assert_eq!(
            metric(&pods.caller, "pilotfish_protocol_detected_total").await,
            2.0,
            "only captured connections are detected"
        );

        // By address alone (Host is the pod's address, which no route
        // knows): the destination with an endpoint on that host takes it.
        let by_address = get("10.77.0.2:8080", "/echo?four");
        let response = collect(send_h1(at(POD, 8080), by_address).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let last = app.seen().last().cloned().expect("seen");
        assert_eq!(last.path, "/echo");
        assert_eq!(
            last.headers["pilotfish-client-id"],
            "spiffe://cluster.local/ns/default/sa/orders"
        );
        // An address no destination has, with a host no route knows:
        // there, outside the mesh, as the app sent it (the default,
        // `unknown_destinations: passthrough`).
        let outside = TestApp::start_on(at(OUTSIDE, 8080)).await;
        let elsewhere = get("example.org", "/echo?five");
        let response = collect(send_h1(at(OUTSIDE, 8080), elsewhere).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = outside.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].headers["host"], "example.org");
        assert!(
            !seen[0].headers.contains_key("pilotfish-client-id"),
            "no identity outside the mesh"
        );
        let line = pods
            .caller
            .wait_access_log(5, PATIENCE)
            .pop()
            .expect("a line");
        assert_eq!(line["service"], "passthrough", "{line}");
        assert_eq!(line["upstream"], at(OUTSIDE, 8080).to_string(), "{line}");
        // Nothing listens there: the app gets the proxy's account of it.
        let closed = get("example.org", "/echo?six");
        let response = collect(send_h1(at(OUTSIDE, 8081), closed).await).await;
        assert_eq!(response.status, 503, "{}", response.text());
        assert_eq!(response.headers["pilotfish-error"], "connect-refused");
        drop(pods);
    });
}

#[test]
fn tls_is_carried_as_it_is_to_a_meshed_pod_over_mtls_and_to_a_host_outside() {
    let ns = namespace();
    ns.run(|| async {
        let app = TestApp::start().await;
        let certs = Certs::new();
        let server = TlsEcho::start(&certs, TLS_PORT).await;
        let pods = Pods::start(&ns, app.addr, "");
        let client = tls_config(&certs.ca(), None, false);

        for (host, via) in [(POD, "users"), (OUTSIDE, "passthrough")] {
            let stream = tls_connect(at(host, TLS_PORT), client.clone(), "echo")
                .await
                .unwrap_or_else(|e| panic!("TLS to {host:?} through {via}: {e}"));
            assert_eq!(
                echo(stream, "hello").await,
                "echo: hello",
                "the session is the client's and the server's own"
            );
            let opened = format!(
                "pilotfish_tunnels_opened_total{{direction=\"outbound\",service=\"{via}\",kind=\"opaque\"}}"
            );
            wait_metric(&pods.caller, &opened, 1.0, Duration::from_secs(10)).await;
        }
        assert_eq!(server.sessions(), 2);
        assert_eq!(pods.detected("tls", "first-bytes").await, 2.0);

        // The far sidecar carried the first one, knowing who called.
        let lines = pods.far.wait_access_log(1, Duration::from_secs(10));
        let line = &lines[0];
        assert_eq!(line["method"], "CONNECT");
        assert_eq!(line["peer"], "spiffe://cluster.local/ns/default/sa/orders");
        assert!(line["bytes_in"].as_u64().unwrap_or(0) > 0, "{line}");
        assert!(line["bytes_out"].as_u64().unwrap_or(0) > 0, "{line}");
        let caller_lines = pods.caller.wait_access_log(2, Duration::from_secs(10));
        let services: Vec<_> = caller_lines.iter().map(|l| l["service"].clone()).collect();
        assert!(services.contains(&"users".into()), "{caller_lines:?}");
        assert!(services.contains(&"passthrough".into()), "{caller_lines:?}");
    });
}

#[test]
fn smtp_on_its_own_port_greets_at_once_and_elsewhere_after_the_detection_timeout() {
    let ns = namespace();
    ns.run(|| async {
        let app = TestApp::start().await;
        let _smtp = Smtp::start(&ns, SMTP);
        let _smtp_elsewhere = Smtp::start(&ns, SMTP_ELSEWHERE);
        let pods = Pods::start(&ns, app.addr, "  detect_timeout: 2s\n");

        // Port 25 is on the default opaque list: nothing is read first,
        // the server's greeting comes through as soon as it is sent.
        let mut session = SmtpSession::open(at(POD, SMTP)).await;
        session.dialogue().await;
        assert_eq!(pods.detected("opaque", "port").await, 1.0);

        // Elsewhere the sidecar waits for the client's first bytes, and
        // carries the silent client's connection after the timeout.
        let started = Instant::now();
        let mut session = SmtpSession::open(at(POD, SMTP_ELSEWHERE)).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1900),
            "the greeting came after {waited:?}, before the 2s detection timeout"
        );
        session.dialogue().await;
        assert_eq!(pods.detected("opaque", "timeout").await, 1.0);
        assert_eq!(
            metric(
                &pods.far,
                "pilotfish_tunnels_opened_total{direction=\"inbound\",kind=\"opaque\"}"
            )
            .await,
            2.0,
            "both crossed the mTLS link"
        );
    });
}

#[test]
fn redis_off_its_port_is_told_opaque_by_its_first_bytes() {
    let ns = namespace();
    ns.run(|| async {
        let app = TestApp::start().await;
        let _redis = Redis::start(&ns, REDIS_ELSEWHERE);
        let pods = Pods::start(&ns, app.addr, "");

        let url = format!("redis://{}/", at(POD, REDIS_ELSEWHERE));
        let client = ::redis::Client::open(url).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis through the sidecars");
        let _: () = ::redis::cmd("SET")
            .arg("key")
            .arg("value")
            .query_async(&mut conn)
            .await
            .expect("SET");
        let value: String = ::redis::cmd("GET")
            .arg("key")
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(value, "value");
        assert_eq!(pods.detected("opaque", "first-bytes").await, 1.0);
        assert_eq!(pods.detected("opaque", "timeout").await, 0.0);
    });
}

#[test]
fn a_port_the_far_sidecar_does_not_open_is_refused_and_logged() {
    let ns = namespace();
    ns.run(|| async {
        let app = TestApp::start().await;
        let pods = Pods::start(&ns, app.addr, "");
        // 3306 is on the caller's opaque list; the far side opens no 3306.
        let mut tcp = TcpStream::connect(at(POD, 3306)).await.expect("captured");
        let mut read = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut read))
            .await
            .expect("the connection is closed, not left hanging");
        assert_eq!(n.unwrap_or(0), 0, "nothing came back");
        pods.caller
            .wait_for_log("opaque connection failed", Duration::from_secs(10));
        let denied = metric(&pods.far, "pilotfish_authz_denied_total").await;
        assert!(denied >= 1.0, "the far side counts the refusal");
    });
}

/// A TLS server presenting a certificate for `echo`, answering each line
/// with `echo: LINE`, on every address of the namespace.
struct TlsEcho {
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsEcho {
    async fn start(certs: &Certs, port: u16) -> Self {
        let leaf = certs.issue("echo");
        let config = server_config(&leaf);
        let listener = TcpListener::bind(("0.0.0.0", port)).await.expect("bind");
        let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = sessions.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (read, mut write) = tokio::io::split(stream);
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let _ = write.write_all(format!("echo: {line}\n").as_bytes()).await;
                    }
                });
            }
        });
        Self { sessions, task }
    }

    fn sessions(&self) -> usize {
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(leaf: &Leaf) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&leaf.cert)
        .expect("read cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config")
}

/// Sends `line` over `stream` and reads the answer line.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    line: &str,
) -> String {
    let (read, mut write) = tokio::io::split(stream);
    write
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(read).read_line(&mut answer),
    )
    .await
    .expect("an answer")
    .expect("read");
    answer.trim_end().to_owned()
}

/// Debian's aiosmtpd, an SMTP server (the server speaks first), on `port`
/// of every address of the namespace.
struct Smtp(Child);

impl Smtp {
    fn start(ns: &Netns, port: u16) -> Self {
        let child = ns
            .command("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("0.0.0.0:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (scripts/install-test-deps.sh installs it)");
        let smtp = Self(child);
        wait_listening(at([127, 0, 0, 1], port), "aiosmtpd");
        smtp
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        process_tree::stop(&mut self.0, None);
    }
}

/// Debian's redis-server on `port` of every address of the namespace.
struct Redis(Child);

impl Redis {
    fn start(ns: &Netns, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = ns
            .command("redis-server")
            .args(["--port", &port.to_string(), "--bind", "0.0.0.0"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", path_str(dir.path())])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let redis = Self(child);
        wait_listening(at([127, 0, 0, 1], port), "redis-server");
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        process_tree::stop(&mut self.0, None);
    }
}

/// Waits (blocking, on the namespace's thread) until `addr` accepts.
fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An SMTP client session, line by line.
struct SmtpSession {
    lines: tokio::io::Lines<BufReader<tokio::io::ReadHalf<TcpStream>>>,
    write: tokio::io::WriteHalf<TcpStream>,
}

impl SmtpSession {
    /// Connects and reads the greeting, sending nothing first.
    async fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (read, write) = tokio::io::split(tcp);
        let mut session = Self {
            lines: BufReader::new(read).lines(),
            write,
        };
        let greeting = session.line().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        session
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("the server answers")
            .expect("read")
            .expect("a line")
    }

    /// EHLO, then QUIT.
    async fn dialogue(&mut self) {
        self.write
            .write_all(b"EHLO client\r\n")
            .await
            .expect("write");
        loop {
            let line = self.line().await;
            assert!(line.starts_with("250"), "EHLO answer: {line}");
            if line.starts_with("250 ") {
                break;
            }
        }
        self.write.write_all(b"QUIT\r\n").await.expect("write");
        let bye = self.line().await;
        assert!(bye.starts_with("221"), "QUIT answer: {bye}");
    }
}

/// `pilotfish capture ARGS` in the namespace; its output.
fn capture(ns: &Netns, args: &[&str]) -> String {
    let out = ns
        .command(env!("CARGO_BIN_EXE_pilotfish"))
        .arg("capture")
        .args(args)
        .output()
        .expect("run pilotfish capture");
    assert!(
        out.status.success(),
        "pilotfish capture {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace's nat table, as `iptables-save` prints it, without its
/// comment and counter lines (which change from one call to the next).
fn nat_rules(ns: &Netns) -> String {
    let out = ns
        .command("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn capture_install_is_idempotent_and_remove_takes_away_all_it_added() {
    let ns = namespace();
    let before = nat_rules(&ns);
    let install = [
        "install",
        "--proxy-uid",
        "2102",
        "--skip-inbound-ports",
        "9901,8080",
        "--skip-outbound-ports",
        "5432",
    ];
    capture(&ns, &install);
    let installed = nat_rules(&ns);
    for rule in [
        "-A PREROUTING -p tcp -j PILOTFISH_INBOUND",
        "-A OUTPUT -p tcp -j PILOTFISH_OUTPUT",
        "-A PILOTFISH_INBOUND -p tcp -m tcp --dport 8080 -j RETURN",
        "-A PILOTFISH_INBOUND -p tcp -m tcp --dport 9901 -j RETURN",
        "-A PILOTFISH_INBOUND -p tcp -j REDIRECT --to-ports 15006",
        "-A PILOTFISH_OUTPUT -m owner --uid-owner 2102 -j RETURN",
        "-A PILOTFISH_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A PILOTFISH_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A PILOTFISH_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert!(installed.contains(rule), "{rule} missing in:\n{installed}");
    }
    // Again: the same rules, not twice the rules.
    capture(&ns, &install);
    assert_eq!(nat_rules(&ns), installed);
    // Another list replaces the first.
    capture(&ns, &["install", "--skip-inbound-ports", "9901"]);
    let changed = nat_rules(&ns);
    assert!(!changed.contains("--dport 8080"), "{changed}");
    assert!(!changed.contains("--dport 5432"), "{changed}");
    assert_eq!(
        changed.matches("-j PILOTFISH_OUTPUT").count(),
        1,
        "{changed}"
    );

    capture(&ns, &["remove"]);
    assert_eq!(nat_rules(&ns), before);
    // Removing what is not there is fine.
    capture(&ns, &["remove"]);
    // Without iptables, it says what it needs.
    let out = ns
        .command(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["capture", "install", "--iptables", "/nonexistent/iptables"])
        .output()
        .expect("run pilotfish capture");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot run /nonexistent/iptables-restore"),
        "{said}"
    );
    assert_eq!(nat_rules(&ns), before);
    // --dry-run prints the rules and installs nothing.
    let printed = capture(&ns, &["install", "--dry-run"]);
    assert!(printed.contains("-A PILOTFISH_OUTPUT -p tcp -j REDIRECT --to-ports 15001"));
    assert_eq!(nat_rules(&ns), before);
}

/// `outbound.unknown_destinations: refuse`: the app reaches only what the
/// config names. A captured request for a host no route knows, to an
/// address no destination has, gets 503 no-route; a captured TLS
/// connection there is closed, and logged as refused.
#[test]
fn with_unknown_destinations_refused_the_app_reaches_only_the_mesh() {
    let ns = namespace();
    ns.run(|| async {
        let app = TestApp::start().await;
        let pods = Pods::start(&ns, app.addr, "  unknown_destinations: refuse\n");
        let _outside = TestApp::start_on(at(OUTSIDE, 8080)).await;
        let elsewhere = get("example.org", "/echo");
        let response = collect(send_h1(at(OUTSIDE, 8080), elsewhere).await).await;
        assert_eq!(response.status, 503, "{}", response.text());
        assert_eq!(response.headers["pilotfish-error"], "no-route");
        // The mesh still works.
        let response = collect(send_h1(at(POD, 8080), get("users", "/echo")).await).await;
        assert_eq!(response.status, 200, "{}", response.text());

        // A TLS client hello to the outside host: closed, not carried.
        let mut tcp = TcpStream::connect(at(OUTSIDE, 8443))
            .await
            .expect("captured");
        tcp.write_all(b"\x16\x03\x01\x00\x05hello")
            .await
            .expect("write");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the connection was not closed: {read:?}"
        );
        let lines = pods.caller.wait_access_log(3, PATIENCE);
        let refused = lines
            .iter()
            .find(|l| l["error"] == "tunnel-not-allowed")
            .unwrap_or_else(|| panic!("no refused connection logged: {lines:?}"));
        assert_eq!(refused["service"], "unknown", "{refused}");
        assert_eq!(
            refused["authority"],
            at(OUTSIDE, 8443).to_string(),
            "{refused}"
        );
        drop(pods);
    });
}
