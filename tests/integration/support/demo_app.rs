//! A demo service (`pilotfish demo-app`) as a real process, on a port the
//! OS picks, with its failure knobs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Request;

use super::{bin, collect, empty, send_h1};

/// A running demo service; killed when dropped.
pub struct DemoApp {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it wrote to stderr so far, line by line.
    log: Arc<Mutex<Vec<String>>>,
}

impl DemoApp {
    /// Starts `pilotfish demo-app --name NAME` with `env` (`DEMO_FAIL_RATE`,
    /// `DEMO_DELAY`, `DEMO_HANG`).
    pub fn start(name: &str, env: &[(&str, &str)]) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().expect("addr"), None, env)
    }

    /// Starts `pilotfish demo-app --name NAME --listen LISTEN`, calling
    /// other services through `sidecar` (its sidecar's outbound listener).
    pub fn start_at(
        name: &str,
        listen: SocketAddr,
        sidecar: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Self {
        let sidecar = sidecar.map(|s| s.to_string());
        let mut extra = Vec::new();
        if let Some(sidecar) = &sidecar {
            extra.extend(["--sidecar", sidecar.as_str()]);
        }
        Self::start_with(name, listen, &extra, env)
    }

    /// Starts `pilotfish demo-app --name NAME --listen LISTEN` and `extra`
    /// arguments (`--sidecar ADDR`, `--redis ADDR`).
    pub fn start_with(
        name: &str,
        listen: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let listen = listen.to_string();
        let mut args = vec!["demo-app", "--name", name, "--listen", &listen];
        args.extend(extra);
        let mut child = Command::new(bin())
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn demo app");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the demo app said where it listens")
            .parse()
            .expect("address");
        Self { child, addr, log }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Changes its knobs at run time: `POST /knobs?QUERY` (`fail=0.5`,
    /// `delay=100ms`, `hang=1`).
    pub async fn set_knobs(&self, query: &str) {
        let req = Request::post(format!("/knobs?{query}"))
            .header("host", "demo")
            .body(empty())
            .expect("request");
        let response = collect(send_h1(self.addr, req).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }

    /// Kills it (SIGKILL) and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        self.kill();
    }
}
