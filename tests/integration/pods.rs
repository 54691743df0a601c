//! Pilotfish where it lives: as a container. The image (built by
//! `scripts/build-image.sh` from the binary under test, offline, exactly
//! as CI builds it) holds the binary and its libraries and nothing else,
//! runs as UID 2102 and serves with a read-only root filesystem; the
//! Compose file of `deploy/compose` runs the demo mesh as pods and answers
//! the README's curl line across mTLS, and `down` leaves nothing behind.

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
    let compose = Compose::new(
        "deploy/compose/compose.yaml",
        &[
            ("PILOTFISH_IMAGE", image.to_owned()),
            ("PILOTFISH_ENTRY_PORT", entry.port().to_string()),
            ("PILOTFISH_ADMIN_PORT", admin.port().to_string()),
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
    // A second `up` (the certificates volume already holds the CA) changes
    // nothing that runs.
    compose.ok(&["up", "-d"]);
    let again = eventually(PATIENCE, || {
        http_get(entry, "orders", "/orders/7").filter(|(status, _)| *status == 200)
    });
    assert!(again.is_some(), "not serving after a second up");

    compose.ok(&["down", "-v", "-t", "5"]);
    let left = compose.leftovers();
    assert!(left.is_empty(), "down left {left:?}");
}

/// A plain HTTP/1.1 GET with `Connection: close`; the status and body, or
/// `None` when nothing answers in HTTP.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
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
    name: String,
    pods: Vec<Pod>,
    entry: Option<Container>,
    _certs: Certs,
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        self.entry.take();
        self.pods.clear();
        let _ = crate::support::docker::docker(&["network", "rm", &self.name]);
    }
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

impl PodNetwork {
    fn start() -> Self {
        let image = image();
        let name = format!("pftest-pods-{}", fastrand::u32(..));
        docker_ok(&["network", "create", &name]);
        let certs = Certs::new();
        for service in ["users", "orders", "notifications", "client"] {
            certs.issue(service);
        }
        let sidecar_name = |service: &str| format!("{name}-{service}");
        let dns = |service: &str| format!("{{ dns: \"{}:15006\" }}", sidecar_name(service));
        let configs = [
            (
                "users",
                pod_config(
                    "users",
                    "inbound:\n  app: 127.0.0.1:8080\n  authorization:\n    rules:\n      \
                     - from: [{ service: orders }, { service: client }]\n",
                ),
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
        for (service, config) in &configs {
            std::fs::write(certs.dir.path().join(format!("{service}.yaml")), config)
                .expect("write config");
        }
        netns::give(certs.dir.path(), SIDECAR_UID.parse().expect("uid"));
        let mount = format!("{}:/certs:ro", path_str(certs.dir.path()));
        let sidecar = |service: &str, publish: &[&str]| {
            let container_name = sidecar_name(service);
            let config = format!("/certs/{service}.yaml");
            let mut args = vec![
                "--name",
                &container_name,
                "--network",
                &name,
                "--read-only",
                "--cap-drop",
                "ALL",
                "-v",
                &mount,
            ];
            args.extend_from_slice(publish);
            args.extend_from_slice(&[image, "run", "--config", &config]);
            Container::run(&args)
        };
        let mut network = Self {
            name: name.clone(),
            pods: Vec::new(),
            entry: None,
            _certs: certs,
        };
        let start_pod = |service: &str, app_args: &[&str]| -> Pod {
            let sidecar = sidecar(service, &["-p", "127.0.0.1::9901"]);
            let ip = sidecar.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
            let netns = format!("container:{}", sidecar.id);
            // The init step.
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
            Pod {
                _app: Some(Container::run(&args)),
                sidecar,
                ip,
            }
        };
        let users = start_pod("users", &[]);
        let notifications = start_pod("notifications", &[]);
        // No proxy settings: orders calls users and notifications at an
        // address of the network (users' pod, port 8080), by name in Host;
        // capture takes the connection to its sidecar.
        let elsewhere = format!("{}:8080", users.ip);
        let orders = start_pod("orders", &["--sidecar", &elsewhere]);
        network.pods = vec![users, notifications, orders];
        network.entry = Some(sidecar(
            "client",
            &["-p", "127.0.0.1::15001", "-p", "127.0.0.1::9901"],
        ));
        network
    }

    fn pod(&self, index: usize) -> &Pod {
        &self.pods[index]
    }
}

#[test]
fn pods_with_capture_reach_each_other_by_address_over_mtls_and_refuse_plaintext() {
    let pods = PodNetwork::start();
    let entry = pods.entry.as_ref().expect("entry").published(15001);
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
