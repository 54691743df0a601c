//! A sidecar run as a real process, on ports the OS picks (`:0`); the
//! bound addresses are read from its JSON `listening` log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Certs, Leaf, bin, path_str};

/// Builds the YAML of one sidecar.
pub struct SidecarConfig {
    service: String,
    ca: PathBuf,
    leaf: Leaf,
    inbound_app: Option<SocketAddr>,
    inbound_listen: Option<SocketAddr>,
    inbound_extra: String,
    tls_extra: String,
    outbound: Vec<(String, Vec<SocketAddr>, String)>,
    routes: String,
    extra: String,
    outbound_enabled: bool,
    outbound_extra: String,
    admin_listen: SocketAddr,
}

impl SidecarConfig {
    /// A sidecar for `service` with a fresh certificate from `certs`.
    pub fn new(service: &str, certs: &Certs) -> Self {
        Self::with_leaf(service, certs, certs.issue(service))
    }

    /// A sidecar for `service` presenting `leaf`.
    pub fn with_leaf(service: &str, certs: &Certs, leaf: Leaf) -> Self {
        Self::with_files(service, certs.ca(), leaf)
    }

    /// A sidecar for `service` reading the CA bundle at `ca` and `leaf`.
    pub fn with_files(service: &str, ca: PathBuf, leaf: Leaf) -> Self {
        Self {
            service: service.to_owned(),
            ca,
            leaf,
            inbound_app: None,
            inbound_listen: None,
            inbound_extra: String::new(),
            tls_extra: String::new(),
            outbound: Vec::new(),
            routes: String::new(),
            extra: String::new(),
            outbound_enabled: false,
            outbound_extra: String::new(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// The admin listener on `listen` (instead of a free loopback port).
    pub fn admin_listen(mut self, listen: SocketAddr) -> Self {
        self.admin_listen = listen;
        self
    }

    /// Accept mesh traffic for the app at `app`.
    pub fn inbound(mut self, app: SocketAddr) -> Self {
        self.inbound_app = Some(app);
        self
    }

    /// Accept mesh traffic on `listen` (instead of a free port).
    pub fn inbound_listen(mut self, listen: SocketAddr) -> Self {
        self.inbound_listen = Some(listen);
        self
    }

    /// Extra YAML lines under `inbound:` (indented by the caller with 2 spaces).
    pub fn inbound_extra(mut self, yaml: &str) -> Self {
        self.inbound_extra.push_str(yaml);
        self
    }

    /// Extra YAML lines under `tls:` (2-space indent).
    pub fn extra_tls(mut self, yaml: &str) -> Self {
        self.tls_extra.push_str(yaml);
        self
    }

    /// A destination service; `extra` is YAML under it (4-space indent).
    pub fn service(mut self, name: &str, endpoints: &[SocketAddr], extra: &str) -> Self {
        self.outbound_enabled = true;
        self.outbound
            .push((name.to_owned(), endpoints.to_vec(), extra.to_owned()));
        self
    }

    /// Extra YAML lines under `outbound:` (2-space indent).
    pub fn outbound_extra(mut self, yaml: &str) -> Self {
        self.outbound_enabled = true;
        self.outbound_extra.push_str(yaml);
        self
    }

    /// An outbound listener even without services.
    pub fn outbound(mut self) -> Self {
        self.outbound_enabled = true;
        self
    }

    /// YAML list items under `outbound.routes` (4-space indent).
    pub fn routes(mut self, yaml: &str) -> Self {
        self.outbound_enabled = true;
        self.routes.push_str(yaml);
        self
    }

    /// Top-level YAML appended at the end.
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    /// The config file text.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "service: {}\ntls:\n  ca: {}\n  cert: {}\n  key: {}\n{}admin:\n  listen: {}\nlog:\n  format: json\n",
            self.service,
            path_str(&self.ca),
            path_str(&self.leaf.cert),
            path_str(&self.leaf.key),
            self.tls_extra,
            self.admin_listen,
        );
        if let Some(app) = self.inbound_app {
            let listen = self
                .inbound_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            y.push_str(&format!(
                "inbound:\n  listen: {listen}\n  app: {app}\n{}",
                self.inbound_extra
            ));
        }
        if self.outbound_enabled {
            y.push_str("outbound:\n  listen: 127.0.0.1:0\n");
            y.push_str(&self.outbound_extra);
            y.push_str("  services:\n");
            if self.outbound.is_empty() {
                y.push_str("    {}\n");
            }
            for (name, endpoints, extra) in &self.outbound {
                let list: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
                y.push_str(&format!(
                    "    {name}:\n      endpoints: [{}]\n{extra}",
                    list.join(", ")
                ));
            }
            if !self.routes.is_empty() {
                y.push_str("  routes:\n");
                y.push_str(&self.routes);
            }
        }
        y.push_str(&self.extra);
        y
    }
}

/// How to start the process, beyond its config: files bind-mounted over
/// others and a small tmpfs, in a private mount namespace (needs root),
/// and where stdout (the access log) goes instead of the pipe the test
/// reads.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    binds: Vec<(PathBuf, PathBuf)>,
    tmpfs: Option<(PathBuf, u64)>,
    stdout: Option<PathBuf>,
    netns: Option<(String, Option<u32>)>,
}

