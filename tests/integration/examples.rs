//! The shipped configs (`config/*.yaml`) do what their comments promise.
//!
//! Each test reads a shipped file from the repository at test time, so a
//! later edit of the file is covered too. It lays the file out as the
//! repository does (`DIR/config/NAME.yaml`, certificates from `pilotfish
//! certs` in `DIR/certs/dev/`, where its `../certs/dev/...` paths point),
//! checks it with `pilotfish check`, then runs it with the real binary.
//! Only what must change for tests to run side by side is changed: the
//! listeners (OS-chosen ports), the app's address, and the addresses of
//! what it calls (peer sidecars; reference.yaml's collector and Redis).
//! The file is parsed, those fields are set, and it is written back as
//! JSON (which is YAML), so everything else stays as shipped. Then the requests the comments promise are sent through real
//! calling sidecars, with the identities the comments name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::support::*;

/// The identity of `service` in namespace `namespace` of the default
/// trust domain.
fn id(namespace: &str, service: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{service}")
}

/// A folder laid out like the repository: `config/` for shipped configs,
/// `certs/dev/` for one CA and their certificates; `peers/NS/` for the
/// certificates of the test's other sidecars (so none overwrites a file
/// a shipped config watches).
struct Workspace {
    dir: tempfile::TempDir,
}

/// A shipped config, copied into a [`Workspace`].
struct Example {
    /// The copy, exactly as shipped.
    path: PathBuf,
    /// Its contents, parsed.
    config: Value,
}

impl Workspace {
    /// A workspace with a fresh CA in `certs/dev/`.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
        pilotfish(&[
            "certs",
            "ca",
            "--out",
            path_str(&dir.path().join("certs/dev")),
        ]);
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/dev/ca.pem")
    }

    /// Copies `config/NAME.yaml` from the repository and issues the
    /// certificate it names for its identity (as certs/make-dev-certs.sh
    /// does), then checks that `pilotfish check` accepts the copy.
    fn shipped(&self, name: &str) -> Example {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/{name}.yaml"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
        let config: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", source.display()));
        let path = self.dir.path().join(format!("config/{name}.yaml"));
        std::fs::write(&path, &text).expect("copy config");

        let service = config["service"].as_str().expect("service");
        let namespace = config["namespace"].as_str().unwrap_or("default");
        let trust_domain = config["trust_domain"].as_str().unwrap_or("cluster.local");
        let cert = config
            .pointer("/tls/cert")
            .and_then(Value::as_str)
            .expect("tls.cert");
        assert_eq!(
            cert,
            format!("../certs/dev/{service}.pem"),
            "{name}.yaml: the certificate is where certs/make-dev-certs.sh puts it"
        );
        let certs = self.dir.path().join("certs/dev");
        #[rustfmt::skip]
        pilotfish(&[
            "certs", "issue", "--ca", path_str(&certs), "--service", service,
            "--namespace", namespace, "--trust-domain", trust_domain,
            "--out", path_str(&certs), "--force",
        ]);

        let example = Example { path, config };
        example.assert_checks();
        example
    }

    /// A certificate from the workspace CA for `service` in `namespace`,
    /// kept apart from the shipped configs' certificates.
    fn issue(&self, service: &str, namespace: &str) -> Leaf {
        let out = self.dir.path().join("peers").join(namespace);
        std::fs::create_dir_all(&out).expect("peers dir");
        let ca = self.dir.path().join("certs/dev");
        #[rustfmt::skip]
        pilotfish(&[
            "certs", "issue", "--ca", path_str(&ca), "--service", service,
            "--namespace", namespace, "--out", path_str(&out), "--force",
        ]);
        Leaf {
            cert: out.join(format!("{service}.pem")),
            key: out.join(format!("{service}-key.pem")),
        }
    }

    /// A sidecar for `service` of namespace `default`, with a certificate
    /// from the workspace CA.
    fn sidecar(&self, service: &str) -> SidecarConfig {
        SidecarConfig::with_files(service, self.ca(), self.issue(service, "default"))
    }

    /// A calling sidecar, `service` in `namespace`, whose outbound side
    /// reaches `destination` (a service of namespace `default`) at `at`.
    fn caller(&self, service: &str, namespace: &str, destination: &str, at: SocketAddr) -> Sidecar {
        let leaf = self.issue(service, namespace);
        Sidecar::start(
            &SidecarConfig::with_files(service, self.ca(), leaf)
                .extra(&format!("namespace: {namespace}\n"))
                .service(destination, &[at], "      namespace: default\n"),
        )
    }
}

