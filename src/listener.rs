//! The accept loop every listener runs: hand each connection to a
//! handler, and survive accept errors (such as running out of file
//! descriptors) instead of spinning or dying.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// Accepts until aborted; an accept error (such as running out of file
/// descriptors) is logged and retried after a pause rather than fatal.
pub async fn accept_loop<F>(listener: &TcpListener, name: &'static str, mut on_connection: F)
where
    F: FnMut(TcpStream, SocketAddr),
{
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => on_connection(tcp, addr),
            Err(e) => {
                warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
