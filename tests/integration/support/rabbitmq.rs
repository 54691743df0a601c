//! A real RabbitMQ broker (Debian's `rabbitmq-server`, installed by
//! scripts/install-test-deps.sh) run as a child process on a free loopback
//! AMQP port, with everything it writes in a temporary folder; and a real
//! AMQP 0-9-1 client (the `amqprs` crate) that publishes and consumes
//! through any address: the broker's own, or a sidecar's port leading to
//! it.
//!
//! Each broker has an `epmd` of its own (Erlang's port mapper, which a
//! node must register with), on a free port, started and stopped with it:
//! none is shared between tests and none outlives one. Its distribution
//! port is a free one too, and both listen on loopback only. No plugins
//! (no management UI): the tests speak AMQP.
//!
//! The default user `guest` may only connect from loopback, which is what
//! tests need: through a sidecar the broker still sees a loopback peer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, Channel, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};

use super::free_addr;
use super::process_tree::{self, KillOnDrop};

/// How long the broker may take to start: about 6 s on an idle 2-core
/// machine, several times that when the tests around it are busy.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// How long a client step may take (connect, publish, receive all).
pub const CLIENT_PATIENCE: Duration = Duration::from_secs(30);
/// The broker's default user, allowed from loopback only.
pub const USER: &str = "guest";
pub const PASSWORD: &str = "guest";

/// The folder with RabbitMQ's scripts, or `PILOTFISH_RABBITMQ_BIN`.
fn bin_dir() -> PathBuf {
    let dir: PathBuf = std::env::var_os("PILOTFISH_RABBITMQ_BIN")
        .map_or_else(|| "/usr/lib/rabbitmq/bin".into(), Into::into);
    assert!(
        dir.join("rabbitmq-server").exists(),
        "{} is not installed: run scripts/install-test-deps.sh (Debian's rabbitmq-server), or set PILOTFISH_RABBITMQ_BIN",
        dir.join("rabbitmq-server").display()
    );
    dir
}

/// A running RabbitMQ broker and its own `epmd`.
pub struct RabbitMq {
    server: Option<Child>,
    epmd: Option<Child>,
    /// Where it takes AMQP connections (loopback).
    pub addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl RabbitMq {
    /// Starts a broker on free ports and waits until it takes AMQP
    /// connections (up to PATIENCE). Ports taken in between are retried
    /// with others, twice.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // No plugins: a list of none, instead of /etc/rabbitmq's.
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        let bin = bin_dir();
        for attempt in 1..=3 {
            let Some((epmd, epmd_port)) = start_epmd() else {
                continue;
            };
            let addr = free_addr();
            let dist_port = free_addr().port();
            let log = dir.path().join(format!("rabbitmq-{attempt}.log"));
            let mut server = KillOnDrop::new(spawn(
                &bin,
                dir.path(),
                attempt,
                addr,
                epmd_port,
                dist_port,
                &log,
            ));
            if wait_ready(server.get(), addr, &log) {
                return Self {
                    server: Some(server.into_inner()),
                    epmd: Some(epmd.into_inner()),
                    addr,
                    log,
                    dir,
                };
            }
            drop((server, epmd));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                text.contains("eaddrinuse"),
                "rabbitmq-server exited:\n{text}"
            );
        }
        panic!("rabbitmq-server found no free ports in 3 attempts");
    }

    /// The AMQP URL (`amqp://guest:guest@127.0.0.1:PORT/%2f`).
    pub fn url(&self) -> String {
        format!("amqp://{USER}:{PASSWORD}@{}/%2f", self.addr)
    }

    /// What the broker logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The folder the broker writes in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the broker and its `epmd` (SIGKILL to the whole process
    /// tree), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            process_tree::stop(&mut server, None);
        }
        if let Some(mut epmd) = self.epmd.take() {
            process_tree::stop(&mut epmd, None);
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        // Before the folder goes: the broker writes in it to the end.
        self.kill();
    }
}

