//! One endpoint of a destination: how it is reached (a mesh sidecar over
//! mTLS, or a plain HTTP server), how loaded it is, and how healthy.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use http::{Request, Response};

use super::load::Load;
use super::mesh::MeshConn;
use super::outlier::Health;
use crate::config::UpstreamProtocol;
use crate::http::plain_client::PlainClient;
use crate::http::{Body, ProxyError};
use crate::http::{dial, headers};
use crate::tunnel::BoxIo;

/// How an endpoint is reached.
#[derive(Debug)]
pub enum Conn {
    /// A Pilotfish sidecar, over mTLS.
    Mesh(MeshConn),
    /// A plain HTTP server outside the mesh.
    Plain {
        /// Its connections.
        client: PlainClient,
        /// The HTTP version to speak.
        protocol: UpstreamProtocol,
    },
}

/// An endpoint and what the balancer knows of it.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    conn: Conn,
    /// Requests in flight and response time.
    pub load: Load,
    health: Mutex<Health>,
}

impl Endpoint {
    /// An endpoint reached through `conn`.
    pub fn new(addr: SocketAddr, conn: Conn) -> Self {
        Self {
            addr,
            conn,
            load: Load::default(),
            health: Mutex::new(Health::default()),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a sidecar answers for it (over mTLS).
    pub fn in_mesh(&self) -> bool {
        matches!(self.conn, Conn::Mesh(_))
    }

    /// Its outlier state.
    pub fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request now would first wait for a new connection.
    pub fn would_wait(&self) -> bool {
        match &self.conn {
            Conn::Mesh(mesh) => !mesh.is_connected(),
            Conn::Plain { client, .. } => client.idle_connections() == 0,
        }
    }

    /// Connections open to it.
    pub fn open_connections(&self) -> usize {
        match &self.conn {
            Conn::Mesh(mesh) => mesh.open_connections(),
            Conn::Plain { client, .. } => client.open_connections(),
        }
    }

    /// A raw TCP connection for a tunnel: to `port` behind a mesh
    /// endpoint's sidecar, or to a plain endpoint itself.
    pub async fn tunnel(&self, port: u16, connect_timeout: Duration) -> Result<BoxIo, ProxyError> {
        match &self.conn {
            Conn::Mesh(mesh) => mesh.tunnel(port).await,
            Conn::Plain { .. } => Ok(Box::new(
                dial::tcp_within(self.addr, connect_timeout).await?,
            )),
        }
    }

    /// Sends a request. `app_spoke_http1` says which HTTP version the app
    /// used: the mesh link records it, a plain server may be spoken to in it.
    pub async fn send(
        &self,
        req: Request<Body>,
        app_spoke_http1: bool,
    ) -> Result<Response<Body>, ProxyError> {
        match &self.conn {
            Conn::Mesh(mesh) => mesh.send(req, app_spoke_http1).await,
            Conn::Plain { client, protocol } => {
                let version = protocol.version(app_spoke_http1, req.version());
                let mut response = client.send(req, version).await?;
                // A server outside the mesh does not speak for a proxy.
                headers::strip_own(response.headers_mut());
                Ok(response)
            }
        }
    }
}
