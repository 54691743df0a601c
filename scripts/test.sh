#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests (the real binary as a
# separate process, over real sockets and real mTLS) and doc tests.
#
# On a fresh Debian machine with Rust it first installs what the tests need
# (scripts/install-test-deps.sh, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# The container tests (tests/integration/pods.rs) build images of the
# binary under test, and the first build on a machine makes the base it
# builds from; whatever this run made is removed when it ends.
had_builder=$(docker images -q pilotfish-builder:bookworm 2>/dev/null || true)
remove_images() {
    docker images -q pilotfish-test | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
    if [ -z "$had_builder" ]; then
        docker rmi pilotfish-builder:bookworm >/dev/null 2>&1 || true
    fi
}
trap remove_images EXIT

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --all-targets --no-fail-fast "$@"
    cargo test --doc --quiet
else
    echo "cargo-nextest not found; running cargo test" >&2
    cargo test --all-targets --no-fail-fast "$@"
    cargo test --doc --quiet
fi
