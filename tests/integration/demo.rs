//! `pilotfish demo`: one command brings up the whole mesh; the `curl` line
//! it prints works when pasted (client sidecar =mTLS=> orders sidecar ->
//! orders app -> orders sidecar =mTLS=> users and notifications); the far
//! app sees the caller's verified identity; failures injected at run time
//! show up as a 502 naming the failed call; an order created with the
//! printed `curl` reaches notifications asynchronously, as an event through
//! a real Redis carried as raw TCP by the sidecars; the edge gateway
//! answers the printed call with a demo token (`pilotfish token`) and
//! tells orders who signed in, and refuses it without a token; and Ctrl-C
//! stops every process the demo started. A demo app without its broker serves HTTP and
//! says events are off.

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

use crate::support::demo_app::DemoApp;

/// Longest wait for the demo to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The banner's last line.
const BANNER_END: &str = "Press Ctrl-C to stop.";
/// Longest wait for an event to go from orders to notifications.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one request's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the demo to exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The identity of the demo's `client` sidecar.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
/// 3 demo apps, 5 sidecars (events, users, orders, notifications,
/// client), the gateway and the broker, redis-server.
const CHILDREN: usize = 10;
/// What the demo's children run.
const CHILD_PROGRAMS: [&str; 2] = ["pilotfish", "redis-server"];

#[tokio::test]
async fn demo_mesh_serves_the_printed_curl_and_stops_every_process_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut demo = Demo::start(dir.path());
    let banner = demo.banner().await;
    let first = banner.lines().find(|l| l.starts_with("curl "));
    let curl = CurlRequest::parse(first.expect("a curl line"));
    the_printed_curl_gets_an_order_with_its_user_and_notification(&curl).await;
    users_answer_through_the_mesh_with_the_callers_identity(curl.addr).await;
    the_written_configs_pass_check(dir.path()).await;
    the_gateway_answers_the_printed_call_with_a_demo_token(&banner, dir.path()).await;
    injected_failures_show_as_a_502_naming_the_call(curl.addr).await;
    an_order_event_reaches_notifications_through_the_events_sidecar(&banner).await;
    ctrl_c_stops_the_demo_and_every_process_it_started(&mut demo).await;
}

