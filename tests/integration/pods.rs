//! Pilotfish where it lives: as a container. The image (built by
//! `scripts/build-image.sh` from the binary under test, offline, exactly
//! as CI builds it) holds the binary and its libraries and nothing else,
//! runs as UID 2102 and serves with a read-only root filesystem; the
//! Compose file of `deploy/compose` runs the demo mesh as pods and answers
//! the README's curl line across mTLS, its edge gateway answers a call
//! with a demo token and refuses one without, and `down` leaves nothing
//! behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::docker::{Compose, Container, docker_ok, eventually, image};
use crate::support::{Certs, free_addr, netns, path_str};

/// Containers start in well under a second; a loaded CI machine gets more.
const PATIENCE: Duration = Duration::from_secs(60);

/// UID of the sidecar in the image (and the one capture rules exclude).
const SIDECAR_UID: &str = "2102";

#[test]
fn the_image_holds_the_binary_and_its_libraries_and_nothing_else() {
    let image = image();
    let help = docker_ok(&["run", "--rm", image, "--help"]);
    assert!(help.contains("Usage: pilotfish"), "{help}");
    let user = docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", image]);
    assert_eq!(user, format!("{SIDECAR_UID}:{SIDECAR_UID}"));

    // Every file of the image, from a container that never starts.
    let created = docker_ok(&["create", image]);
    let files = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {created} | tar -t"))
        .output()
        .expect("docker export");
    docker_ok(&["rm", &created]);
    let listing = String::from_utf8_lossy(&files.stdout);
    let regular: Vec<&str> = listing
        .lines()
        .filter(|f| !f.ends_with('/'))
        // Docker's own mount points, made in every container.
        .filter(|f| {
            !matches!(
                *f,
                ".dockerenv" | "etc/hostname" | "etc/hosts" | "etc/resolv.conf"
            )
        })
        .filter(|f| !f.starts_with("dev/") && !f.starts_with("proc/") && !f.starts_with("sys/"))
        .collect();
    for wanted in ["usr/local/bin/pilotfish", "etc/passwd", "etc/group"] {
        assert!(regular.contains(&wanted), "{wanted} missing: {regular:?}");
    }
    for file in &regular {
        // The binary, its libraries, user names, and iptables for capture.
        let allowed = file.starts_with("usr/local/bin/pilotfish")
            || file.starts_with("etc/")
            || file.contains(".so")
            || matches!(
                *file,
                "usr/sbin/xtables-nft-multi"
                    | "usr/sbin/iptables"
                    | "usr/sbin/iptables-restore"
                    | "usr/sbin/iptables-save"
            );
        assert!(allowed, "{file} has no business in the image: {regular:?}");
    }
    assert!(
        !regular.iter().any(|f| f.ends_with("bin/sh")),
        "a shell in the image"
    );
}

/// The init step of a pod: `pilotfish capture install` as root with
/// NET_ADMIN (and NET_RAW) only, on a read-only root, in the container's
/// own network namespace; without the capability it fails and says why.
#[test]
fn the_image_installs_capture_with_net_admin_and_says_why_it_cannot_without() {
    let image = image();
    let with_caps = [
        "run",
        "--rm",
        "--read-only",
        "--user",
        "0:0",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
        image,
        "capture",
        "install",
        "--skip-inbound-ports",
        "9901",
    ];
    let installed = docker_ok(&with_caps);
    assert!(installed.contains("capture installed"), "{installed}");

    let without = crate::support::docker::docker(&[
        "run",
        "--rm",
        "--read-only",
        "--user",
        "0:0",
        "--cap-drop",
        "ALL",
        image,
        "capture",
        "install",
    ]);
    assert!(!without.status.success());
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(said.contains("iptables"), "{said}");
}

