//! The demo's child processes: started with their output in a log file,
//! watched for an early exit, and stopped with SIGTERM, then SIGKILL.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// One running child.
#[derive(Debug)]
struct Running {
    name: String,
    log: PathBuf,
    process: Child,
}

/// A child that exited on its own.
#[derive(Debug)]
pub struct Exited {
    /// Its name, such as `orders-sidecar`.
    pub name: String,
    /// Its log file.
    pub log: PathBuf,
    /// How it ended, if that could be read.
    pub status: Option<ExitStatus>,
}

impl Exited {
    /// Whether SIGINT ended it: the user pressed Ctrl-C, and the terminal
    /// sent the signal to the whole process group.
    pub fn by_ctrl_c(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.status.and_then(|s| s.signal()) == Some(Signal::SIGINT as i32)
    }
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} exited ({status})", self.name),
            None => write!(f, "{} exited", self.name),
        }
    }
}

/// Every child the demo started.
#[derive(Debug, Default)]
pub struct Children {
    running: Vec<Running>,
}

impl Children {
    /// Starts `exe args` as `name`, its stdout and stderr in `log`. The
    /// child is killed if this value is dropped before [`Children::stop`].
    pub fn spawn(
        &mut self,
        name: &str,
        exe: &Path,
        args: &[OsString],
        log: PathBuf,
    ) -> anyhow::Result<()> {
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("cannot reopen {}", log.display()))?;
        let process = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", exe.display()))?;
        self.running.push(Running {
            name: name.to_owned(),
            log,
            process,
        });
        Ok(())
    }

    /// The first child found to have exited, if any (it is forgotten).
    pub fn first_exited(&mut self) -> Option<Exited> {
        let index = self.running.iter_mut().position(|child| {
            // An error here means the status cannot be read; treat the
            // child as gone rather than watch it forever.
            !matches!(child.process.try_wait(), Ok(None))
        })?;
        let mut child = self.running.remove(index);
        Some(Exited {
            status: child.process.try_wait().ok().flatten(),
            name: child.name,
            log: child.log,
        })
    }

    /// Stops every child: SIGTERM, up to `grace` to exit, then SIGKILL.
    /// Returns how many had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> usize {
        for child in &self.running {
            let pid = child.process.id().and_then(|id| i32::try_from(id).ok());
            if let Some(pid) = pid {
                // ESRCH: it exited already; nothing to do.
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let all_exit = async {
            for child in &mut self.running {
                let _ = child.process.wait().await;
            }
        };
        if tokio::time::timeout(grace, all_exit).await.is_ok() {
            self.running.clear();
            return 0;
        }
        let mut killed = 0;
        for mut child in self.running.drain(..) {
            if matches!(child.process.try_wait(), Ok(None)) {
                eprintln!("{} did not stop within {grace:?}; killing it", child.name);
                killed += 1;
                let _ = child.process.kill().await;
            }
        }
        killed
    }
}

/// The last `count` lines of a log file, for error reports.
pub fn tail(path: &Path, count: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(cannot read {})", path.display());
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    let start = lines.len().saturating_sub(count);
    if lines.is_empty() {
        return "(the log is empty)".to_owned();
    }
    lines[start..].join("\n")
}