impl Launch {
    /// `source` appears at `target` (both files) for the sidecar only.
    pub fn bind(mut self, source: &std::path::Path, target: &str) -> Self {
        self.binds.push((source.to_owned(), target.into()));
        self
    }

    /// An empty tmpfs of `bytes` on the folder `on`, for the sidecar only
    /// (the test reaches it through `/proc/PID/root`).
    pub fn tmpfs(mut self, on: &std::path::Path, bytes: u64) -> Self {
        self.tmpfs = Some((on.to_owned(), bytes));
        self
    }

    /// stdout goes to `path` (opened for appending, after the mounts), not
    /// to the test: `/dev/full`, or a file on the tmpfs.
    pub fn stdout_to(mut self, path: &std::path::Path) -> Self {
        self.stdout = Some(path.to_owned());
        self
    }

    /// In the network namespace `ns`, as the user `uid` when given (the
    /// proxy's own user, whose connections capture lets through).
    pub fn netns(mut self, ns: &super::Netns, uid: Option<u32>) -> Self {
        self.netns = Some((ns.name().to_owned(), uid));
        self
    }

    /// Lets the user the sidecar runs as read its folder.
    fn give(&self, dir: &std::path::Path) {
        if let Some((_, Some(uid))) = &self.netns {
            super::netns::give(dir, *uid);
        }
    }

    fn private_mounts(&self) -> bool {
        !self.binds.is_empty() || self.tmpfs.is_some()
    }

    /// The program to run with `run --config ...` appended.
    fn command(&self) -> Command {
        if let Some((ns, uid)) = &self.netns {
            assert!(
                !self.private_mounts(),
                "a namespace or private mounts, not both"
            );
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            if let Some(uid) = uid {
                c.args([
                    "setpriv",
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                ]);
                c.arg("--clear-groups");
            }
            c.arg(bin());
            return c;
        }
        if !self.private_mounts() {
            return Command::new(bin());
        }
        let quote = |p: &std::path::Path| format!("'{}'", path_str(p).replace('\'', "'\\''"));
        let mut script = String::new();
        for (source, target) in &self.binds {
            script.push_str(&format!(
                "mount --bind {} {} && ",
                quote(source),
                quote(target)
            ));
        }
        if let Some((on, bytes)) = &self.tmpfs {
            script.push_str(&format!(
                "mount -t tmpfs -o size={bytes} tmpfs {} && ",
                quote(on)
            ));
        }
        script.push_str("exec \"$@\"");
        if let Some(out) = &self.stdout {
            script.push_str(&format!(" >>{}", quote(out)));
        }
        let mut c = Command::new("unshare");
        c.args(["--mount", "sh", "-c", &script, "sh", bin()]);
        c
    }

    fn stdout(&self) -> Stdio {
        match &self.stdout {
            None => Stdio::piped(),
            // Redirected by the shell, after the mounts.
            Some(_) if self.private_mounts() => Stdio::null(),
            Some(path) => std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
                .into(),
        }
    }
}