#[test]
fn a_sidecar_container_serves_as_its_own_user_with_a_read_only_root() {
    let image = image();
    let certs = Certs::new();
    certs.issue("users");
    let config = certs.dir.path().join("pilotfish.yaml");
    std::fs::write(
        &config,
        "service: users\n\
         tls: { ca: /certs/ca.pem, cert: /certs/users.pem, key: /certs/users-key.pem }\n\
         admin: { listen: 0.0.0.0:9901 }\n\
         inbound: { app: 127.0.0.1:8080 }\n",
    )
    .expect("write config");
    // The sidecar's user reads the key (0600) as its owner.
    netns::give(certs.dir.path(), SIDECAR_UID.parse().expect("uid"));
    let certs_mount = format!("{}:/certs:ro", path_str(certs.dir.path()));
    let sidecar = Container::run(&[
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "-v",
        &certs_mount,
        "-p",
        "127.0.0.1::9901",
        "-p",
        "127.0.0.1::15006",
        // As the downward API sets them in deploy/kubernetes.
        "-e",
        "PILOTFISH_POD_NAME=users-5d8f7c9b4-x2x7q",
        "-e",
        "PILOTFISH_POD_NAMESPACE=shop",
        image,
        "run",
        "--config",
        "/certs/pilotfish.yaml",
    ]);
    let admin = sidecar.published(9901);
    let ready = eventually(PATIENCE, || {
        http_get(admin, "admin", "/ready").filter(|(status, _)| *status == 200)
    });
    assert!(ready.is_some(), "never ready:\n{}", sidecar.logs());
    assert_eq!(sidecar.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let logs = sidecar.logs();
    let ready = logs
        .lines()
        .find(|l| l.contains("\"message\":\"ready\""))
        .unwrap_or_else(|| panic!("no ready line:\n{logs}"));
    assert!(
        ready.contains("\"pod\":\"users-5d8f7c9b4-x2x7q\"")
            && ready.contains("\"pod_namespace\":\"shop\""),
        "the pod is named: {ready}"
    );
    let pid = sidecar.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("Uid line");
    assert_eq!(uid, SIDECAR_UID, "{status}");
    // It serves mTLS on its inbound port: a plain HTTP request gets no
    // HTTP answer.
    let inbound = sidecar.published(15006);
    assert!(http_get(inbound, "users", "/").is_none());
}

#[test]
fn the_compose_mesh_answers_the_readme_curl_across_mtls_and_down_leaves_nothing() {
    let image = image();
    let entry = free_addr();
    let admin = free_addr();
    let gateway = free_addr();
    let compose = Compose::new(
        "deploy/compose/compose.yaml",
        &[
            ("PILOTFISH_IMAGE", image.to_owned()),
            ("PILOTFISH_ENTRY_PORT", entry.port().to_string()),
            ("PILOTFISH_ADMIN_PORT", admin.port().to_string()),
            ("PILOTFISH_GATEWAY_PORT", gateway.port().to_string()),
        ],
    );
    compose.ok(&["up", "-d"]);

    // The README's line: curl -s -H 'Host: orders' http://127.0.0.1:15001/orders/42
    let answer = eventually(PATIENCE, || {
        http_get(entry, "orders", "/orders/42").filter(|(status, _)| *status == 200)
    });
    let Some((_, body)) = answer else {
        let logs = compose.run(&["logs", "--no-color"]);
        panic!(
            "the mesh never answered 200:\n{}",
            String::from_utf8_lossy(&logs.stdout)
        );
    };
    let order: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(order["order"]["id"], 42, "{body}");
    assert_eq!(order["user"]["id"], order["order"]["user_id"], "{body}");
    // users saw the caller's identity, proven by mTLS from the client
    // sidecar.
    let (status, echo) = http_get(entry, "users", "/echo").expect("users echo");
    assert_eq!(status, 200, "{echo}");
    assert!(
        echo.contains("spiffe://cluster.local/ns/default/sa/client"),
        "{echo}"
    );
    the_compose_gateway_wants_a_demo_token(&compose, gateway);
    // A second `up` (the certificates volume already holds the CA) changes
    // nothing that runs.
    compose.ok(&["up", "-d"]);
    let again = eventually(PATIENCE, || {
        http_get(entry, "orders", "/orders/7").filter(|(status, _)| *status == 200)
    });
    assert!(again.is_some(), "not serving after a second up");
    the_compose_gateway_wants_a_demo_token(&compose, gateway);

    compose.ok(&["down", "-v", "-t", "5"]);
    let left = compose.leftovers();
    assert!(left.is_empty(), "down left {left:?}");
}

/// The gateway of the Compose mesh (published on `gateway`): a token that
/// the image's `pilotfish token` signs with the key the one-shot `jwt`
/// service wrote (run in that service's container, with its volume) gets
/// orders' answer, which says who signed in; no token gets 401.
fn the_compose_gateway_wants_a_demo_token(compose: &Compose, gateway: SocketAddr) {
    let key = "/var/run/pilotfish/certs/jwt.key";
    let printed = compose.ok(&[
        "run", "--rm", "-T", "jwt", "token", "--key", key, "--sub", "alice", "--roles", "admin",
    ]);
    let token = printed
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_else(|| panic!("`pilotfish token` printed no token: {printed:?}"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let bearer = format!("Bearer {token}");
    let answer = eventually(PATIENCE, || {
        http_request(
            gateway,
            "gateway",
            "/orders/42",
            &[("Authorization", &bearer)],
        )
        .filter(|(status, _)| *status == 200)
    });
    let Some((_, body)) = answer else {
        let logs = compose.run(&["logs", "--no-color", "gateway"]);
        panic!(
            "the gateway never answered 200 with a token:\n{}",
            String::from_utf8_lossy(&logs.stdout)
        );
    };
    let order: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(order["order"]["id"], 42, "{body}");
    assert_eq!(order["signed_in"]["x-user-id"], "alice", "{body}");
    assert_eq!(order["signed_in"]["x-user-roles"], "admin", "{body}");
    let refused = http_get(gateway, "gateway", "/orders/42");
    assert_eq!(refused.map(|(status, _)| status), Some(401), "no token");
}

/// A plain HTTP/1.1 GET with `Connection: close`; the status and body, or
/// `None` when nothing answers in HTTP.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, host, path, &[])
}

/// [`http_get`] with more header fields.
fn http_request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// A chunked body's data.
fn dechunk(mut rest: &str) -> String {
    let mut data = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        data.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    data
}

/// A pod as Docker runs it here: the sidecar's container holds the
/// network namespace, the init step installs capture in it (root,
/// NET_ADMIN and NET_RAW only), and the app's container joins it.
struct Pod {
    /// The app, if the pod has one (dropped first).
    _app: Option<Container>,
    sidecar: Container,
    /// Its address on the test's network.
    ip: String,
}

/// Three pods and an entry on a Docker network of their own, removed
/// with everything on it when dropped.
struct PodNetwork {
    // Fields drop in order: the containers, then the network.
    pods: Vec<Pod>,
    entry: Container,
    _network: Network,
    _certs: Certs,
}

/// The sidecar config of `service` in a pod (its app on 127.0.0.1:8080),
/// with `rest` appended; certificates at /certs.
fn pod_config(service: &str, rest: &str) -> String {
    format!(
        "service: {service}\n\
         tls: {{ ca: /certs/ca.pem, cert: /certs/{service}.pem, key: /certs/{service}-key.pem }}\n\
         admin: {{ listen: 0.0.0.0:9901 }}\n\
         access_log: {{ format: json }}\n\
         {rest}"
    )
}

/// Certificates and the sidecar configs of `pods` (service, config) in
/// one folder the sidecar's user owns; and the mount argument that shows
/// it to containers at /certs.
fn pod_files(pods: &[(&str, String)]) -> (Certs, String) {
    let certs = Certs::new();
    for (service, config) in pods {
        certs.issue(service);
        std::fs::write(certs.dir.path().join(format!("{service}.yaml")), config)
            .expect("write config");
    }
    netns::give(certs.dir.path(), SIDECAR_UID.parse().expect("uid"));
    let mount = format!("{}:/certs:ro", path_str(certs.dir.path()));
    (certs, mount)
}

/// users' sidecar config, admitting `callers` (`{ service: NAME }` each).
fn users_admitting(callers: &str) -> String {
    pod_config(
        "users",
        &format!(
            "inbound:\n  app: 127.0.0.1:8080\n  authorization:\n    rules:\n      \
             - from: [{callers}]\n"
        ),
    )
}

impl PodNetwork {
    fn start() -> Self {
        let network = Network::new("pftest-pods");
        let sidecar_name = |service: &str| format!("{}-{service}", network.0);
        let dns = |service: &str| format!("{{ dns: \"{}:15006\" }}", sidecar_name(service));
        let configs = [
            (
                "users",
                users_admitting("{ service: orders }, { service: client }"),
            ),
            (
                "notifications",
                pod_config(
                    "notifications",
                    "inbound:\n  app: 127.0.0.1:8080\n  authorization:\n    rules:\n      \
                     - from: [{ service: orders }]\n",
                ),
            ),
            (
                "orders",
                pod_config(
                    "orders",
                    &format!(
                        "inbound:\n  app: 127.0.0.1:8080\n  authorization:\n    rules:\n      \
                         - from: [{{ service: client }}]\n\
                         outbound:\n  services:\n    users: {}\n    notifications: {}\n",
                        dns("users"),
                        dns("notifications")
                    ),
                ),
            ),
            (
                "client",
                pod_config(
                    "client",
                    &format!(
                        "outbound:\n  listen: 0.0.0.0:15001\n  services:\n    orders: {}\n    users: {}\n",
                        dns("orders"),
                        dns("users")
                    ),
                ),
            ),
        ];
        let (certs, mount) = pod_files(&configs);
        let pod = |service: &str, app_args: &[&str]| {
            let named = ["--name", &sidecar_name(service)];
            run_pod(&network.0, &mount, service, &named, app_args)
        };
        let users = pod("users", &[]);
        let notifications = pod("notifications", &[]);
        // No proxy settings: orders calls users and notifications at an
        // address of the network (users' pod, port 8080), by name in Host;
        // capture takes the connection to its sidecar.
        let elsewhere = format!("{}:8080", users.ip);
        let orders = pod("orders", &["--sidecar", &elsewhere]);
        let entry_name = sidecar_name("client");
        let entry = run_sidecar(
            &network.0,
            &mount,
            "client",
            &["--name", &entry_name, "-p", "127.0.0.1::15001"],
        );
        Self {
            pods: vec![users, notifications, orders],
            entry,
            _network: network,
            _certs: certs,
        }
    }

    fn pod(&self, index: usize) -> &Pod {
        &self.pods[index]
    }
}

#[test]
fn pods_with_capture_reach_each_other_by_address_over_mtls_and_refuse_plaintext() {
    let pods = PodNetwork::start();
    let entry = pods.entry.published(15001);
    let (users, orders) = (pods.pod(0), pods.pod(2));

    let answer = eventually(PATIENCE, || {
        http_get(entry, "orders", "/orders/42").filter(|(status, _)| *status == 200)
    });
    let Some((_, body)) = answer else {
        panic!(
            "orders never answered 200:\norders sidecar:\n{}\nusers sidecar:\n{}",
            orders.sidecar.logs(),
            users.sidecar.logs()
        );
    };
    let order: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(order["user"]["id"], order["order"]["user_id"], "{body}");
    assert_eq!(order["notification"]["queued"], true, "{body}");

    // orders' app connected to a plain address; its sidecar took the
    // connection (capture), told HTTP/1 by its first bytes, and sent the
    // request over mTLS: users' sidecar logged it with orders' identity.
    let detected = eventually(PATIENCE, || {
        let metrics = http_get(orders.sidecar.published(9901), "admin", "/metrics")?.1;
        metrics
            .lines()
            .find(|l| {
                l.starts_with(
                    "pilotfish_protocol_detected_total{by=\"first-bytes\",protocol=\"http1\"}",
                )
            })
            .map(str::to_owned)
    });
    assert!(detected.is_some(), "no captured connection was detected");
    // (Docker's log driver and the access log's batching lag a little.)
    let from_orders = eventually(PATIENCE, || {
        users
            .sidecar
            .logs()
            .lines()
            .find(|l| {
                l.contains("\"peer\":\"spiffe://cluster.local/ns/default/sa/orders\"")
                    && l.contains("\"path\":\"/users/")
            })
            .map(str::to_owned)
    });
    assert!(
        from_orders.is_some(),
        "users' sidecar saw no request from orders:\n{}",
        users.sidecar.logs()
    );

    // Inbound is strict: plaintext to the app's port from outside the mesh
    // meets the mTLS listener and gets no HTTP answer.
    let app_port: SocketAddr = format!("{}:8080", users.ip).parse().expect("address");
    assert!(http_get(app_port, "users", "/users/1").is_none());
}

/// A sidecar container of `service` on `network`, configured by
/// `/certs/{service}.yaml` from `mount`; `extra`: Docker arguments (its
/// name, network aliases, published ports).
fn run_sidecar(network: &str, mount: &str, service: &str, extra: &[&str]) -> Container {
    let config = format!("/certs/{service}.yaml");
    let mut args = vec![
        "--network",
        network,
        "--read-only",
        "--cap-drop",
        "ALL",
        "-v",
        mount,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[image(), "run", "--config", &config]);
    Container::run(&args)
}

/// Starts a pod of `service` on `network` and waits until its sidecar is
/// ready: the sidecar (with `extra` Docker arguments, see
/// [`run_sidecar`]; its admin port published), the init step installing
/// capture in its namespace, and the app (`demo-app` with `app_args`)
/// joining it.
fn run_pod(network: &str, mount: &str, service: &str, extra: &[&str], app_args: &[&str]) -> Pod {
    let image = image();
    let mut sidecar_args = extra.to_vec();
    sidecar_args.extend_from_slice(&["-p", "127.0.0.1::9901"]);
    let sidecar = run_sidecar(network, mount, service, &sidecar_args);
    let ip = sidecar.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let netns = format!("container:{}", sidecar.id);
    let installed = docker_ok(&[
        "run",
        "--rm",
        "--network",
        &netns,
        "--user",
        "0:0",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
        image,
        "capture",
        "install",
        "--skip-inbound-ports",
        "9901",
    ]);
    assert!(installed.contains("capture installed"), "{installed}");
    let mut args = vec![
        "--network",
        &netns,
        "--user",
        "1000:1000",
        "--read-only",
        "--cap-drop",
        "ALL",
        image,
        "demo-app",
        "--name",
        service,
        "--listen",
        "127.0.0.1:8080",
    ];
    args.extend_from_slice(app_args);
    let app = Container::run(&args);
    let admin = sidecar.published(9901);
    let ready = eventually(PATIENCE, || {
        http_get(admin, "admin", "/ready").filter(|(status, _)| *status == 200)
    });
    assert!(
        ready.is_some(),
        "{service} never ready:\n{}",
        sidecar.logs()
    );
    Pod {
        _app: Some(app),
        sidecar,
        ip,
    }
}

impl Pod {
    /// Requests its sidecar passed to its app so far (access log lines).
    fn served(&self) -> usize {
        self.sidecar
            .logs()
            .lines()
            .filter(|l| l.contains("\"direction\":\"inbound\"") && l.contains("\"status\":200"))
            .count()
    }

    /// Stops it as the kubelet stops a pod with a native sidecar: the app
    /// first, then the sidecar (SIGTERM, then its drain).
    fn stop_gracefully(mut self) {
        if let Some(app) = self._app.take() {
            docker_ok(&["stop", "-t", "10", &app.id]);
        }
        docker_ok(&["stop", "-t", "40", &self.sidecar.id]);
        let code = self.sidecar.inspect("{{.State.ExitCode}}");
        assert_eq!(code, "0", "{}", self.sidecar.logs());
    }
}

/// Two pods of users behind the name `users-mesh`, and an entry sidecar
/// (published) that calls them, on a network of their own.
struct Replicas {
    // Fields drop in order: the containers, then the network.
    users: Vec<Pod>,
    entry: Container,
    network: Network,
    mount: String,
    _certs: Certs,
}

impl Replicas {
    fn start() -> Self {
        let network = Network::new("pftest-replicas");
        // The endpoints follow the name's answers every second; an
        // endpoint that fails is out for 2 s (instead of 30) so that the
        // test sees it come back soon.
        let client = pod_config(
            "client",
            "outbound:\n  listen: 0.0.0.0:15001\n  services:\n    users:\n      \
             dns: \"users-mesh:15006\"\n      dns_refresh: 1s\n      \
             outlier_detection: { base_ejection: 2s, max_ejection: 2s }\n",
        );
        let (certs, mount) = pod_files(&[
            ("users", users_admitting("{ service: client }")),
            ("client", client),
        ]);
        let entry = run_sidecar(&network.0, &mount, "client", &["-p", "127.0.0.1::15001"]);
        let mut replicas = Self {
            users: Vec::new(),
            entry,
            network,
            mount,
            _certs: certs,
        };
        replicas.users = (0..2).map(|_| replicas.new_pod()).collect();
        replicas
    }

    fn entry(&self) -> SocketAddr {
        self.entry.published(15001)
    }

    /// A new pod of users, known by `users-mesh`.
    fn new_pod(&self) -> Pod {
        let alias = ["--network-alias", "users-mesh"];
        run_pod(&self.network.0, &self.mount, "users", &alias, &[])
    }
}

/// Steady load: a GET every 20 ms through the entry, each on a new
/// connection, until stopped; what each got (`None`: no HTTP answer).
struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Option<u16>>>>,
}

impl SteadyLoad {
    fn start(entry: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                got.push(http_get(entry, "users", "/users/1").map(|(status, _)| status));
                std::thread::sleep(Duration::from_millis(20));
            }
            got
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Option<u16>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("load thread")
    }
}

