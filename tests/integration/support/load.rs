//! A steady stream of requests during a test, counting every failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{collect, get, try_send_h1};

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Every other outcome, described.
    pub failures: Vec<String>,
}

/// Requests from a few concurrent clients, each on a new connection,
/// until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts `clients` loops sending `GET path` with `Host: host` to `addr`.
    pub fn start(addr: SocketAddr, host: &str, path: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let (host, path) = (host.to_owned(), path.to_owned());
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        match try_send_h1(addr, get(&host, &path)).await {
                            Ok(response) => {
                                let response = collect(response).await;
                                if response.status == 200 {
                                    report.ok += 1;
                                } else {
                                    report.failures.push(format!(
                                        "{} {}",
                                        response.status,
                                        response.text().trim()
                                    ));
                                }
                            }
                            Err(e) => report.failures.push(format!("no response: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    report
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops and sums up.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for worker in self.workers {
            let report = worker.await.expect("load worker");
            total.ok += report.ok;
            total.failures.extend(report.failures);
        }
        total
    }
}
