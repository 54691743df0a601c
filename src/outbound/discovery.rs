//! Where a destination's endpoints come from: a static list, or a DNS name
//! (A/AAAA records, as a Kubernetes headless Service gives) resolved again
//! every few seconds. New addresses join, vanished ones are dropped from
//! rotation (requests already sent to them finish), and a failed lookup
//! keeps the endpoints last known.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{info, warn};

use super::endpoint::Endpoint;

/// Makes the endpoint for an address.
pub type MakeEndpoint = Arc<dyn Fn(SocketAddr) -> Endpoint + Send + Sync>;

/// Where the endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A fixed list.
    Static(Vec<SocketAddr>),
    /// A name resolved every `refresh`.
    Dns {
        /// Host name.
        host: String,
        /// Port of every endpoint.
        port: u16,
        /// How often to resolve it again.
        refresh: Duration,
    },
}

/// The endpoints in force, shared by every request to the destination.
pub struct EndpointSet {
    current: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Becomes true once the first lookup has answered.
    resolved: watch::Sender<bool>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl EndpointSet {
    /// The endpoints of `source`. A DNS source is resolved in the
    /// background, at once and then every `refresh`; until it answers,
    /// `known` (the addresses a destination it replaces had found, empty
    /// for a new one) are in force, so a config reload while DNS is down
    /// loses nothing.
    pub fn new(source: &Source, make: MakeEndpoint, known: &[SocketAddr]) -> Arc<Self> {
        let (resolved, _) = watch::channel(false);
        match source {
            Source::Static(addrs) => {
                let set = Self {
                    current: ArcSwap::from_pointee(
                        addrs.iter().map(|a| Arc::new(make(*a))).collect(),
                    ),
                    resolved,
                    refresher: None,
                };
                set.resolved.send_replace(true);
                Arc::new(set)
            }
            Source::Dns {
                host,
                port,
                refresh,
            } => {
                let current: Vec<Arc<Endpoint>> =
                    known.iter().map(|a| Arc::new(make(*a))).collect();
                resolved.send_replace(!current.is_empty());
                Arc::new_cyclic(|weak: &Weak<Self>| Self {
                    current: ArcSwap::from_pointee(current),
                    resolved,
                    refresher: Some(tokio::spawn(refresh_loop(
                        weak.clone(),
                        host.clone(),
                        *port,
                        *refresh,
                        make,
                    ))),
                })
            }
        }
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.current.load_full()
    }

    /// Waits until the first DNS answer (at once for a static list).
    pub async fn first_answer(&self) {
        let mut resolved = self.resolved.subscribe();
        let _ = resolved.wait_for(|done| *done).await;
    }

    /// Puts `addrs` in force, keeping the endpoints (connections, health)
    /// of addresses already known.
    fn update(&self, mut addrs: Vec<SocketAddr>, make: &MakeEndpoint) {
        addrs.sort_unstable();
        addrs.dedup();
        let old = self.current.load();
        let unchanged =
            old.len() == addrs.len() && old.iter().zip(&addrs).all(|(e, a)| e.addr() == *a);
        if !unchanged {
            let new: Vec<Arc<Endpoint>> = addrs
                .iter()
                .map(|addr| {
                    old.iter()
                        .find(|e| e.addr() == *addr)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(make(*addr)))
                })
                .collect();
            self.current.store(Arc::new(new));
        }
        self.resolved.send_replace(true);
    }
}

impl Drop for EndpointSet {
    fn drop(&mut self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.current.load().iter().map(|e| e.addr()).collect();
        f.debug_struct("EndpointSet")
            .field("endpoints", &addrs)
            .finish()
    }
}

async fn refresh_loop(
    set: Weak<EndpointSet>,
    host: String,
    port: u16,
    refresh: Duration,
    make: MakeEndpoint,
) {
    let mut failing = false;
    let mut last: Vec<SocketAddr> = Vec::new();
    loop {
        let answer = tokio::net::lookup_host((host.as_str(), port)).await;
        let Some(set) = set.upgrade() else {
            return;
        };
        match answer {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort_unstable();
                addrs.dedup();
                if addrs.is_empty() {
                    failing = warn_once(failing, &host, "no addresses");
                } else {
                    if failing || addrs != last {
                        info!(%host, endpoints = ?addrs, "endpoints resolved");
                    }
                    failing = false;
                    last.clone_from(&addrs);
                    set.update(addrs, &make);
                }
            }
            Err(e) => failing = warn_once(failing, &host, &e.to_string()),
        }
        // The first lookup has answered, even if it failed: requests stop
        // waiting and get a clear error instead.
        set.resolved.send_replace(true);
        drop(set);
        tokio::time::sleep(refresh).await;
    }
}

/// Logs the first failure of a streak; returns `true` (failing).
fn warn_once(failing: bool, host: &str, why: &str) -> bool {
    if !failing {
        warn!(%host, "DNS lookup failed ({why}); keeping the endpoints last known");
    }
    true
}
