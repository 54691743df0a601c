//! A real Redis server (Debian's `redis-server`, installed by
//! scripts/install-test-deps.sh) run as a child process on a free
//! loopback port, with nothing saved to disk; killed by its PID when
//! dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_addr;

/// A running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts Redis on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..3 {
            let addr = free_addr();
            if let Some(child) = spawn(addr, dir.path()) {
                return Self {
                    child: Some(child),
                    addr,
                    dir,
                };
            }
        }
        panic!("redis-server found no free port in 3 attempts");
    }

    /// The URL sidecars are given.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(self.addr, self.dir.path());
        assert!(
            child.is_some(),
            "redis-server did not come back on {}",
            self.addr
        );
        self.child = child;
    }
}

/// Spawns the server; `Some` once it answers, `None` if it exited (its
/// port was taken).
fn spawn(addr: SocketAddr, dir: &std::path::Path) -> Option<Child> {
    let bin = std::env::var("PILOTFISH_REDIS").unwrap_or_else(|_| "/usr/bin/redis-server".into());
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is not installed: run scripts/install-test-deps.sh (Debian's redis-server), or set PILOTFISH_REDIS"
    );
    let mut child = Command::new(&bin)
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if ping(addr) {
            return Some(child);
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {addr} never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis at `addr` answers `PING`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
