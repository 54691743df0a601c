//! Files replaced the way production does it: a folder laid out like a
//! Kubernetes Secret mount, updated by an atomic swap of its `..data` link.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// `DIR/NAME -> ..data/NAME`, `..data -> ..genN`, as the kubelet lays out
/// Secret and ConfigMap volumes.
pub struct K8sMount {
    dir: PathBuf,
    generation: u32,
}

impl K8sMount {
    /// A mount in `dir` holding `files` (name, contents).
    pub fn new(dir: &Path, files: &[(&str, Vec<u8>)]) -> Self {
        std::fs::create_dir_all(dir).expect("mount dir");
        let mut mount = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        mount.swap(files);
        for (name, _) in files {
            symlink(format!("..data/{name}"), dir.join(name)).expect("file link");
        }
        mount
    }

    /// The path a sidecar reads for `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces every file at once: a new generation folder, then one
    /// rename of the `..data` link over the old one.
    pub fn swap(&mut self, files: &[(&str, Vec<u8>)]) {
        self.generation += 1;
        let generation = format!("..gen{}", self.generation);
        let folder = self.dir.join(&generation);
        std::fs::create_dir(&folder).expect("generation folder");
        for (name, contents) in files {
            std::fs::write(folder.join(name), contents).expect("write file");
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&generation, &tmp).expect("tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            let old = self.dir.join(format!("..gen{}", self.generation - 1));
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// Reads a file (panics with its path on failure).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