impl Example {
    /// `pilotfish check` accepts the file as shipped, without warnings.
    fn assert_checks(&self) {
        let output = Command::new(bin())
            .args(["check", path_str(&self.path)])
            .output()
            .expect("run pilotfish check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.trim(),
            format!("{}: ok", path_str(&self.path)),
            "no warnings"
        );
    }

    /// The config with every listener on a port the OS picks and the app
    /// at `app`: the changes every test needs.
    fn isolated(&self, app: Option<SocketAddr>) -> Value {
        let mut config = self.config.clone();
        let any_port = json!("127.0.0.1:0");
        set(&mut config, "/admin/listen", any_port.clone());
        if config.get("inbound").is_some() {
            set(&mut config, "/inbound/listen", any_port.clone());
            let app = app.expect("an app address for a config with an inbound side");
            replace(&mut config, "/inbound/app", json!(app.to_string()));
        }
        if config.get("outbound").is_some() {
            set(&mut config, "/outbound/listen", any_port);
        }
        // Opaque destinations' local addresses too, on free ports (a
        // destination's `listen` must name one; its `port` says where the
        // far side connects, so it does not follow).
        let services = config
            .pointer_mut("/outbound/services")
            .and_then(Value::as_object_mut);
        for service in services.into_iter().flat_map(|s| s.values_mut()) {
            if service.get("listen").is_some() {
                replace(service, "/listen", json!(free_addr().to_string()));
            }
        }
        config
    }

    /// Runs `config` (the shipped one, changed) from the same folder, so
    /// its relative certificate paths still resolve.
    fn start(&self, config: &Value) -> Sidecar {
        let path = self.path.with_extension("test.yaml");
        let text = serde_json::to_string_pretty(config).expect("JSON");
        std::fs::write(&path, text).expect("write config");
        Sidecar::start_at(&path)
    }
}

/// Sets the field at `pointer`, creating the objects on the way (for a
/// field the shipped file leaves to its default).
fn set(config: &mut Value, pointer: &str, value: Value) {
    let mut at = config;
    for key in pointer.trim_start_matches('/').split('/') {
        at = at
            .as_object_mut()
            .unwrap_or_else(|| panic!("{pointer}: not inside an object"))
            .entry(key)
            .or_insert_with(|| json!({}));
    }
    *at = value;
}

/// Replaces the field at `pointer`, which the shipped file must have.
fn replace(config: &mut Value, pointer: &str, value: Value) {
    *config
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the shipped config has no {pointer}")) = value;
}

/// Points the destination `service` at `endpoints` instead of the
/// addresses the file was written for.
fn endpoints(config: &mut Value, service: &str, endpoints: &[SocketAddr]) {
    let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    replace(
        config,
        &format!("/outbound/services/{service}/endpoints"),
        json!(list),
    );
}

/// What an [`App`] saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    version: Version,
    headers: HeaderMap,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The caller's identity, as the inbound sidecar told the app.
    fn client_id(&self) -> Option<&str> {
        self.header("pilotfish-client-id")
    }
}

