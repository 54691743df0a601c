//! What the integration tests share: certificates made by the real binary,
//! sidecars run as real processes, test apps and HTTP/TLS clients.

#![allow(dead_code)] // each test file uses a different part

pub mod client;
pub mod demo_app;
pub mod docker;
pub mod files;
pub mod gateway;
pub mod inspect;
pub mod load;
pub mod mesh;
pub mod netns;
pub mod origins;
pub mod otlp;
pub mod pair;
pub mod postgres;
pub mod process_tree;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod sidecar;
pub mod test_app;
pub mod websocket;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use client::*;
pub use demo_app::DemoApp;
pub use files::K8sMount;
pub use inspect::{metric, metric_sum, serial_of_file, served_serial, sum_matching, wait_metric};
pub use load::Load;
pub use mesh::Mesh;
pub use netns::Netns;
pub use pair::Pair;
pub use sidecar::{Launch, Sidecar, SidecarConfig};
pub use test_app::TestApp;

/// A free loopback address for a config that must name its port (an
/// opaque destination's `listen`, an app not started yet). Picked below
/// the kernel's ephemeral range (32768 and up), so the port cannot be
/// handed to another test's outgoing connection between this check and
/// the bind that uses it, as a port from bind(0) can.
pub fn free_addr() -> std::net::SocketAddr {
    for _ in 0..1000 {
        let port = 20_000 + fastrand::u16(..12_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("a bound address");
        }
    }
    panic!("no free port from 20000 to 32000")
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pilotfish")
}

/// Runs `pilotfish ARGS` to completion; panics with its output on failure.
pub fn pilotfish(args: &[&str]) -> std::process::Output {
    let output = Command::new(bin())
        .args(args)
        .output()
        .expect("run pilotfish");
    assert!(
        output.status.success(),
        "pilotfish {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A CA and workload certificates in a temporary folder, made with
/// `pilotfish certs`.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

/// One workload's certificate and key.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// A fresh CA.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        pilotfish(&["certs", "ca", "--out", path_str(dir.path())]);
        Self { dir }
    }

    /// The CA bundle.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `service` in namespace `default`.
    pub fn issue(&self, service: &str) -> Leaf {
        self.issue_with(service, &[])
    }

    /// A certificate for `service` with extra `certs issue` flags.
    pub fn issue_with(&self, service: &str, extra: &[&str]) -> Leaf {
        let dir = path_str(self.dir.path());
        let mut args = vec![
            "certs",
            "issue",
            "--ca",
            dir,
            "--service",
            service,
            "--out",
            dir,
            "--force",
        ];
        args.extend_from_slice(extra);
        pilotfish(&args);
        Leaf {
            cert: self.dir.path().join(format!("{service}.pem")),
            key: self.dir.path().join(format!("{service}-key.pem")),
        }
    }
}

/// A path as UTF-8 (temp dirs always are).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
