//! Origins that fail, hang and reset on command (demo services and their
//! knobs), called by an `orders` sidecar through its `users` destination
//! in one of two ways, so that a scenario runs both:
//!
//! - [`Hops::One`]: one sidecar between the client and the origins, which
//!   it reaches as plain HTTP (`transport: plaintext`);
//! - [`Hops::Pair`]: each origin behind its own `users` sidecar, reached
//!   over mTLS: what the far sidecar saw must reach the near one.

use std::net::SocketAddr;

use http::Request;

use super::{Certs, DemoApp, Sidecar, SidecarConfig, collect, empty, get, send_h1};

/// How the calling sidecar reaches the origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hops {
    /// Directly: one sidecar on the path.
    One,
    /// Through each origin's own sidecar: a pair on the path.
    Pair,
}

/// `n` demo services named `users`, each behind its own sidecar for
/// [`Hops::Pair`].
pub struct Origins {
    pub apps: Vec<DemoApp>,
    pub sidecars: Vec<Sidecar>,
    pub hops: Hops,
}

impl Origins {
    /// Starts `n` origins.
    pub fn start(certs: &Certs, hops: Hops, n: usize) -> Self {
        let apps: Vec<DemoApp> = (0..n).map(|_| DemoApp::start("users", &[])).collect();
        let sidecars = match hops {
            Hops::One => Vec::new(),
            Hops::Pair => {
                let leaf = certs.issue("users");
                apps.iter()
                    .map(|app| {
                        let config = SidecarConfig::with_leaf("users", certs, leaf.clone())
                            .inbound(app.addr);
                        Sidecar::start(&config)
                    })
                    .collect()
            }
        };
        Self {
            apps,
            sidecars,
            hops,
        }
    }

    /// The addresses the calling sidecar dials, in origin order.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        match self.hops {
            Hops::One => self.apps.iter().map(|a| a.addr).collect(),
            Hops::Pair => self.sidecars.iter().map(Sidecar::inbound).collect(),
        }
    }

    /// The `orders` sidecar that calls them as `users`; `yaml` goes under
    /// the destination (6-space indent).
    pub fn caller(&self, certs: &Certs, yaml: &str) -> Sidecar {
        Sidecar::start(&self.caller_config(certs, yaml))
    }

    /// The caller's config, to add to before starting it.
    pub fn caller_config(&self, certs: &Certs, yaml: &str) -> SidecarConfig {
        let transport = match self.hops {
            Hops::One => "      transport: plaintext\n",
            Hops::Pair => "",
        };
        SidecarConfig::new("orders", certs).service(
            "users",
            &self.endpoints(),
            &format!("{transport}{yaml}"),
        )
    }

    /// Sets knobs of origin `i` (`fail=1`, `reset=1`, `hang=1`, `delay=..`).
    pub async fn knobs(&self, i: usize, query: &str) {
        self.apps[i].set_knobs(query).await;
    }

    /// Sets knobs of every origin.
    pub async fn knobs_all(&self, query: &str) {
        for app in &self.apps {
            app.set_knobs(query).await;
        }
    }

    /// Requests each origin's app received (its own count).
    pub async fn requests(&self) -> Vec<u64> {
        let mut counts = Vec::with_capacity(self.apps.len());
        for app in &self.apps {
            let stats = collect(send_h1(app.addr, get("users", "/stats")).await).await;
            assert_eq!(stats.status, 200, "{}", stats.text());
            counts.push(stats.json()["requests"].as_u64().expect("a count"));
        }
        counts
    }

    /// Requests all origins received together.
    pub async fn total(&self) -> u64 {
        self.requests().await.iter().sum()
    }
}

/// `GET path` with `Host: users` through `caller`'s outbound listener.
pub async fn call(caller: &Sidecar, path: &str) -> super::Collected {
    collect(send_h1(caller.outbound(), get("users", path)).await).await
}

/// `POST path` with a small JSON body through `caller`.
pub async fn post(caller: &Sidecar, path: &str) -> super::Collected {
    let req = Request::post(path)
        .header("host", "users")
        .header("content-type", "application/json")
        .body(super::body("{}"))
        .expect("request");
    collect(send_h1(caller.outbound(), req).await).await
}

/// A request without a body, for callers that need one.
pub fn bare(path: &str) -> Request<super::TestBody> {
    Request::get(path)
        .header("host", "users")
        .body(empty())
        .expect("request")
}

/// The differences between two counts, element by element.
pub fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}
