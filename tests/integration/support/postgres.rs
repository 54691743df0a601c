//! A real PostgreSQL server (Debian's `postgresql` package, installed by
//! scripts/install-test-deps.sh) run as a child process on a free loopback
//! port, with its data and unix socket in a temporary folder; stopped by
//! its PID (and its backends) when dropped, leaving nothing behind.
//!
//! Clients: [`connect`] / [`query`] (the `tokio-postgres` crate: the
//! extended protocol, binary parameters) and [`psql`] (Debian's `psql`, a
//! subprocess), each against any address: the server's own, or a
//! sidecar's port that leads to it.
//!
//! PostgreSQL refuses to run as root; a test run as root runs it as the
//! `postgres` system user (the package's), which owns the temporary folder.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::free_addr;
use super::process_tree::{self, KillOnDrop};

/// The user every test connects as (`trust` authentication: no password).
pub const USER: &str = "pilotfish";
/// The database the tests use (made at start).
pub const DATABASE: &str = "pilotfish";
/// How long the server may take to start (it takes well under a second,
/// and `initdb` one to two, on an idle machine).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running PostgreSQL server.
pub struct Postgres {
    child: Option<Child>,
    /// Where it listens (TCP, loopback).
    pub addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// The folder with PostgreSQL's server programs: `PILOTFISH_POSTGRES_BIN`,
/// or Debian's newest `/usr/lib/postgresql/VERSION/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PILOTFISH_POSTGRES_BIN") {
        return dir.into();
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter(|(_, path)| path.join("bin/postgres").exists())
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, path)) => path.join("bin"),
        None => panic!(
            "PostgreSQL is not installed: run scripts/install-test-deps.sh (Debian's postgresql), or set PILOTFISH_POSTGRES_BIN"
        ),
    }
}

/// The uid and gid to run the server as: ours, or when we are root the
/// `postgres` system user's.
fn run_as() -> Option<(u32, u32)> {
    // (The owner of /proc/self is the effective uid.)
    let euid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    if euid == 0 {
        let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        let ids = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        });
        Some(ids.expect(
            "a `postgres` user to run PostgreSQL as (Debian's postgresql package makes it)",
        ))
    } else {
        None
    }
}

fn command(program: PathBuf, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        // (std drops the supplementary groups too when root sets a uid.)
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C").env_remove("PGDATA");
    command
}

impl Postgres {
    /// Makes a cluster with `initdb` in a temporary folder, starts the
    /// server on a free port and waits until it answers a query; a port
    /// taken in between is retried with another, twice.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let bin = bin_dir();
        let output = command(bin.join("initdb"), user)
            .arg("--pgdata")
            .arg(dir.path().join("data"))
            .args(["--username", USER, "--auth", "trust"])
            .args(["--encoding", "UTF8", "--locale", "C", "--no-sync"])
            .arg("--no-instructions")
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for attempt in 1..=3 {
            let addr = free_addr();
            let log = dir.path().join(format!("postgres-{attempt}.log"));
            let mut child = KillOnDrop::new(spawn(&bin, user, dir.path(), addr, &log));
            if wait_ready(child.get(), addr, &log) {
                return Self {
                    child: Some(child.into_inner()),
                    addr,
                    log,
                    dir,
                };
            }
            drop(child);
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                log.contains("could not bind") || log.contains("already in use"),
                "postgres exited:\n{log}"
            );
        }
        panic!("postgres found no free port in 3 attempts");
    }

    /// The connection string for `tokio-postgres` or `psql`
    /// (`postgres://pilotfish@127.0.0.1:PORT/pilotfish`).
    pub fn url(&self) -> String {
        url(self.addr)
    }

    /// The folder of its unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it: a fast shutdown (SIGINT: backends are ended, shared
    /// memory released), then SIGKILL to what is left after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process_tree::stop(&mut child, Some((Signal::SIGINT, Duration::from_secs(10))));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Before the folder goes: the server writes in it to the end.
        self.stop();
    }
}

/// Starts `postgres` on the cluster in `dir`/data.
fn spawn(bin: &Path, user: Option<(u32, u32)>, dir: &Path, addr: SocketAddr, log: &Path) -> Child {
    let output = std::fs::File::create(log).expect("log file");
    command(bin.join("postgres"), user)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("port={}", addr.port())])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // A throwaway server: nothing needs to survive a crash.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off"])
        // Small, and with its shared memory in the data folder.
        .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
        .args(["-c", "dynamic_shared_memory_type=mmap"])
        .args(["-c", "max_wal_size=64MB", "-c", "logging_collector=off"])
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("log file"))
        .stderr(output)
        .spawn()
        .expect("spawn postgres")
}

/// Waits until the server answers, then makes the test database: true
/// once done, false if the server exited; panics after PATIENCE.
fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        // (`postgres` is there from the start; the server refuses
        // connections while it starts up.)
        let made = block_on(async move {
            let client = connect_to(addr, "postgres").await?;
            client
                .simple_query(&format!("CREATE DATABASE {DATABASE}"))
                .await
        });
        match made {
            Ok(_) => return true,
            Err(e) => assert!(
                Instant::now() < deadline,
                "postgres on {addr} not ready after {PATIENCE:?} ({e}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The connection string for the test user and database at `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("postgres://{USER}@{addr}/{DATABASE}")
}

/// Runs a future to completion on a runtime of its own in a thread of its
/// own, so that it works from sync code and from inside a test's runtime.
fn block_on<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(future)
            })
            .join()
            .expect("thread")
    })
}

async fn connect_to(
    addr: SocketAddr,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(USER)
        .dbname(database)
        .application_name("pilotfish-tests")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A `tokio-postgres` client for the test database at `addr` (the
/// server's, or a sidecar's port leading to it), returning errors.
pub async fn try_connect(
    addr: SocketAddr,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_to(addr, DATABASE).await
}

/// A `tokio-postgres` client for the test database at `addr`. Its
/// connection runs in a task of the test's runtime.
pub async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    try_connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to postgres at {addr}: {e}"))
}

/// Runs `sql` (one or more statements, the simple query protocol) on a
/// new connection to `addr`: the rows of every statement, as text (`None`
/// for NULL).
pub async fn query(addr: SocketAddr, sql: &str) -> Vec<Vec<Option<String>>> {
    let client = connect(addr).await;
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql:?} at {addr}: {e}"));
    messages
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Runs `sql` with Debian's `psql` against `addr` (`-X -A -t`: no psqlrc,
/// unaligned, rows only: one line per row, `|` between columns; stops at
/// the first error), returning the whole output.
pub fn try_psql(addr: SocketAddr, sql: &str) -> Output {
    let psql =
        std::env::var_os("PILOTFISH_PSQL").map_or_else(|| bin_dir().join("psql"), Into::into);
    Command::new(psql)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(url(addr))
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

/// [`try_psql`], which must succeed: its standard output.
pub fn psql(addr: SocketAddr, sql: &str) -> String {
    let output = try_psql(addr, sql);
    assert!(
        output.status.success(),
        "psql {sql:?} at {addr} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 from psql")
}
