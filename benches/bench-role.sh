#!/bin/sh
# Plugs Pilotfish into the peer benchmark (../shared/bench/run.sh; the
# contract is in its README):
#
#   cargo build --release
#   OURS_ONE_HOP=benches/bench-role.sh OURS_PAIR=benches/bench-role.sh ../shared/bench/run.sh
#
# It reads the harness's BENCH_* variables for its role (one-hop, outbound,
# inbound), writes a config into BENCH_SCRATCH and execs `pilotfish run` in
# the foreground. PILOTFISH_BIN overrides the binary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${PILOTFISH_BIN:-$here/../target/release/pilotfish}
cfg="$BENCH_SCRATCH/pilotfish-$BENCH_ROLE.yaml"
workers=${BENCH_WORKERS:-1}

# The load generator sends Host: 127.0.0.1:PORT, the sanity checks Host:
# bench; a route for any host takes both.
route_host='*'

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
  routes:
    - { host: "$route_host", service: backend }
EOF
      common; } > "$cfg" ;;
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
  routes:
    - { host: "$route_host", service: server }
EOF
      tls; common; } > "$cfg" ;;
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
      tls; common; } > "$cfg" ;;
*)
    echo "bench-role.sh: unknown BENCH_ROLE=$BENCH_ROLE" >&2
    exit 2 ;;
esac

exec "$bin" run --config "$cfg"
