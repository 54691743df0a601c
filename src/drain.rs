//! Graceful drain: on shutdown, every open connection is told to finish its
//! in-flight requests and close (HTTP/2 GOAWAY, HTTP/1 close after the
//! current response), and the sidecar waits until all have.

use std::future::Future;

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
    /// Completes when the drain starts (or the sidecar is going away). The
    /// watch itself must live until its connection has closed: the drain
    /// waits for every watch.
    pub async fn draining(&mut self) {
        let _ = self.rx.changed().await;
    }
}
