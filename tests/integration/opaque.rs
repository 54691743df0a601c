//! Opaque TCP through a sidecar pair: the app connects to the caller
//! sidecar's `listen` address for a `protocol: opaque` destination, and the
//! bytes go as a CONNECT over the mTLS link to the far sidecar, which
//! checks its `opaque_ports` and its authorization rules and dials the
//! port on its app's host. Real servers behind it (Redis, PostgreSQL,
//! RabbitMQ) with their real clients; the far side's policy by caller and
//! port; metrics and one access log line per connection on both sides;
//! half-close; a config reload that leaves open connections alone.

use std::net::SocketAddr;
use std::time::Duration;

use ::redis::AsyncCommands;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::postgres::{self, Postgres};
use crate::support::rabbitmq::{self, RabbitMq};
use crate::support::redis::Redis;
use crate::support::*;

/// The caller's identity, as the far sidecar sees it.
const ORDERS_ID: &str = "spiffe://cluster.local/ns/default/sa/orders";
/// How long a client step through the pair may take (far more than it does).
const PATIENCE: Duration = Duration::from_secs(20);

/// A caller sidecar (`orders`) with an opaque destination, and that
/// destination's own sidecar.
struct OpaquePair {
    /// The far sidecar, whose host has the server on an opaque port.
    far: Sidecar,
    /// `orders`' sidecar.
    caller: Sidecar,
    /// Where the app connects: the destination's `listen`.
    listen: SocketAddr,
}

/// How the pair is set up.
struct Setup<'a> {
    /// The destination (and the far sidecar's service).
    name: &'a str,
    /// The port the caller asks the far sidecar for (`port:`), or `None`
    /// to leave it to the default, `listen`'s port.
    port: Option<u16>,
    /// The destination's `listen` address.
    listen: SocketAddr,
    /// The far sidecar's `inbound:` lines beyond `listen` and `app`
    /// (2-space indent): `opaque_ports`, `authorization`.
    far_inbound: String,
}

impl<'a> Setup<'a> {
    /// `name` with the server on `port` of the far host, which opens that
    /// port to any mesh caller.
    fn new(name: &'a str, port: u16) -> Self {
        Self {
            name,
            port: Some(port),
            listen: free_addr(),
            far_inbound: opaque_ports(&[port]),
        }
    }

    /// The far sidecar's `inbound:` extra lines instead.
    fn far_inbound(mut self, yaml: &str) -> Self {
        self.far_inbound = yaml.to_owned();
        self
    }

    fn start(self, certs: &Certs) -> OpaquePair {
        // The far host's HTTP app is not needed (nothing listens there);
        // its address names the host the opaque ports are on.
        let far = Sidecar::start(
            &SidecarConfig::new(self.name, certs)
                .inbound(free_addr())
                .inbound_extra(&self.far_inbound)
                .extra(ACCESS_LOG),
        );
        let caller = Sidecar::start(
            &SidecarConfig::new("orders", certs)
                .service(
                    self.name,
                    &[far.inbound()],
                    &opaque_destination(self.listen, self.port),
                )
                .extra(ACCESS_LOG),
        );
        OpaquePair {
            far,
            caller,
            listen: self.listen,
        }
    }
}

const ACCESS_LOG: &str = "access_log: { format: json }\n";

/// `inbound.opaque_ports` (2-space indent).
fn opaque_ports(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("  opaque_ports: [{}]\n", list.join(", "))
}

/// The YAML under an opaque destination (6-space indent).
fn opaque_destination(listen: SocketAddr, port: Option<u16>) -> String {
    let mut yaml = format!("      protocol: opaque\n      listen: {listen}\n");
    if let Some(port) = port {
        yaml.push_str(&format!("      port: {port}\n"));
    }
    yaml
}

/// A Redis connection with time enough for 10 MiB through two sidecars
/// of a debug build (the client's default is 500 ms a response).
async fn redis_connection(
    client: &::redis::Client,
) -> ::redis::RedisResult<::redis::aio::MultiplexedConnection> {
    let config = ::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PATIENCE))
        .set_response_timeout(Some(PATIENCE));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// `n` bytes that are not all alike.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A Redis command in RESP, as a client sends it.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The clients connected to the Redis at `addr`, asked directly: one
