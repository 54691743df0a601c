//! WebSockets with a real library on both ends (`tokio-tungstenite`): an
//! echo server in the test process on a free loopback port, and clients
//! that connect through any address (the server's own, or a sidecar's
//! outbound listener with `Host: SERVICE`).
//!
//! The server echoes text and binary messages, answers pings (the library
//! does), answers a close frame with one and ends the connection; on
//! `/server-close` it closes first (1000, "bye"). It accepts the first
//! subprotocol a client offers. Told to, it refuses upgrades with a status,
//! headers and a body of the test's choosing, to check that a refusal
//! comes back to the client unchanged. It records the head of every
//! upgrade request it reads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config, client_async_with_config};

use super::{Collected, TestBody, collect, empty, send_h1};

/// A client's connection.
pub type Ws = WebSocketStream<TcpStream>;

/// How long one step of a client may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The largest message either end takes (tungstenite's default is 64 MiB;
/// the tests send a few MiB at most).
const MAX_MESSAGE: usize = 64 << 20;

fn config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// How the server answers upgrades it refuses.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Refusal {
    /// `status` with a text body (and its Content-Length).
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("status"),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into(),
        }
    }

    /// With one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The head of an upgrade request as the server read it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    pub headers: HeaderMap,
}

impl SeenRequest {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Shared {
    refusal: Option<Refusal>,
    seen: Vec<SeenRequest>,
    /// Connections upgraded, and those whose close handshake completed.
    upgraded: usize,
    closed_cleanly: usize,
}

/// The echo server; stops accepting (and ends its connections) when
/// dropped.
pub struct WsServer {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsServer {
    /// Starts an echo server on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(serve(stream, state.clone()));
                // Reap the finished ones as we go.
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, shared, task }
    }

    /// Starts a server that refuses every upgrade with `refusal`.
    pub async fn refusing(refusal: Refusal) -> Self {
        let server = Self::start().await;
        server.refuse(Some(refusal));
        server
    }

    /// Refuses upgrades from now on with `refusal`, or (`None`) accepts
    /// them again.
    pub fn refuse(&self, refusal: Option<Refusal>) {
        self.lock().refusal = refusal;
    }

    /// The upgrade requests read so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    /// How many connections were upgraded.
    pub fn upgraded(&self) -> usize {
        self.lock().upgraded
    }

    /// How many connections ended with a completed close handshake.
    pub fn closed_cleanly(&self) -> usize {
        self.lock().closed_cleanly
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts the
        // connections.
        self.task.abort();
    }
}

/// One connection: the handshake (recorded, perhaps refused), then echo.
async fn serve(stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut path = String::new();
    // (The signature is tungstenite's: a refusal is a whole response.)
    #[allow(clippy::result_large_err)]
    let callback = |request: &http::Request<()>, mut response: Response| {
        path = request.uri().path().to_owned();
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.seen.push(SeenRequest {
            path: path.clone(),
            headers: request.headers().clone(),
        });
        if let Some(refusal) = &shared.refusal {
            let mut builder = http::Response::builder().status(refusal.status);
            for (name, value) in &refusal.headers {
                builder = builder.header(name, value);
            }
            let refused: ErrorResponse = builder
                .header("content-length", refusal.body.len())
                .header("connection", "close")
                .body(Some(refusal.body.clone()))
                .expect("refusal");
            return Err(refused);
        }
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|p| p.trim().to_owned());
        if let Some(protocol) = offered {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                protocol.parse().expect("subprotocol"),
            );
        }
        Ok(response)
    };
    let Ok(mut ws) = accept_hdr_async_with_config(stream, callback, Some(config())).await else {
        return;
    };
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .upgraded += 1;
    if path == "/server-close" {
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })))
            .await;
    }
    while let Some(message) = ws.next().await {
        match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            // Pings are answered, and a close frame too, by the library
            // on the next read or flush.
            Ok(_) => {
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    // The stream ends after the close handshake, and only then.
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .closed_cleanly += 1;
}

/// An upgrade request for `url` (`ws://SERVICE/path`: the Host header is
/// its authority), with every header the handshake needs, to add to.
pub fn ws_request(url: &str) -> Request<()> {
    url.into_client_request().expect("WebSocket URL")
}

/// Connects to `addr` and upgrades with `request` (see [`ws_request`]):
/// the connection and the server's 101 response, or the library's error
/// (`tungstenite::Error::Http` for a refusal; its body may be cut short:
/// see [`upgrade_raw`] to read a refusal whole).
pub async fn try_ws_connect(
    addr: SocketAddr,
    request: Request<()>,
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio::time::timeout(
        PATIENCE,
        client_async_with_config(request, tcp, Some(config())),
    )
    .await
    .unwrap_or_else(|_| panic!("WebSocket handshake with {addr} took over {PATIENCE:?}"))
}

/// Connects to `addr` and upgrades for `url` (`ws://SERVICE/path`).
pub async fn ws_connect(addr: SocketAddr, url: &str) -> Ws {
    let (ws, response) = try_ws_connect(addr, ws_request(url))
        .await
        .unwrap_or_else(|e| panic!("WebSocket {url} through {addr}: {e}"));
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The next message that arrives (within PATIENCE).
pub async fn next_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap_or_else(|_| panic!("no WebSocket message in {PATIENCE:?}"))
        .expect("the connection ended")
        .expect("a WebSocket message")
}

/// Sends `message` and asserts that the same comes back.
pub async fn assert_echo(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).await.expect("send");
    let echoed = next_message(ws).await;
    assert!(
        echoed == message,
        "echo differs from what was sent ({} bytes sent, {} back)",
        message.len(),
        echoed.len()
    );
}

