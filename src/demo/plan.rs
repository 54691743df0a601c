//! The shape of the demo mesh, decided before anything starts: which
//! services run, on which loopback ports, who calls whom, and the config
//! file of each sidecar. Pure data and text; [`super`] carries it out.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// What runs beside a workload's sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beside {
    /// A demo service (`pilotfish demo-app`), spoken to in HTTP.
    App,
    /// The event broker (`redis-server`), reached as raw TCP through the
    /// sidecar's `opaque_ports`.
    Broker,
    /// Nothing: `client` stands for the user's own app, their curl.
    Nothing,
    /// Nothing either: this Pilotfish is the mesh's edge gateway, the way
    /// in for clients from outside (a `gateway:` listener, tokens checked,
    /// routes to the services).
    Gateway,
}

/// One workload of the demo: a service and its sidecar.
#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    beside: Beside,
    /// Services it calls through its sidecar: HTTP ones on the outbound
    /// listener, the broker on a local address of its own.
    calls: &'static [&'static str],
}

/// The demo's workloads, in start order (the broker first, so that it is
/// up when its clients are). Every one with something beside it accepts
/// mesh traffic.
const SPECS: [Spec; 6] = [
    Spec {
        name: "events",
        beside: Beside::Broker,
        calls: &[],
    },
    Spec {
        name: "users",
        beside: Beside::App,
        calls: &[],
    },
    Spec {
        name: "orders",
        beside: Beside::App,
        calls: &["users", "notifications", "events"],
    },
    Spec {
        name: "notifications",
        beside: Beside::App,
        calls: &["events"],
    },
    Spec {
        name: "client",
        beside: Beside::Nothing,
        calls: &["orders", "users", "notifications"],
    },
    Spec {
        name: "gateway",
        beside: Beside::Gateway,
        calls: &["orders", "users"],
    },
];

/// The port the gateway listens on when it is free (the README's line
/// names it); another free port otherwise.
pub const GATEWAY_PORT: u16 = 8080;

/// What the demo gateway expects of tokens; `pilotfish token`'s defaults.
pub const JWT_ISSUER: &str = "https://pilotfish.demo";
/// The audience demo tokens are for.
pub const JWT_AUDIENCE: &str = "demo";

/// Whether the demo has its asynchronous path: orders publishes an event
/// to the `events` broker, notifications consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Events {
    /// This `redis-server` runs as the `events` workload.
    On(PathBuf),
    /// No broker, and why (said at start and in the banner).
    Off(String),
}

/// A service's demo app (or the broker) and sidecar, with their addresses.
#[derive(Debug, Clone)]
pub struct Node {
    /// Service name, also the certificate's name.
    pub name: &'static str,
    /// What runs beside the sidecar.
    pub beside: Beside,
    /// The demo app or the broker, if the workload has one.
    pub app: Option<SocketAddr>,
    /// The sidecar's mTLS listener, if it accepts mesh traffic.
    pub inbound: Option<SocketAddr>,
    /// The sidecar's plain listener for its app, if the app calls others.
    pub outbound: Option<SocketAddr>,
    /// Where the app reaches the broker, if it uses it: a local address
    /// of its own sidecar (an opaque destination's `listen`).
    pub broker: Option<SocketAddr>,
    /// The gateway's plain HTTP listener, on the gateway alone.
    pub gateway: Option<SocketAddr>,
    /// The sidecar's admin listener.
    pub admin: SocketAddr,
    /// Services reachable through the sidecar (those in this mesh).
    pub calls: Vec<&'static str>,
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

/// The files a config names besides its certificates.
#[derive(Debug, Clone)]
pub struct Files<'a> {
    /// The certificates.
    pub tls: TlsPaths<'a>,
    /// The public key demo tokens are verified with (the gateway's).
    pub jwt_public: &'a Path,
}