/// line per connection (this one included).
async fn redis_clients(addr: SocketAddr) -> Vec<String> {
    let client = ::redis::Client::open(format!("redis://{addr}")).expect("redis url");
    let mut con = redis_connection(&client).await.expect("direct connection");
    let list: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .expect("CLIENT LIST");
    list.lines().map(str::to_owned).collect()
}

/// Connects to `listen`, sends a Redis PING, and expects the connection
/// to close without a byte back (the tunnel was refused).
async fn assert_closed_without_data(listen: SocketAddr) {
    let mut tcp = TcpStream::connect(listen).await.expect("connect to listen");
    // The sidecar may close before or after this arrives.
    let _ = tcp.write_all(b"PING\r\n").await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got))
        .await
        .expect("the refused connection was closed");
    // A close with our PING unread is a reset; either way, no data.
    assert!(
        got.is_empty(),
        "a refused connection carried {:?} ({read:?})",
        String::from_utf8_lossy(&got)
    );
}

/// Sends PING on a new connection to `listen`; the answer.
async fn ping(listen: SocketAddr) -> Vec<u8> {
    let mut tcp = TcpStream::connect(listen).await.expect("connect");
    tcp.write_all(b"PING\r\n").await.expect("write");
    let mut answer = vec![0; 7];
    tokio::time::timeout(PATIENCE, tcp.read_exact(&mut answer))
        .await
        .expect("PING answered in time")
        .expect("PING answered");
    answer
}

