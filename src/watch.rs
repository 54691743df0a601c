//! Watching files for changes, by watching the folders they are in.
//!
//! A watch on the file itself would die at the first atomic replacement:
//! Kubernetes updates Secret and ConfigMap mounts by re-pointing the
//! `..data` symlink, and Vault Agent and `pilotfish certs` write a new file
//! and rename it over the old one. A folder watch sees all of these.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

/// Changes come in bursts (several files, a rename after a write); wait
/// this long for the burst to end before reporting it once.
const SETTLE: Duration = Duration::from_millis(150);

/// Reports changes in the folders of a set of files.
#[derive(Debug)]
pub struct FileWatcher {
    _watcher: Option<RecommendedWatcher>,
    events: mpsc::Receiver<()>,
    paths: Vec<PathBuf>,
}

impl FileWatcher {
    /// Watches the folders of `paths`. If the OS refuses (no inotify
    /// instances left, say), it logs why and never reports: callers also
    /// poll, so changes are still noticed, only later.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let (tx, events) = mpsc::channel(1);
        let watcher = match Self::watch(&paths, tx) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                warn!(error = %e, "cannot watch files for changes; checking them every few seconds instead");
                None
            }
        };
        Self {
            _watcher: watcher,
            events,
            paths,
        }
    }

    fn watch(paths: &[PathBuf], tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    // A full channel already holds a pending report.
                    let _ = tx.try_send(());
                }
            })?;
        for folder in folders(paths) {
            watcher.watch(&folder, RecursiveMode::NonRecursive)?;
        }
        Ok(watcher)
    }

    /// The files watched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Waits for a change, then for the burst to settle.
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            // No watcher: never report.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SETTLE).await;
        while self.events.try_recv().is_ok() {}
    }
}

fn folders(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    paths
        .iter()
        .map(|p| match p.parent() {
            Some(parent) if parent.as_os_str().is_empty() => PathBuf::from("."),
            Some(parent) => parent.to_path_buf(),
            None => Path::new("/").to_path_buf(),
        })
        .collect()
}
