//! A real Prometheus (Debian's `prometheus` package, installed by
//! scripts/install-test-deps.sh) scrapes a sidecar pair with the config in
//! deploy/prometheus/, and answers every query of the Grafana dashboard in
//! deploy/grafana/.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::prometheus::{Prometheus, encode, sample_value, tool};
use crate::support::*;

const DEPLOY_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const DASHBOARD: &str = "deploy/grafana/pilotfish-dashboard.json";

/// The synthetic pod whose sidecar (the users sidecar) the pod job scrapes.
const USERS_POD: &str = "users-7d4b9c6f5-x2x4q";
/// A synthetic pod with an IPv6 address and no admin-port annotation.
const REVIEWS_POD: &str = "reviews-6c8d5f7b9-k9z2m";

/// Errors users' inbound side counted, as the pod job sees them.
const USERS_INBOUND_503: &str = r#"pilotfish_requests_total{job="pilotfish-pods",direction="inbound",service="users",status="503"}"#;

/// What orders' outbound side counted for users, as the static job sees it.
const ORDERS_TO_USERS_200: &str = r#"pilotfish_requests_total{job="pilotfish-local",direction="outbound",service="users",status="200"}"#;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `promtool check config FILE`: whether it passed, and what it said.
async fn promtool_check(config: &Path) -> (bool, String) {
    let out = tokio::process::Command::new(tool("promtool", "PILOTFISH_PROMTOOL"))
        .args(["check", "config"])
        .arg(config)
        .output()
        .await
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// promtool accepts the deploy config. Debian builds Prometheus without
/// Kubernetes discovery (its NEWS.Debian: "Kubernetes support has been
/// completely removed"), so its promtool may refuse that one field and
/// nothing else; the rest of the pod job, relabeling included, is then
/// checked and run by the test with file discovery in its place.
async fn check_deploy_config() {
    let (ok, output) = promtool_check(&repo(DEPLOY_CONFIG)).await;
    if ok {
        return;
    }
    let errors: Vec<&str> = output
        .lines()
        .filter(|line| line.trim_start().starts_with("line "))
        .collect();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.contains("field kubernetes_sd_configs not found")),
        "promtool rejects {DEPLOY_CONFIG}:\n{output}"
    );
    eprintln!(
        "note: this promtool has no Kubernetes discovery (Debian's build); \
         the pod job is checked with file discovery in its place"
    );
}

/// The deploy config as the test runs it: scraped every second, its static
/// job aimed at `local`, and Kubernetes pod discovery replaced by
/// `pods_file`, pods described with the labels Kubernetes discovery gives.
fn test_config(local: SocketAddr, pods_file: &Path) -> Value {
    let text = std::fs::read_to_string(repo(DEPLOY_CONFIG)).expect("read deploy config");
    let mut config: Value = serde_saphyr::from_str(&text).expect("deploy config is YAML");
    for key in ["scrape_interval", "scrape_timeout", "evaluation_interval"] {
        config["global"][key] = json!("1s");
    }
    let jobs = config["scrape_configs"].as_array_mut().expect("jobs");
    for job in jobs.iter_mut() {
        match job["job_name"].as_str() {
            Some("pilotfish-local") => job["static_configs"][0]["targets"] = json!([local]),
            Some("pilotfish-pods") => {
                let sd = job
                    .as_object_mut()
                    .and_then(|j| j.remove("kubernetes_sd_configs"));
                assert_eq!(sd, Some(json!([{ "role": "pod" }])), "pod discovery");
                job["file_sd_configs"] = json!([{ "files": [pods_file] }]);
            }
            other => panic!("unexpected job {other:?} in {DEPLOY_CONFIG}"),
        }
    }
    config
}

