#!/usr/bin/env bash
# Makes development certificates in certs/dev/: a CA and one certificate
# per service named on the command line (default: the example services).
# For laptops and tests only; production certificates come from a real CA.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/dev"
pilotfish="${PILOTFISH:-pilotfish}"
if ! command -v "$pilotfish" >/dev/null 2>&1; then
    pilotfish="$here/../target/release/pilotfish"
    [ -x "$pilotfish" ] || pilotfish="$here/../target/debug/pilotfish"
fi
[ -x "$pilotfish" ] || { echo "build pilotfish first: cargo build --release" >&2; exit 1; }
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(users orders notifications)
mkdir -p "$out"
[ -f "$out/ca.pem" ] || "$pilotfish" certs ca --out "$out"
for service in "${services[@]}"; do
    "$pilotfish" certs issue --ca "$out" --service "$service" --out "$out" --force
done
