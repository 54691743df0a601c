# Sourced by callgrind.sh and cpu.sh: a demo app, and proxy configs for
# the shapes they measure (one-hop; pair = outbound + inbound with mTLS).
# Expects: bin, shape, work, pids (array), me (the script's name for
# messages). LINK sets the pair's link (the destination's protocol).

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
    users: { endpoints: [$app], transport: plaintext, protocol: http1 }
  routes: [{ host: "*", service: users }]
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
    users: { endpoints: [$inbound]${LINK:+, protocol: $LINK} }
  routes: [{ host: "*", service: users }]
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
EOF
    ;;
    esac
}

