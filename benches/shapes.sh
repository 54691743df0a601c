# Sourced by callgrind.sh and cpu.sh: a demo app, and proxy configs for
# the shapes they measure (one-hop; pair = outbound + inbound with mTLS;
# gateway = the edge gateway checking an EdDSA token, to a plaintext app).
# Expects: bin, shape, work, pids (array), me (the script's name for
# messages). LINK sets the pair's link (the destination's protocol);
# FEATURES=all switches on what benches/bench-role.sh's
# PILOTFISH_BENCH_FEATURES=all does: retries with a budget, a breaker, a
# rate limit far above the load, JSON access logs (to the role's log
# file) and tracing at 1% (exported to a port where no collector listens).

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # admin address
    for _ in $(seq 1 600); do
        curl -sf "http://$1/ready" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "$me: not ready at $1" >&2
    exit 1
}

app=127.0.0.1:$(port)
"$bin" demo-app --name users --listen "$app" 2>/dev/null &
pids+=($!)

if [ "$shape" = pair ]; then
    "$bin" certs ca --out "$work" >/dev/null
    for s in orders users; do
        "$bin" certs issue --ca "$work" --service "$s" --out "$work" >/dev/null
    done
fi

if [ "$shape" = gateway ]; then
    "$bin" certs jwt --out "$work" >/dev/null
    # The header every request carries (h2load -H).
    token=$("$bin" token --key "$work/jwt.key" --sub bench --roles user --ttl 24h)
    auth_header="authorization: Bearer $token"
fi

# Policies of the destination, inline in its flow mapping.
policies() {
    [ "${FEATURES:-}" = all ] || return 0
    printf '%s' ', retries: { attempts: 3, on: [connect-failure, refused-stream, reset, "503"] }'
    printf '%s' ', retry_budget: { ratio: 0.2, min_per_second: 10, window: 10s }'
    printf '%s' ', breaker: { error_threshold_percent: 50, volume_threshold: 20, window: 10s, buckets: 10, reset_timeout: 30s }'
}

# Top-level sections of the features; $1 is the rate limit's direction.
features() {
    [ "${FEATURES:-}" = all ] || return 0
    cat <<EOF
rate_limits:
  - { name: bench, direction: $1, rate: 10000000, burst: 10000000 }
access_log: { format: json }
tracing:
  sample_ratio: 0.01
  otlp: { endpoint: "http://127.0.0.1:9", protocol: grpc }
EOF
}

# One proxy config per role.
config() { # role listen admin
    case $1 in
    one-hop) cat <<EOF
service: onehop
admin: { listen: $3 }
log: { level: warn }
outbound:
  listen: $2
  services:
    users: { endpoints: [$app], transport: plaintext, protocol: http1$(policies) }
  routes: [{ host: "*", service: users }]
$(features outbound)
EOF
    ;;
    outbound) cat <<EOF
service: orders
admin: { listen: $3 }
log: { level: warn }
tls: { ca: $work/ca.pem, cert: $work/orders.pem, key: $work/orders-key.pem }
outbound:
  listen: $2
  services:
    users: { endpoints: [$inbound]${LINK:+, protocol: $LINK}$(policies) }
  routes: [{ host: "*", service: users }]
$(features outbound)
EOF
    ;;
    gateway) cat <<EOF
service: gateway
admin: { listen: $3 }
log: { level: warn }
outbound:
  listen: 127.0.0.1:$(port)
  services:
    users: { endpoints: [$app], transport: plaintext, protocol: http1$(policies) }
gateway:
  listen: $2
  jwt:
    issuer: https://pilotfish.demo
    audiences: [demo]
    keys: [{ pem: $work/jwt.pub }]
  routes: [{ path_prefix: /, service: users }]
$(features gateway)
EOF
    ;;
    inbound) cat <<EOF
service: users
admin: { listen: $3 }
log: { level: warn }
tls: { ca: $work/ca.pem, cert: $work/users.pem, key: $work/users-key.pem }
inbound:
  listen: $2
  app: $app
$(features inbound)
EOF
    ;;
    esac
}

