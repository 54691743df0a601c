//! `pilotfish demo`: one command brings up the whole mesh; the `curl` line
//! it prints works when pasted (client sidecar =mTLS=> orders sidecar ->
//! orders app -> orders sidecar =mTLS=> users and notifications); the far
//! app sees the caller's verified identity; failures injected at run time
//! show up as a 502 naming the failed call; and Ctrl-C stops every process
//! the demo started.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Longest wait for the demo to print its first `curl` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one request's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the demo to exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The identity of the demo's `client` sidecar.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
/// 3 demo apps and 4 sidecars (users, orders, notifications, client).
const CHILDREN: usize = 7;

#[tokio::test]
async fn demo_mesh_serves_the_printed_curl_and_stops_every_process_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut demo = Demo::start(dir.path());
    let curl = CurlRequest::parse(&demo.first_curl_line().await);
    the_printed_curl_gets_an_order_with_its_user_and_notification(&curl).await;
    users_answer_through_the_mesh_with_the_callers_identity(curl.addr).await;
    the_written_configs_pass_check(dir.path()).await;
    injected_failures_show_as_a_502_naming_the_call(curl.addr).await;
    ctrl_c_stops_the_demo_and_every_process_it_started(&mut demo).await;
}

async fn the_printed_curl_gets_an_order_with_its_user_and_notification(curl: &CurlRequest) {
    let (status, body) = curl.send().await;
    assert_eq!(status, StatusCode::OK, "{curl:?}\n{body}");
    let order = json(&body);
    let id = curl
        .path
        .rsplit('/')
        .next()
        .and_then(|id| id.parse::<u64>().ok());
    assert_eq!(order["order"]["id"].as_u64(), id, "{body}");
    assert_eq!(order["user"]["id"], order["order"]["user_id"], "{body}");
    assert!(
        order["user"]["email"]
            .as_str()
            .is_some_and(|e| e.contains('@')),
        "{body}"
    );
    assert_eq!(order["notification"]["queued"], true, "{body}");
    assert!(
        order["notification"]["id"].as_u64().is_some_and(|n| n >= 1),
        "{body}"
    );
}

async fn the_written_configs_pass_check(dir: &Path) {
    let mut configs: Vec<_> = std::fs::read_dir(dir)
        .expect("the demo folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-sidecar.yaml"))
        .collect();
    configs.sort();
    assert_eq!(configs.len(), 4, "one config per sidecar: {configs:?}");
    let output = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .arg("check")
        .args(&configs)
        .output()
        .await
        .expect("pilotfish check runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
}

async fn users_answer_through_the_mesh_with_the_callers_identity(entry: SocketAddr) {
    let (status, body) = send(entry, Method::GET, "/users/7", &[("host", "users")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = json(&body);
    assert_eq!(user["id"], 7, "{body}");
    assert!(user["name"].is_string(), "{body}");

    // A caller cannot claim an identity: the inbound sidecar replaces it.
    let headers = [
        ("host", "users"),
        (
            "pilotfish-client-id",
            "spiffe://cluster.local/ns/default/sa/admin",
        ),
    ];
    let (status, body) = send(entry, Method::GET, "/echo", &headers).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let echo = json(&body);
    assert_eq!(echo["service"], "users", "{body}");
    assert_eq!(
        echo["headers"]["pilotfish-client-id"],
        serde_json::json!([CLIENT_ID]),
        "{body}"
    );
}

async fn injected_failures_show_as_a_502_naming_the_call(entry: SocketAddr) {
    let users = [("host", "users")];
    let (status, body) = send(entry, Method::POST, "/knobs?fail=1", &users).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["fail"], 1.0, "{body}");

    let orders = [("host", "orders")];
    let (status, body) = send(entry, Method::GET, "/orders/5", &orders).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let failure = json(&body);
    let call = failure["call"].as_str().unwrap_or_default();
    assert!(call.starts_with("GET users/users/"), "{body}");
    assert_eq!(failure["status"], 503, "{body}");
    assert_eq!(failure["body"], "injected failure", "{body}");

    let (status, body) = send(entry, Method::POST, "/knobs?fail=0", &users).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(entry, Method::GET, "/orders/5", &orders).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn ctrl_c_stops_the_demo_and_every_process_it_started(demo: &mut Demo) {
    let children = children_of(demo.guard.demo);
    assert_eq!(
        children.len(),
        CHILDREN,
        "children of the demo: {children:?}"
    );
    for &pid in &children {
        assert!(
            is_live_pilotfish(pid),
            "child {pid} is not a running pilotfish"
        );
    }
    demo.guard.children.clone_from(&children);

    let status = demo.interrupt_and_wait().await;
    let stderr = demo.stderr().await;
    assert!(
        status.success(),
        "the demo exited with {status}; stderr:\n{stderr}"
    );
    let said = demo.rest_of_stdout().await;
    assert!(said.contains("SIGINT received"), "{said}");
    assert!(said.trim_end().ends_with("Stopped."), "{said}");
    for pid in children {
        assert!(
            !is_live_pilotfish(pid),
            "process {pid} started by the demo still runs"
        );
    }
    demo.guard.disarm();
}

/// The running `pilotfish demo` process.
struct Demo {
    /// First, so it is dropped first: it finds the children through the
    /// demo, which must still be alive (the `Child` kills it on drop).
    guard: Guard,
    process: Child,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    printed: String,
    stdout_rest: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Demo {
    fn start(dir: &Path) -> Self {
        let mut process = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .arg("demo")
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("pilotfish demo starts");
        let pid = process
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("a pid");
        let stdout = process.stdout.take().map(|out| BufReader::new(out).lines());
        let stderr = process.stderr.take().map(|err| tokio::spawn(read_all(err)));
        Self {
            guard: Guard {
                demo: pid,
                children: Vec::new(),
                armed: true,
            },
            process,
            stdout,
            printed: String::new(),
            stdout_rest: None,
            stderr,
        }
    }

    /// Reads stdout up to the first line starting with `curl `, then keeps
    /// reading the rest in the background so the demo never blocks on it.
    async fn first_curl_line(&mut self) -> String {
        let mut lines = self.stdout.take().expect("stdout is piped");
        let printed = &mut self.printed;
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                printed.push_str(&line);
                printed.push('\n');
                if line.starts_with("curl ") {
                    return Some(line);
                }
            }
            None
        })
        .await;
        self.stdout_rest = Some(tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        }));
        match found {
            Ok(Some(line)) => line,
            Ok(None) => {
                let stderr = self.stderr().await;
                panic!(
                    "the demo printed no curl line:\n{}\nstderr:\n{stderr}",
                    self.printed
                )
            }
            Err(_) => panic!(
                "no curl line within {START_TIMEOUT:?}; so far:\n{}",
                self.printed
            ),
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the demo to exit.
    async fn interrupt_and_wait(&mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.guard.demo), Signal::SIGINT).expect("SIGINT is delivered");
        match tokio::time::timeout(STOP_TIMEOUT, self.process.wait()).await {
            Ok(status) => status.expect("the demo's exit status"),
            Err(_) => panic!("the demo did not exit within {STOP_TIMEOUT:?} of SIGINT"),
        }
    }

    /// What the demo printed after the `curl` line (complete once it has exited).
    async fn rest_of_stdout(&mut self) -> String {
        finish(self.stdout_rest.take()).await
    }

    /// What the demo wrote to stderr (complete once it has exited).
    async fn stderr(&mut self) -> String {
        finish(self.stderr.take()).await
    }
}

