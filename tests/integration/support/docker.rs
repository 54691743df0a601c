//! Pilotfish as containers: the image built from the binary under test
//! (by `scripts/build-image.sh`, the script users and CI run), containers
//! and Compose projects that remove themselves when dropped. A test that
//! finds no Docker daemon fails, naming what is missing; it never skips.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Repository prefix of the images tests build; `scripts/test.sh` removes
/// them after the run.
pub const TEST_IMAGES: &str = "pilotfish-test";

/// Runs `docker ARGS`, returning its output whatever the exit status.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {}: {e} (is Docker installed?)", args.join(" ")))
}

/// Runs `docker ARGS` and returns its stdout, trimmed; panics with its
/// stderr when it fails.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The image of the binary under test, built once per binary (tests run
/// as separate processes, so a file lock keeps them from building it
/// together). Its tag names the binary's size and time, so a rebuilt
/// binary gets a new image.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let daemon = docker(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            daemon.status.success(),
            "no Docker daemon answers: these tests run Pilotfish as containers and need one ({})",
            String::from_utf8_lossy(&daemon.stderr).trim()
        );
        let binary = Path::new(env!("CARGO_BIN_EXE_pilotfish"));
        let meta = std::fs::metadata(binary).expect("the binary under test");
        let built = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let tag = format!("{TEST_IMAGES}:{:x}-{built:x}", meta.len());

        let lock_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pilotfish-image.lock");
        let file = std::fs::File::create(&lock_path).expect("image lock file");
        // Held until the image exists; released when dropped.
        let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("image lock");
        if !docker(&["image", "inspect", &tag]).status.success() {
            let out = Command::new(repo("scripts/build-image.sh"))
                .env("IMAGE", &tag)
                .env("PILOTFISH_BIN", binary)
                .output()
                .expect("run scripts/build-image.sh");
            assert!(
                out.status.success(),
                "scripts/build-image.sh failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tag
    })
}

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A detached container, removed (with its anonymous volumes) on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d ARGS`.
    pub fn run(args: &[&str]) -> Self {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        Self {
            id: docker_ok(&all),
        }
    }

    /// The host address a published `port/tcp` was given.
    pub fn published(&self, port: u16) -> SocketAddr {
        let text = docker_ok(&["port", &self.id, &format!("{port}/tcp")]);
        text.lines()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("port {port} of {} is not published: {text:?}", self.id))
    }

    /// What it printed, both streams.
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.id])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.id]);
    }
}

/// A Compose project of its own name, taken down (containers, networks,
/// volumes) on drop. Compose v1 here (`docker-compose`); the file is the
/// one users run.
pub struct Compose {
    pub project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl Compose {
    pub fn new(file: &str, env: &[(&str, String)]) -> Self {
        Self {
            project: format!("pftest{}", fastrand::u32(..)),
            file: repo(file),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    /// `docker-compose ARGS` for this project.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("docker-compose: {e} (is Compose installed?)"))
    }

    /// `run`, asserting success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker-compose {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What is left of the project: containers, networks and volumes
    /// carrying its label, one line each.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for (what, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter", &label]),
            ("network", vec!["network", "ls", "-q", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ] {
            left.extend(
                docker_ok(&args)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("{what} {l}")),
            );
        }
        left
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

/// Polls `probe` until it returns `Some`, for up to `patience`.
pub fn eventually<T>(patience: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
