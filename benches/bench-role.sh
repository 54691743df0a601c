#!/bin/sh
# Plugs Pilotfish into the peer benchmark (../shared/bench/run.sh; the
# contract is in its README):
#
#   cargo build --profile dist
#   OURS_ONE_HOP=benches/bench-role.sh OURS_PAIR=benches/bench-role.sh ../shared/bench/run.sh
#
# It reads the harness's BENCH_* variables for its role (one-hop, outbound,
# inbound), writes a config into BENCH_SCRATCH and execs `pilotfish run` in
# the foreground. PILOTFISH_BIN overrides the binary.
#
# PILOTFISH_BENCH_LINK (http1, http2, auto) sets the outbound sidecar's
# link to the inbound one (the destination's `protocol`); unset, the
# config default.
#
# PILOTFISH_BENCH_FEATURES switches policies on to measure what they cost:
# a comma-separated list of retries, breaker, ratelimit, accesslog, tracing,
# or `all`. The rate limit is far above the load, so it never refuses; the
# access log goes to the harness's log file; tracing samples 1% and exports
# to a port where no collector listens (spans are built, batched and
# dropped, as when a collector is down).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${PILOTFISH_BIN:-$here/../target/dist/pilotfish}
cfg="$BENCH_SCRATCH/pilotfish-$BENCH_ROLE.yaml"
workers=${BENCH_WORKERS:-1}

# The load generator sends Host: 127.0.0.1:PORT, the sanity checks Host:
# bench; a route for any host takes both.
route_host='*'

features=${PILOTFISH_BENCH_FEATURES:-}
if [ "$features" = all ]; then
    features=retries,breaker,ratelimit,accesslog,tracing
fi
has() {
    case ",$features," in
    *",$1,"*) return 0 ;;
    esac
    return 1
}

# The mesh link, indented for `services.NAME`.
link() {
    if [ -n "${PILOTFISH_BENCH_LINK:-}" ]; then
        echo "      protocol: $PILOTFISH_BENCH_LINK"
    fi
    return 0
}

# Policies of the destination service, indented for `services.NAME`.
service_policies() {
    if has retries; then
        echo '      retries: { attempts: 3, on: [connect-failure, refused-stream, reset, "503"] }'
        echo '      retry_budget: { ratio: 0.2, min_per_second: 10, window: 10s }'
    fi
    if has breaker; then
        echo '      breaker: { error_threshold_percent: 50, volume_threshold: 20, window: 10s, buckets: 10, reset_timeout: 30s }'
    fi
    return 0
}

# Top-level sections of the switched-on features; $1 is the direction
# whose requests the rate limit counts.
features() {
    if has ratelimit; then
        echo 'rate_limits:'
        echo "  - { name: bench, direction: $1, rate: 10000000, burst: 10000000 }"
    fi
    if has accesslog; then
        echo 'access_log: { format: json }'
    fi
    if has tracing; then
        echo 'tracing:'
        echo '  sample_ratio: 0.01'
        echo '  otlp: { endpoint: "http://127.0.0.1:9", protocol: grpc }'
    fi
    return 0
}

common() {
    cat <<EOF
admin: { listen: 127.0.0.1:0 }
runtime: { worker_threads: $workers }
log: { level: warn, format: text }
EOF
}

identity() {   # spiffe://TD/ns/NS/sa/SA -> "SA NS"
    sa=${1##*/sa/}
    ns=${1#*/ns/}
    echo "$sa ${ns%%/*}"
}

tls() {
    cat <<EOF
trust_domain: $BENCH_TRUST_DOMAIN
tls: { ca: $BENCH_CA, cert: $BENCH_CERT, key: $BENCH_KEY }
EOF
}

case "$BENCH_ROLE" in
one-hop)
    # A plain HTTP hop: HTTP/1.1 and h2c in, HTTP/1.1 keep-alive out.
    { cat <<EOF
service: onehop
outbound:
  listen: $BENCH_LISTEN
  services:
    backend:
      endpoints: [$BENCH_UPSTREAM]
      transport: plaintext
      protocol: http1
$(service_policies)
  routes:
    - { host: "$route_host", service: backend }
EOF
      common; features outbound; } > "$cfg" ;;
outbound)
    set -- $(identity "$BENCH_SPIFFE_ID")
    { cat <<EOF
service: $1
namespace: $2
outbound:
  listen: $BENCH_LISTEN
  services:
    server:
      endpoints: [$BENCH_UPSTREAM]
      identity: $BENCH_PEER_SPIFFE_ID
$(link)
$(service_policies)
  routes:
    - { host: "$route_host", service: server }
EOF
      tls; common; features outbound; } > "$cfg" ;;
inbound)
    set -- $(identity "$BENCH_SPIFFE_ID")
    { cat <<EOF
service: $1
namespace: $2
inbound:
  listen: $BENCH_LISTEN
  app: $BENCH_UPSTREAM
  # The backend's port speaks HTTP/1.1 only (h2c is on another port).
  app_protocol: http1
EOF
      tls; common; features inbound; } > "$cfg" ;;
*)
    echo "bench-role.sh: unknown BENCH_ROLE=$BENCH_ROLE" >&2
    exit 2 ;;
esac

exec "$bin" run --config "$cfg"
