//! What `pilotfish demo` prints once the mesh is up: a table of what runs
//! where, and commands to paste. The first line that starts with `curl `
//! is the main example (the integration test runs it), the first with
//! `Authorization: Bearer` the gateway's (so does it).

use std::fmt::Write as _;
use std::path::Path;

use super::plan::{Events, Mesh, Node};

/// How the printed lines make a demo token: `EXE token --key KEY`.
#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    /// This pilotfish executable.
    pub exe: &'a Path,
    /// The demo's signing key.
    pub key: &'a Path,
}

impl Token<'_> {
    /// The shell command that prints a token for `sub` with these args.
    fn command(&self, args: &str) -> String {
        format!(
            "{} token --key {} {args}",
            shell_quote(self.exe),
            shell_quote(self.key)
        )
    }
}

/// `path` as one shell word: as it is when it holds only characters no
/// shell treats specially, else in single quotes.
fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,".contains(c));
    if plain && !text.is_empty() {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The text shown once the mesh is up. `identity` gives each workload's
/// SPIFFE id.
pub fn render(
    mesh: &Mesh,
    identity: impl Fn(&str) -> String,
    dir: &Path,
    token: &Token<'_>,
) -> String {
    let mut out = String::new();
    let addr =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    let _ = writeln!(out, "\nThe Pilotfish demo mesh is up.\n");
    let _ = writeln!(
        out,
        "{:<14} {:<16} {:<17} {:<16} {:<16} identity",
        "service", "app", "inbound (mTLS)", "outbound", "admin"
    );
    for node in &mesh.nodes {
        let _ = writeln!(
            out,
            "{:<14} {:<16} {:<17} {:<16} {:<16} {}",
            node.name,
            addr(node.app),
            addr(node.inbound),
            addr(node.outbound),
            node.admin,
            identity(node.name)
        );
    }
    if let Some(client) = mesh.node("client") {
        examples(&mut out, mesh, client);
        gateway(&mut out, mesh, token);
        events(&mut out, mesh, client);
    }
    let logs = dir.join("logs");
    let _ = writeln!(
        out,
        "\nLogs of every app and sidecar, with an access log line per request: {}\n\
         Follow one request through every sidecar by its correlation id (sent or made up):\n\
         curl -s -H 'Host: orders' -H 'x-correlation-id: my-order' http://{}/orders/42 >/dev/null; grep -h my-order {}/*\n\
         Configs and certificates: {}\nPress Ctrl-C to stop.",
        logs.display(),
        mesh.node("client")
            .and_then(|c| c.outbound)
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        logs.display(),
        dir.display()
    );
    out
}

/// Commands to paste; `client`'s sidecar stands for the user's own app.
fn examples(out: &mut String, mesh: &Mesh, client: &Node) {
    let Some(entry) = client.outbound else {
        return;
    };
    let _ = writeln!(
        out,
        "\nCall orders through the mesh (client sidecar =mTLS=> orders sidecar -> orders app,\n\
         which calls users and notifications through its sidecar, over mTLS again):\n\
         curl -s -H 'Host: orders' http://{entry}/orders/42\n\
         \n\
         See what the users app receives, including the caller's verified identity\n\
         (pilotfish-client-id):\n\
         curl -s -H 'Host: users' http://{entry}/echo\n\
         \n\
         Make users fail half of its requests, then call orders again (fail=0 undoes it;\n\
         delay=200ms and hang=1 work too):\n\
         curl -s -X POST -H 'Host: users' 'http://{entry}/knobs?fail=0.5'"
    );
    if let Some(orders) = mesh.node("orders") {
        let _ = writeln!(
            out,
            "\nMetrics of the orders sidecar:\ncurl -s http://{}/metrics",
            orders.admin
        );
    }
}

/// The way in from outside: the gateway, with a demo token and without.
fn gateway(out: &mut String, mesh: &Mesh, token: &Token<'_>) {
    let Some(entry) = mesh.gateway().and_then(|g| g.gateway) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nThe way in for clients outside the mesh: the gateway on {entry} checks a token\n\
         (`pilotfish token` signs one with the demo key {key}), then calls orders over\n\
         mTLS as `gateway`; the orders app shows who signed in (x-user-id, x-user-roles):\n\
         curl -s -H \"Authorization: Bearer $({alice})\" http://{entry}/orders/42\n\
         \n\
         Without a token: 401. users is for the admin role only (403 without it):\n\
         curl -s -i http://{entry}/orders/42\n\
         curl -s -i -H \"Authorization: Bearer $({bob})\" http://{entry}/users/7",
        key = token.key.display(),
        alice = token.command("--sub alice --roles admin"),
        bob = token.command("--sub bob"),
    );
}

