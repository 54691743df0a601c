//! The shape of the demo mesh, decided before anything starts: which
//! services run, on which loopback ports, who calls whom, and the config
//! file of each sidecar. Pure data and text; [`super`] carries it out.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

/// One workload of the demo: a service and its sidecar.
#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    /// Whether a demo app runs beside the sidecar (`client` has none: it
    /// stands for the user's own app, their curl).
    app: bool,
    /// Services it calls through its sidecar's outbound listener.
    calls: &'static [&'static str],
}

/// The demo's workloads. Every one with an app accepts mesh traffic.
const SPECS: [Spec; 4] = [
    Spec {
        name: "users",
        app: true,
        calls: &[],
    },
    Spec {
        name: "orders",
        app: true,
        calls: &["users", "notifications"],
    },
    Spec {
        name: "notifications",
        app: true,
        calls: &[],
    },
    Spec {
        name: "client",
        app: false,
        calls: &["orders", "users", "notifications"],
    },
];

/// A service's demo app and sidecar, with their addresses.
#[derive(Debug, Clone)]
pub struct Node {
    /// Service name, also the certificate's name.
    pub name: &'static str,
    /// The demo app, if the workload has one.
    pub app: Option<SocketAddr>,
    /// The sidecar's mTLS listener, if it accepts mesh traffic.
    pub inbound: Option<SocketAddr>,
    /// The sidecar's plain listener for its app, if the app calls others.
    pub outbound: Option<SocketAddr>,
    /// The sidecar's admin listener.
    pub admin: SocketAddr,
    /// Services reachable through `outbound`.
    pub calls: &'static [&'static str],
}

/// The certificate files a sidecar uses.
#[derive(Debug, Clone)]
pub struct TlsPaths<'a> {
    /// CA bundle.
    pub ca: &'a Path,
    /// The sidecar's certificate.
    pub cert: &'a Path,
    /// Its key.
    pub key: &'a Path,
}

/// The whole demo mesh.
#[derive(Debug, Clone)]
pub struct Mesh {
    /// Every workload, in start order.
    pub nodes: Vec<Node>,
    /// The OTLP/gRPC collector every sidecar sends its spans to, if any.
    pub otlp: Option<String>,
}

/// Free loopback ports: each is bound at once (so none repeats) and
/// released before returning. Another process could take one before the
/// demo binds it again; start-up then fails with a clear error.
pub fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

impl Mesh {
    /// How many ports [`Mesh::new`] needs.
    pub fn ports_needed() -> usize {
        SPECS
            .iter()
            .map(|s| 1 + 2 * usize::from(s.app) + usize::from(!s.calls.is_empty()))
            .sum()
    }

