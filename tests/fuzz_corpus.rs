//! The fuzz corpus as regression tests, in the normal test run and without
//! libFuzzer: every saved input of every fuzz target goes through the same
//! checks as in `cargo fuzz run` (the target code is `fuzz/src/`, included
//! here as a module, not copied).
//!
//! Inputs, per target `NAME`:
//!
//! - `fuzz/seeds/NAME/`: written by hand, one per case worth naming;
//! - `fuzz/corpus/NAME/`: what the fuzzer found interesting, minimised
//!   (`scripts/fuzz.sh` adds to it);
//! - `fuzz/regressions/NAME/`: inputs that once failed, kept once fixed.
//!
//! Inputs that still fail wait in `fuzz/artifacts/NAME/` and are not
//! replayed here.

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::any::Any;
use std::panic;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The folders replayed, under `fuzz/`.
const FOLDERS: [&str; 3] = ["seeds", "corpus", "regressions"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `folder` (none if it does not exist), in name order.
fn inputs(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

#[test]
fn every_saved_input_passes_its_targets_checks() {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, check) in fuzz::TARGETS {
        for folder in FOLDERS {
            for file in inputs(&fuzz_dir().join(folder).join(name)) {
                let data = std::fs::read(&file).expect("a readable input");
                replayed += 1;
                if let Err(panic) = panic::catch_unwind(|| check(&data)) {
                    let file = file.strip_prefix(fuzz_dir()).unwrap_or(&file);
                    failures.push(format!("{}: {}", file.display(), panic_message(&*panic)));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} saved fuzz inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{replayed} inputs in {:?}", started.elapsed());
}

#[test]
fn every_target_has_inputs_and_every_folder_a_target() {
    for (name, _) in fuzz::TARGETS {
        let seeds = inputs(&fuzz_dir().join("seeds").join(name));
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "no seeds for {name}");
        assert!(!corpus.is_empty(), "no corpus for {name}");
    }
    for folder in FOLDERS.into_iter().chain(["artifacts"]) {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(folder)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("a readable folder").file_name();
            let name = name.to_string_lossy();
            assert!(
                fuzz::TARGETS.iter().any(|(target, _)| *target == name),
                "fuzz/{folder}/{name} belongs to no target"
            );
        }
    }
}
