//! Graceful drain: on shutdown, every open connection is told to finish its
//! in-flight requests and close (HTTP/2 GOAWAY, HTTP/1 close after the
//! current response), and the sidecar waits until all have.

use std::future::Future;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;

/// The shutdown side: starts the drain and waits for it.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<()>,
}

/// The connection side: cloned into every connection task.
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<()>,
}

/// A new drain and its first watch.
pub fn channel() -> (Drain, Watch) {
    let (tx, rx) = watch::channel(());
    (Drain { tx }, Watch { rx })
}

impl Drain {
    /// Signals every watched connection, then waits until every [`Watch`]
    /// (each open connection, and each accept loop) is gone.
    pub fn drain(self) -> impl Future<Output = ()> {
        let _ = self.tx.send(());
        async move { self.tx.closed().await }
    }

    /// How many watches are still alive.
    pub fn open(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Watch {
    /// Runs `conn` to completion, asking it to shut down gracefully once the
    /// drain starts. The watch lives until the connection has closed.
    pub async fn serve<C: GracefulConnection>(mut self, conn: C) -> C::Output {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            output = conn.as_mut() => return output,
            _ = self.rx.changed() => {}
        }
        conn.as_mut().graceful_shutdown();
        conn.await
    }
}
