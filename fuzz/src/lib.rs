//! The Pilotfish fuzz targets' checks, one module per kind of input that
//! comes from outside, each with a `run(&[u8])` that feeds the input to the
//! real `pilotfish` functions and asserts their invariants.
//!
//! Two builds share this code without copies:
//!
//! - the libFuzzer binaries, `fuzz_targets/NAME.rs`, each one line that
//!   calls `pilotfish_fuzz::NAME::run` (`cargo fuzz run NAME`,
//!   `scripts/fuzz.sh`);
//! - the regression test of the main crate, `tests/fuzz_corpus.rs`, which
//!   includes this file as a module (`#[path = "../fuzz/src/lib.rs"]`) and
//!   replays every saved input through [`TARGETS`] in the normal test run,
//!   without libFuzzer.
//!
//! So the modules use only crates the main crate depends on, refer to each
//! other with `super::`, and have no `unsafe`.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use pilotfish::metrics::Metrics;

pub mod authz;
pub mod config;
pub mod error;
pub mod grpc;
pub mod head;
pub mod headers;
pub mod identity;
pub mod input;
pub mod keep_alive;
pub mod outcome;
pub mod path;
pub mod ratelimit;
pub mod request_id;
pub mod retry_after;
pub mod route;
pub mod trace;
pub mod uri;
pub mod x509;

/// A target's check of one input: returns, or panics with what is wrong.
pub type Check = fn(&[u8]);

/// Every target, by the name of its binary and of its corpus folders
/// (`fuzz/corpus/NAME`, `fuzz/seeds/NAME`, `fuzz/regressions/NAME`).
pub const TARGETS: &[(&str, Check)] = &[
    ("authz", authz::run),
    ("config", config::run),
    ("error", error::run),
    ("grpc", grpc::run),
    ("head", head::run),
    ("headers", headers::run),
    ("identity", identity::run),
    ("keep_alive", keep_alive::run),
    ("outcome", outcome::run),
    ("path", path::run),
    ("ratelimit", ratelimit::run),
    ("request_id", request_id::run),
    ("retry_after", retry_after::run),
    ("route", route::run),
    ("trace", trace::run),
    ("uri", uri::run),
    ("x509", x509::run),
];

/// The one registry's metrics (families register once per registry).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::register(&prometheus::Registry::new()).expect("metrics"))
}
