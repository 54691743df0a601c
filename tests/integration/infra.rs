//! The test infrastructure for protocols carried through the mesh, checked
//! on its own (no sidecar): a real PostgreSQL, a real RabbitMQ and a
//! WebSocket echo server, each reached directly by its real client. If
//! one of these fails, the server or client helper is broken, not the
//! proxy.

use std::time::Instant;

use tokio_tungstenite::tungstenite::Message;

use crate::support::postgres::{self, Postgres};
use crate::support::rabbitmq::{self, RabbitMq};
use crate::support::websocket::{self, Refusal, WsServer};

#[tokio::test]
async fn postgres_answers_queries_from_both_clients() {
    let started = Instant::now();
    let pg = Postgres::start();
    eprintln!("postgres ready in {:?}", started.elapsed());
    let addr = pg.addr;

    assert_eq!(
        postgres::query(addr, "SELECT 1").await,
        vec![vec![Some("1".to_owned())]]
    );
    postgres::query(
        addr,
        "CREATE TABLE users (id int PRIMARY KEY, name text);
         INSERT INTO users VALUES (1, 'ada'), (2, 'grace'), (3, NULL);",
    )
    .await;
    assert_eq!(
        postgres::query(addr, "SELECT id, name FROM users ORDER BY id").await,
        vec![
            vec![Some("1".into()), Some("ada".into())],
            vec![Some("2".into()), Some("grace".into())],
            vec![Some("3".into()), None],
        ]
    );

    // A large value both ways, with binary parameters (extended protocol).
    let client = postgres::connect(addr).await;
    client
        .execute("CREATE TABLE blobs (id int, data bytea)", &[])
        .await
        .expect("create");
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    client
        .execute("INSERT INTO blobs VALUES ($1, $2)", &[&1i32, &big])
        .await
        .expect("insert 4 MiB");
    let row = client
        .query_one("SELECT data FROM blobs WHERE id = $1", &[&1i32])
        .await
        .expect("select");
    assert!(row.get::<_, Vec<u8>>(0) == big, "the 4 MiB value changed");
    let rows = postgres::query(addr, "SELECT length(repeat('x', 3 * 1024 * 1024))").await;
    assert_eq!(rows, vec![vec![Some((3 << 20).to_string())]]);

    // Debian's psql, a separate process, sees the same data.
    assert_eq!(
        postgres::psql(addr, "SELECT name FROM users WHERE id < 3 ORDER BY id"),
        "ada\ngrace\n"
    );
    let error = postgres::try_psql(addr, "SELECT * FROM missing");
    assert!(!error.status.success());
    assert!(
        String::from_utf8_lossy(&error.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&error.stderr)
    );
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", addr.port()))
            .exists()
    );

    // Stopping it ends every process of the server and leaves no files.
    let dir = pg.socket_dir().to_owned();
    drop(client);
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        postgres::try_connect(addr).await.is_err(),
        "postgres still answers after drop"
    );
}

#[tokio::test]
async fn rabbitmq_carries_messages_from_publisher_to_consumer() {
    let started = Instant::now();
    let broker = RabbitMq::start();
    eprintln!("rabbitmq ready in {:?}", started.elapsed());
    let addr = broker.addr;

    let sent = rabbitmq::messages(100, 64);
    assert_eq!(rabbitmq::publish(addr, "orders", &sent).await, 100);
    let received = rabbitmq::consume(addr, "orders", 100).await;
    assert!(received == sent, "messages changed or reordered");

    // Larger than a frame (128 KiB): carried in several.
    let large = rabbitmq::messages(3, 1 << 20);
    assert_eq!(rabbitmq::publish(addr, "large", &large).await, 3);
    assert!(rabbitmq::consume(addr, "large", 3).await == large);

    // Everything acknowledged: the queues are empty.
    let (connection, channel) = rabbitmq::connect(addr).await;
    assert_eq!(rabbitmq::declare(&channel, "orders").await, 0);
    assert_eq!(rabbitmq::declare(&channel, "large").await, 0);
    rabbitmq::close(connection, channel).await;

    // Stopping it ends the broker and its epmd and leaves no files.
    let dir = broker.dir().to_owned();
    drop(broker);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "rabbitmq still listens after drop: {}",
        listeners(addr)
    );
}

#[tokio::test]
async fn websocket_echoes_every_kind_of_message() {
    let server = WsServer::start().await;
    // As through a sidecar: the client dials an address, the Host header
    // names the service.
    let ws = websocket::ws_connect(server.addr, "ws://users/chat").await;
    websocket::exercise(ws).await;

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/chat");
    assert_eq!(seen[0].header("host"), Some("users"));
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(server.upgraded(), 1);

    // A subprotocol is agreed on, and the server can close first.
    let mut request = websocket::ws_request("ws://users/server-close");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "chat.v2, chat.v1".parse().unwrap(),
    );
    let (mut ws, response) = websocket::try_ws_connect(server.addr, request)
        .await
        .expect("upgrade");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "chat.v2",
        "the agreed subprotocol"
    );
    match websocket::next_message(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.reason, "bye"),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    // The library answers the close; the connection then ends.
    assert!(
        futures_util::StreamExt::next(&mut ws)
            .await
            .is_none_or(|r| r.is_err())
    );

    // Both close handshakes completed on the server's side too.
    let deadline = Instant::now() + websocket::PATIENCE;
    while server.closed_cleanly() < 2 {
        assert!(
            Instant::now() < deadline,
            "{} clean closes",
            server.closed_cleanly()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn websocket_refusal_comes_back_whole() {
    let server = WsServer::refusing(
        Refusal::new(426, "upgrade refused: try chat.v3\n").header("x-reason", "version"),
    )
    .await;
    let refused = websocket::upgrade_refused(server.addr, "users", "/chat").await;
    assert_eq!(refused.status, 426);
    assert_eq!(refused.text(), "upgrade refused: try chat.v3\n");
    assert_eq!(refused.header("x-reason"), Some("version"));
    assert_eq!(refused.header("content-type"), Some("text/plain"));

    // The WebSocket client sees the refusal as an HTTP error.
    match websocket::try_ws_connect(server.addr, websocket::ws_request("ws://users/chat")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 426);
        }
        Err(e) => panic!("expected the refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }

    // Told to accept again, it does.
    server.refuse(None);
    websocket::exercise(websocket::ws_connect(server.addr, "ws://users/chat").await).await;
    server.refuse(Some(Refusal::new(403, "forbidden\n")));
    let refused = websocket::upgrade_refused(server.addr, "users", "/chat").await;
    assert_eq!(
        (refused.status.as_u16(), refused.text().as_str()),
        (403, "forbidden\n")
    );
    assert_eq!(server.seen().len(), 4);
}

/// What listens on `addr`'s port, by `ss`, for a failure message.
fn listeners(addr: std::net::SocketAddr) -> String {
    let output = std::process::Command::new("ss")
        .args(["-Htlnp", &format!("sport = :{}", addr.port())])
        .output();
    output.map_or_else(
        |e| format!("(ss: {e})"),
        |o| String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}
