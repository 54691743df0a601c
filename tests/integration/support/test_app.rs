//! A plain HTTP app for the tests, in the test process: HTTP/1.1 and h2c on
//! one port, with routes that exercise what a proxy must carry intact.
//!
//! - `/echo`: JSON of what arrived (method, path, version, headers, body size)
//! - `/mirror`: streams the request body (and its trailers) back
//! - `/trailers`: a body followed by trailers
//! - `/bytes?n=N`: N bytes, streamed
//! - `/sse?n=N&interval_ms=M`: N events, one every M ms
//! - `/slow?ms=M`: answers after M ms
//! - `/reset`: drops the connection without answering
//! - `/status/CODE?set=NAME:VALUE&...`: that status, with those headers
//!   (what an app could write, to forge what only a proxy should)
//! - `/grpc/flaky`: a gRPC answer that fails (UNAVAILABLE) every other call

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type AppBody = BoxBody<Bytes, BoxError>;

/// What the app saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
}

/// A running test app; stops when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    client_serials: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(None, KeepAlive::Normal).await
    }

    /// Starts on `addr` (a host of a test's network namespace).
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_with_at(addr, None, KeepAlive::Normal).await
    }

    /// Starts serving HTTPS with `tls` (which may require client
    /// certificates); the serials of the client certificates presented
    /// are recorded.
    pub async fn start_tls(tls: rustls::ServerConfig) -> Self {
        Self::start_with(Some(Arc::new(tls)), KeepAlive::Normal).await
    }

    /// Starts a server that closes keep-alive connections at random
    /// moments (a few milliseconds after each one opens or is used).
    pub async fn start_closing_connections_at_random() -> Self {
        Self::start_with(None, KeepAlive::Chaos).await
    }

    /// Starts a server that answers `Keep-Alive: timeout=N` and closes
    /// connections idle for that long, as Node.js and Apache do.
    pub async fn start_with_keep_alive_timeout(timeout: Duration) -> Self {
        Self::start_with(None, KeepAlive::Advertised(timeout)).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>, mode: KeepAlive) -> Self {
        Self::start_with_at(SocketAddr::from(([127, 0, 0, 1], 0)), tls, mode).await
    }

    async fn start_with_at(
        at: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        mode: KeepAlive,
    ) -> Self {
        let listener = TcpListener::bind(at).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client_serials = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (seen2, serials2, count) = (seen.clone(), client_serials.clone(), connections.clone());
        let open2 = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let (seen, serials, tls) = (seen2.clone(), serials2.clone(), tls.clone());
                let open = OpenGuard::new(&open2);
                tokio::spawn(async move {
                    let _open = open;
                    match tls {
                        None => serve(Box::new(tcp), seen, mode).await,
                        Some(tls) => {
                            let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await
                            else {
                                return;
                            };
                            let peer = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first());
                            if let Some(cert) = peer {
                                let serial = super::inspect::serial_of_der(cert.as_ref());
                                serials.lock().expect("serials").push(serial);
                            }
                            serve(Box::new(stream), seen, mode).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            client_serials,
            connections,
            open,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Serials of the client certificates presented so far (TLS only).
    pub fn client_serials(&self) -> Vec<String> {
        self.client_serials.lock().expect("serials").clone()
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("a request reached the app")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the server treats keep-alive connections.
#[derive(Debug, Clone, Copy)]
enum KeepAlive {
    /// Keeps them as long as the client wants.
    Normal,
    /// Closes each a few milliseconds after it opens or serves a request.
    Chaos,
    /// Says `Keep-Alive: timeout=N` and closes idle ones after N.
    Advertised(Duration),
}

/// A connection of either kind, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Serves one connection the way `mode` says.
async fn serve(io: Box<dyn Io>, seen: Arc<Mutex<Vec<Seen>>>, mode: KeepAlive) {
    let io = TokioIo::new(io);
    let service = service_fn(move |req| handle(req, seen.clone(), mode));
    // Limits well above the sidecar's, so that any 431 in a test comes
    // from the sidecar under test.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_headers(1000).max_buf_size(1 << 20);
    builder.http2().max_header_list_size(1 << 20);
    if let KeepAlive::Advertised(idle) = mode {
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(idle);
    }
    let connection = builder.serve_connection(io, service).into_owned();
    tokio::pin!(connection);
    if let KeepAlive::Chaos = mode {
        let soon = Duration::from_millis(fastrand::u64(1..30));
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = tokio::time::sleep(soon) => connection.as_mut().graceful_shutdown(),
        }
    }
    let _ = connection.await;
}

fn full(body: impl Into<Bytes>) -> AppBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: KeepAlive,
) -> Result<Response<AppBody>, BoxError> {
    let mut response = route(req, seen).await?;
    if let KeepAlive::Advertised(t) = mode {
        let value = format!("timeout={}", t.as_secs());
        response.headers_mut().insert("keep-alive", value.parse()?);
    }
    Ok(response)
}

async fn route(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<AppBody>, BoxError> {
    seen.lock().expect("seen").push(Seen {
        path: req.uri().path().to_owned(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    let response = match path.as_str() {
        "/echo" => echo(req).await,
        "/mirror" => {
            let mut response = Response::new(req.into_body().map_err(BoxError::from).boxed());
            response.headers_mut().insert("x-mirrored", "yes".parse()?);
            response
        }
        "/trailers" => trailers(),
        "/grpc/flaky" => {
            // Every other call fails with UNAVAILABLE, in the trailers.
            let calls = seen
                .lock()
                .expect("seen")
                .iter()
                .filter(|s| s.path == path)
                .count();
            grpc_reply(if calls % 2 == 1 { 14 } else { 0 })
        }
        "/bytes" => bytes(query_param(&req, "n").unwrap_or(0)),
        "/sse" => sse(
            query_param(&req, "n").unwrap_or(3),
            query_param(&req, "interval_ms").unwrap_or(100),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_param(&req, "ms").unwrap_or(0))).await;
            Response::new(full("slow done\n"))
        }
        "/reset" => return Err("reset requested".into()),
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse()?;
            let mut response = Response::new(full(format!("status {code}\n")));
            *response.status_mut() = StatusCode::from_u16(code)?;
            let pairs = req.uri().query().unwrap_or("").split('&');
            for set in pairs.filter_map(|kv| kv.strip_prefix("set=")) {
                let (name, value) = set.split_once(':').ok_or("set=NAME:VALUE")?;
                let name = http::HeaderName::from_bytes(name.as_bytes())?;
                let value = http::HeaderValue::from_bytes(&percent_decoded(value))?;
                response.headers_mut().append(name, value);
            }
            response
        }
        _ => {
            let mut response = Response::new(full("no such test route\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    Ok(response)
}

/// `%XX` escapes decoded (for header values in a query).
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

async fn echo(req: Request<Incoming>) -> Response<AppBody> {
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), values.into());
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut response = Response::new(full(json.to_string()));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A gRPC response: headers, a message unless it failed, then
/// `grpc-status` in the trailers.
fn grpc_reply(status: u32) -> Response<AppBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(status));
    let (tx, body) = channel(2);
    if status == 0 {
        let _ = tx.try_send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))));
    }
    let _ = tx.try_send(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

fn trailers() -> Response<AppBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let (tx, body) = channel(2);
    let _ = tx.try_send(Ok(Frame::data(Bytes::from_static(
        b"body before trailers\n",
    ))));
    let _ = tx.try_send(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "trailer",
        http::HeaderValue::from_static("x-checksum, grpc-status"),
    );
    response
}

fn bytes(n: u64) -> Response<AppBody> {
    const CHUNK: u64 = 64 * 1024;
    let (tx, body) = channel(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
        let mut left = n;
        while left > 0 {
            let len = left.min(CHUNK);
            if tx
                .send(Ok(Frame::data(chunk.slice(..len as usize))))
                .await
                .is_err()
            {
                return;
            }
            left -= len;
        }
    });
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-length", http::HeaderValue::from(n));
    response
}

fn sse(n: u64, interval_ms: u64) -> Response<AppBody> {
    let (tx, body) = channel(1);
    tokio::spawn(async move {
        for i in 0..n {
            let event = Bytes::from(format!("data: event {i}\n\n"));
            if tx.send(Ok(Frame::data(event))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

type FrameResult = Result<Frame<Bytes>, BoxError>;

/// A body fed frame by frame through a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<FrameResult>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<FrameResult>> {
        self.get_mut().0.poll_recv(cx)
    }
}

/// A channel body and its sender.
fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<FrameResult>, AppBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, ChannelBody(rx).boxed())
}