/// Pods as Kubernetes discovery describes them, one target per container
/// port. Only the annotated, running ones may be scraped.
fn pods(users_admin: SocketAddr) -> Value {
    let users_port = users_admin.port().to_string();
    // Name, IP, phase; annotations pilotfish.io/scrape and admin-port;
    // labels app and app.kubernetes.io/name. Prometheus reads "" as absent.
    #[rustfmt::skip]
    let pods = [
        (USERS_POD, "127.0.0.1", "Running", "true", users_port.as_str(), "users-v1", "users"),
        (REVIEWS_POD, "fd00::10", "Running", "true", "", "reviews", ""),
        ("ratings-5b7f9d8c4-q7w3e", "10.0.0.3", "Running", "", "", "ratings", ""),
        ("opted-out-8f6d7c5b4-p2l9k", "10.0.0.4", "Running", "false", "", "", ""),
        ("payments-7c9d6b8f5-m4n8b", "", "Pending", "true", "", "", ""),
    ];
    let groups = pods.map(|(pod, ip, phase, scrape, port, app, name)| {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        json!({
            "targets": [format!("{host}:8080"), format!("{host}:15006")],
            "labels": {
                "__meta_kubernetes_namespace": "shop",
                "__meta_kubernetes_pod_name": pod,
                "__meta_kubernetes_pod_ip": ip,
                "__meta_kubernetes_pod_phase": phase,
                "__meta_kubernetes_pod_node_name": "node-a",
                "__meta_kubernetes_pod_annotation_pilotfish_io_scrape": scrape,
                "__meta_kubernetes_pod_annotation_pilotfish_io_admin_port": port,
                "__meta_kubernetes_pod_label_app": app,
                "__meta_kubernetes_pod_label_app_kubernetes_io_name": name,
            }
        })
    });
    json!(groups)
}

/// GET /status/503 straight to users' mTLS port as the checkout workload:
/// an error that only users' inbound side counts.
async fn inbound_error(pair: &Pair, checkout: &Leaf) {
    let mut config = tls_config(&pair.certs.ca(), Some(checkout), false);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = tls_connect(pair.users.inbound(), config, "users")
        .await
        .expect("mTLS handshake");
    let response = send_h1_over(stream, get("users", "/status/503")).await;
    assert_eq!(response.expect("response").status(), 503);
}