/// An access log line's field as u64.
fn u64_of(line: &Value, field: &str) -> u64 {
    line[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_commands_a_10_mib_value_and_pub_sub_cross_the_pair() {
    let certs = Certs::new();
    let server = Redis::start();
    let mesh = Setup::new("cache", server.addr.port()).start(&certs);
    let client = ::redis::Client::open(format!("redis://{}", mesh.listen)).expect("redis url");
    let mut con = redis_connection(&client)
        .await
        .expect("connect through the pair");

    // A few commands.
    let pong: String = ::redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let () = con.set("greeting", "hello, mesh").await.unwrap();
    let greeting: String = con.get("greeting").await.unwrap();
    assert_eq!(greeting, "hello, mesh");
    for expected in 1..=3 {
        let n: i64 = con.incr("visits", 1).await.unwrap();
        assert_eq!(n, expected);
    }
    let removed: i64 = con.del("greeting").await.unwrap();
    assert_eq!(removed, 1);
    let gone: Option<String> = con.get("greeting").await.unwrap();
    assert_eq!(gone, None);

    // 10 MiB there and back, intact.
    let big = pattern(10 << 20);
    let () = con.set("big", big.as_slice()).await.unwrap();
    let length: usize = con.strlen("big").await.unwrap();
    assert_eq!(length, 10 << 20, "the server holds all of it");
    let back: Vec<u8> = con.get("big").await.unwrap();
    assert!(back == big, "the 10 MiB value changed on the way");

    // Pub/sub: subscriber and publisher each on its own connection
    // through the pair.
    let mut subscriber = client.get_async_pubsub().await.expect("pubsub connection");
    subscriber.subscribe("news").await.expect("subscribe");
    let receivers: i64 = con
        .publish("news", "the mesh carries pub/sub")
        .await
        .unwrap();
    assert_eq!(receivers, 1, "the server knows the subscriber");
    let message = tokio::time::timeout(PATIENCE, subscriber.on_message().next())
        .await
        .expect("the message arrives in time")
        .expect("a message");
    assert_eq!(message.get_channel_name(), "news");
    assert_eq!(
        message.get_payload::<String>().unwrap(),
        "the mesh carries pub/sub"
    );

    // Both connections reached the server from the far sidecar, and each
    // is one opaque tunnel on both sidecars.
    assert_eq!(
        redis_clients(server.addr).await.len(),
        3,
        "two tunnels and us"
    );
    let outbound =
        r#"pilotfish_tunnels_active{direction="outbound",service="cache",kind="opaque"}"#;
    let inbound = r#"pilotfish_tunnels_active{direction="inbound",service="cache",kind="opaque"}"#;
    assert_eq!(metric(&mesh.caller, outbound).await, 2.0);
    assert_eq!(metric(&mesh.far, inbound).await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tables_cross_the_pair_with_both_clients() {
    let certs = Certs::new();
    let server = Postgres::start();
    // The app's address for the database: the same port on another
    // loopback address, so the destination's port is left to default to
    // listen's.
    let mut setup = Setup::new("db", server.addr.port());
    setup.listen = SocketAddr::from(([127, 0, 0, 2], server.addr.port()));
    setup.port = None;
    let mesh = setup.start(&certs);
    let addr = mesh.listen;

    postgres::query(
        addr,
        "CREATE TABLE orders (id int PRIMARY KEY, item text, qty int);
         INSERT INTO orders VALUES (1, 'anchor', 2), (2, 'rope', 10);",
    )
    .await;
    // The extended protocol with binary parameters.
    let client = postgres::connect(addr).await;
    let inserted = client
        .execute(
            "INSERT INTO orders VALUES ($1, $2, $3)",
            &[&3i32, &"sail", &1i32],
        )
        .await
        .expect("insert");
    assert_eq!(inserted, 1);
    let rows = client
        .query(
            "SELECT item, qty FROM orders WHERE qty > $1 ORDER BY id",
            &[&1i32],
        )
        .await
        .expect("select");
    let items: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(items, [("anchor".to_owned(), 2), ("rope".to_owned(), 10)]);
    drop(client);

    // Debian's psql, a separate process, through the same address.
    assert_eq!(
        postgres::psql(addr, "SELECT id, item FROM orders ORDER BY id"),
        "1|anchor\n2|rope\n3|sail\n"
    );
    // And the server itself has the rows.
    assert_eq!(
        postgres::query(server.addr, "SELECT sum(qty) FROM orders").await,
        vec![vec![Some("13".to_owned())]]
    );
    let opened =
        r#"pilotfish_tunnels_opened_total{direction="outbound",service="db",kind="opaque"}"#;
    assert!(metric(&mesh.caller, opened).await >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_messages_cross_the_pair() {
    let certs = Certs::new();
    let broker = RabbitMq::start();
    let mesh = Setup::new("broker", broker.addr.port()).start(&certs);

    let sent = rabbitmq::messages(20, 1000);
    assert_eq!(rabbitmq::publish(mesh.listen, "orders", &sent).await, 20);
    let received = rabbitmq::consume(mesh.listen, "orders", 20).await;
    assert!(received == sent, "messages changed or reordered");
    // The queue is empty now, as the broker itself says.
    let (connection, channel) = rabbitmq::connect(broker.addr).await;
    assert_eq!(rabbitmq::declare(&channel, "orders").await, 0);
    rabbitmq::close(connection, channel).await;

    // Two connections (the publisher's, the consumer's), each a tunnel on
    // both sidecars, which agree on the bytes. (RabbitMQ resets a
    // connection its client has closed, so the far side may count the end
    // as an error: that is the broker, with or without a proxy between.)
    for (sidecar, direction) in [(&mesh.caller, "outbound"), (&mesh.far, "inbound")] {
        let labels = format!(r#"direction="{direction}",service="broker",kind="opaque""#);
        let closed = format!("pilotfish_tunnels_closed_total{{{labels}}}");
        wait_metric(sidecar, &closed, 2.0, PATIENCE).await;
        let opened = format!("pilotfish_tunnels_opened_total{{{labels}}}");
        assert_eq!(metric(sidecar, &opened).await, 2.0);
    }
    for name in [
        "pilotfish_tunnel_sent_bytes_total",
        "pilotfish_tunnel_received_bytes_total",
    ] {
        let outbound = metric(&mesh.caller, &format!(r#"{name}{{direction="outbound"}}"#)).await;
        let inbound = metric(&mesh.far, &format!(r#"{name}{{direction="inbound"}}"#)).await;
        assert_eq!(outbound, inbound, "{name}");
        assert!(
            outbound > 20_000.0,
            "{name}: {outbound} (20 messages of 1000 bytes)"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_far_policy_decides_by_caller_identity_and_port() {
    let certs = Certs::new();
    let server = Redis::start();
    let port = server.addr.port();
    let other = free_addr().port();
    let rules = |rules: &str| {
        format!(
            "{}  authorization:\n    rules:\n{rules}",
            opaque_ports(&[port, other])
        )
    };
    // (the rules, the reason a refusal gives, or None if admitted)
    let cases = [
        (
            "      - from: [{ service: billing }]\n".to_owned(),
            Some("no-rule-for-caller"),
        ),
        (
            format!("      - from: [{{ service: orders }}]\n        ports: [{other}]\n"),
            Some("port-not-allowed"),
        ),
        (
            "      - from: [{ service: orders }]\n        paths: [\"/admin\"]\n".to_owned(),
            Some("port-not-allowed"),
        ),
        (
            format!("      - from: [{{ service: orders }}]\n        ports: [{port}]\n"),
            None,
        ),
        ("      - from: [{ service: orders }]\n".to_owned(), None),
    ];
    for (yaml, refusal) in cases {
        let mesh = Setup::new("cache", port)
            .far_inbound(&rules(&yaml))
            .start(&certs);
        match refusal {
            None => {
                assert_eq!(ping(mesh.listen).await, b"+PONG\r\n", "admitted by\n{yaml}");
                // The far side's line for the tunnel names the caller.
                let line = &mesh.far.wait_access_log(1, PATIENCE)[0];
                assert_eq!(line["peer"], ORDERS_ID, "{line}");
                assert_eq!(line["method"], "CONNECT", "{line}");
                assert_eq!(line["status"], 200, "{line}");
                assert_eq!(line["authority"], format!("127.0.0.1:{port}"), "{line}");
            }
            Some(reason) => {
                assert_closed_without_data(mesh.listen).await;
                assert_refused(&mesh, reason).await;
                assert_eq!(
                    redis_clients(server.addr).await.len(),
                    1,
                    "the refused connection reached the server\n{yaml}"
                );
            }
        }
    }
}

/// The far sidecar refused one connection from `orders` for `reason`,
/// counted and logged it; the caller logged the failure and closed the
/// app's connection.
async fn assert_refused(mesh: &OpaquePair, reason: &str) {
    let denied =
        format!(r#"pilotfish_authz_denied_total{{caller="{ORDERS_ID}",reason="{reason}"}}"#);
    wait_metric(&mesh.far, &denied, 1.0, PATIENCE).await;
    let line = mesh
        .far
        .wait_for_log("connection denied by the authorization policy", PATIENCE);
    assert!(line.contains(ORDERS_ID) && line.contains(reason), "{line}");
    let far_line = &mesh.far.wait_access_log(1, PATIENCE)[0];
    assert_eq!(far_line["status"], 403, "{far_line}");
    assert_eq!(far_line["peer"], ORDERS_ID, "{far_line}");

    let failed = mesh
        .caller
        .wait_for_log("opaque connection failed", PATIENCE);
    assert!(failed.contains("tunnel-refused"), "{failed}");
    let caller_line = &mesh.caller.wait_access_log(1, PATIENCE)[0];
    assert_eq!(caller_line["error"], "tunnel-refused", "{caller_line}");
    let opened = r#"pilotfish_tunnels_opened_total{kind="opaque"}"#;
    assert_eq!(metric(&mesh.caller, opened).await, 0.0);
    assert_eq!(metric(&mesh.far, opened).await, 0.0);

    // One connection, one decision: a refusal is an answer, not a failure
    // to reach the far sidecar, so it is not tried again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&mesh.far, &denied).await,
        1.0,
        "the far sidecar was asked more than once for one connection:\n{}",
        mesh.far.logs().join("\n")
    );
    assert_eq!(
        mesh.far.access_log().len(),
        1,
        "{:?}",
        mesh.far.access_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_the_far_side_does_not_open_is_refused() {
    let certs = Certs::new();
    let server = Redis::start();
    // The server's port is not among the far side's opaque ports, and no
    // authorization is configured (any mesh caller is admitted).
    let mesh = Setup::new("cache", server.addr.port())
        .far_inbound(&opaque_ports(&[free_addr().port()]))
        .start(&certs);
    assert_closed_without_data(mesh.listen).await;
    assert_refused(&mesh, "port-not-allowed").await;
    assert_eq!(redis_clients(server.addr).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connection_is_counted_and_logged_on_both_sidecars() {
    let certs = Certs::new();
    let server = Redis::start();
    let mesh = Setup::new("cache", server.addr.port()).start(&certs);

    // Three connections one after the other, each a SET and a GET of its
    // own size; the first stays open a while.
    let mut expected = Vec::new(); // (sent, received), as the app saw them
    for (i, size) in [1_000usize, 100_000, 1 << 20].into_iter().enumerate() {
        let value = pattern(size);
        let key = format!("key-{i}");
        let mut tcp = TcpStream::connect(mesh.listen).await.expect("connect");
        let set = resp(&[b"SET", key.as_bytes(), &value]);
        let get = resp(&[b"GET", key.as_bytes()]);
        tcp.write_all(&set).await.unwrap();
        let mut ok = [0; 5];
        tcp.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        tcp.write_all(&get).await.unwrap();
        let mut reply = format!("${size}\r\n").into_bytes();
        reply.extend_from_slice(&value);
        reply.extend_from_slice(b"\r\n");
        let mut got = vec![0; reply.len()];
        tcp.read_exact(&mut got).await.unwrap();
        assert!(got == reply, "GET of {size} bytes came back changed");
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The app is done; the server closes when it sees that.
        tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        expected.push((set.len() + get.len(), ok.len() + reply.len()));
    }

    // One access log line per connection on each side, once it ended,
    // with the bytes each way and how long it lived.
    for (sidecar, direction) in [(&mesh.caller, "outbound"), (&mesh.far, "inbound")] {
        let mut lines = sidecar.wait_access_log(3, PATIENCE);
        assert_eq!(lines.len(), 3, "{lines:?}");
        lines.sort_by_key(|l| u64_of(l, "bytes_in"));
        for (line, (sent, received)) in lines.iter().zip(&expected) {
            assert_eq!(line["direction"], direction, "{line}");
            assert_eq!(line["method"], "CONNECT", "{line}");
            assert_eq!(line["status"], 200, "{line}");
            assert_eq!(line["service"], "cache", "{line}");
            assert_eq!(u64_of(line, "bytes_in"), *sent as u64, "{line}");
            assert_eq!(u64_of(line, "bytes_out"), *received as u64, "{line}");
            assert!(line["error"].is_null(), "{line}");
        }
        let lived = lines[0]["duration_ms"].as_f64().expect("duration_ms");
        assert!(
            (300.0..60_000.0).contains(&lived),
            "the first connection was open 300 ms or more: {}",
            lines[0]
        );
        if direction == "inbound" {
            assert!(lines.iter().all(|l| l["peer"] == ORDERS_ID), "{lines:?}");
        } else {
            let far = mesh.far.inbound().to_string();
            assert!(lines.iter().all(|l| l["upstream"] == far), "{lines:?}");
        }
    }

    // The tunnel metrics agree on both sides.
    let (sent, received) = expected
        .iter()
        .fold((0, 0), |(s, r), (a, b)| (s + a, r + b));
    for (sidecar, direction) in [(&mesh.caller, "outbound"), (&mesh.far, "inbound")] {
        let labels = format!(r#"direction="{direction}",service="cache",kind="opaque""#);
        let closed = format!(r#"pilotfish_tunnels_closed_total{{{labels},end="closed"}}"#);
        wait_metric(sidecar, &closed, 3.0, PATIENCE).await;
        let value = async |name: &str| metric(sidecar, &format!("{name}{{{labels}}}")).await;
        assert_eq!(value("pilotfish_tunnels_opened_total").await, 3.0);
        assert_eq!(value("pilotfish_tunnels_closed_total").await, 3.0);
        assert_eq!(value("pilotfish_tunnels_active").await, 0.0);
        assert_eq!(
            value("pilotfish_tunnel_sent_bytes_total").await,
            sent as f64,
            "{direction}"
        );
        assert_eq!(
            value("pilotfish_tunnel_received_bytes_total").await,
            received as f64,
            "{direction}"
        );
        assert_eq!(value("pilotfish_tunnel_duration_seconds_count").await, 3.0);
        assert!(value("pilotfish_tunnel_duration_seconds_sum").await >= 0.3);
    }
}

/// A server that reads its client's whole message (to EOF), then answers
/// with its length and the message itself, and closes.
async fn answer_after_eof_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut message = Vec::new();
                if tcp.read_to_end(&mut message).await.is_err() {
                    return;
                }
                let mut answer = format!("got {} bytes\n", message.len()).into_bytes();
                answer.extend_from_slice(&message);
                let _ = tcp.write_all(&answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_closed_connection_still_gets_the_whole_answer() {
    let certs = Certs::new();
    let server = answer_after_eof_server().await;
    let mesh = Setup::new("batch", server.port()).start(&certs);

    let message = pattern(256 << 10);
    let mut tcp = TcpStream::connect(mesh.listen).await.expect("connect");
    tcp.write_all(&message).await.unwrap();
    // Done sending: the server answers only once it sees the end.
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the answer came in time")
        .expect("read the answer");
    let mut expected = format!("got {} bytes\n", message.len()).into_bytes();
    expected.extend_from_slice(&message);
    assert_eq!(answer.len(), expected.len());
    assert!(answer == expected, "the answer changed on the way");

    // Both sides saw a tunnel that simply closed.
    for (sidecar, direction) in [(&mesh.caller, "outbound"), (&mesh.far, "inbound")] {
        let closed = format!(
            r#"pilotfish_tunnels_closed_total{{direction="{direction}",service="batch",kind="opaque",end="closed"}}"#
        );
        wait_metric(sidecar, &closed, 1.0, PATIENCE).await;
    }
}

/// A server that speaks first: a greeting, then it is done sending
/// (half-close) and reads its client's message to EOF, which it hands to
/// the test.
async fn greet_then_listen_server() -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.write_all(b"hello; I am done talking\n").await;
        let _ = tcp.shutdown().await;
        let mut heard = Vec::new();
        let _ = tcp.read_to_end(&mut heard).await;
        let _ = tx.send(heard);
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_half_closes_first_still_hears_its_client() {
    let certs = Certs::new();
    let (server, heard) = greet_then_listen_server().await;
    let mesh = Setup::new("batch", server.port()).start(&certs);

    let mut tcp = TcpStream::connect(mesh.listen).await.expect("connect");
    let mut greeting = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut greeting))
        .await
        .expect("the server's end came through in time")
        .expect("read the greeting");
    assert_eq!(greeting, b"hello; I am done talking\n");
    // Our side is still open: the server hears all of this.
    let message = pattern(256 << 10);
    tcp.write_all(&message)
        .await
        .expect("write after the server's end");
    tcp.shutdown().await.unwrap();
    let heard = tokio::time::timeout(PATIENCE, heard)
        .await
        .expect("the server heard the end in time")
        .expect("the server's account");
    assert_eq!(heard.len(), message.len());
    assert!(heard == message, "the message changed on the way");
    for (sidecar, direction) in [(&mesh.caller, "outbound"), (&mesh.far, "inbound")] {
        let closed = format!(
            r#"pilotfish_tunnels_closed_total{{direction="{direction}",service="batch",kind="opaque",end="closed"}}"#
        );
        wait_metric(sidecar, &closed, 1.0, PATIENCE).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_leaves_an_open_connection_alone() {
    let certs = Certs::new();
    let server = Redis::start();
    let mesh = Setup::new("cache", server.addr.port()).start(&certs);
    let client = ::redis::Client::open(format!("redis://{}", mesh.listen)).expect("redis url");
    let mut con = redis_connection(&client).await.expect("connect");
    let id: i64 = ::redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut con)
        .await
        .unwrap();
    let () = con.set("before", "the reload").await.unwrap();

    // Another destination appears in the caller's config.
    let path = &mesh.caller.config_path;
    let text = std::fs::read_to_string(path).expect("read config");
    let changed = text.replacen(
        "  services:\n",
        &format!(
            "  services:\n    billing:\n      endpoints: [{}]\n",
            free_addr()
        ),
        1,
    );
    assert_ne!(changed, text);
    let staged = path.with_extension("new");
    std::fs::write(&staged, changed).expect("write");
    std::fs::rename(&staged, path).expect("rename");
    let applied = r#"pilotfish_reloads_total{kind="config",result="applied"}"#;
    wait_metric(&mesh.caller, applied, 1.0, PATIENCE).await;

    // The same connection, to the same server connection, still works.
    let before: String = con.get("before").await.expect("GET after the reload");
    assert_eq!(before, "the reload");
    let same: i64 = ::redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(same, id, "the server sees the same connection");
    let labels = r#"direction="outbound",service="cache",kind="opaque""#;
    let value = async |name: &str| metric(&mesh.caller, &format!("{name}{{{labels}}}")).await;
    assert_eq!(value("pilotfish_tunnels_opened_total").await, 1.0);
    assert_eq!(value("pilotfish_tunnels_closed_total").await, 0.0);
    assert_eq!(value("pilotfish_tunnels_active").await, 1.0);

    // And the listener still takes new connections.
    assert_eq!(ping(mesh.listen).await, b"+PONG\r\n");
}
