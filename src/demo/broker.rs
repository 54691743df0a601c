//! The demo's event broker: Debian's `redis-server`, found on `PATH` and
//! run as the `events` workload's "app", holding the `orders` stream.
//! Nothing reaches it but raw TCP through its sidecar.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::plan::Events;

/// The program the broker is.
const PROGRAM: &str = "redis-server";

/// Whether the demo can run its broker: `redis-server` on `PATH`, or why not.
pub fn find() -> Events {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(PROGRAM))
        .find(|candidate| is_executable(candidate));
    match found {
        Some(program) => Events::On(program),
        None => Events::Off(format!(
            "{PROGRAM} is not installed (not on PATH), so orders publishes no events and \
             notifications consumes none.\n\
             scripts/demo.sh installs it (Debian's redis-server package) and runs the demo; \
             or: sudo apt-get install redis-server"
        )),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The arguments of a broker on `addr` (loopback) with its working folder
/// `dir`: no config file, no persistence (the demo's events live as long
/// as the demo), its log on stdout.
pub fn args(addr: SocketAddr, dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--port",
        &addr.port().to_string(),
        "--bind",
        &addr.ip().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(dir.into());
    args
}

/// The broker's working folder under the demo's.
pub fn dir(demo_dir: &Path) -> PathBuf {
    demo_dir.join("events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_persistence_and_loopback_only() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let args = args(addr, Path::new("/tmp/d/events"));
        let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
        let text = words.join(" ");
        assert_eq!(
            text,
            "--port 7000 --bind 127.0.0.1 --save  --appendonly no --daemonize no --dir /tmp/d/events"
        );
    }
}