/// A running `pilotfish run` process; killed when dropped.
pub struct Sidecar {
    child: Child,
    pub admin: SocketAddr,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    /// The gateway's plain HTTP and HTTPS listeners, when configured.
    pub gateway: Option<SocketAddr>,
    pub gateway_tls: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Sidecar {
    /// Starts a sidecar and waits until it logs `ready`.
    pub fn start(config: &SidecarConfig) -> Self {
        Self::start_yaml(&config.yaml())
    }

    /// Starts a sidecar from config text and waits until it logs `ready`.
    pub fn start_yaml(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("sidecar.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        Self::spawn(config_path, dir, &Launch::default())
    }

    /// Starts a sidecar from a config file that the test manages.
    pub fn start_at(config_path: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn(config_path.to_owned(), dir, &Launch::default())
    }

    /// Starts a sidecar whose `/etc/hosts` is `hosts` (a file the test may
    /// rewrite in place), in a private mount namespace (needs root).
    pub fn start_with_hosts(config: &SidecarConfig, hosts: &std::path::Path) -> Self {
        Self::launch(config, &Launch::default().bind(hosts, "/etc/hosts"))
    }

    /// Starts a sidecar the way `launch` says (bind mounts, a small
    /// tmpfs, stdout elsewhere).
    pub fn launch(config: &SidecarConfig, launch: &Launch) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("sidecar.yaml");
        std::fs::write(&config_path, config.yaml()).expect("write config");
        launch.give(dir.path());
        Self::spawn(config_path, dir, launch)
    }

    fn spawn(config_path: PathBuf, dir: tempfile::TempDir, launch: &Launch) -> Self {
        let yaml = std::fs::read_to_string(&config_path).unwrap_or_default();
        let mut command = launch.command();
        let mut child = command
            .args(["run", "--config", path_str(&config_path)])
            .env_remove("PILOTFISH_LOG")
            .stdin(Stdio::null())
            .stdout(launch.stdout())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pilotfish");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let mut streams = vec![(
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn std::io::Read + Send>,
            None,
        )];
        if let Some(out) = child.stdout.take() {
            streams.push((Box::new(out), Some(stdout.clone())));
        }
        for (stream, only) in streams {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(only) = &only {
                        only.lock().expect("stdout").push(line.clone());
                    }
                    logs.lock().expect("logs").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut sidecar = Self {
            child,
            admin: SocketAddr::from(([0; 4], 0)),
            inbound: None,
            outbound: None,
            gateway: None,
            gateway_tls: None,
            logs,
            stdout,
            lines,
            _dir: dir,
            config_path,
        };
        sidecar.await_ready(&yaml);
        sidecar
    }

    fn await_ready(&mut self, yaml: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "sidecar did not become ready; config:\n{yaml}\noutput:\n{}",
                    self.logs().join("\n")
                ),
            };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            match event["message"].as_str() {
                Some("listening") => {
                    let addr: SocketAddr = event["addr"]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .expect("listening addr");
                    match event["listener"].as_str() {
                        Some("admin") => self.admin = addr,
                        Some("inbound") => self.inbound = Some(addr),
                        Some("outbound") => self.outbound = Some(addr),
                        Some("gateway") => self.gateway = Some(addr),
                        Some("gateway-tls") => self.gateway_tls = Some(addr),
                        // An opaque destination's own listener: its address
                        // is fixed in the config, so tests know it already.
                        Some("opaque") => {}
                        other => panic!("unknown listener {other:?}"),
                    }
                }
                Some("ready") => return,
                _ => {}
            }
        }
    }

    /// The outbound listener (panics if not configured).
    pub fn outbound(&self) -> SocketAddr {
        self.outbound.expect("outbound listener")
    }

    /// The inbound listener (panics if not configured).
    pub fn inbound(&self) -> SocketAddr {
        self.inbound.expect("inbound listener")
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// The lines printed on stdout (the access log) so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout").clone()
    }

    /// The JSON access log lines so far; panics on a line that is not a
    /// JSON object.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .iter()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("access log line {line:?} is not JSON: {e}"));
                assert!(value.is_object(), "{line}");
                value
            })
            .collect()
    }

    /// Waits until the access log has at least `count` lines.
    pub fn wait_access_log(&self, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.access_log();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} access log lines, not {count}, after {timeout:?}:\n{}",
                lines.len(),
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a log line contains `needle`; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {timeout:?}:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        kill(Pid::from_raw(pid), signal).expect("kill");
    }

    /// Waits for the process to exit; `None` if it is still running
    /// after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
