#!/usr/bin/env bash
# Installs what the tests use beyond Rust, when missing. Safe to rerun.
#   - Debian packages (as root, or with sudo)
#   - Python tools from PyPI, in a virtualenv under .test-tools/
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Python with venv, for the TLS scanner.
packages=(python3 python3-venv)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ] && ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# sslyze scans the inbound mTLS port in tests/integration/tls_scan.rs.
venv=.test-tools/venv
sslyze_version=6.3.1
if ! "$venv/bin/sslyze" --help >/dev/null 2>&1 \
    || ! "$venv/bin/pip" show sslyze 2>/dev/null | grep -q "^Version: $sslyze_version$"; then
    echo "installing sslyze $sslyze_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "sslyze==$sslyze_version"
fi