/// Waits until both pods of `replicas` serve traffic sent through the entry.
fn both_serving(replicas: &Replicas) {
    let entry = replicas.entry();
    let served = eventually(PATIENCE, || {
        for _ in 0..10 {
            http_get(entry, "users", "/users/1");
        }
        replicas.users.iter().all(|p| p.served() > 0).then_some(())
    });
    assert!(served.is_some(), "not every pod got traffic");
}

/// A pod killed under steady load (no drain: `docker kill`): requests in
/// flight to it and connections to its address fail and are retried on
/// the other pod (GETs are safe to retry), the endpoint is ejected, and
/// at most 2% of requests fail. Started again, it gets traffic again.
#[test]
fn a_killed_pod_is_ejected_under_load_and_rejoins_when_started_again() {
    let mut replicas = Replicas::start();
    both_serving(&replicas);
    let load = SteadyLoad::start(replicas.entry());
    std::thread::sleep(Duration::from_secs(2));
    let killed = replicas.users.remove(0);
    docker_ok(&["kill", &killed.sidecar.id]);
    std::thread::sleep(Duration::from_secs(4));
    drop(killed);
    // Started again (a new sandbox, as a pod restart is: capture again).
    let again = replicas.new_pod();
    replicas.users.insert(0, again);
    let rejoined = eventually(PATIENCE, || (replicas.users[0].served() > 0).then_some(()));
    let got = load.finish();
    let failed = got.iter().filter(|s| **s != Some(200)).count();
    eprintln!("killed pod: {failed} of {} requests failed", got.len());
    assert!(got.len() > 200, "only {} requests", got.len());
    assert!(
        failed * 50 <= got.len(),
        "{failed} of {} requests failed (more than 2%): {:?}",
        got.len(),
        got.iter().filter(|s| **s != Some(200)).collect::<Vec<_>>()
    );
    assert!(rejoined.is_some(), "the restarted pod got no traffic");
}

