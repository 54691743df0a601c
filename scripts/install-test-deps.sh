#!/usr/bin/env bash
# Installs what the tests use beyond Rust, when missing. Safe to rerun.
#   - Debian packages (as root, or with sudo)
#   - Python tools from PyPI, in a virtualenv under .test-tools/
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive

# Debian packages, each when what it provides is missing:
#   python3-venv   a virtualenv for the TLS scanner (tls_scan.rs)
#   prometheus     a real Prometheus scrapes a sidecar, and promtool checks
#                  deploy/prometheus/ (prometheus.rs)
#   redis-server   the store of global rate limits (rate_limit.rs)
#   postgresql     a real PostgreSQL server (and psql) carried through a
#                  sidecar pair as opaque TCP (support/postgres.rs)
#   rabbitmq-server  a real RabbitMQ broker (and its Erlang) carried the
#                  same way (support/rabbitmq.rs)
#   python3-aiosmtpd  a real SMTP server, where the server speaks first,
#                  behind captured connections (detection.rs)
#   iptables       the capture rules those tests install in a namespace
#   debootstrap    the base the image is built from offline
#                  (scripts/build-image.sh, pods.rs)
#   docker-compose the Compose mesh of deploy/compose (pods.rs); the
#                  Docker daemon itself must already run
missing=()
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3 python3-venv)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
{ compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    && [ -x /usr/bin/psql ]; } || missing+=(postgresql)
{ [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v epmd >/dev/null; } \
    || missing+=(rabbitmq-server)
/usr/bin/python3 -c "import aiosmtpd" >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
command -v iptables >/dev/null || missing+=(iptables)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
# Whether Erlang's epmd is ours to stop: only when this run brings Erlang in
# with rabbitmq-server (an Erlang installed before is someone else's).
erlang_new=""
command -v epmd >/dev/null || erlang_new=1
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's prometheus, redis-server, postgresql and rabbitmq-server packages
# start system servers (on :9090, :6379, :5432 and :5672, with Erlang's
# epmd on :4369) when installed where services may start; the tests start
# their own on free ports, so those are stopped and disabled. Only what
# this run installed: a server that was there before is left alone.
just_installed() { [[ " ${missing[*]} " == *" $1 "* ]]; }
stop_service() {
    $sudo service "$1" stop >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now "$1" >/dev/null 2>&1 || true
    else
        $sudo update-rc.d "$1" disable >/dev/null 2>&1 || true
    fi
}
# Where a service could not be stopped (no init in a container), its
# server is ended directly: the package's binary run by the package's
# system user, one PID at a time, never anything a test or a person started
# (the tests run their servers as root, or as the calling user).
stop_strays() { # USER EXE-PATTERN...
    local user=$1 pid exe pattern
    shift
    id -u "$user" >/dev/null 2>&1 || return 0
    for pid in $(pgrep -u "$user" || true); do
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
        for pattern in "$@"; do
            # shellcheck disable=SC2053 # the pattern is a glob on purpose
            if [[ $exe == $pattern ]]; then
                echo "stopping a server the package started: pid $pid ($exe, user $user)" >&2
                $sudo kill "$pid" || true
            fi
        done
    done
}
for service in prometheus redis-server; do
    just_installed "$service" || continue
    stop_service "$service"
    # (Debian's /usr/bin/redis-server is a link: a process's exe is the
    # file it leads to, /usr/bin/redis-check-rdb.)
    stop_strays "${service%-server}" "/usr/bin/$service" "$(readlink -f "/usr/bin/$service")"
done
if just_installed postgresql; then
    stop_service postgresql
    # Without an init, the package's own cluster (main, on :5432) is
    # stopped through its PID file; test servers have data dirs elsewhere.
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
            [[ $status == online* ]] || continue
            echo "stopping the package's PostgreSQL cluster $version/$cluster" >&2
            $sudo pg_ctlcluster "$version" "$cluster" stop -m fast >/dev/null 2>&1 || true
        done
    fi
fi
if just_installed rabbitmq-server; then
    stop_service rabbitmq-server
    if [ -n "$erlang_new" ] && [ -d /run/systemd/system ]; then
        # Erlang's epmd is socket-activated by systemd; the tests run
        # their own epmd on a free port.
        $sudo systemctl disable --now epmd.socket epmd.service >/dev/null 2>&1 || true
    fi
    stop_strays rabbitmq '/usr/lib/erlang/erts-*/bin/beam.smp' '/usr/lib/erlang/erts-*/bin/epmd'
fi

# sslyze scans the inbound mTLS port in tests/integration/tls_scan.rs.
venv=.test-tools/venv
sslyze_version=6.3.1
# (The version is read whole: `pip show | grep -q` fails under pipefail
# when grep exits before pip has written everything.)
installed=$("$venv/bin/pip" show sslyze 2>/dev/null | sed -n 's/^Version: //p' || true)
if ! "$venv/bin/sslyze" --help >/dev/null 2>&1 || [ "$installed" != "$sslyze_version" ]; then
    echo "installing sslyze $sslyze_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "sslyze==$sslyze_version"
fi
