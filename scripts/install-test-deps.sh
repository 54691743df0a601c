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
missing=()
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3 python3-venv)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's prometheus and redis-server packages start system servers (on
# :9090 and :6379) when installed; the tests start their own on free ports,
# so those are stopped and disabled.
for service in prometheus redis-server; do
    [[ " ${missing[*]} " == *" $service "* ]] || continue
    $sudo service "$service" stop >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
    else
        $sudo update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
    # Where the service could not be stopped (no init in a container), end
    # the package's own server: its binary run by its system user, one PID
    # at a time, never anything a test or a person started.
    user=${service%-server}
    for pid in $(pgrep -u "$user" -x "$service" || true); do
        if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "/usr/bin/$service" ]; then
            echo "stopping the package's $service (pid $pid)" >&2
            $sudo kill "$pid" || true
        fi
    done
done

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