/// A rolling restart of both pods under steady load, each stopped as the
/// kubelet stops a pod (app, then sidecar with its drain) after its
/// replacement is up: not one request fails.
#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    let mut replicas = Replicas::start();
    both_serving(&replicas);
    let load = SteadyLoad::start(replicas.entry());
    for i in 0..2 {
        std::thread::sleep(Duration::from_secs(1));
        // maxSurge 1, maxUnavailable 0: the new pod first.
        let new = replicas.new_pod();
        let old = std::mem::replace(&mut replicas.users[i], new);
        old.stop_gracefully();
    }
    std::thread::sleep(Duration::from_secs(2));
    let got = load.finish();
    let failed: Vec<_> = got.iter().filter(|s| **s != Some(200)).collect();
    eprintln!(
        "rolling restart: {} of {} requests failed",
        failed.len(),
        got.len()
    );
    assert!(got.len() > 100, "only {} requests", got.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        got.len()
    );
    for pod in &replicas.users {
        assert!(pod.served() > 0, "a new pod got no traffic");
    }
}

/// A Docker network of the test's own, removed when dropped (declare it
/// before the containers on it, so that it goes after them).
struct Network(String);

impl Network {
    fn new(prefix: &str) -> Self {
        let name = format!("{prefix}-{}", fastrand::u32(..));
        docker_ok(&["network", "create", &name]);
        Self(name)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = crate::support::docker::docker(&["network", "rm", &self.0]);
    }
}

