//! A private network namespace, standing in for a pod (needs root): its
//! own loopback with extra addresses, its own iptables rules, processes
//! started in it, and test code run in it. Removed with everything in it
//! when dropped.

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of the test's own.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with its loopback up.
    pub fn new() -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "network namespaces need root (CI runs as root)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pf-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip ARGS` in the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Another address on its loopback (`10.77.0.2/32`): a pod or host of
    /// the test's picture, reached without any routing.
    pub fn add_address(&self, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", "lo"]);
    }

    /// An iptables rule in the namespace.
    pub fn iptables(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// `program` to be run in the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `test` on a thread inside the namespace, on a runtime of its
    /// own: every socket it makes is the namespace's.
    pub fn run<F, Fut>(&self, test: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future,
        Fut::Output: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let file = std::fs::File::open(&path).expect("open the namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the namespace");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(test())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left in it would keep it alive; the tests stop theirs,
        // this is for a test that panicked first.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Makes the folder `dir` and the files in it the user `uid`'s, so a
/// process running as that user can read them.
pub fn give(dir: &std::path::Path, uid: u32) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        std::os::unix::fs::chown(entry.path(), Some(uid), None).expect("chown");
    }
    std::os::unix::fs::chown(dir, Some(uid), None).expect("chown");
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