/// The three printed commands of the asynchronous path: create an order
/// (orders publishes `order-created` to Redis through its sidecar), read
/// what notifications delivered (it consumed the stream through its
/// sidecar), and the events sidecar's metrics, which counted the raw TCP
/// connections it carried.
async fn an_order_event_reaches_notifications_through_the_events_sidecar(banner: &str) {
    let line = |start: &str| {
        banner
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{banner}"))
    };
    let create = CurlRequest::parse(line("curl -s -X POST -H 'Host: orders' "));
    assert_eq!(create.path, "/orders", "{create:?}");
    let (status, body) = create.send().await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = json(&body);
    assert_eq!(created["event"]["published"], true, "{body}");
    assert_eq!(created["event"]["type"], "order-created", "{body}");
    let order_id = created["order"]["id"].as_u64().expect("an order id");
    let email = created["user"]["email"].clone();

    let inbox = CurlRequest::parse(line("curl -s -H 'Host: notifications' "));
    assert_eq!(inbox.path, "/notifications/events", "{inbox:?}");
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let delivered = loop {
        let (status, body) = inbox.send().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = json(&body);
        assert_eq!(events["events"], "on", "{body}");
        let recent = events["recent"].as_array().cloned().unwrap_or_default();
        if let Some(found) = recent.into_iter().find(|n| n["order_id"] == order_id) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order_id} not delivered within {EVENT_TIMEOUT:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered["type"], "order-created", "{delivered}");
    assert_eq!(delivered["to"], email, "{delivered}");
    assert_eq!(delivered["entry"], created["event"]["entry"], "{delivered}");

    // Both apps' connections crossed the mesh: the events sidecar carried
    // them to redis-server as opaque TCP, after mTLS and authorization.
    let metrics = banner
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("pilotfish_tunnels_opened_total"))
        .unwrap_or_else(|| panic!("no curl line for the tunnel metrics in\n{banner}"));
    let (command, grep) = metrics.split_once(" | ").expect("a pipe to grep");
    assert!(grep.contains("pilotfish_tunnels_opened_total"), "{metrics}");
    let (status, text) = CurlRequest::parse(command).send().await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let opened: u64 = text
        .lines()
        .filter(|l| l.starts_with("pilotfish_tunnels_opened_total{"))
        .filter(|l| l.contains(r#"direction="inbound""#) && l.contains(r#"kind="opaque""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum();
    assert!(
        opened >= 2,
        "orders' and notifications' connections:\n{text}"
    );
}

/// Run alone, a demo app has no broker: without `--redis` it says events
/// are off; with a `--redis` where nothing listens, it says it cannot
/// reach it; either way it serves HTTP.
#[tokio::test]
async fn a_demo_app_without_its_broker_serves_http_and_says_events_are_off() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let alone = DemoApp::start_with("notifications", any, &[], &[]);
    let (status, body) = send(alone.addr, Method::GET, "/notifications/events", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["events"], "off", "{body}");
    let (status, body) = send(alone.addr, Method::GET, "/users/1", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = send(alone.addr, Method::GET, "/health", &[]).await;
    assert_eq!(status, StatusCode::OK);
    said(&alone, "events: off").await;

    // A port just freed: nothing listens there.
    let nothing = std::net::TcpListener::bind(any)
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let lost = DemoApp::start_with("notifications", any, &["--redis", &nothing], &[]);
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (status, body) = send(lost.addr, Method::GET, "/notifications/events", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = json(&body);
        assert_eq!(events["events"], "on", "{body}");
        assert_eq!(events["connected"], false, "{body}");
        if events["last_error"].is_string() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    said(&lost, &format!("no broker at {nothing}")).await;
}

/// Waits for `app` to have logged `text`: a line read from its stderr by
/// a thread of its own, which may lag what the app already answers.
async fn said(app: &DemoApp, text: &str) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !app.log().contains(text) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.log().contains(text), "{text:?} not in:\n{}", app.log());
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
        .filter(|p| p.to_string_lossy().ends_with(".yaml"))
        .collect();
    configs.sort();
    assert_eq!(
        configs.len(),
        6,
        "one config per sidecar and the gateway's: {configs:?}"
    );
    assert!(
        configs.iter().any(|c| c.ends_with("gateway.yaml")),
        "{configs:?}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .arg("check")
        .args(&configs)
        .output()
        .await
        .expect("pilotfish check runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
}

/// The gateway's printed lines: with a token that `pilotfish token` signs
/// with the demo key (the `$(...)` of the line, run as a shell would),
/// orders answers and says who signed in, even when the client claims to
/// be someone else; without a token, 401; users, for admins only, refuses
/// a token without the role with 403.
async fn the_gateway_answers_the_printed_call_with_a_demo_token(banner: &str, dir: &Path) {
    let line = banner
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("Authorization: Bearer $("))
        .unwrap_or_else(|| panic!("no curl line with a token in\n{banner}"));
    let mut call = CurlRequest::parse(&with_token(line).await);
    assert_eq!(call.path, "/orders/42", "{line}");

    // The README's one line is this one as scripts/demo.sh runs the demo:
    // the release binary, the folder .demo, the gateway on port 8080.
    let readme_line = line
        .replace(env!("CARGO_BIN_EXE_pilotfish"), "target/release/pilotfish")
        .replace(&dir.join("jwt.key").display().to_string(), ".demo/jwt.key")
        .replace(&call.addr.to_string(), "127.0.0.1:8080");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    assert!(
        readme.lines().any(|l| l == readme_line),
        "README.md no longer has the demo's gateway line:\n{readme_line}"
    );
    let (status, body) = call.send().await;
    assert_eq!(status, StatusCode::OK, "{line}\n{body}");
    let order = json(&body);
    assert_eq!(order["order"]["id"], 42, "{body}");
    assert_eq!(order["signed_in"]["x-user-id"], "alice", "{body}");
    assert_eq!(order["signed_in"]["x-user-roles"], "admin", "{body}");

    // A client cannot claim another user: the gateway replaces the field.
    call.headers
        .push(("x-user-id".to_owned(), "mallory".to_owned()));
    let (status, body) = call.send().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["signed_in"]["x-user-id"], "alice", "{body}");

    let anonymous = banner
        .lines()
        .find(|l| l.starts_with("curl -s -i http://"))
        .unwrap_or_else(|| panic!("no curl line without a token in\n{banner}"));
    let anonymous = CurlRequest::parse(anonymous);
    assert_eq!(anonymous.addr, call.addr, "the same gateway");
    let (status, body) = anonymous.send().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let not_admin = banner
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/users/"))
        .filter(|l| l.contains("Authorization: Bearer $("))
        .unwrap_or_else(|| panic!("no curl line to users with a token in\n{banner}"));
    let (status, body) = CurlRequest::parse(&with_token(not_admin).await)
        .send()
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{not_admin}\n{body}");
}

