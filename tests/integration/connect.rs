//! CONNECT from the app (an HTTPS client behind `HTTPS_PROXY`) to the
//! outbound listener: to a destination that answers to the host, by name
//! or route, a tunnel that carries a TLS session end to end (the sidecars
//! see only ciphertext), through a sidecar pair to one of the far host's
//! opaque ports, or straight to a plaintext destination's endpoint; to any
//! other host, 403 `tunnel-not-allowed`; to a port the far side does not
//! open, 502 `tunnel-refused`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::*;

/// The caller's identity, as the far sidecar sees it.
const ORDERS_ID: &str = "spiffe://cluster.local/ns/default/sa/orders";
/// The name on the TLS server's certificate.
const SERVER_NAME: &str = "secure.example";
const PATIENCE: Duration = Duration::from_secs(20);
const ACCESS_LOG: &str = "access_log: { format: json }\n";

/// A TLS echo server with a self-signed certificate for [`SERVER_NAME`]:
/// everything a client sends comes back, until the client closes.
struct TlsEcho {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    /// The server name each accepted session asked for (SNI).
    sessions: Arc<Mutex<Vec<Option<String>>>>,
}

impl TlsEcho {
    async fn start() -> Self {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .expect("self-signed certificate");
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let seen = sessions.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let name = tls.get_ref().1.server_name().map(str::to_owned);
                    seen.lock().expect("sessions").push(name);
                    let (mut read, mut write) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        Self {
            addr,
            cert,
            sessions,
        }
    }

