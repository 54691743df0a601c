//! Pilotfish: a service-mesh sidecar proxy.
//!
//! One process runs beside each service. The service speaks plain HTTP on
//! loopback; Pilotfish carries its calls across the mesh over mTLS:
//!
//! ```text
//!  app A --plain HTTP--> [A's sidecar: outbound] ==mTLS, HTTP/2==> [B's sidecar: inbound] --plain HTTP--> app B
//!                          route -> destination -> endpoint            identity -> app client
//! ```
//!
//! Modules, in the order a request meets them:
//!
//! - [`config`]: the YAML file, typed and validated.
//! - [`app`]: start-up (bind every listener, then serve) and graceful drain.
//! - [`outbound`]: app -> mesh: [`routing`] picks a route and destination,
//!   [`outbound::endpoint`] holds the mTLS HTTP/2 connection to a peer.
//! - [`inbound`]: mesh -> app: mTLS termination, caller identity, the app.
//! - [`tls`] and [`identity`]: certificates, SPIFFE ids, verification.
//! - [`http`]: body type, header rules, the proxy's own error responses.
//! - [`admin`], [`metrics`], [`telemetry`]: health, Prometheus, logs.
//! - [`authority`] and [`caller`]: host names and caller patterns, one
//!   grammar for the config and the directions; [`build`]: why a config
//!   could not be built into state.
//! - [`capture`]: the iptables rules that send a pod's TCP through its sidecar.
//! - [`certs`] and [`demo`]: development certificates and the demo mesh.
//!
//! Each module uses only modules of lower layers (ARCHITECTURE.md lists
//! them), so they form no cycle.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod authority;
pub mod build;
pub mod caller;
pub mod capture;
pub mod certs;
pub mod config;
pub mod demo;
pub mod detect;
pub mod drain;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod ratelimit;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod tunnel;
pub mod watch;
