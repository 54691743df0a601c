#!/usr/bin/env bash
# CPU time (user + system, from /proc) the proxies spend per request: a
# fixed number of requests, so it does not depend on how fast the load
# generator and the backend happen to run on this shared machine, and it
# counts the kernel's share (syscalls, TLS records on the wire), which
# callgrind.sh does not see.
#
#   cargo build --profile dist
#   benches/cpu.sh                    # one hop, HTTP/1.1 in and out
#   benches/cpu.sh pair               # outbound + inbound sidecars, mTLS
#   LINK=http1 benches/cpu.sh pair    # the sidecars' link: http1, http2
#   H2=1 benches/cpu.sh pair          # the client speaks h2c (10 x 5 streams)
#   FEATURES=all benches/cpu.sh       # retries, breaker, rate limit, access
#                                     # log, 1% tracing on (see shapes.sh)
#   N=200000 CONNS=50 ROUNDS=5 benches/cpu.sh
#
# Starts the proxies and a demo app, warms up, then for each round sends N
# requests with h2load (CONNS connections) and prints the proxies' CPU
# microseconds per request; last, the median.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${PILOTFISH_BIN:-$root/target/dist/pilotfish}
shape=${1:-one-hop}
n=${N:-100000}
conns=${CONNS:-50}
rounds=${ROUNDS:-3}
me=cpu.sh
for tool in h2load curl; do
    command -v "$tool" >/dev/null || { echo "$me: needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/shapes.sh
. "$here/shapes.sh"

inbound=127.0.0.1:$(port)
if [ "$shape" = pair ]; then roles="inbound outbound"; else roles="one-hop"; fi
proxies=()
for role in $roles; do
    admin=127.0.0.1:$(port)
    if [ "$role" = inbound ]; then listen=$inbound; else listen=127.0.0.1:$(port); entry=$listen; fi
    config "$role" "$listen" "$admin" >"$work/$role.yaml"
    "$bin" run --config "$work/$role.yaml" >"$work/$role.log" 2>&1 &
    pids+=($!)
    proxies+=($!)
    wait_ready "$admin"
done

if [ -n "${H2:-}" ]; then
    load=(h2load -c 10 -m 5)
else
    load=(h2load --h1 -c "$conns")
fi
ticks_per_s=$(getconf CLK_TCK)
# utime + stime of the proxies, in clock ticks.
ticks() {
    local total=0 pid
    for pid in "${proxies[@]}"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
send() { # requests
    "${load[@]}" -n "$1" "http://$entry/health" >"$work/load.log" 2>&1
    grep -q "$1 succeeded" "$work/load.log" || { cat "$work/load.log" >&2; exit 1; }
}

send $((n / 10)) # warm-up: connections open, allocator and caches settled
results=()
for round in $(seq 1 "$rounds"); do
    before=$(ticks)
    send "$n"
    after=$(ticks)
    us=$(awk -v t=$((after - before)) -v hz="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    rps=$(awk '/finished in/ {print $4}' "$work/load.log")
    echo "$shape${LINK:+ link=$LINK}${H2:+ h2}${FEATURES:+ features=$FEATURES}: round $round: $us CPU µs per request ($rps req/s)"
    results+=("$us")
done
median=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "$shape${LINK:+ link=$LINK}${H2:+ h2}${FEATURES:+ features=$FEATURES}: median $median CPU µs per request"