/// An app behind a sidecar: answers every request 200 `ok` (so a 200
/// through the mesh means the request got in), and records what it saw.
struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        record.lock().expect("seen").push(Seen {
                            method: req.method().clone(),
                            path: req.uri().path().to_owned(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"ok\n",
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    fn last(&self) -> Seen {
        self.seen().pop().expect("a request reached the app")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `METHOD path` with `Host: host` through `sidecar`'s outbound
/// listener, as its app would.
async fn call(sidecar: &Sidecar, method: Method, host: &str, path: &str) -> Collected {
    let body = if method == Method::POST {
        body("{}")
    } else {
        empty()
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(body)
        .expect("request");
    collect(send_h1(sidecar.outbound(), req).await).await
}

/// The app answered (200), not a sidecar.
#[track_caller]
fn assert_admitted(response: &Collected, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(response.header("pilotfish-error"), None, "{what}");
}

/// `config/users.yaml`: "Only orders may call, and only to read users."
#[tokio::test(flavor = "multi_thread")]
async fn users_example_lets_orders_read_users_and_nothing_else() {
    let workspace = Workspace::new();
    let example = workspace.shipped("users");
    let app = App::start().await;
    let users = example.start(&example.isolated(Some(app.addr)));

    let orders = workspace.caller("orders", "default", "users", users.inbound());
    for (method, path) in [
        (Method::GET, "/users"),
        (Method::GET, "/users/1"),
        (Method::HEAD, "/users/1"),
    ] {
        let what = format!("orders {method} {path}");
        let response = call(&orders, method.clone(), "users", path).await;
        assert_admitted(&response, &what);
        let seen = app.last();
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&method, path),
            "{what}"
        );
        assert_eq!(seen.client_id(), Some(id("default", "orders").as_str()));
    }
    let reached = app.seen().len();

    // Only to read.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let response = call(&orders, method, "users", "/users/1").await;
        assert_denied(&response, "method-not-allowed");
    }
    let response = call(&orders, Method::POST, "users", "/users").await;
    assert_denied(&response, "method-not-allowed");
    // Only users.
    let response = call(&orders, Method::GET, "users", "/admin").await;
    assert_denied(&response, "path-not-allowed");
    let response = call(&orders, Method::GET, "users", "/usersx").await;
    assert_denied(&response, "path-not-allowed");

    // Only orders: not notifications, and not an `orders` of another
    // namespace (`{service: orders}` means this namespace).
    let notifications = workspace.caller("notifications", "default", "users", users.inbound());
    let response = call(&notifications, Method::GET, "users", "/users/1").await;
    assert_denied(&response, "no-rule-for-caller");
    let elsewhere = workspace.caller("orders", "shop", "users", users.inbound());
    let response = call(&elsewhere, Method::GET, "users", "/users/1").await;
    assert_denied(&response, "no-rule-for-caller");

    assert_eq!(
        app.seen().len(),
        reached,
        "a refused request reached the app"
    );
}

/// `config/orders.yaml`: "The edge gateway, from whatever namespace it
/// runs in" may call the orders API; orders "receives calls, and calls
/// users and notifications" (users as `config/users.yaml` runs it).
#[tokio::test(flavor = "multi_thread")]
async fn orders_example_admits_the_gateway_and_calls_users_and_notifications() {
    let workspace = Workspace::new();
    let users_example = workspace.shipped("users");
    let example = workspace.shipped("orders");

    let users_app = App::start().await;
    let users = users_example.start(&users_example.isolated(Some(users_app.addr)));
    let notifications_app = App::start().await;
    let notifications = Sidecar::start(
        &workspace
            .sidecar("notifications")
            .inbound(notifications_app.addr),
    );
    let app = App::start().await;
    let mut config = example.isolated(Some(app.addr));
    endpoints(&mut config, "users", &[users.inbound()]);
    endpoints(&mut config, "notifications", &[notifications.inbound()]);
    let orders = example.start(&config);

    // The gateway, from whatever namespace, reaches the whole orders API:
    // the collection and every order.
    for namespace in ["edge", "default"] {
        let gateway = workspace.caller("gateway", namespace, "orders", orders.inbound());
        for (method, path) in [
            (Method::POST, "/orders"),
            (Method::GET, "/orders"),
            (Method::GET, "/orders/7"),
            (Method::DELETE, "/orders/7"),
        ] {
            let what = format!("gateway of {namespace}: {method} {path}");
            let response = call(&gateway, method.clone(), "orders", path).await;
            assert_admitted(&response, &what);
            let seen = app.last();
            assert_eq!(
                (&seen.method, seen.path.as_str()),
                (&method, path),
                "{what}"
            );
            assert_eq!(seen.client_id(), Some(id(namespace, "gateway").as_str()));
        }
        // The orders API only.
        let response = call(&gateway, Method::GET, "orders", "/admin").await;
        assert_denied(&response, "path-not-allowed");
        let response = call(&gateway, Method::GET, "orders", "/ordersx").await;
        assert_denied(&response, "path-not-allowed");
    }
    let reached = app.seen().len();
    // Nobody else.
    for (service, namespace) in [("users", "default"), ("gateway-admin", "edge")] {
        let other = workspace.caller(service, namespace, "orders", orders.inbound());
        for (method, path) in [(Method::POST, "/orders"), (Method::GET, "/orders/7")] {
            let response = call(&other, method, "orders", path).await;
            assert_denied(&response, "no-rule-for-caller");
        }
    }
    assert_eq!(
        app.seen().len(),
        reached,
        "a refused request reached the app"
    );

    // The orders app calls users through its sidecar, and users (as
    // config/users.yaml runs it) lets orders read.
    let response = call(&orders, Method::GET, "users", "/users/1").await;
    assert_admitted(&response, "orders calls users");
    let seen = users_app.last();
    assert_eq!(seen.path, "/users/1");
    assert_eq!(seen.client_id(), Some(id("default", "orders").as_str()));
    let response = call(&orders, Method::POST, "users", "/users").await;
    assert_denied(&response, "method-not-allowed");
    // And notifications.
    let response = call(&orders, Method::POST, "notifications", "/notifications").await;
    assert_admitted(&response, "orders calls notifications");
    let seen = notifications_app.last();
    assert_eq!(
        (&seen.method, seen.path.as_str()),
        (&Method::POST, "/notifications")
    );
    assert_eq!(seen.client_id(), Some(id("default", "orders").as_str()));
}

/// The reference sidecar and what it calls: `users` and `billing` (whose
/// workload runs as `payments`) behind sidecars, `legacy-inventory` a
/// plain HTTP app outside the mesh.
struct Reference {
    sidecar: Sidecar,
    app: App,
    users_app: App,
    billing_app: App,
    inventory: App,
    _users: Sidecar,
    _payments: Sidecar,
    workspace: Workspace,
}

impl Reference {
    async fn start() -> Self {
        let workspace = Workspace::new();
        let example = workspace.shipped("reference");

        let users_app = App::start().await;
        let users = Sidecar::start(&workspace.sidecar("users").inbound(users_app.addr));
        let billing_app = App::start().await;
        let payments = Sidecar::start(&workspace.sidecar("payments").inbound(billing_app.addr));
        let inventory = App::start().await;
        let app = App::start().await;

        let mut config = example.isolated(Some(app.addr));
        endpoints(&mut config, "users", &[users.inbound()]);
        endpoints(&mut config, "billing", &[payments.inbound()]);
        endpoints(&mut config, "legacy-inventory", &[inventory.addr]);
        // The collector and Redis the file names may be running on this
        // machine: a port where nothing listens instead. Spans are
        // dropped, and the global limit falls back to `on_failure`.
        let nowhere = free_addr();
        replace(
            &mut config,
            "/tracing/otlp/endpoint",
            json!(format!("http://{nowhere}")),
        );
        let limits = config["rate_limits"]
            .as_array_mut()
            .expect("rate_limits list");
        for limit in limits.iter_mut().filter(|l| l.get("global").is_some()) {
            replace(limit, "/global/redis", json!(format!("redis://{nowhere}")));
        }
        let sidecar = example.start(&config);
        Self {
            sidecar,
            app,
            users_app,
            billing_app,
            inventory,
            _users: users,
            _payments: payments,
            workspace,
        }
    }
}

/// `config/reference.yaml`, `inbound.authorization`: rule
/// `orders-reads-users` admits orders of this namespace, `report-*` of
/// namespace batch and the gateway of any namespace, to GET and HEAD
/// `/users` and under it; `default: deny` refuses the rest.
#[tokio::test(flavor = "multi_thread")]
async fn reference_example_authorization_admits_and_refuses_as_commented() {
    let reference = Reference::start().await;
    let workspace = &reference.workspace;
    let inbound = reference.sidecar.inbound();

    for (service, namespace) in [
        ("orders", "default"),
        ("report-daily", "batch"),
        ("gateway", "edge"),
    ] {
        let caller = workspace.caller(service, namespace, "orders", inbound);
        for (method, path) in [
            (Method::GET, "/users"),
            (Method::GET, "/users/7"),
            (Method::HEAD, "/users/7"),
        ] {
            let what = format!("{service} of {namespace}: {method} {path}");
            let response = call(&caller, method.clone(), "orders", path).await;
            assert_admitted(&response, &what);
            let seen = reference.app.last();
            assert_eq!(
                (&seen.method, seen.path.as_str()),
                (&method, path),
                "{what}"
            );
            assert_eq!(seen.client_id(), Some(id(namespace, service).as_str()));
        }
        let response = call(&caller, Method::POST, "orders", "/users").await;
        assert_denied(&response, "method-not-allowed");
        let response = call(&caller, Method::GET, "orders", "/orders/1").await;
        assert_denied(&response, "path-not-allowed");
    }
    let reached = reference.app.seen().len();
    for (service, namespace) in [
        ("payments", "default"),
        // report-* only from batch; orders only from this namespace.
        ("report-daily", "default"),
        ("orders", "batch"),
    ] {
        let caller = workspace.caller(service, namespace, "orders", inbound);
        let response = call(&caller, Method::GET, "orders", "/users/7").await;
        assert_denied(&response, "no-rule-for-caller");
    }
    assert_eq!(
        reference.app.seen().len(),
        reached,
        "a refused request reached the app"
    );
    let denied = r#"pilotfish_authz_denied_total{caller="spiffe://cluster.local/ns/default/sa/payments",reason="no-rule-for-caller"}"#;
    assert_eq!(metric(&reference.sidecar, denied).await, 1.0);
}

/// `config/reference.yaml`, `outbound`: destinations by name (and their
/// other host names), routes by host and whole path segments, the
/// `billing` identity override, and `legacy-inventory` in plain HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn reference_example_routes_as_commented() {
    let reference = Reference::start().await;
    let sidecar = &reference.sidecar;
    let orders = id("default", "orders");

    // By service name, and the names NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local.
    for host in [
        "users",
        "users.default",
        "users.default.svc",
        "users.default.svc.cluster.local:8080",
    ] {
        let response = call(sidecar, Method::GET, host, "/users/1").await;
        assert_admitted(&response, host);
        let seen = reference.users_app.last();
        assert_eq!(seen.path, "/users/1", "{host}");
        assert_eq!(seen.client_id(), Some(orders.as_str()), "{host}");
    }
    // route users-api: api.internal (any case, any port), /users and under.
    for (host, path) in [
        ("api.internal", "/users"),
        ("API.Internal", "/users/7"),
        ("api.internal:8443", "/users/7/orders"),
    ] {
        let users_before = reference.users_app.seen().len();
        let response = call(sidecar, Method::GET, host, path).await;
        assert_admitted(&response, &format!("{host}{path}"));
        assert_eq!(
            reference.users_app.seen().len(),
            users_before + 1,
            "{host}{path} went to users"
        );
        assert_eq!(reference.users_app.last().path, path);
    }

    // The other api.internal paths go to billing, whose workload proves
    // the identity `payments` (the billing_app is behind that sidecar).
    for (host, path) in [
        ("api.internal", "/usersx"),
        ("api.internal", "/invoices/3"),
        ("billing", "/invoices/3"),
    ] {
        let billing_before = reference.billing_app.seen().len();
        let response = call(sidecar, Method::GET, host, path).await;
        assert_admitted(&response, &format!("{host}{path}"));
        assert_eq!(
            reference.billing_app.seen().len(),
            billing_before + 1,
            "{host}{path} went to billing"
        );
        let seen = reference.billing_app.last();
        assert_eq!(seen.path, path);
        assert_eq!(seen.client_id(), Some(orders.as_str()));
    }

    // Any other host: legacy-inventory, plain HTTP/1.1 (`protocol: http1`,
    // even for an h2c caller), no identity.
    let req = Request::get("http://inventory.example/stock/3")
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(sidecar.outbound(), req).await).await;
    assert_admitted(&response, "inventory.example");
    let seen = reference.inventory.last();
    assert_eq!(seen.path, "/stock/3");
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.client_id(), None);
    let response = call(sidecar, Method::GET, "anything.else", "/").await;
    assert_admitted(&response, "anything.else");
    assert_eq!(reference.inventory.seen().len(), 2);

    // The `route` label: the route's name, or its host (and path prefix,
    // when it has one other than "/").
    for (selector, count) in [
        (r#"route="users-api",service="users""#, 3.0),
        (r#"route="api.internal",service="billing""#, 2.0),
        (r#"route="*",service="legacy-inventory""#, 2.0),
    ] {
        let series = format!(r#"pilotfish_requests_total{{direction="outbound",{selector}}}"#);
        assert_eq!(metric(sidecar, &series).await, count, "{series}");
    }

    // The HTTPRoute forms on the sidecar's own routes. /v2/users: rewritten
    // to /v1/users for users.internal, fields changed both ways.
    let req = Request::get("/v2/users/3")
        .header("host", "api.internal")
        .header("x-debug", "1")
        .body(empty())
        .expect("request");
    let response = collect(send_h1(sidecar.outbound(), req).await).await;
    assert_admitted(&response, "/v2/users/3");
    let seen = reference.users_app.last();
    assert_eq!(seen.path, "/v1/users/3");
    assert_eq!(seen.header("host"), Some("users.internal"));
    assert_eq!(seen.header("x-env"), Some("prod"));
    assert_eq!(seen.header("x-route"), Some("users-api"));
    assert_eq!(seen.header("x-debug"), None);
    // /old: a redirect, answered by the sidecar.
    let response = call(sidecar, Method::GET, "api.internal", "/old/page?x=1").await;
    assert_eq!(response.status, 301);
    assert_eq!(
        response.header("location"),
        Some("https://api.example.com/new/page?x=1")
    );
    // /maintenance: a fixed answer.
    let response = call(sidecar, Method::GET, "api.internal", "/maintenance").await;
    assert_eq!(response.status, 503);
    assert_eq!(response.text(), "down for maintenance\n");
    // orders-canary: /orders goes to billing or legacy-inventory, and the
    // cookie it sets keeps the client there.
    let response = call(sidecar, Method::GET, "api.internal", "/orders").await;
    assert_admitted(&response, "orders-canary");
    let cookie = response
        .header("set-cookie")
        .expect("a sticky cookie")
        .to_owned();
    let pair = cookie.split(';').next().expect("cookie").to_owned();
    let side = |pair: &str| pair.trim_start_matches("pf-backend=").to_owned();
    let (billing_before, inventory_before) = (
        reference.billing_app.seen().len(),
        reference.inventory.seen().len(),
    );
    for _ in 0..5 {
        let req = Request::get("/orders")
            .header("host", "api.internal")
            .header("cookie", pair.as_str())
            .body(empty())
            .expect("request");
        let response = collect(send_h1(sidecar.outbound(), req).await).await;
        assert_admitted(&response, "orders-canary with its cookie");
        assert_eq!(response.header("set-cookie"), None, "the cookie stays");
    }
    let (billing, inventory) = (
        reference.billing_app.seen().len() - billing_before,
        reference.inventory.seen().len() - inventory_before,
    );
    match side(&pair).as_str() {
        "billing" => assert_eq!((billing, inventory), (5, 0)),
        "legacy-inventory" => assert_eq!((billing, inventory), (0, 5)),
        other => panic!("a cookie for {other}"),
    }
}

/// `config/reference.yaml`: request ids ("a missing request id is made
/// up, a missing correlation id takes the request id's value", passed on
/// and returned), trace context in `propagation: [w3c, b3multi]` (read
/// W3C, write both, one trace id), and a JSON access log line per request
/// on stdout.
#[tokio::test(flavor = "multi_thread")]
async fn reference_example_ids_traces_and_access_log_as_commented() {
    let reference = Reference::start().await;
    let sidecar = &reference.sidecar;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = Request::get("/stock/3")
        .header("host", "inventory.example")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(empty())
        .expect("request");
    let response = collect(send_h1(sidecar.outbound(), req).await).await;
    assert_admitted(&response, "inventory.example");

    let request_id = response.header("x-request-id").expect("x-request-id");
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    assert_eq!(response.header("x-correlation-id"), Some(request_id));
    let seen = reference.inventory.last();
    assert_eq!(seen.header("x-request-id"), Some(request_id));
    assert_eq!(seen.header("x-correlation-id"), Some(request_id));

    let traceparent = seen.header("traceparent").expect("traceparent");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the sidecar's own span id: {traceparent}"
    );
    assert_eq!(seen.header("x-b3-traceid"), Some(trace_id));

    let lines = sidecar.wait_access_log(1, std::time::Duration::from_secs(5));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["direction"], "outbound", "{line}");
    assert_eq!(line["service"], "legacy-inventory", "{line}");
    assert_eq!(line["path"], "/stock/3", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["request_id"], request_id, "{line}");
    assert_eq!(line["trace_id"], trace_id, "{line}");
}

/// A request to the gateway's plain listener, with a bearer token if given.
async fn through_gateway(
    gateway: &Sidecar,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Collected {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example.com");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(empty()).expect("request");
    let addr = gateway.gateway.expect("the gateway's listener");
    collect(send_h1(addr, req).await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_example_routes_checks_tokens_and_keeps_the_monolith_as_commented() {
    // The README shows the file whole.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/gateway.yaml")).expect("read");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README");
    assert!(
        readme.contains(&format!("```yaml\n{shipped}```")),
        "README.md's gateway example differs from config/gateway.yaml"
    );
    let workspace = Workspace::new();
    let keys = workspace.dir.path().join("certs/dev");
    pilotfish(&["certs", "jwt", "--out", path_str(&keys)]);
    let orders_example = workspace.shipped("orders");
    let example = workspace.shipped("gateway");

    let orders_app = App::start().await;
    let orders = orders_example.start(&orders_example.isolated(Some(orders_app.addr)));
    let monolith = App::start().await;
    let mut config = example.isolated(None);
    set(&mut config, "/gateway/listen", json!("127.0.0.1:0"));
    endpoints(&mut config, "orders", &[orders.inbound()]);
    endpoints(&mut config, "monolith", &[monolith.addr]);
    let gateway = example.start(&config);
    let token = |roles: &str| {
        let out = pilotfish(&[
            "token",
            "--key",
            path_str(&keys.join("jwt.key")),
            "--sub",
            "alice",
            "--roles",
            roles,
        ]);
        String::from_utf8(out.stdout)
            .expect("token")
            .trim()
            .to_owned()
    };
    let user = token("user");
    let admin = token("admin");

    // Health checks: answered at the gateway, no token.
    let health = through_gateway(&gateway, Method::GET, "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok\n");

    // The orders API needs a token; with one, orders gets /orders/42 from
    // the gateway's identity, with the user's.
    let refused = through_gateway(&gateway, Method::GET, "/api/orders/42", None).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"pilotfish\"")
    );
    let read = through_gateway(&gateway, Method::GET, "/api/orders/42", Some(&user)).await;
    assert_admitted(&read, "GET /api/orders/42 with a token");
    let seen = orders_app.last();
    assert_eq!(seen.path, "/orders/42");
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x-user-roles"), Some("user"));
    assert_eq!(seen.client_id(), Some(id("default", "gateway").as_str()));

    // Deleting takes the admin role.
    let denied = through_gateway(&gateway, Method::DELETE, "/api/orders/7", Some(&user)).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let deleted = through_gateway(&gateway, Method::DELETE, "/api/orders/7", Some(&admin)).await;
    assert_admitted(&deleted, "DELETE /api/orders/7 as admin");
    assert_eq!(
        (orders_app.last().method, orders_app.last().path),
        (Method::DELETE, "/orders/7".to_owned())
    );

    // Everything else still reaches the monolith, as it was, without a token.
    let legacy = through_gateway(&gateway, Method::GET, "/account/settings", None).await;
    assert_admitted(&legacy, "the monolith");
    assert_eq!(monolith.last().path, "/account/settings");
    // No token reaches a log line.
    let logs = [gateway.stdout(), gateway.logs()].concat().join("\n");
    assert!(
        !logs.contains(&user) && !logs.contains(&admin),
        "a token was logged"
    );
}