/// The text a reading task collected; it ends when the demo has exited.
async fn finish(task: Option<JoinHandle<String>>) -> String {
    match task {
        Some(task) => tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .map_or_else(
                |_| "(the stream is still open)".to_owned(),
                |r| r.unwrap_or_default(),
            ),
        None => String::new(),
    }
}

async fn read_all(mut stream: impl AsyncRead + Unpin) -> String {
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text
}

/// Kills the demo and every process it started, by PID, if the test stops
/// before they have all exited.
struct Guard {
    demo: i32,
    children: Vec<i32>,
    armed: bool,
}

impl Guard {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut pids = children_of(self.demo);
        pids.extend(&self.children);
        pids.push(self.demo);
        for pid in pids {
            if is_live_pilotfish(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Processes whose parent is `parent`, from `/proc/*/stat`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect();
    pids.sort_unstable();
    pids
}

/// A process's state letter and parent PID. The command name in the
/// middle may hold spaces and parentheses, so fields are read after the
/// last `)`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a running (not zombie) `pilotfish` process; a PID
/// reused by another program does not count.
fn is_live_pilotfish(pid: i32) -> bool {
    let running = stat(pid).is_some_and(|(state, _)| state != 'Z');
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = Path::new(std::str::from_utf8(argv0).unwrap_or_default()).file_name();
    running && name.is_some_and(|n| n == "pilotfish")
}

/// A `curl` command line as the demo prints it: `-s`, `-X METHOD`,
/// `-H 'Name: value'` and an `http://` URL.
#[derive(Debug)]
struct CurlRequest {
    method: Method,
    addr: SocketAddr,
    path: String,
    headers: Vec<(String, String)>,
}

impl CurlRequest {
    fn parse(line: &str) -> Self {
        let words = shell_words(line);
        assert_eq!(words.first().map(String::as_str), Some("curl"), "{line}");
        let (mut method, mut url, mut headers) = (Method::GET, None, Vec::new());
        let mut words = words.into_iter().skip(1);
        while let Some(word) = words.next() {
            match word.as_str() {
                "-s" => {}
                "-X" => {
                    method = words
                        .next()
                        .and_then(|m| m.parse().ok())
                        .expect("a method after -X")
                }
                "-H" => {
                    let header = words.next().expect("a header after -H");
                    let (name, value) = header.split_once(':').expect("a header `Name: value`");
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
                w if w.starts_with("http://") => url = Some(word),
                other => panic!("unexpected curl argument {other:?} in {line}"),
            }
        }
        let url = url.expect("a URL");
        let rest = url.trim_start_matches("http://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = authority.parse().expect("the URL names IP:PORT");
        if !headers.iter().any(|(name, _)| name == "host") {
            headers.push(("host".to_owned(), authority.to_owned()));
        }
        let path = if path.is_empty() { "/" } else { path }.to_owned();
        Self {
            method,
            addr,
            path,
            headers,
        }
    }

    async fn send(&self) -> (StatusCode, String) {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        send(self.addr, self.method.clone(), &self.path, &headers).await
    }
}

/// Splits a shell command line into words; single quotes group.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word, mut quoted) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, in_word) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// One plain HTTP/1.1 request, like curl's; the status and body text.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the client sidecar");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} from {addr} within {REQUEST_TIMEOUT:?}"))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn curl_lines_are_split_like_a_shell_does() {
    let request = CurlRequest::parse(
        "curl -s -X POST -H 'Host: users' 'http://127.0.0.1:8080/knobs?fail=0.5'",
    );
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(request.path, "/knobs?fail=0.5");
    assert_eq!(request.headers, [("host".to_owned(), "users".to_owned())]);
}
