//! HTTP and TLS clients for the tests: one new connection per call, so
//! each test controls exactly what reaches the sidecar.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Leaf;
use super::test_app::BoxError;

/// A request body for the tests.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A body of these bytes.
pub fn body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A body made of these frames (data and trailers), in order.
pub fn frames_body(frames: Vec<hyper::body::Frame<Bytes>>) -> TestBody {
    struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);
    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
            std::task::Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }
    Frames(frames.into()).boxed()
}

/// `GET path` with `Host: host`.
pub fn get(host: &str, path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .expect("request")
}

/// Sends one request on a new HTTP/1.1 connection.
pub async fn send_h1(addr: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    try_send_h1(addr, req).await.expect("HTTP/1.1 request")
}

/// Sends one request on a new HTTP/1.1 connection, returning errors.
pub async fn try_send_h1(
    addr: SocketAddr,
    req: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// Sends one request on a new h2c (prior knowledge) connection. The URI
/// must be absolute (`http://users/path`).
pub async fn send_h2c(addr: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("HTTP/2 request")
}

/// A whole response: head, body and trailers.
pub struct Collected {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Collected {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Asserts that the authorization policy refused: 403 with
/// `pilotfish-error: forbidden` and `pilotfish-authz: REASON`.
#[track_caller]
pub fn assert_denied(response: &Collected, reason: &str) {
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("forbidden"));
    assert_eq!(response.header("pilotfish-authz"), Some(reason));
}

/// Reads a response to the end.
pub async fn collect(response: Response<Incoming>) -> Collected {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("read body");
    let trailers = collected.trailers().cloned();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// A rustls client config trusting `ca`, presenting `leaf` if given.
pub fn tls_config(ca: &Path, leaf: Option<&Leaf>, tls12_only: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match leaf {
        Some(leaf) => {
            let chain = CertificateDer::pem_file_iter(&leaf.cert)
                .expect("read cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert");
            let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Connects with TLS, verifying the server as `server_name` (a DNS SAN).
pub async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Sends an HTTP/1.1 request over an established TLS stream.
pub async fn send_h1_over<S>(
    stream: S,
    req: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// A rustls server config presenting `leaf`, requiring a client
/// certificate from `ca`, with ALPN h2 (a mesh endpoint stand-in).
pub fn mtls_server_config(ca: &Path, leaf: &Leaf) -> rustls::ServerConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let chain = CertificateDer::pem_file_iter(&leaf.cert)
        .expect("read cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Reads until the peer closes (or resets) the connection; how long that
/// took, or `None` if it is still open after `limit`.
pub async fn closed_within(
    tcp: &mut TcpStream,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A slow loris: connects to `addr` and sends `head` (a request head
/// without its blank line) a byte every 200 ms, for at most 10 s, until
/// the server stops taking bytes; how long it sent, and the open
/// connection.
pub async fn trickle_head(addr: SocketAddr, head: &[u8]) -> (std::time::Duration, TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let started = std::time::Instant::now();
    for byte in head {
        if tcp.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if started.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
    }
    (started.elapsed(), tcp)
}
