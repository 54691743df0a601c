#!/usr/bin/env bash
# Instructions per request: a repeatable measure of the proxy's own cost,
# for comparing two builds, where CPU time per request moves by ±20%
# between runs on a shared 2-core machine.
#
#   benches/instructions.sh            # ours-1hop
#   benches/instructions.sh ours-pair  # both sidecars, per request
#   PILOTFISH_BIN=/tmp/other-build benches/instructions.sh
#
# Runs one scenario of the shared harness, and while it is under load
# counts the proxies' instructions (perf stat) over a window and divides
# by the requests they served in it (their own pilotfish_requests_total).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
harness=${BENCH_HARNESS:-$here/../../shared/bench}
scenario=${1:-ours-1hop}
window=${WINDOW:-4}
command -v perf >/dev/null || { echo "instructions.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
SCENARIOS=$scenario DURATION=$((window + 4)) H2_DURATION=0 RERUN_DIRECT=0 \
    OURS_ONE_HOP="$here/bench-role.sh" OURS_PAIR="$here/bench-role.sh" \
    "$harness/run.sh" >"$log" 2>&1 &
harness_pid=$!

want=1
[ "$scenario" = ours-pair ] && want=2
pids=()
for _ in $(seq 1 300); do
    mapfile -t pids < <(pgrep -f "pilotfish run --config .*pilotfish-(one-hop|outbound|inbound)" || true)
    [ ${#pids[@]} -ge "$want" ] && break
    sleep 0.1
done
[ ${#pids[@]} -ge "$want" ] || { echo "instructions.sh: the proxies did not start" >&2; cat "$log" >&2; exit 1; }
sleep 2.5 # the harness's warm-up, and into the measured load

# The admin port of a proxy: the listener that serves /metrics.
admin_of() {
    for addr in $(ss -tlnpH 2>/dev/null | grep "pid=$1," | awk '{print $4}'); do
        if curl -sf "http://$addr/metrics" >/dev/null 2>&1; then
            echo "$addr"
            return
        fi
    done
}
requests() { # outbound requests answered, as the proxy counts them
    curl -sf "http://$1/metrics" | awk '/^pilotfish_requests_total\{direction="outbound"/ {n += $2} END {print n + 0}'
}
admins=()
for pid in "${pids[@]}"; do
    a=$(admin_of "$pid")
    [ -n "$a" ] && admins+=("$a")
done
count() { local n=0; for a in "${admins[@]}"; do n=$((n + $(requests "$a"))); done; echo "$n"; }

before=$(count)
instructions=$(perf stat -x, -e instructions -p "$(IFS=,; echo "${pids[*]}")" -- sleep "$window" 2>&1 >/dev/null | awk -F, '/instructions/ {print $1}')
after=$(count)
wait "$harness_pid" || true

served=$((after - before))
[ "$served" -gt 0 ] || { echo "instructions.sh: no requests counted" >&2; exit 1; }
awk -v i="$instructions" -v n="$served" -v s="$scenario" -v w="$window" \
    'BEGIN { printf "%s: %d requests in %ds, %.0f instructions per request\n", s, n, w, i / n }'