/// Sends `count` GETs of /echo to `host` through orders; their statuses.
async fn send(pair: &Pair, host: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let response = send_h1(pair.orders.outbound(), get(host, "/echo")).await;
        statuses.push(collect(response).await.status.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_sidecars_with_the_deploy_config_and_answers_the_dashboard() {
    check_deploy_config().await;
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let prometheus = start_with_deploy_config(&pair, dir.path()).await;
    check_local_job(&prometheus, &pair).await;
    check_pod_job(&prometheus, &pair).await;
    check_dashboard(&prometheus).await;
}

/// Prometheus on the deploy config (see `test_config`): its static job
/// scrapes orders, its pod job the users sidecar; both have scraped once.
async fn start_with_deploy_config(pair: &Pair, dir: &Path) -> Prometheus {
    let pods_file = dir.join("pods.json");
    std::fs::write(&pods_file, pods(pair.users.admin).to_string()).expect("write pods");
    let config = dir.join("prometheus.yml");
    let text = serde_json::to_string_pretty(&test_config(pair.orders.admin, &pods_file));
    std::fs::write(&config, text.expect("JSON")).expect("write config");
    let (ok, output) = promtool_check(&config).await;
    assert!(ok, "promtool rejects the test's config:\n{output}");
    let prometheus = Prometheus::start(dir, &config).await;
    let users_up = format!(r#"up{{job="pilotfish-pods",pod="{USERS_POD}"}}"#);
    for up in [r#"up{job="pilotfish-local"}"#, &users_up] {
        prometheus.wait_value(up, |v| v == 1.0).await;
    }
    prometheus
}

/// Orders' counters and histogram reach Prometheus exactly, with the
/// static job's labels.
async fn check_local_job(prometheus: &Prometheus, pair: &Pair) {
    // One request, scraped before the other six, so that rates over the
    // last minute see the counters grow; the same for an error on users'
    // inbound side.
    let checkout = pair.certs.issue("checkout");
    assert_eq!(send(pair, "users", 1).await, [200]);
    assert_eq!(send(pair, "nowhere", 1).await, [503]);
    inbound_error(pair, &checkout).await;
    prometheus
        .wait_value(ORDERS_TO_USERS_200, |v| v >= 1.0)
        .await;
    prometheus.wait_value(USERS_INBOUND_503, |v| v >= 1.0).await;
    assert_eq!(send(pair, "users", 6).await, [200; 6]);
    inbound_error(pair, &checkout).await;
    prometheus
        .wait_value(ORDERS_TO_USERS_200, |v| v >= 7.0)
        .await;

    let local = r#"job="pilotfish-local",direction="outbound""#;
    let series = [
        format!(r#"pilotfish_requests_total{{{local},service="users",status="200"}}"#),
        format!(r#"pilotfish_request_duration_seconds_count{{{local},service="users"}}"#),
        format!(
            r#"pilotfish_request_duration_seconds_bucket{{{local},service="users",le="+Inf"}}"#
        ),
        format!(r#"pilotfish_requests_total{{{local},service="unknown",status="503"}}"#),
        r#"up{job="pilotfish-local"}"#.to_owned(),
    ];
    let mut values = Vec::new();
    for promql in &series {
        values.push(prometheus.value(promql).await);
    }
    let want = [7.0, 7.0, 7.0, 1.0, 1.0].map(Some);
    assert_eq!(values, want, "{series:#?}");
    let own = r#"pilotfish_requests_total{direction="outbound",service="users",status="200"}"#;
    assert_eq!(metric(&pair.orders, own).await, 7.0, "the sidecar agrees");
    let labels = &prometheus.query(ORDERS_TO_USERS_200).await[0]["metric"];
    let want = json!({
        "job": "pilotfish-local", "instance": pair.orders.admin, "workload": "local",
        "direction": "outbound", "service": "users", "status": "200",
    });
    assert_labels(labels, &want);

    let median = r#"histogram_quantile(0.5, sum by (le) (rate(pilotfish_request_duration_seconds_bucket{job="pilotfish-local",service="users"}[1m])))"#;
    let median = prometheus.wait_value(median, f64::is_finite).await;
    assert!(
        median > 0.0 && median <= 30.0,
        "median {median}s is outside the buckets"
    );
}

/// The pod job's relabeling: annotated running pods only, one target per
/// pod at POD_IP:ADMIN_PORT (9901 by default, IPv6 in brackets), with
/// namespace, pod, node and workload labels that leave `service` alone.
async fn check_pod_job(prometheus: &Prometheus, pair: &Pair) {
    let inbound = r#"pilotfish_requests_total{job="pilotfish-pods",direction="inbound",service="users",status="200"}"#;
    assert_eq!(prometheus.wait_value(inbound, |v| v >= 7.0).await, 7.0);
    let users_admin = pair.users.admin.to_string();
    let labels = &prometheus.query(inbound).await[0]["metric"];
    let want = json!({
        "job": "pilotfish-pods", "instance": users_admin, "namespace": "shop",
        "pod": USERS_POD, "node": "node-a", "workload": "users",
        "direction": "inbound", "service": "users", "status": "200",
    });
    assert_labels(labels, &want);
    assert_eq!(
        prometheus.wait_value(USERS_INBOUND_503, |v| v >= 2.0).await,
        2.0
    );

    // Every target is scraped (up is 1 or 0) once its pool has synced.
    let up = r#"up{job="pilotfish-pods"}"#;
    prometheus
        .wait_value(&format!("count({up})"), |v| v >= 2.0)
        .await;
    let series = prometheus.query(up).await;
    let mut targets: Vec<(String, String)> = series
        .iter()
        .map(|s| {
            (
                s["metric"]["pod"].to_string(),
                s["metric"]["instance"].to_string(),
            )
        })
        .collect();
    targets.sort();
    let target = |pod: &str, addr: &str| (json!(pod).to_string(), json!(addr).to_string());
    assert_eq!(
        targets,
        [
            target(REVIEWS_POD, "[fd00::10]:9901"),
            target(USERS_POD, &users_admin),
        ],
        "one target per annotated running pod; no other pods"
    );
}

/// `labels` has every label of `want`, and no target label has displaced
/// one of the sidecar's own (Prometheus would rename it `exported_…`).
fn assert_labels(labels: &Value, want: &Value) {
    let labels = labels.as_object().expect("labels");
    for (name, value) in want.as_object().expect("want") {
        assert_eq!(labels.get(name), Some(value), "{name} in {labels:?}");
    }
    let displaced: Vec<&String> = labels
        .keys()
        .filter(|name| name.starts_with("exported_"))
        .collect();
    assert!(displaced.is_empty(), "{displaced:?} in {labels:?}");
}

/// Every panel of the dashboard asks Prometheus a valid question about a
/// documented family, for one service each way and for all; the traffic
/// panels get the pair's traffic back.
async fn check_dashboard(prometheus: &Prometheus) {
    let text = std::fs::read_to_string(repo(DASHBOARD)).expect("read dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(36),
        "schemaVersion"
    );

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["datasource", "service", "direction"]);
    assert_eq!(
        (&variables[0]["type"], &variables[0]["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    for (variable, want) in [(&variables[1], "users"), (&variables[2], "outbound")] {
        // label_values(METRIC, LABEL), asked the way Grafana asks it.
        let definition = variable["definition"].as_str().expect("definition");
        let args = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .and_then(|d| d.split_once(", "))
            .unwrap_or_else(|| panic!("not label_values(METRIC, LABEL): {definition}"));
        let url = format!(
            "/api/v1/label/{}/values?match%5B%5D={}",
            args.1,
            encode(args.0)
        );
        let (status, json) = prometheus.api(&url).await;
        assert_eq!(status, 200, "{definition}: {json}");
        assert!(
            json["data"]
                .as_array()
                .is_some_and(|v| v.contains(&json!(want))),
            "{definition} gives {json}, without {want}"
        );
    }

    let families = documented_families();
    let mut answers = Vec::new();
    let panels = flatten(dashboard["panels"].as_array().expect("panels"));
    let mut ids: Vec<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("title");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            for metric in metric_names(expr) {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s).filter(|f| families.contains(*f)))
                    .unwrap_or(metric.as_str());
                assert!(
                    families.contains(family),
                    "{title}: {metric} is not a documented family"
                );
            }
            assert!(
                !metric_names(expr).is_empty(),
                "{title}: {expr:?} uses no pilotfish_ metric"
            );
            for (service, direction) in [("users", "outbound"), ("users", "inbound"), (".*", ".*")]
            {
                let promql = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$service", service)
                    .replace("$direction", direction);
                assert!(!promql.contains('$'), "{title}: unknown variable in {expr}");
                let (status, json) = prometheus.try_query(&promql).await;
                assert!(
                    status == 200 && json["status"] == "success",
                    "{title}: {promql}: {status} {json}"
                );
                let result = json["data"]["result"].clone();
                answers.push((title.to_owned(), direction, result));
            }
        }
    }

    let users = |title: &str, direction: &str| -> Vec<f64> {
        answers
            .iter()
            .filter(|(t, d, _)| t == title && *d == direction)
            .flat_map(|(_, _, result)| result.as_array().cloned().unwrap_or_default())
            .filter(|s| s["metric"]["service"] == "users")
            .map(|s| sample_value(&s))
            .collect()
    };
    for direction in ["outbound", "inbound"] {
        let rate = users("Request rate", direction);
        assert!(
            rate.len() == 1 && rate[0] > 0.0,
            "{direction} rate {rate:?}"
        );
    }
    // Outbound, users answered 200 only; inbound, 1 of the last 7 was a 503.
    assert_eq!(users("Error rate (5xx share)", "outbound"), [0.0]);
    let share = users("Error rate (5xx share)", "inbound");
    assert!(
        share.len() == 1 && share[0] > 0.0 && share[0] < 0.5,
        "inbound 5xx share {share:?}"
    );
    let latency = users("Latency (p50 / p95 / p99)", "outbound");
    assert!(
        latency.len() == 3 && latency.iter().all(|q| q.is_finite() && *q > 0.0),
        "p50, p95, p99: {latency:?}"
    );
}

/// Panels, with those inside collapsed rows.
fn flatten(panels: &[Value]) -> Vec<Value> {
    let mut all = Vec::new();
    for panel in panels {
        all.push(panel.clone());
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(flatten(inner));
        }
    }
    all
}

/// The `pilotfish_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.match_indices("pilotfish_")
        .map(|(at, _)| {
            expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The families README's Metrics table lists (every name in the first
/// cell of a row).
fn documented_families() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo("README.md")).expect("read README");
    readme
        .lines()
        .filter(|line| line.starts_with("| `pilotfish_"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .collect()
}