/// Sends a ping and asserts that a pong with its payload comes back.
pub async fn assert_pong(ws: &mut Ws, payload: &[u8]) {
    let payload = Bytes::copy_from_slice(payload);
    ws.send(Message::Ping(payload.clone())).await.expect("ping");
    match next_message(ws).await {
        Message::Pong(got) => assert_eq!(got, payload),
        other => panic!("expected a pong, got {other:?}"),
    }
}

/// The close handshake from the client: sends a close frame (1000), and
/// asserts that the server answers with one and then ends the connection.
pub async fn close_cleanly(mut ws: Ws) {
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .expect("send close");
    let mut answered = false;
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Err(_) => panic!("no close handshake in {PATIENCE:?}"),
            Ok(None) => break,
            Ok(Some(Ok(Message::Close(_)))) => answered = true,
            Ok(Some(Ok(_))) => {}
            // tungstenite reports the end after the handshake this way.
            Ok(Some(Err(tungstenite::Error::ConnectionClosed))) => break,
            Ok(Some(Err(e))) => panic!("during the close handshake: {e}"),
        }
    }
    assert!(answered, "the server did not answer the close frame");
}

/// Everything a WebSocket carries, checked on one connection: a text
/// message, a binary one, a 1 MiB one, a ping, then the close handshake.
pub async fn exercise(mut ws: Ws) {
    assert_echo(&mut ws, Message::text("hello through the mesh")).await;
    assert_echo(&mut ws, Message::binary(vec![0u8, 1, 2, 253, 254, 255])).await;
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert_echo(&mut ws, Message::binary(big)).await;
    assert_pong(&mut ws, b"are you there").await;
    assert_echo(&mut ws, Message::text("after the ping")).await;
    close_cleanly(ws).await;
}

/// An HTTP/1.1 upgrade request to `host` `path` with the WebSocket
/// handshake headers, sent with the tests' hyper client: for refusals,
/// whose status, headers and whole body (by its framing) come back as
/// [`Collected`].
pub fn upgrade_request(host: &str, path: &str) -> http::request::Builder {
    Request::get(path)
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
}

/// Sends `request` (see [`upgrade_request`]) on a new connection to
/// `addr` and reads the answer whole. For refused upgrades: a 101 is not
/// read on.
pub async fn upgrade_raw(addr: SocketAddr, request: Request<TestBody>) -> Collected {
    let response = send_h1(addr, request).await;
    assert_ne!(
        response.status(),
        StatusCode::SWITCHING_PROTOCOLS,
        "the upgrade was accepted"
    );
    collect(response).await
}

/// [`upgrade_raw`] for `host` and `path` with no other headers.
pub async fn upgrade_refused(addr: SocketAddr, host: &str, path: &str) -> Collected {
    upgrade_raw(
        addr,
        upgrade_request(host, path).body(empty()).expect("request"),
    )
    .await
}
