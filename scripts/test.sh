#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests (the real binary as a
# separate process, over real sockets and real mTLS) and doc tests.
#
# On a fresh Debian machine with Rust it first installs what the tests need
# (scripts/install-test-deps.sh, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --all-targets --no-fail-fast "$@"
    cargo test --doc --quiet
else
    echo "cargo-nextest not found; running cargo test" >&2
    cargo test --all-targets --no-fail-fast "$@"
    cargo test --doc --quiet
fi
