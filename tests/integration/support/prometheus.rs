//! A real Prometheus server (Debian's `prometheus` package, installed by
//! scripts/install-test-deps.sh) run as a child process, and its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{collect, get, send_h1, try_send_h1};

/// How long Prometheus may take to start, or to scrape what a step waits
/// for (it is ready in well under a second, and scrapes every second).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A program from Debian's `prometheus` package, or the one `env` names.
pub fn tool(name: &str, env: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| Path::new("/usr/bin").join(name), Into::into);
    assert!(
        path.exists(),
        "{} is not installed: run scripts/install-test-deps.sh (Debian's prometheus package), or set {env}",
        path.display()
    );
    path
}

/// A Prometheus server run as a child process on a free loopback port;
/// killed by its PID when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `config`, with its data in `dir`, and waits
    /// until it is ready. A port taken between choosing it and Prometheus
    /// binding it is retried with another, twice.
    pub async fn start(dir: &Path, config: &Path) -> Self {
        for attempt in 1..=3 {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port");
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let output = std::fs::File::create(&log).expect("log file");
            let child = Command::new(tool("prometheus", "PILOTFISH_PROMETHEUS"))
                .arg(format!("--config.file={}", config.display()))
                .arg("--storage.tsdb.path")
                .arg(dir.join("data"))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("log file"))
                .stderr(output)
                .spawn()
                .expect("spawn prometheus");
            let mut prometheus = Self { child, addr, log };
            if prometheus.wait_ready().await {
                return prometheus;
            }
            let log = prometheus.log_text();
            assert!(
                log.contains("address already in use"),
                "prometheus exited:\n{log}"
            );
        }
        panic!("prometheus found no free port in 3 attempts");
    }

    /// Polls `/-/ready`: true once it answers 200, false if the process
    /// exited; panics after PATIENCE.
    pub async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if let Ok(response) = try_send_h1(self.addr, get("prometheus", "/-/ready")).await
                && response.status() == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {PATIENCE:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the HTTP API: the status and the JSON answer.
    pub async fn api(&self, path_and_query: &str) -> (u16, Value) {
        let response =
            collect(send_h1(self.addr, get(&self.addr.to_string(), path_and_query)).await).await;
        let json = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{path_and_query}: not JSON ({e}): {}", response.text()));
        (response.status.as_u16(), json)
    }

    /// Evaluates `promql` now: the status and the JSON answer.
    pub async fn try_query(&self, promql: &str) -> (u16, Value) {
        self.api(&format!("/api/v1/query?query={}", encode(promql)))
            .await
    }

    /// Evaluates `promql` now: the series of the result vector.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let (status, json) = self.try_query(promql).await;
        assert!(
            status == 200 && json["status"] == "success",
            "{promql}: {status} {json}"
        );
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of the one series `promql` gives, if any.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        assert!(
            result.len() <= 1,
            "{promql} gave several series: {result:?}"
        );
        result.first().map(sample_value)
    }

    /// Polls `promql` until its value satisfies `done`; panics after
    /// PATIENCE with the last value and Prometheus's log.
    pub async fn wait_value(&self, promql: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.value(promql).await;
            if let Some(v) = value.filter(|v| done(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is {value:?} after {PATIENCE:?}; prometheus log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The number in an instant-vector sample (`"value": [time, "7"]`).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

/// Percent-encodes a query parameter (everything but RFC 3986 unreserved).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
