#!/usr/bin/env bash
# Pilotfish beside HAProxy, nginx and a direct connection, in one run of
# the shared harness (../shared/bench/run.sh; its README has every option):
#
#   benches/peers.sh                          # the full run, ~2.5 min
#   DURATION=3 H2_DURATION=2 benches/peers.sh # a quick one
#   SCENARIOS=direct,haproxy-pair,ours-pair benches/peers.sh
#   CONNS=1 H2_DURATION=0 benches/peers.sh    # unloaded hop latency
#   PILOTFISH_BENCH_FEATURES=all benches/peers.sh  # with retries, breaker,
#       rate limit (never reached), access logs and 1% tracing switched on
#
# Builds the binary that ships (the dist profile: release with LTO), runs
# the harness with Pilotfish plugged in (benches/bench-role.sh), passes its
# arguments and environment on, and writes the Markdown table and the JSON
# to benches/results/latest.{md,json}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
harness=${BENCH_HARNESS:-$root/../shared/bench}

if [ ! -x "$harness/run.sh" ]; then
    echo "peers.sh: no harness at $harness (set BENCH_HARNESS)" >&2
    exit 1
fi
for tool in wrk h2load haproxy nginx; do
    if ! command -v "$tool" >/dev/null; then
        echo "peers.sh: $tool is missing; installing the harness's tools" >&2
        "$harness/install.sh"
        break
    fi
done

(cd "$root" && cargo build --profile dist --locked --quiet)
export PILOTFISH_BIN=${PILOTFISH_BIN:-$root/target/dist/pilotfish}

mkdir -p "$here/results"
OURS_ONE_HOP="$here/bench-role.sh" OURS_PAIR="$here/bench-role.sh" \
    "$harness/run.sh" --out "$here/results/latest" "$@"
echo "peers.sh: wrote benches/results/latest.md and latest.json" >&2