/// Starts an `epmd` on a free loopback port and waits until it listens:
/// it and its port, or `None` if it exited (the port was taken).
fn start_epmd() -> Option<(KillOnDrop, u16)> {
    let port = free_addr().port();
    let mut epmd = KillOnDrop::new(
        Command::new("epmd")
            .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
            .env_remove("ERL_EPMD_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn epmd (Debian's erlang-base, installed with rabbitmq-server)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if !matches!(epmd.get().try_wait(), Ok(None)) {
            return None;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Some((epmd, port));
        }
        assert!(Instant::now() < deadline, "epmd on {addr} never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `rabbitmq-server` with its files in `dir`, its node registered
/// with the `epmd` on `epmd_port`.
fn spawn(
    bin: &Path,
    dir: &Path,
    attempt: u32,
    addr: SocketAddr,
    epmd_port: u16,
    dist_port: u16,
    log: &Path,
) -> Child {
    let config = dir.join(format!("rabbitmq-{attempt}.conf"));
    std::fs::write(
        &config,
        format!(
            "listeners.tcp.1 = {addr}\n\
             # Tests must not stall because /tmp is nearly full.\n\
             disk_free_limit.absolute = 1MB\n\
             log.console = true\n\
             log.file = false\n"
        ),
    )
    .expect("rabbitmq.conf");
    let output = std::fs::File::create(log).expect("log file");
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    Command::new(bin.join("rabbitmq-server"))
        .current_dir(dir)
        // Nothing of the machine's RabbitMQ or Erlang settings, and
        // nothing written outside `dir` (the Erlang cookie goes in HOME).
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
        .env(
            "RABBITMQ_NODENAME",
            format!("pilotfish-{}-{attempt}@localhost", addr.port()),
        )
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .env("RABBITMQ_CONFIG_FILE", &config)
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_LOGS", "-")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("log file"))
        .stderr(output)
        .spawn()
        .expect("spawn rabbitmq-server")
}

/// Waits until the broker has logged that it listens on `addr` and opens
/// an AMQP handshake there (`Connection.Start`): true then, false if it
/// exited; panics after PATIENCE.
fn wait_ready(server: &mut Child, addr: SocketAddr, log: &Path) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if !matches!(server.try_wait(), Ok(None)) {
            return false;
        }
        // The log says whose listener answers: another test's broker
        // could hold the port we were given, until ours gives up on it.
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        if log_text.contains(&format!("started TCP listener on {addr}")) && amqp_starts(addr) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "rabbitmq-server on {addr} not ready after {PATIENCE:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an AMQP 0-9-1 server at `addr` answers the protocol header with
/// `Connection.Start` (a method frame on channel 0, class 10, method 10).
fn amqp_starts(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut head = [0u8; 11];
    stream.read_exact(&mut head).is_ok()
        && head[0] == 1
        && head[1..3] == [0, 0]
        && head[7..11] == [0, 10, 0, 10]
}

/// An AMQP connection (as `guest`) to `addr`, and a channel on it.
pub async fn connect(addr: SocketAddr) -> (Connection, Channel) {
    let step = async {
        let args =
            OpenConnectionArguments::new(&addr.ip().to_string(), addr.port(), USER, PASSWORD);
        let connection = Connection::open(&args).await?;
        connection
            .register_callback(DefaultConnectionCallback)
            .await?;
        let channel = connection.open_channel(None).await?;
        channel.register_callback(DefaultChannelCallback).await?;
        Ok::<_, amqprs::error::Error>((connection, channel))
    };
    tokio::time::timeout(CLIENT_PATIENCE, step)
        .await
        .unwrap_or_else(|_| panic!("AMQP connection to {addr} not open after {CLIENT_PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("AMQP connection to {addr}: {e}"))
}

/// Closes a channel and its connection, each with the close handshake.
pub async fn close(connection: Connection, channel: Channel) {
    channel.close().await.expect("close the AMQP channel");
    connection.close().await.expect("close the AMQP connection");
}

/// Declares `queue` (transient, shared, kept when unused); how many
/// messages it holds.
pub async fn declare(channel: &Channel, queue: &str) -> u32 {
    let (_, messages, _) = channel
        .queue_declare(QueueDeclareArguments::new(queue))
        .await
        .unwrap_or_else(|e| panic!("declare queue {queue}: {e}"))
        .expect("declare-ok");
    messages
}

/// `n` distinct messages of at least `size` bytes each (`message N `
/// then filler), to tell them apart and check their order.
pub fn messages(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut body = format!("message {i} ").into_bytes();
            let filler = size.saturating_sub(body.len());
            body.extend((0..filler).map(|j| b'a' + ((i + j) % 26) as u8));
            body
        })
        .collect()
}

/// Publishes `bodies` to `queue` (declared first) through `addr`, on one
/// connection, in one transaction (`tx.commit` is answered once the queue
/// has taken every message), and returns how many messages the queue then
/// holds.
pub async fn publish(addr: SocketAddr, queue: &str, bodies: &[Vec<u8>]) -> u32 {
    let (connection, channel) = connect(addr).await;
    declare(&channel, queue).await;
    let step = async {
        channel.tx_select().await.expect("tx.select");
        for body in bodies {
            channel
                .basic_publish(
                    BasicProperties::default(),
                    body.clone(),
                    BasicPublishArguments::new("", queue),
                )
                .await
                .unwrap_or_else(|e| panic!("publish to {queue}: {e}"));
        }
        channel
            .tx_commit()
            .await
            .unwrap_or_else(|e| panic!("commit the publishes to {queue}: {e}"));
        declare(&channel, queue).await
    };
    let held = tokio::time::timeout(CLIENT_PATIENCE, step)
        .await
        .unwrap_or_else(|_| {
            panic!("publishing to {queue} at {addr} took over {CLIENT_PATIENCE:?}")
        });
    close(connection, channel).await;
    held
}

/// Consumes `n` messages from `queue` (declared first) through `addr`,
/// acknowledging each, and returns their bodies in the order received;
/// panics if they do not all come within CLIENT_PATIENCE.
pub async fn consume(addr: SocketAddr, queue: &str, n: usize) -> Vec<Vec<u8>> {
    let (connection, channel) = connect(addr).await;
    declare(&channel, queue).await;
    let (_tag, mut deliveries) = channel
        .basic_consume_rx(BasicConsumeArguments::new(queue, "pilotfish-tests"))
        .await
        .unwrap_or_else(|e| panic!("consume from {queue}: {e}"));
    let mut bodies = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + CLIENT_PATIENCE;
    while bodies.len() < n {
        let delivery = tokio::time::timeout_at(deadline, deliveries.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {n} messages from {queue} at {addr} in {CLIENT_PATIENCE:?}",
                    bodies.len()
                )
            })
            .unwrap_or_else(|| panic!("the consumer of {queue} at {addr} ended"));
        let tag = delivery.deliver.expect("a delivery").delivery_tag();
        bodies.push(delivery.content.unwrap_or_default());
        channel
            .basic_ack(BasicAckArguments::new(tag, false))
            .await
            .unwrap_or_else(|e| panic!("ack on {queue}: {e}"));
    }
    close(connection, channel).await;
    bodies
}
