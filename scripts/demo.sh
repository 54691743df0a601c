#!/usr/bin/env bash
# Runs the demo mesh (`pilotfish demo`), first installing what its
# asynchronous path needs when missing: Debian's redis-server, the broker
# orders publishes its events to and notifications consumes them from.
# Arguments go to `pilotfish demo` (--dir DIR, default .demo; --otlp URL).
# Safe to rerun: a rerun replaces the files of the last one.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    echo "installing redis-server (the demo's event broker)" >&2
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends redis-server

    # The package starts a system Redis on :6379 where services may start;
    # the demo runs its own on a free port, so that one is stopped and
    # disabled (as scripts/install-test-deps.sh does). Only because this
    # run installed it: a Redis that was there before is left alone.
    $sudo service redis-server stop >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
    else
        $sudo update-rc.d redis-server disable >/dev/null 2>&1 || true
    fi
    # Without an init (a container), the package's server is ended
    # directly: its binary run by its system user `redis`, one PID at a
    # time. (Debian's /usr/bin/redis-server is a link: a process's exe is
    # the file it leads to.)
    if id -u redis >/dev/null 2>&1; then
        target=$(readlink -f /usr/bin/redis-server)
        for pid in $(pgrep -u redis || true); do
            exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
            if [[ $exe == /usr/bin/redis-server || $exe == "$target" ]]; then
                echo "stopping the server the package started: pid $pid ($exe)" >&2
                $sudo kill "$pid" || true
            fi
        done
    fi
fi

# The demo's files go to .demo/ unless --dir says otherwise, so that the
# README's lines find the token signing key at .demo/jwt.key.
args=("$@")
dir_given=false
for arg in "$@"; do
    case $arg in --dir | --dir=*) dir_given=true ;; esac
done
$dir_given || args=(--dir .demo "${args[@]}")
exec cargo run --release -- demo "${args[@]}"
