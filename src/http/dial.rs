//! Dialling TCP for a request or a tunnel: the socket options every
//! connection gets, and failures as the proxy reports them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::ProxyError;

/// A TCP connection to `addr`, tuned (see [`crate::listener::tune`]).
pub async fn tcp(addr: SocketAddr) -> Result<TcpStream, ProxyError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ProxyError::Connect { addr, source })?;
    crate::listener::tune(&tcp);
    Ok(tcp)
}

/// [`tcp`], given up after `timeout`.
pub async fn tcp_within(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    tokio::time::timeout(timeout, tcp(addr))
        .await
        .map_err(|_| ProxyError::ConnectTimeout {
            addr,
            after: timeout,
        })?
}