    /// The mesh, taking its ports from `ports`; `None` if they run out.
    pub fn new(ports: &[u16]) -> Option<Self> {
        let mut ports = ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p)));
        let mut nodes = Vec::with_capacity(SPECS.len());
        for spec in SPECS {
            let mut maybe = |wanted: bool| {
                if wanted {
                    ports.next().map(Some)
                } else {
                    Some(None)
                }
            };
            nodes.push(Node {
                name: spec.name,
                app: maybe(spec.app)?,
                inbound: maybe(spec.app)?,
                outbound: maybe(!spec.calls.is_empty())?,
                admin: ports.next()?,
                calls: spec.calls,
            });
        }
        Some(Self { nodes, otlp: None })
    }

    /// The workload called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The YAML config of `node`'s sidecar. Paths are written as quoted
    /// strings, so any folder name is safe.
    pub fn sidecar_config(&self, node: &Node, tls: &TlsPaths<'_>) -> String {
        let quote = |p: &Path| serde_json::Value::from(p.to_string_lossy()).to_string();
        let mut yaml = format!(
            "# Sidecar of `{name}` in the Pilotfish demo mesh, written by `pilotfish demo`.\n\
             service: {name}\n\
             tls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n\
             admin:\n  listen: {admin}\n",
            name = node.name,
            ca = quote(tls.ca),
            cert = quote(tls.cert),
            key = quote(tls.key),
            admin = node.admin,
        );
        if let (Some(listen), Some(app)) = (node.inbound, node.app) {
            yaml.push_str(&format!(
                "inbound:\n  listen: {listen}   # mTLS from other sidecars\n  \
                 app: {app}      # the demo app\n"
            ));
            // Only the workloads that call this one get in.
            let callers: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.calls.contains(&node.name))
                .map(|n| format!("{{ service: {} }}", n.name))
                .collect();
            yaml.push_str(&format!(
                "  authorization:\n    rules:\n      - name: callers\n        from: [{}]\n",
                callers.join(", ")
            ));
        }
        if let Some(listen) = node.outbound {
            yaml.push_str(&format!(
                "outbound:\n  listen: {listen}   # plain HTTP from the app\n  services:\n"
            ));
            for callee in node.calls {
                if let Some(endpoint) = self.node(callee).and_then(|n| n.inbound) {
                    yaml.push_str(&format!("    {callee}: {{ endpoints: [{endpoint}] }}\n"));
                }
            }
        }
        // Short, so that on Ctrl-C every sidecar is gone well within the
        // demo's 10 s wait before SIGKILL.
        yaml.push_str("shutdown:\n  drain_timeout: 5s\n");
        yaml.push_str("log: { format: text }\n");
        // A line per request, beside the diagnostic logs in the log file.
        yaml.push_str("access_log: { format: text }\n");
        // Every demo request is traced: there are few, and all are worth
        // seeing.
        yaml.push_str("tracing:\n  sample_ratio: 1.0\n");
        if let Some(endpoint) = &self.otlp {
            let endpoint = serde_json::Value::from(endpoint.as_str());
            yaml.push_str(&format!(
                "  otlp: {{ endpoint: {endpoint}, flush_interval: 1s }}\n"
            ));
        }
        yaml
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn mesh() -> Mesh {
        let ports: Vec<u16> = (20_000..).take(Mesh::ports_needed()).collect();
        Mesh::new(&ports).unwrap_or_else(|| panic!("{} ports are enough", ports.len()))
    }

    #[test]
    fn every_port_is_used_once() {
        let mesh = mesh();
        let mut addrs: Vec<SocketAddr> = mesh
            .nodes
            .iter()
            .flat_map(|n| [n.app, n.inbound, n.outbound, Some(n.admin)])
            .flatten()
            .collect();
        assert_eq!(addrs.len(), Mesh::ports_needed());
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), Mesh::ports_needed());
        assert!(Mesh::new(&[1, 2, 3]).is_none());
    }

    #[test]
    fn configs_are_valid_and_point_at_the_right_places() {
        let mut mesh = mesh();
        mesh.otlp = Some("http://127.0.0.1:4317".to_owned());
        let dir = Path::new("/tmp/demo dir: with # odd 'chars'");
        for node in &mesh.nodes {
            let cert = dir.join(format!("{}.pem", node.name));
            let key = dir.join(format!("{}-key.pem", node.name));
            let tls = TlsPaths {
                ca: &dir.join("ca.pem"),
                cert: &cert,
                key: &key,
            };
            let yaml = mesh.sidecar_config(node, &tls);
            let parsed = config::parse_str(&yaml, Path::new("demo.yaml"));
            let parsed = parsed.unwrap_or_else(|e| panic!("{}:\n{e}\n{yaml}", node.name));
            let warnings = config::warnings(&parsed, Path::new("demo.yaml"));
            assert!(warnings.is_empty(), "{}: {warnings:?}", node.name);
            assert_eq!(parsed.service.as_str(), node.name);
            let tls_cert = parsed.tls.as_ref().map(|t| t.cert.get().clone());
            assert_eq!(tls_cert, Some(cert));
            assert_eq!(*parsed.admin.listen, node.admin);
            assert_eq!(parsed.inbound.as_ref().map(|i| *i.app), node.app);
            let otlp = parsed
                .tracing
                .otlp
                .as_ref()
                .map(|o| o.endpoint.get().as_str());
            assert_eq!(otlp, Some("http://127.0.0.1:4317"));
            if let Some(inbound) = &parsed.inbound {
                let rules = inbound.authorization.as_ref().map(|a| a.rules.len());
                assert_eq!(rules, Some(1), "{}: only its callers get in", node.name);
            }
            let services = parsed.outbound.map(|o| o.services).unwrap_or_default();
            assert_eq!(services.len(), node.calls.len());
            for (callee, dst) in services {
                let expected = mesh.node(&callee).and_then(|n| n.inbound);
                assert_eq!(dst.endpoints.first().map(|e| **e), expected, "{callee}");
            }
        }
    }
}
