#!/usr/bin/env bash
# Instructions per request under callgrind: the same number on every run,
# so two builds compare to the percent where timed runs on this shared
# machine move by twenty. (This VM has no hardware counters for perf.)
#
#   cargo build --profile dist           # the binary measured: what ships
#   benches/callgrind.sh                 # one hop: HTTP/1.1 in, HTTP/1.1 out
#   benches/callgrind.sh pair            # outbound + inbound sidecars, mTLS
#   benches/callgrind.sh gateway         # the edge gateway: a token checked, to the app
#   PILOTFISH_BIN=/tmp/old benches/callgrind.sh
#   TOP=30 benches/callgrind.sh          # and the costliest functions
#   KEEP=1 benches/callgrind.sh          # keep the callgrind outputs
#   LINK=http2 benches/callgrind.sh pair # the sidecars' link: http1, http2
#                                        # (default: the config's default)
#
# Runs the proxy under valgrind twice, for N1 and N2 requests (h2load
# --h1, 10 keep-alive connections) to a demo app, and divides the
# difference in instructions by N2 - N1, which takes start-up out.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${PILOTFISH_BIN:-$root/target/dist/pilotfish}
shape=${1:-one-hop}
n1=${N1:-2000}
n2=${N2:-12000}
for tool in valgrind h2load curl; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "callgrind.sh: outputs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

me=callgrind.sh
# shellcheck source=benches/shapes.sh
. "$here/shapes.sh"

# Runs the proxies for `n` requests; prints their instructions in all.
run() {
    local n=$1 roles entry total=0
    inbound=127.0.0.1:$(port)
    case $shape in
    pair) roles="inbound outbound" ;;
    gateway) roles="gateway" ;;
    *) roles="one-hop" ;;
    esac
    local run_pids=()
    for role in $roles; do
        local listen admin=127.0.0.1:$(port)
        if [ "$role" = inbound ]; then listen=$inbound; else listen=127.0.0.1:$(port); entry=$listen; fi
        config "$role" "$listen" "$admin" >"$work/$role.yaml"
        valgrind --tool=callgrind --callgrind-out-file="$work/$role.$n.out" \
            "$bin" run --config "$work/$role.yaml" >"$work/$role.$n.log" 2>&1 &
        run_pids+=($!)
        wait_ready "$admin"
    done
    h2load --h1 -n "$n" -c 10 ${auth_header:+-H "$auth_header"} "http://$entry/health" >"$work/load.$n.log" 2>&1
    grep -q "$n succeeded" "$work/load.$n.log" || { cat "$work/load.$n.log" >&2; exit 1; }
    for pid in "${run_pids[@]}"; do kill -TERM "$pid"; done
    for pid in "${run_pids[@]}"; do wait "$pid" || true; done
    for role in $roles; do
        local ir
        ir=$(awk '/^summary:/ {print $2}' "$work/$role.$n.out")
        total=$((total + ir))
    done
    echo "$total"
}

a=$(run "$n1")
b=$(run "$n2")
awk -v a="$a" -v b="$b" -v n="$((n2 - n1))" -v s="$shape" \
    'BEGIN { printf "%s: %.0f instructions per request (%d requests)\n", s, (b - a) / n, n }'
if [ -n "${TOP:-}" ]; then
    for out in "$work"/*."$n2".out; do
        echo "== $(basename "$out" ".$n2.out"): inclusive, top $TOP"
        callgrind_annotate --inclusive=yes "$out" 2>/dev/null | sed -n "1,$((TOP + 25))p" | tail -n "$TOP"
    done
fi
