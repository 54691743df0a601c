//! Stopping a server that runs as a tree of processes (PostgreSQL's
//! backends, RabbitMQ's shell script, Erlang VM and port programs), by the
//! PID of the one the test started. Its descendants are found through
//! `/proc`, not by process group: PostgreSQL's children and Erlang's
//! `erl_child_setup` each start a session of their own.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A process as seen once: its PID and its start time, so that a PID the
/// kernel has since given to another process is never signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    pid: i32,
    start: u64,
}

/// The parent PID and start time of `pid`, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE PPID ...`: COMM may hold spaces and parentheses,
    // so the fields are counted from the last `)`.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// `root` and every process below it, parents before children.
fn tree(root: i32) -> Vec<Seen> {
    let Some((_, start)) = stat(root) else {
        return Vec::new();
    };
    let mut parents: Vec<(i32, i32, u64)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
                && let Some((ppid, start)) = stat(pid)
            {
                parents.push((pid, ppid, start));
            }
        }
    }
    let mut found = vec![Seen { pid: root, start }];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].pid;
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|&(pid, _, start)| Seen { pid, start }),
        );
        i += 1;
    }
    found
}

/// Whether `seen` still runs: not gone, not replaced, and not a zombie
/// whose threads have all ended (only then are its files and sockets
/// closed: the leader of a multi-threaded process, like Erlang's VM, shows
/// as a zombie while its other threads are still exiting).
fn running(seen: Seen) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{}/stat", seen.pid)) else {
        return false;
    };
    let state = text
        .rfind(')')
        .and_then(|end| text[end + 1..].split_whitespace().next());
    let threads = std::fs::read_dir(format!("/proc/{}/task", seen.pid)).map_or(0, Iterator::count);
    stat(seen.pid).is_some_and(|(_, start)| start == seen.start)
        && (state != Some("Z") || threads > 1)
}

/// Signals `seen` if it is still the same process.
fn signal(seen: Seen, sig: Signal) {
    if stat(seen.pid).is_some_and(|(_, start)| start == seen.start) {
        let _ = kill(Pid::from_raw(seen.pid), sig);
    }
}

/// Waits up to `patience` for `child` to exit; whether it did.
fn wait_for(child: &mut Child, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops `child` and everything it started: first `graceful` (a signal to
/// `child` alone, and how long to wait for it to end by itself), then
/// SIGKILL to every process of the tree that is left, which is frozen
/// first (SIGSTOP) so that nothing forks in between. Returns once every
/// one of them is dead (so their ports are free), and reaps `child`.
pub fn stop(child: &mut Child, graceful: Option<(Signal, Duration)>) {
    if matches!(child.try_wait(), Ok(None)) {
        // Taken before any signal: once the root exits, its children are
        // re-parented and can no longer be told from others.
        let before = tree(child.id() as i32);
        let ended = match (graceful, before.first()) {
            (Some((sig, patience)), Some(&root)) => {
                signal(root, sig);
                wait_for(child, patience)
            }
            _ => false,
        };
        let mut all = before.clone();
        if !ended {
            for &seen in &before {
                signal(seen, Signal::SIGSTOP);
            }
            for seen in tree(child.id() as i32) {
                if !all.contains(&seen) {
                    all.push(seen);
                }
            }
        }
        for &seen in &all {
            signal(seen, Signal::SIGKILL);
        }
        // Those that are not our children are reaped by others: wait
        // until they are dead, zombies at most.
        let deadline = Instant::now() + Duration::from_secs(10);
        while all.iter().any(|&seen| running(seen)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child whose whole tree is killed if it is dropped before being taken
/// back ([`Self::into_inner`]): a server that fails to start, or a panic
/// while waiting for it, leaves nothing running.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child")
    }

    /// The child, no longer killed on drop.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("a child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            stop(&mut child, None);
        }
    }
}