/// The whole demo mesh.
#[derive(Debug, Clone)]
pub struct Mesh {
    /// Every workload, in start order.
    pub nodes: Vec<Node>,
    /// Whether the broker runs, and which.
    pub events: Events,
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

/// The workloads of a mesh with or without the broker, each with the
/// callees that are in it.
fn specs(events: &Events) -> impl Iterator<Item = (Spec, Vec<&'static str>)> + '_ {
    let present =
        move |spec: &Spec| spec.beside != Beside::Broker || matches!(events, Events::On(_));
    SPECS.into_iter().filter(present).map(move |spec| {
        let calls = spec
            .calls
            .iter()
            .copied()
            .filter(|callee| SPECS.iter().any(|s| s.name == *callee && present(s)))
            .collect();
        (spec, calls)
    })
}

/// Whether a workload has an app (or the broker) beside its sidecar, and
/// so accepts mesh traffic.
fn has_app(beside: Beside) -> bool {
    matches!(beside, Beside::App | Beside::Broker)
}

/// A path as a quoted YAML string, so any folder name is safe.
fn quote(path: &Path) -> String {
    serde_json::Value::from(path.to_string_lossy()).to_string()
}

/// `gateway:` of the demo's edge gateway: plain HTTP, tokens signed by
/// the demo key (`pilotfish token`), a public health route, orders for
/// any signed-in user, users for admins only.
fn gateway_config(listen: SocketAddr, jwt_public: &Path) -> String {
    format!(
        "gateway:\n  \
         listen: {listen}   # plain HTTP from clients outside the mesh\n  \
         jwt:\n    \
         issuer: {JWT_ISSUER}\n    \
         audiences: [{JWT_AUDIENCE}]\n    \
         keys: [{{ pem: {key} }}]   # `pilotfish token --key` signs with its private half\n  \
         routes:\n    \
         - {{ name: health, path_prefix: /healthz, auth: public, direct_response: {{ status: 200, body: \"ok\\n\" }} }}\n    \
         # A valid token; the app gets x-user-id and x-user-roles from it.\n    \
         - {{ name: orders, path_prefix: /orders, service: orders }}\n    \
         - {{ name: users, path_prefix: /users, service: users, auth: {{ roles: [admin] }} }}\n",
        key = quote(jwt_public),
    )
}

/// Whether `calls` includes the broker.
fn calls_broker(calls: &[&str]) -> bool {
    calls.iter().any(|c| {
        SPECS
            .iter()
            .any(|s| s.name == *c && s.beside == Beside::Broker)
    })
}

impl Mesh {
    /// How many ports [`Mesh::new`] needs.
    pub fn ports_needed(events: &Events) -> usize {
        specs(events)
            .map(|(spec, calls)| {
                1 + 2 * usize::from(has_app(spec.beside))
                    + usize::from(spec.beside == Beside::Gateway)
                    + usize::from(!calls.is_empty())
                    + usize::from(calls_broker(&calls))
            })
            .sum()
    }

    /// The mesh, taking its ports from `ports`; `None` if they run out.
    pub fn new(ports: &[u16], events: Events) -> Option<Self> {
        let mut ports = ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p)));
        let mut nodes = Vec::with_capacity(SPECS.len());
        for (spec, calls) in specs(&events) {
            let mut maybe = |wanted: bool| {
                if wanted {
                    ports.next().map(Some)
                } else {
                    Some(None)
                }
            };
            let beside = has_app(spec.beside);
            nodes.push(Node {
                name: spec.name,
                beside: spec.beside,
                app: maybe(beside)?,
                inbound: maybe(beside)?,
                outbound: maybe(!calls.is_empty())?,
                broker: maybe(calls_broker(&calls))?,
                gateway: maybe(spec.beside == Beside::Gateway)?,
                admin: ports.next()?,
                calls,
            });
        }
        Some(Self {
            nodes,
            events,
            otlp: None,
        })
    }

    /// Moves the gateway's listener to `addr` (the well-known port, when
    /// it is free).
    pub fn set_gateway_listen(&mut self, addr: SocketAddr) {
        for node in &mut self.nodes {
            if node.gateway.is_some() {
                node.gateway = Some(addr);
            }
        }
    }

    /// The edge gateway's workload.
    pub fn gateway(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.gateway.is_some())
    }

    /// The workload called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The broker's workload, when it runs.
    pub fn broker(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.beside == Beside::Broker)
    }

    /// The YAML config of `node`'s sidecar. Paths are written as quoted
    /// strings, so any folder name is safe.
    pub fn sidecar_config(&self, node: &Node, files: &Files<'_>) -> String {
        let tls = &files.tls;
        let what = match node.beside {
            Beside::Gateway => "Edge gateway",
            _ => "Sidecar",
        };
        let mut yaml = format!(
            "# {what} of `{name}` in the Pilotfish demo mesh, written by `pilotfish demo`.\n\
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
            yaml.push_str(&self.inbound_config(node, listen, app));
        }
        if let Some(listen) = node.outbound {
            yaml.push_str(&self.outbound_config(node, listen));
        }
        if let Some(listen) = node.gateway {
            yaml.push_str(&gateway_config(listen, files.jwt_public));
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

    /// `inbound:` of a workload that others call. Only the workloads that
    /// call it get in; to the broker, only as raw TCP to its port.
    fn inbound_config(&self, node: &Node, listen: SocketAddr, app: SocketAddr) -> String {
        let callers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.calls.contains(&node.name))
            .map(|n| format!("{{ service: {} }}", n.name))
            .collect();
        let callers = callers.join(", ");
        let head = format!("inbound:\n  listen: {listen}   # mTLS from other sidecars\n");
        match node.beside {
            Beside::Broker => format!(
                "{head}  app: {app}      # redis-server: raw TCP only, there is no HTTP app\n  \
                 opaque_ports: [{port}]\n  \
                 authorization:\n    rules:\n      - name: callers\n        \
                 from: [{callers}]\n        ports: [{port}]\n",
                port = app.port(),
            ),
            Beside::App | Beside::Nothing | Beside::Gateway => format!(
                "{head}  app: {app}      # the demo app\n  \
                 authorization:\n    rules:\n      - name: callers\n        from: [{callers}]\n"
            ),
        }
    }

    /// `outbound:` of a workload that calls others: HTTP services by name
    /// on the outbound listener, the broker on its own local address.
    fn outbound_config(&self, node: &Node, listen: SocketAddr) -> String {
        let mut yaml =
            format!("outbound:\n  listen: {listen}   # plain HTTP from the app\n  services:\n");
        for callee in &node.calls {
            let Some(far) = self.node(callee) else {
                continue;
            };
            let Some(endpoint) = far.inbound else {
                continue;
            };
            match (far.beside, node.broker, far.app) {
                (Beside::Broker, Some(local), Some(broker)) => yaml.push_str(&format!(
                    "    # The broker: the app's connections to {local} are carried as raw TCP\n    \
                     # to port {port} beside the {callee} sidecar, over mTLS.\n    \
                     {callee}: {{ protocol: opaque, listen: {local}, port: {port}, endpoints: [{endpoint}] }}\n",
                    port = broker.port(),
                )),
                _ => yaml.push_str(&format!("    {callee}: {{ endpoints: [{endpoint}] }}\n")),
            }
        }
        yaml
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, UpstreamProtocol};

    fn on() -> Events {
        Events::On(PathBuf::from("/usr/bin/redis-server"))
    }

    fn mesh(events: Events) -> Mesh {
        let ports: Vec<u16> = (20_000..).take(Mesh::ports_needed(&events)).collect();
        Mesh::new(&ports, events).unwrap_or_else(|| panic!("{} ports are enough", ports.len()))
    }

    #[test]
    fn every_port_is_used_once() {
        for events in [on(), Events::Off("absent".to_owned())] {
            let needed = Mesh::ports_needed(&events);
            let mesh = mesh(events);
            let mut addrs: Vec<SocketAddr> = mesh
                .nodes
                .iter()
                .flat_map(|n| {
                    [
                        n.app,
                        n.inbound,
                        n.outbound,
                        n.broker,
                        n.gateway,
                        Some(n.admin),
                    ]
                })
                .flatten()
                .collect();
            assert_eq!(addrs.len(), needed);
            addrs.sort();
            addrs.dedup();
            assert_eq!(addrs.len(), needed);
        }
        assert!(Mesh::new(&[1, 2, 3], on()).is_none());
    }

    #[test]
    fn without_a_broker_nothing_calls_events() {
        let mesh = mesh(Events::Off("absent".to_owned()));
        assert!(mesh.broker().is_none());
        let names: Vec<&str> = mesh.nodes.iter().map(|n| n.name).collect();
        assert_eq!(
            names,
            ["users", "orders", "notifications", "client", "gateway"]
        );
        assert!(mesh.nodes.iter().all(|n| n.broker.is_none()));
        assert!(mesh.nodes.iter().all(|n| !n.calls.contains(&"events")));
        // notifications calls nothing then, so it has no outbound listener.
        assert_eq!(mesh.node("notifications").map(|n| n.outbound), Some(None));
    }

    #[test]
    fn configs_are_valid_and_point_at_the_right_places() {
        for events in [on(), Events::Off("absent".to_owned())] {
            let mut mesh = mesh(events);
            mesh.otlp = Some("http://127.0.0.1:4317".to_owned());
            for node in &mesh.nodes {
                check_config(&mesh, node);
            }
        }
    }

    fn check_config(mesh: &Mesh, node: &Node) {
        let dir = Path::new("/tmp/demo dir: with # odd 'chars'");
        let cert = dir.join(format!("{}.pem", node.name));
        let key = dir.join(format!("{}-key.pem", node.name));
        let jwt_public = dir.join("jwt.pub");
        let files = Files {
            tls: TlsPaths {
                ca: &dir.join("ca.pem"),
                cert: &cert,
                key: &key,
            },
            jwt_public: &jwt_public,
        };
        let yaml = mesh.sidecar_config(node, &files);
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
            let rules = inbound.authorization.as_ref().map(|a| &a.rules);
            assert_eq!(
                rules.map(Vec::len),
                Some(1),
                "{}: only its callers get in",
                node.name
            );
            let opaque: Vec<u16> = inbound.opaque_ports.iter().map(|p| *p.get()).collect();
            let rule_ports: Vec<u16> = rules
                .and_then(|r| r.first())
                .map(|r| r.ports.iter().map(|p| *p.get()).collect())
                .unwrap_or_default();
            // The broker is open to raw TCP on its port only; apps, to HTTP only.
            let expected: Vec<u16> = match node.beside {
                Beside::Broker => node.app.map(|a| a.port()).into_iter().collect(),
                Beside::App | Beside::Nothing | Beside::Gateway => Vec::new(),
            };
            assert_eq!(opaque, expected, "{}", node.name);
            assert_eq!(rule_ports, expected, "{}", node.name);
        }
        check_gateway(&parsed, node, &jwt_public);
        let services = parsed.outbound.map(|o| o.services).unwrap_or_default();
        assert_eq!(services.len(), node.calls.len());
        for (callee, dst) in services {
            let far = mesh.node(&callee);
            let expected = far.and_then(|n| n.inbound);
            assert_eq!(dst.endpoints.first().map(|e| **e), expected, "{callee}");
            let is_broker = far.is_some_and(|f| f.beside == Beside::Broker);
            assert_eq!(
                *dst.protocol == UpstreamProtocol::Opaque,
                is_broker,
                "{callee}"
            );
            if is_broker {
                assert_eq!(dst.listen.as_ref().map(|l| **l), node.broker, "{callee}");
                let port = far.and_then(|f| f.app).map(|a| a.port());
                assert_eq!(dst.port.as_ref().map(|p| **p), port, "{callee}");
            }
        }
    }

    /// The gateway alone has `gateway:`: on its listener, tokens checked
    /// with the demo key for the demo issuer and audience, a route per
    /// service it calls (the inbound sides admit it), and a public health
    /// route.
    fn check_gateway(parsed: &config::Config, node: &Node, jwt_public: &Path) {
        let Some(gateway) = &parsed.gateway else {
            assert_eq!(node.gateway, None, "{}", node.name);
            return;
        };
        assert_eq!(node.beside, Beside::Gateway);
        assert_eq!(gateway.listen.as_ref().map(|l| **l), node.gateway);
        let jwt = gateway.jwt.as_ref().expect("tokens are checked");
        assert_eq!(jwt.issuer.as_deref(), Some(JWT_ISSUER));
        assert_eq!(jwt.audiences, [JWT_AUDIENCE]);
        let keys: Vec<_> = jwt.keys.iter().map(|k| k.get().clone()).collect();
        assert_eq!(keys, [config::JwtKeySource::Pem(jwt_public.to_owned())]);
        let mut routed: Vec<&str> = gateway
            .routes
            .iter()
            .filter_map(|r| r.service.as_ref().map(|s| s.get().as_str()))
            .collect();
        routed.sort_unstable();
        let mut calls = node.calls.clone();
        calls.sort_unstable();
        assert_eq!(routed, calls);
        assert!(gateway.routes.iter().any(|r| r.direct_response.is_some()
            && r.auth.as_ref().map(|a| a.get()) == Some(&config::RouteAuth::Public)));
    }
}