/// Waits for a container to end; its exit code.
fn exit_code(container: &Container) -> String {
    let ended = eventually(PATIENCE, || {
        (container.inspect("{{.State.Running}}") == "false")
            .then(|| container.inspect("{{.State.ExitCode}}"))
    });
    ended.unwrap_or_else(|| panic!("still running:\n{}", container.logs()))
}

/// A Job's pod where the sidecar is an ordinary container (no native
/// sidecars): its app calls users through the sidecar, then stops the
/// sidecar with `POST /shutdown` on the admin port; every container of
/// the pod exits 0, so the Job completes.
#[test]
fn a_job_pods_app_stops_its_sidecar_and_every_container_exits_zero() {
    let image = image();
    let network = Network::new("pftest-job");
    let client = pod_config(
        "client",
        "outbound:\n  services:\n    users: { dns: \"users-mesh:15006\" }\n",
    );
    let (_certs, mount) = pod_files(&[
        ("users", users_admitting("{ service: client }")),
        ("client", client),
    ]);
    let alias = ["--network-alias", "users-mesh"];
    let _users = run_pod(&network.0, &mount, "users", &alias, &[]);
    let sidecar = run_sidecar(&network.0, &mount, "client", &[]);
    // Without native sidecars nothing orders the two: the app would wait
    // for its sidecar itself.
    let ready = eventually(PATIENCE, || {
        sidecar
            .logs()
            .contains("\"message\":\"ready\"")
            .then_some(())
    });
    assert!(ready.is_some(), "sidecar never ready:\n{}", sidecar.logs());
    let netns = format!("container:{}", sidecar.id);
    let job = Container::run(&[
        "--network",
        &netns,
        "--user",
        "1000:1000",
        "--read-only",
        "--cap-drop",
        "ALL",
        image,
        "demo-job",
        "--sidecar",
        "127.0.0.1:15001",
        "--admin",
        "127.0.0.1:9901",
        "--service",
        "users",
        "--path",
        "/users/1",
    ]);

    assert_eq!(exit_code(&job), "0", "the job:\n{}", job.logs());
    assert!(job.logs().contains("\"id\":1"), "{}", job.logs());
    assert_eq!(exit_code(&sidecar), "0", "the sidecar:\n{}", sidecar.logs());
    assert!(
        sidecar
            .logs()
            .contains("shutdown asked through the admin port"),
        "{}",
        sidecar.logs()
    );
}
