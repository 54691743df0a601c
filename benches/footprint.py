#!/usr/bin/env python3
"""What one sidecar costs when it is not busy: start-to-ready time, idle
resident memory, and the memory each idle keep-alive client connection adds.

    cargo build --profile dist && benches/footprint.py           # 10,000 connections
    CONNS=2000 STARTS=5 benches/footprint.py                 # a quick run
    PILOTFISH_BIN=path/to/pilotfish benches/footprint.py

The sidecar gets a typical config (mTLS inbound with authorization rules, an
outbound listener with three destinations, retries, a breaker, a rate limit,
JSON access logs and 1% tracing), with certificates made by `pilotfish certs`
in a scratch directory. Start-to-ready is the time from spawning the process
to the first 200 from admin `/ready`, polled every millisecond (the best of
STARTS runs and their median are printed). The connections go through the
outbound listener to a small backend in this script; each sends one request,
reads its response and then stays open and idle. Memory is the sidecar's
VmRSS from /proc, read after the connections settle.

Only loopback is used; every process started here is stopped by its PID.
"""

import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("PILOTFISH_BIN", str(ROOT / "target/dist/pilotfish"))
CONNS = int(os.environ.get("CONNS", "10000"))
STARTS = int(os.environ.get("STARTS", "10"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0])
    return fields


def make_certs(scratch):
    def run(*args):
        subprocess.run([BIN, "certs", *args], check=True, stdout=subprocess.DEVNULL)

    run("ca", "--out", str(scratch))
    run("issue", "--ca", str(scratch), "--service", "orders", "--out", str(scratch))


def write_config(scratch, backend_port):
    admin, inbound, outbound = free_port(), free_port(), free_port()
    config = scratch / "orders.yaml"
    config.write_text(f"""\
service: orders
tls: {{ ca: {scratch}/ca.pem, cert: {scratch}/orders.pem, key: {scratch}/orders-key.pem }}
admin: {{ listen: 127.0.0.1:{admin} }}
log: {{ level: warn }}
inbound:
  listen: 127.0.0.1:{inbound}
  app: 127.0.0.1:{backend_port}
  authorization:
    rules:
      - from: [{{ service: gateway }}]
        paths: ["/orders/*"]
      - from: [{{ service: billing }}]
        paths: ["/orders/paid/*"]
        methods: [POST]
outbound:
  listen: 127.0.0.1:{outbound}
  services:
    users:
      endpoints: [127.0.0.1:1, 127.0.0.1:2]
      timeout: 2s
      retries: {{ attempts: 3, on: [connect-failure, reset, "503"] }}
      breaker: {{ error_threshold_percent: 50, volume_threshold: 20 }}
    notifications:
      endpoints: [127.0.0.1:3]
    backend:
      endpoints: [127.0.0.1:{backend_port}]
      transport: plaintext
      protocol: http1
  routes:
    - {{ host: "*", service: backend }}
rate_limits:
  - {{ name: per-caller, direction: inbound, key: caller, rate: 100 }}
access_log: {{ format: json }}
tracing:
  sample_ratio: 0.01
  otlp: {{ endpoint: "http://127.0.0.1:9" }}
""")
    return config, admin, outbound


def ready(admin):
    try:
        with socket.create_connection(("127.0.0.1", admin), timeout=0.5) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start(config, admin):
    """Spawns the sidecar; returns it and the seconds until /ready was 200."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [BIN, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not ready(admin):
        if proc.poll() is not None:
            sys.exit(f"footprint: the sidecar exited with {proc.returncode}")
        if time.perf_counter() - began > 10:
            proc.kill()
            sys.exit("footprint: the sidecar was not ready after 10 s")
        time.sleep(0.001)
    return proc, time.perf_counter() - began


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def backend(reader, writer):
    body = b"hello\n"
    response = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(response)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    writer.close()


async def open_idle(port, count):
    """Opens `count` keep-alive connections, one request each, kept open.

    The requests go one at a time, so the sidecar needs a single pooled
    connection to the backend and the growth is the client connections'."""
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: backend\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            sys.exit(f"footprint: unexpected response: {head[:80]!r}")
        await reader.readexactly(6)
        conns.append(writer)
    return conns


async def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"footprint: no binary at {BIN}; run cargo build --profile dist")
    # This script and the sidecar (which inherits the limit) each hold
    # CONNS sockets.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNS + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit(f"footprint: the open-file limit ({hard}) is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    scratch = Path(tempfile.mkdtemp(prefix="pilotfish-footprint-"))
    server = await asyncio.start_server(backend, "127.0.0.1", 0, backlog=4096)
    backend_port = server.sockets[0].getsockname()[1]
    try:
        make_certs(scratch)
        config, admin, outbound = write_config(scratch, backend_port)

        times = []
        for _ in range(STARTS):
            proc, took = start(config, admin)
            times.append(took)
            stop(proc)
        print(f"start to ready: best {min(times) * 1000:.1f} ms, "
              f"median {statistics.median(times) * 1000:.1f} ms ({STARTS} starts)")

        proc, _ = start(config, admin)
        try:
            await asyncio.sleep(1)
            idle = rss_kib(proc.pid)
            print(f"idle: VmRSS {idle['VmRSS'] / 1024:.1f} MiB "
                  f"(anonymous {idle['RssAnon'] / 1024:.1f}, file {idle['RssFile'] / 1024:.1f})")
            conns = await open_idle(outbound, CONNS)
            await asyncio.sleep(2)
            loaded = rss_kib(proc.pid)
            per_conn = (loaded["VmRSS"] - idle["VmRSS"]) * 1024 / CONNS
            print(f"{CONNS} idle keep-alive connections: VmRSS "
                  f"{loaded['VmRSS'] / 1024:.1f} MiB, {per_conn / 1024:.2f} KiB each")
            for writer in conns:
                writer.close()
        finally:
            stop(proc)
    finally:
        server.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