    /// A client config that trusts this server's certificate only.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("trust the certificate");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    fn sessions(&self) -> Vec<Option<String>> {
        self.sessions.lock().expect("sessions").clone()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Sends `CONNECT authority` to `proxy` on a new connection and reads the
/// response head (byte by byte: nothing of the tunnel is taken). Returns
/// the connection and the head.
async fn connect_via(proxy: SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(proxy).await.expect("connect to proxy");
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send CONNECT");
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tcp.read_u8().await.expect("read the response head");
            head.push(byte);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the CONNECT answered in time");
    (tcp, String::from_utf8(head).expect("a text head"))
}

/// A TLS session over `io` with the echo server: `size` bytes there and
/// back, intact; then a clean close. Returns the TLS version agreed.
async fn echo_over_tls<S>(io: S, server: &TlsEcho, size: usize) -> rustls::ProtocolVersion
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let tls = TlsConnector::from(server.client_config())
        .connect(name, io)
        .await
        .expect("TLS handshake through the tunnel");
    let version = tls.get_ref().1.protocol_version().expect("a version");
    let message: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let (mut read, mut write) = tokio::io::split(tls);
    let sent = message.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("write through TLS");
        write.shutdown().await.expect("close_notify");
    });
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut back))
        .await
        .expect("the echo came back in time")
        .expect("read through TLS");
    writer.await.expect("writer");
    assert_eq!(back.len(), message.len());
    assert!(back == message, "the echo changed on the way");
    version
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_carries_a_tls_session_end_to_end_through_the_pair() {
    let certs = Certs::new();
    let server = TlsEcho::start().await;
    let port = server.addr.port();
    let far = Sidecar::start(
        &SidecarConfig::new("secure", &certs)
            .inbound(free_addr())
            .inbound_extra(&format!("  opaque_ports: [{port}]\n"))
            .extra(ACCESS_LOG),
    );
    let caller = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("secure", &[far.inbound()], "")
            .routes("    - host: api.secure.example\n      service: secure\n")
            .extra(ACCESS_LOG),
    );

    // By the destination's name, and by a route's host.
    for authority in [
        format!("secure:{port}"),
        format!("api.secure.example:{port}"),
    ] {
        let (tunnel, head) = connect_via(caller.outbound(), &authority).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{authority}: {head}");
        let version = echo_over_tls(tunnel, &server, 1 << 20).await;
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    }
    assert_eq!(
        server.sessions(),
        [Some(SERVER_NAME.to_owned()), Some(SERVER_NAME.to_owned())],
        "the server did both handshakes itself"
    );

    // A tunnel each on both sidecars, logged when it ended: CONNECT on the
    // caller's side, an opaque connection from `orders` on the far side.
    let closed = r#"pilotfish_tunnels_closed_total{direction="outbound",service="secure",kind="connect",end="closed"}"#;
    wait_metric(&caller, closed, 2.0, PATIENCE).await;
    let closed =
        r#"pilotfish_tunnels_closed_total{direction="inbound",service="secure",kind="opaque"}"#;
    wait_metric(&far, closed, 2.0, PATIENCE).await;
    let lines = caller.wait_access_log(2, PATIENCE);
    for line in &lines {
        assert_eq!(line["method"], "CONNECT", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["service"], "secure", "{line}");
        assert_eq!(line["upstream"], far.inbound().to_string(), "{line}");
        assert!(line["bytes_in"].as_u64().unwrap() > 1 << 20, "{line}");
        assert!(line["bytes_out"].as_u64().unwrap() > 1 << 20, "{line}");
    }
    assert!(
        lines.iter().any(|l| l["route"] == "api.secure.example"),
        "{lines:?}"
    );
    let far_lines = far.wait_access_log(2, PATIENCE);
    for line in &far_lines {
        assert_eq!(line["peer"], ORDERS_ID, "{line}");
        assert_eq!(line["authority"], format!("127.0.0.1:{port}"), "{line}");
        assert_eq!(line["status"], 200, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_a_plaintext_destination_reaches_its_endpoint() {
    let certs = Certs::new();
    let server = TlsEcho::start().await;
    let caller = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("secure", &[server.addr], "      transport: plaintext\n")
            .extra(ACCESS_LOG),
    );
    let authority = format!("secure:{}", server.addr.port());
    let (tunnel, head) = connect_via(caller.outbound(), &authority).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    echo_over_tls(tunnel, &server, 64 << 10).await;
    assert_eq!(server.sessions(), [Some(SERVER_NAME.to_owned())]);
    let line = &caller.wait_access_log(1, PATIENCE)[0];
    assert_eq!(line["upstream"], server.addr.to_string(), "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 64 << 10, "{line}");
}

/// Sends `CONNECT authority` with hyper; the whole response.
async fn connect_refused(proxy: SocketAddr, authority: &str, json: bool) -> Collected {
    let mut req = http::Request::connect(authority).header("host", authority);
    if json {
        req = req.header("accept", "application/json");
    }
    let response = send_h1(proxy, req.body(empty()).expect("request")).await;
    collect(response).await
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_a_host_without_a_destination_is_refused() {
    let certs = Certs::new();
    let server = TlsEcho::start().await;
    let caller = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("secure", &[server.addr], "      transport: plaintext\n")
            .extra(ACCESS_LOG),
    );

    let refused = connect_refused(caller.outbound(), "elsewhere.example:443", false).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        refused.header("pilotfish-error"),
        Some("tunnel-not-allowed")
    );
    assert!(
        refused.text().contains("elsewhere.example"),
        "{}",
        refused.text()
    );

    let refused = connect_refused(caller.outbound(), "elsewhere.example:443", true).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("pilotfish-error"),
        Some("tunnel-not-allowed")
    );
    let body = refused.json();
    assert_eq!(body["error"], "tunnel-not-allowed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("elsewhere.example"),
        "{body}"
    );

    // A destination's endpoint is no destination by its address.
    let refused = connect_refused(caller.outbound(), &server.addr.to_string(), false).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        refused.header("pilotfish-error"),
        Some("tunnel-not-allowed")
    );

    assert!(
        server.sessions().is_empty(),
        "a refused CONNECT got through"
    );
    let opened = r#"pilotfish_tunnels_opened_total{direction="outbound"}"#;
    assert_eq!(metric(&caller, opened).await, 0.0);
    let lines = caller.wait_access_log(3, PATIENCE);
    assert!(
        lines.iter().all(|l| l["error"] == "tunnel-not-allowed"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_a_port_the_far_side_does_not_open_gets_502() {
    let certs = Certs::new();
    let server = TlsEcho::start().await;
    let far = Sidecar::start(
        &SidecarConfig::new("secure", &certs)
            .inbound(free_addr())
            .inbound_extra(&format!("  opaque_ports: [{}]\n", free_addr().port()))
            .extra(ACCESS_LOG),
    );
    let caller = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "secure",
        &[far.inbound()],
        "",
    ));
    let authority = format!("secure:{}", server.addr.port());
    let refused = connect_refused(caller.outbound(), &authority, false).await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert_eq!(refused.header("pilotfish-error"), Some("tunnel-refused"));
    assert!(refused.text().contains("403"), "{}", refused.text());

    // The far side's policy said no, once, and nothing reached the server.
    let denied = format!(
        r#"pilotfish_authz_denied_total{{caller="{ORDERS_ID}",reason="port-not-allowed"}}"#
    );
    wait_metric(&far, &denied, 1.0, PATIENCE).await;
    assert_eq!(metric(&far, &denied).await, 1.0);
    assert!(server.sessions().is_empty());
    let far_line = &far.wait_access_log(1, PATIENCE)[0];
    assert_eq!(far_line["status"], 403, "{far_line}");
    assert_eq!(far_line["peer"], ORDERS_ID, "{far_line}");
}
