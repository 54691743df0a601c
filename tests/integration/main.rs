//! Integration tests: the real `pilotfish` binary as a separate process,
//! over real sockets and real mTLS with certificates it made itself.

mod support;

mod access_log;
mod admin;
mod authz;
mod balancing;
mod certs;
mod config_check;
mod connect;
mod demo;
mod detection;
mod discovery;
mod errors;
mod examples;
mod faults;
mod gateway;
mod gateway_limits;
mod gateway_reload;
mod gateway_routes;
mod grpc;
mod hardening;
mod infra;
mod keepalive;
mod link;
mod manifests;
mod mtls;
mod opaque;
mod outage;
mod outliers;
mod peer_failures;
mod pods;
mod prometheus;
mod proxy;
mod rate_limit;
mod reload;
mod resilience;
mod rotation;
mod shutdown;
mod slow_clients;
mod streaming;
mod tls_scan;
mod token;
mod tracing;
mod websockets;