/// The asynchronous path: what runs where, and the commands that show it.
fn events(out: &mut String, mesh: &Mesh, client: &Node) {
    let (Some(entry), Some(broker)) = (client.outbound, mesh.broker()) else {
        if let Events::Off(why) = &mesh.events {
            let _ = writeln!(out, "\nThe asynchronous path is off: {why}");
        }
        return;
    };
    let addr = |name: &str| {
        mesh.node(name)
            .and_then(|n| n.broker)
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    };
    let _ = writeln!(
        out,
        "\nThe asynchronous path: {name} is redis-server (Redis Streams) on {redis}, reached only\n\
         as raw TCP through its sidecar over mTLS, by orders and notifications alone. Each app\n\
         connects to a local address of its own sidecar:\n  \
         orders app        -> {orders:<16} ==mTLS==> {name} sidecar -> redis-server   XADD orders\n  \
         notifications app -> {notifications:<16} ==mTLS==> {name} sidecar -> redis-server   XREADGROUP, XACK\n\
         \n\
         Create an order (orders publishes order-created), then see what notifications delivered:\n\
         curl -s -X POST -H 'Host: orders' http://{entry}/orders\n\
         curl -s -H 'Host: notifications' http://{entry}/notifications/events\n\
         \n\
         Raw TCP connections the {name} sidecar carried:\n\
         curl -s http://{admin}/metrics | grep pilotfish_tunnels_opened_total",
        name = broker.name,
        redis = broker.app.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        orders = addr("orders"),
        notifications = addr("notifications"),
        admin = broker.admin,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(events: Events) -> Mesh {
        let ports: Vec<u16> = (30_000..).take(Mesh::ports_needed(&events)).collect();
        let Some(mesh) = Mesh::new(&ports, events) else {
            panic!("enough ports");
        };
        mesh
    }

    fn rendered(mesh: &Mesh) -> String {
        let token = Token {
            exe: Path::new("/opt/pf/pilotfish"),
            key: Path::new("/tmp/d/jwt.key"),
        };
        render(
            mesh,
            |name| format!("spiffe://td/{name}"),
            Path::new("/tmp/d"),
            &token,
        )
    }

    #[test]
    fn the_gateway_line_calls_orders_with_a_demo_token() {
        let mesh = mesh(Events::Off("absent".to_owned()));
        let text = rendered(&mesh);
        let entry = mesh
            .gateway()
            .and_then(|g| g.gateway)
            .map(|a| a.to_string());
        let entry = entry.unwrap_or_default();
        let line = text.lines().find(|l| l.contains("Authorization: Bearer"));
        assert_eq!(
            line,
            Some(
                format!(
                    "curl -s -H \"Authorization: Bearer $(/opt/pf/pilotfish token --key /tmp/d/jwt.key \
                     --sub alice --roles admin)\" http://{entry}/orders/42"
                )
                .as_str()
            ),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == format!("curl -s -i http://{entry}/orders/42")),
            "{text}"
        );
    }

    #[test]
    fn paths_are_quoted_for_the_shell_when_they_need_it() {
        assert_eq!(shell_quote(Path::new("/a/b-c_d.e")), "/a/b-c_d.e");
        assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }

    #[test]
    fn the_first_curl_line_calls_orders_through_the_client_sidecar() {
        let mesh = mesh(Events::On("/usr/bin/redis-server".into()));
        let text = rendered(&mesh);
        let entry = mesh.node("client").and_then(|c| c.outbound);
        let first = text.lines().find(|l| l.starts_with("curl "));
        let expected = entry.map(|e| format!("curl -s -H 'Host: orders' http://{e}/orders/42"));
        assert_eq!(first.map(str::to_owned), expected);
        assert!(text.contains("spiffe://td/notifications"));
        assert!(text.contains("/tmp/d/logs"));
    }

    #[test]
    fn the_asynchronous_path_is_shown_with_its_commands_or_why_it_is_off() {
        let on = mesh(Events::On("/usr/bin/redis-server".into()));
        let text = rendered(&on);
        let entry = on.node("client").and_then(|c| c.outbound);
        for line in [
            entry.map(|e| format!("curl -s -X POST -H 'Host: orders' http://{e}/orders")),
            entry.map(|e| {
                format!("curl -s -H 'Host: notifications' http://{e}/notifications/events")
            }),
        ] {
            let line = line.unwrap_or_default();
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let orders_local = on.node("orders").and_then(|n| n.broker);
        assert!(
            orders_local.is_some_and(|a| text.contains(&a.to_string())),
            "{text}"
        );
        assert!(text.contains("spiffe://td/events"), "{text}");

        let off = mesh(Events::Off("no broker here".to_owned()));
        let text = rendered(&off);
        assert!(
            text.contains("The asynchronous path is off: no broker here"),
            "{text}"
        );
        assert!(!text.contains("/notifications/events"), "{text}");
    }
}
