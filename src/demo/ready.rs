//! Waiting for the demo mesh to come up: every sidecar's admin `/ready`
//! and every app's `/health` must answer 200, and the broker `PING`, while
//! no child has exited.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::children::{Children, Exited};

/// Pause between two rounds of checks.
const POLL: Duration = Duration::from_millis(50);

/// Longest wait for one check's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One thing that must answer before the demo is up.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The child that serves it, such as `orders-sidecar`.
    pub child: String,
    /// The child's log file.
    pub log: PathBuf,
    /// Where to ask.
    pub addr: SocketAddr,
    /// What to ask.
    pub check: Check,
}

/// What a probe asks.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// `GET` this path (`/ready` or `/health`), which must answer 200.
    Get(&'static str),
    /// Redis's `PING`, which must answer `+PONG`.
    Ping,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Get(path) => write!(f, "GET {path} with 200"),
            Self::Ping => f.write_str("PING with +PONG"),
        }
    }
}

/// Why the mesh did not come up.
#[derive(Debug)]
pub enum NotReady {
    /// A child exited during start-up.
    Exited(Exited),
    /// These checks still failed when the time was up.
    TimedOut(Vec<Probe>),
}

/// Checks every probe each 50 ms until all have answered once, a child
/// exits, or `limit` passes.
pub async fn wait(
    children: &mut Children,
    probes: &[Probe],
    limit: Duration,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<Probe> = probes.to_vec();
    loop {
        if let Some(exited) = children.first_exited() {
            return Err(NotReady::Exited(exited));
        }
        let mut still = Vec::with_capacity(pending.len());
        for probe in pending {
            let answered = match probe.check {
                Check::Get(path) => get(probe.addr, path).await == Some(StatusCode::OK),
                Check::Ping => ping(probe.addr).await,
            };
            if !answered {
                still.push(probe);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut(pending));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The status of `GET path` at `addr`, or `None` if there was no answer
/// within a second.
pub async fn get(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status())
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// Whether the Redis server at `addr` answers `PING` within a second.
async fn ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"PING\r\n").await.ok()?;
        let mut answer = [0; 7];
        tcp.read_exact(&mut answer).await.ok()?;
        Some(&answer == b"+PONG\r\n")
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