/// `line` with its `"Authorization: Bearer $(COMMAND)"` as a shell makes
/// it: COMMAND run, its output in place, as one word.
async fn with_token(line: &str) -> String {
    let (before, rest) = line
        .split_once("\"Authorization: Bearer $(")
        .expect("a $(...)");
    let (command, after) = rest.split_once(")\"").expect("the end of $(...)");
    let words = shell_words(command);
    let (program, args) = words.split_first().expect("a command");
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {command}: {e}"));
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).expect("a UTF-8 token");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    format!("{before}'Authorization: Bearer {token}'{after}")
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
            is_live_demo_child(pid),
            "child {pid} is not a running {CHILD_PROGRAMS:?}"
        );
    }
    let brokers = children.iter().filter(|&&pid| comm(pid) == "redis-server");
    assert_eq!(brokers.count(), 1, "the broker among {children:?}");
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
            !is_live_demo_child(pid),
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

    /// Reads stdout up to the banner's last line and returns it all, then
    /// keeps reading the rest in the background so the demo never blocks
    /// on it.
    async fn banner(&mut self) -> String {
        let mut lines = self.stdout.take().expect("stdout is piped");
        let printed = &mut self.printed;
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                printed.push_str(&line);
                printed.push('\n');
                if line == BANNER_END {
                    return Some(printed.clone());
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
            Ok(Some(banner)) => banner,
            Ok(None) => {
                let stderr = self.stderr().await;
                panic!(
                    "the demo printed no {BANNER_END:?}:\n{}\nstderr:\n{stderr}",
                    self.printed
                )
            }
            Err(_) => panic!(
                "no {BANNER_END:?} within {START_TIMEOUT:?}; so far:\n{}",
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
            if is_live_demo_child(pid) {
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

/// Whether `pid` is a running (not zombie) `pilotfish` or `redis-server`
/// process; a PID reused by another program does not count.
fn is_live_demo_child(pid: i32) -> bool {
    let running = stat(pid).is_some_and(|(state, _)| state != 'Z');
    running && CHILD_PROGRAMS.contains(&comm(pid).as_str())
}

/// The name of the program `pid` runs, as the kernel keeps it (the file
/// name it was started as: `redis-server` rewrites its command line, and
/// Debian's is a link to another file).
fn comm(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim_end().to_owned()
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
                "-s" | "-i" => {}
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

/// `pilotfish demo-job` (a Job's app) fails, saying why, when it cannot
/// do its one call or is asked for a service the demo does not have.
#[test]
fn a_demo_job_that_cannot_call_fails_and_says_why() {
    let nowhere = crate::support::free_addr().to_string();
    let run = |service: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .args(["demo-job", "--sidecar", &nowhere, "--admin", &nowhere])
            .args(["--service", service, "--path", "/users/1"])
            .output()
            .expect("run demo-job")
    };
    let unknown = run("payments");
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("payments") && said.contains("users"),
        "{said}"
    );
    let unreachable = run("users");
    assert!(!unreachable.status.success());
    let said = String::from_utf8_lossy(&unreachable.stderr);
    assert!(said.contains("cannot connect to the sidecar"), "{said}");
}
