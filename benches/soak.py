#!/usr/bin/env python3
"""Soak: minutes of mixed traffic through a sidecar pair, watching whether
the sidecars' memory, file descriptors or tasks grow without bound.

    benches/soak.py                          # 10 minutes (what the README quotes)
    SOAK_SECONDS=60 benches/soak.py          # a short run, to try it
    PILOTFISH_BIN=path/to/pilotfish benches/soak.py
    SOAK_KEEP_LOGS=/tmp/soak-logs benches/soak.py   # keep the sidecars' logs
    SOAK_SETTLE=85 SOAK_SAMPLE_EVERY=10      # the idle wait after the load, the sampling period (s)

Not in CI: it takes the machine for the whole run. It installs what it needs
when missing: Debian's wrk and nghttp2-client (h2load), and grpcio with
grpcio-health-checking from PyPI in a virtualenv (.test-tools/soak), which
it then re-runs itself under. The binary is PILOTFISH_BIN, else
target/dist/pilotfish, else target/release/pilotfish, built with
`cargo build --release` when neither exists.

The mesh, all on loopback ports chosen free, certificates from
`pilotfish certs` in a scratch folder:

    wrk (HTTP/1.1) ─┐                    ┌─▶ users-1 sidecar ─▶ demo-app users #1 (failure knobs cycled)
    h2load (h2c)  ──┼─▶ orders sidecar ══┼─▶ users-2 sidecar ─▶ demo-app users #2
    grpcio client ──┤    (outbound)      ├─▶ users-3 sidecar ─▶ demo-app users #3 (killed, restarted)
    slow clients  ──┘                    └─▶ grpc-health sidecar (app_protocol: http2) ─▶ grpcio server

For SOAK_SECONDS, all at once and each bounded in rate:
  - HTTP/1.1: wrk, 8 connections, each waiting 40 ms between requests
    (GET /users/N, /echo, /bytes 16 KiB, POST /echo 1 KiB), in 20 s runs;
  - HTTP/2: h2load, 2 connections of up to 4 streams, 40 requests a second
    each, in 20 s runs (new connections each run);
  - gRPC (grpcio, h2c to the outbound listener, :authority grpc-health):
    Health/Check, a 32 KiB Echo, a Slow call past its deadline (expects
    DEADLINE_EXCEEDED), a Fail call (expects UNAVAILABLE, after the
    sidecar's retry), about 20 calls a second; a Health/Watch stream held
    5 s and cancelled every 10 s; a new channel every 60 s;
  - injected failures on users #1, a 60 s cycle of 10 s phases: normal,
    fail=0.3, reset=0.1, delay=300ms, hang=1, normal (POST /knobs);
    users #3's app killed (SIGKILL) 25 s in and every 120 s, back 5 s later;
  - slow clients on the outbound listener: request heads sent a byte every
    0.5 s (cut by the 10 s header timeout), heads trickled over 2.5 s (then
    answered), connections that say nothing (outbound, and mTLS inbound
    ports: cut by the header and handshake timeouts), slow readers of a
    4 MiB body at about 160 KiB/s (half hang up after 5 s);
  - config reloads of orders every 30 s (a route timeout, and every second
    time the retry attempts, which rebuilds the destination), written to a
    temporary file and renamed over the config;
  - certificate rotations every 60 s for every sidecar: `pilotfish certs
    issue --force` into a new folder, swapped in by renaming the `..data`
    symlink, as Kubernetes updates a Secret volume.

Every 10 s each sidecar is sampled: VmRSS and threads (/proc/PID/status),
open fds (/proc/PID/fd), and from its admin /metrics
pilotfish_runtime_tasks and pilotfish_tcp_connections_active; its fds are
also sorted by what they are (TCP to which port, listeners, anonymous
inodes), so a count that stays up names its connections. After the
load, the script waits SOAK_SETTLE seconds (default 85: the 60 s idle
timeouts plus a margin) so idle connections close, samples once more, and
fails (exit 1, saying why) when, for any sidecar:
  - it exited during the run, or logged a panic;
  - end fds > start fds + FD_TOLERANCE, or end tasks > start tasks +
    TASK_TOLERANCE (start: idle, before any traffic);
  - end RSS > start RSS + RSS_TOLERANCE_MIB;
  - a connection is still active on one of its listeners at the end;
  - over a run of at least 180 s of load, the highest RSS of the last third
    of the load exceeds that of the middle third by more than
    RSS_TREND_TOLERANCE (growth that had not levelled off);
  - a reload or rotation was rejected, or fewer were applied than made;
or when some kind of traffic never succeeded. The report (a Markdown table)
is printed and written to benches/results/soak-latest.md, and with every
sample to benches/results/soak-latest.json.

Every process started here is stopped by its PID at the end, on failure and
on Ctrl-C (and, through setpriv's parent-death signal, if this script is
killed); the scratch folder is removed.
"""

import collections
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".test-tools" / "soak"
PY_PACKAGES = ["grpcio==1.85.3", "grpcio-health-checking==1.85.1"]
RESULTS = ROOT / "benches" / "results"

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_EVERY = float(os.environ.get("SOAK_SAMPLE_EVERY", "10"))
RELOAD_EVERY = 30.0
ROTATE_EVERY = 60.0
# The sidecars run with the default idle timeouts (60 s for client
# connections, mesh links and app connections); after the load they get
# that long plus a margin to close what is idle.
SETTLE = float(os.environ.get("SOAK_SETTLE", "85"))

# What "back near the start" means, per sidecar, start being idle before
# any traffic and end idle after SETTLE.
FD_TOLERANCE = 4
TASK_TOLERANCE = 4
RSS_TOLERANCE_MIB = 16.0
# Growth of the highest RSS from the middle third of the load to the last
# third: this much, or 10 %, whichever is more (checked when the load ran
# 180 s or more).
RSS_TREND_TOLERANCE_MIB = 4.0
RSS_TREND_TOLERANCE_SHARE = 0.10

# Load shape (see the docstring).
H1_CONNS = 8
H1_DELAY_MS = 40
H2_CONNS = 2
H2_STREAMS = 4
H2_RPS_PER_CONN = 40
RUN_CHUNK = 20
GRPC_WORKERS = 2
GRPC_PAUSE = 0.1
SLOWLORIS = 3
TRICKLE = 1
SILENT = 3
SLOW_READERS = 2
SLOW_BODY = 4 * 1024 * 1024

USERS = ["users-1", "users-2", "users-3"]
GRPC_SERVICE = "grpc-health"
SIDECARS = ["orders", *USERS, GRPC_SERVICE]
# Per-request knob overrides: slow clients measure the proxy, not the faults.
NO_FAULTS = "fail=0&reset=0&hang=0&delay=0s"
KNOB_PHASES = [
    ("normal", "fail=0&reset=0&delay=0s&hang=0"),
    ("fail=0.3", "fail=0.3"),
    ("reset=0.1", "fail=0&reset=0.1"),
    ("delay=300ms", "reset=0&delay=300ms"),
    ("hang=1", "delay=0s&hang=1"),
    ("normal", "fail=0&reset=0&delay=0s&hang=0"),
]
KNOB_PHASE_SECONDS = 10.0
APP_RESTART_FIRST = 25.0
APP_RESTART_EVERY = 120.0
APP_DOWN_SECONDS = 5.0


def say(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Tools: Debian packages and the virtualenv with grpcio.


def ensure_tools():
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not shutil.which("h2load"):
        missing.append("nghttp2-client")
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        say(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env)


def ensure_python_deps():
    """Re-runs this script under the virtualenv, installing grpcio first
    when it is missing."""
    try:
        import grpc  # noqa: F401
        from grpc_health.v1 import health  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if Path(sys.executable).resolve() == python.resolve() and os.environ.get("SOAK_REEXEC"):
        sys.exit("soak: grpcio is still missing in the virtualenv")
    check = [str(python), "-c", "import grpc, grpc_health.v1.health"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        say(f"installing {' '.join(PY_PACKAGES)} into {VENV.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *PY_PACKAGES], check=True)
    os.environ["SOAK_REEXEC"] = "1"
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def find_binary():
    if os.environ.get("PILOTFISH_BIN"):
        path = Path(os.environ["PILOTFISH_BIN"]).resolve()
        if not os.access(path, os.X_OK):
            sys.exit(f"soak: PILOTFISH_BIN={path} is not an executable")
        return path
    for candidate in (ROOT / "target/dist/pilotfish", ROOT / "target/release/pilotfish"):
        if os.access(candidate, os.X_OK):
            return candidate
    say("no target/dist or target/release binary: cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--bin", "pilotfish"], cwd=ROOT, check=True)
    return ROOT / "target/release/pilotfish"


# ---------------------------------------------------------------------------
# Processes: every one registered by PID, stopped by PID.


class Stopped(Exception):
    """The run is ending: nothing new starts."""


class Procs:
    def __init__(self):
        self.lock = threading.Lock()
        self.live = {}  # pid -> (name, Popen)
        self.closing = False
        # Children die with the thread that started them if this script is
        # killed outright (every spawning thread outlives its children).
        self.prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []

    def spawn(self, name, argv, log=None, capture=False):
        with self.lock:
            if self.closing:
                raise Stopped()
            if capture:
                out, err = subprocess.PIPE, subprocess.STDOUT
            elif log is not None:
                out = err = open(log, "ab")
            else:
                out = err = subprocess.DEVNULL
            try:
                proc = subprocess.Popen([*self.prefix, *map(str, argv)], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, start_new_session=True)
            finally:
                if log is not None and not capture:
                    out.close()
            self.live[proc.pid] = (name, proc)
            return proc

    def done(self, proc):
        with self.lock:
            self.live.pop(proc.pid, None)

    def kill(self, proc, sig=signal.SIGKILL):
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        proc.wait()
        self.done(proc)

    def stop_all(self, grace=5.0):
        """SIGTERM to each, SIGKILL to whatever is left after `grace`;
        returns {name: exit code} of those that were running."""
        with self.lock:
            self.closing = True
            items = list(self.live.values())
        codes = {}
        for _, proc in items:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for name, proc in items:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                codes[name] = "killed after SIGTERM timed out"
                continue
            codes.setdefault(name, proc.returncode)
        with self.lock:
            self.live.clear()
        return codes


# ---------------------------------------------------------------------------
# Small helpers.

_taken_ports = set()


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port


_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port, path, method="GET", timeout=3.0):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with _http.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metrics(port):
    """{(name, labels): value} from a Prometheus text page."""
    _, body = http_get(port, "/metrics")
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = METRIC_LINE.match(line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
            try:
                out[(m.group(1), labels)] = float(m.group(3))
            except ValueError:
                pass
    return out


def metric_sum(ms, name, **want):
    return sum(v for (n, labels), v in ms.items()
               if n == name and all((k, str(w)) in labels for k, w in want.items()))


def proc_stats(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return fields["VmRSS"], fds, fields["Threads"]


def _tcp_table(pid):
    """{inode: (local port, remote "ip:port", state)} of the process's
    network namespace."""
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN",
              "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK", "07": "CLOSE"}
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                    rip, rport = remote.rsplit(":", 1)
                    ip = ".".join(str(b) for b in reversed(bytes.fromhex(rip[-8:])))
                    table[inode] = (int(local.rsplit(":", 1)[1], 16), f"{ip}:{int(rport, 16)}",
                                    states.get(state, state))
        except OSError:
            pass
    return table


def describe_fds(pid, names):
    """What a process's open fds are, counted: sockets by what they connect
    (`names` maps a port to a role), the rest by kind."""
    table = _tcp_table(pid)
    kinds = collections.Counter()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m and m.group(1) in table:
            lport, remote, state = table[m.group(1)]
            rport = int(remote.rsplit(":", 1)[1])
            if state == "LISTEN":
                kinds[f"listener {names.get(lport, lport)}"] += 1
            elif rport in names:
                kinds[f"tcp to {names[rport]} {state}"] += 1
            else:
                kinds[f"tcp on {names.get(lport, lport)} {state}"] += 1
        elif m:
            kinds["socket (not tcp)"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target] += 1
        else:
            kinds["file " + Path(target).name] += 1
    return dict(sorted(kinds.items()))


def wait_for(what, check, proc, log, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting:\n{tail(log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{tail(log)}")


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Tally:
    """Requests by kind: sent, ok, failed, and what they ended with."""

    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = collections.OrderedDict()

    def declare(self, kind, label):
        self.kinds[kind] = {"label": label, "sent": 0, "ok": 0, "failed": 0,
                            "outcomes": collections.Counter()}

    def add(self, kind, ok, outcome, n=1):
        with self.lock:
            k = self.kinds[kind]
            k["sent"] += n
            k["ok" if ok else "failed"] += n
            k["outcomes"][str(outcome)] += n


# ---------------------------------------------------------------------------
# The gRPC server (run as its own process: this file with --grpc-server).


def grpc_server_main(addr):
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("soak.Soak", health_pb2.HealthCheckResponse.SERVING)

    def echo(request, context):
        return request

    def slow(request, context):
        until = time.monotonic() + int(request or b"0") / 1000
        while time.monotonic() < until and context.is_active():
            time.sleep(0.01)
        return b"slept"

    def fail(request, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, "injected by the soak")

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("soak.Soak", handlers),))
    server.add_insecure_port(addr)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


# ---------------------------------------------------------------------------
# The mesh: certificates, configs, processes.


class Mount:
    """A Kubernetes-style Secret volume: files are symlinks into `..data`,
    itself a symlink to a generation folder, swapped by one rename."""

    def __init__(self, folder, names):
        self.dir = folder
        self.names = names
        self.generation = 0
        folder.mkdir(parents=True)

    def new_generation(self):
        self.generation += 1
        gen = self.dir / f"..gen{self.generation}"
        gen.mkdir()
        return gen

    def swap(self, gen):
        tmp = self.dir / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(gen.name, tmp)
        os.replace(tmp, self.dir / "..data")
        for name in self.names:
            link = self.dir / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        old = self.dir / f"..gen{self.generation - 1}"
        if old.exists():
            shutil.rmtree(old)

    def path(self, name):
        return self.dir / name


class Mesh:
    def __init__(self, bin_path, work, procs):
        self.bin = bin_path
        self.work = work
        self.procs = procs
        self.logs = work / "logs"
        self.logs.mkdir()
        self.ca = work / "ca"
        self.sidecars = {}  # name -> {proc, admin, config, mount, service, log}
        self.apps = {}  # users-N -> {proc, port, log}
        self.outbound = None
        self.orders_generation = 0

    # Certificates.

    def certs(self, *args):
        subprocess.run([str(self.bin), "certs", *map(str, args)], check=True,
                       stdout=subprocess.DEVNULL)

    def issue_into(self, mount, service):
        gen = mount.new_generation()
        self.certs("issue", "--ca", self.ca, "--service", service, "--out", gen, "--force")
        shutil.copy(self.ca / "ca.pem", gen / "ca.pem")
        mount.swap(gen)

    # Configs.

    def tls_yaml(self, mount, service):
        return (f"tls: {{ ca: {mount.path('ca.pem')}, cert: {mount.path(service + '.pem')}, "
                f"key: {mount.path(service + '-key.pem')} }}\n")

    def orders_yaml(self):
        gen = self.orders_generation
        route_timeout = ("10s", "12s")[gen % 2]
        attempts = (2, 3)[(gen // 2) % 2]
        sc = self.sidecars
        users = ", ".join(f"127.0.0.1:{sc[u]['inbound']}" for u in USERS)
        return f"""\
# soak generation {gen}
service: orders
{self.tls_yaml(sc['orders']['mount'], 'orders')}admin: {{ listen: 127.0.0.1:{sc['orders']['admin']} }}
log: {{ level: info, format: json }}
outbound:
  listen: 127.0.0.1:{self.outbound}
  services:
    users:
      endpoints: [{users}]
      per_try_timeout: 3s
      retries: {{ attempts: {attempts}, on: [connect-failure, refused-stream, reset, per-try-timeout, "503"] }}
      breaker: {{}}
    {GRPC_SERVICE}:
      endpoints: [127.0.0.1:{sc[GRPC_SERVICE]['inbound']}]
      retries: {{ attempts: 2, on: [connect-failure, refused-stream, reset, grpc-unavailable] }}
  routes:
    - {{ name: users-api, host: users, path_prefix: /users, service: users, timeout: {route_timeout} }}
"""

    def inbound_yaml(self, name, service, app_port, extra=""):
        sc = self.sidecars[name]
        return f"""\
service: {service}
{self.tls_yaml(sc['mount'], service)}admin: {{ listen: 127.0.0.1:{sc['admin']} }}
log: {{ level: info, format: json }}
inbound:
  listen: 127.0.0.1:{sc['inbound']}
  app: 127.0.0.1:{app_port}
{extra}  authorization:
    rules:
      - from: [{{ service: orders }}]
"""

    @staticmethod
    def write_atomically(path, text):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    # Processes.

    def start_app(self, name, port):
        log = self.logs / f"app-{name}.log"
        proc = self.procs.spawn(f"app {name}", [self.bin, "demo-app", "--name", "users",
                                                "--listen", f"127.0.0.1:{port}"], log=log)
        self.apps[name] = {"proc": proc, "port": port, "log": log}
        wait_for(f"demo-app {name}", lambda: port_open(port), proc, log)

    def start_sidecar(self, name):
        sc = self.sidecars[name]
        proc = self.procs.spawn(f"sidecar {name}", [self.bin, "run", "--config", sc["config"]],
                                log=sc["log"])
        sc["proc"] = proc
        wait_for(f"sidecar {name}", lambda: http_get(sc["admin"], "/ready", timeout=1)[0] == 200,
                 proc, sc["log"])

    def start(self):
        self.work.joinpath("configs").mkdir()
        self.certs("ca", "--out", self.ca)
        services = {"orders": "orders", **{u: "users" for u in USERS}, GRPC_SERVICE: GRPC_SERVICE}
        for name, service in services.items():
            mount = Mount(self.work / "mounts" / name,
                          ["ca.pem", f"{service}.pem", f"{service}-key.pem"])
            self.issue_into(mount, service)
            self.sidecars[name] = {
                "service": service, "mount": mount, "admin": free_port(),
                "inbound": free_port() if name != "orders" else None,
                "config": self.work / "configs" / f"{name}.yaml",
                "log": self.logs / f"{name}.log",
            }
        self.outbound = free_port()

        for u in USERS:
            self.start_app(u, free_port())
        grpc_port = free_port()
        glog = self.logs / "grpc-server.log"
        gproc = self.procs.spawn("grpc server", [sys.executable, Path(__file__).resolve(),
                                                 "--grpc-server", f"127.0.0.1:{grpc_port}"], log=glog)
        self.apps["grpc"] = {"proc": gproc, "port": grpc_port, "log": glog}
        wait_for("gRPC server", lambda: port_open(grpc_port), gproc, glog)

        for u in USERS:
            self.sidecars[u]["config"].write_text(self.inbound_yaml(u, "users", self.apps[u]["port"]))
        self.sidecars[GRPC_SERVICE]["config"].write_text(
            self.inbound_yaml(GRPC_SERVICE, GRPC_SERVICE, grpc_port, "  app_protocol: http2\n"))
        self.sidecars["orders"]["config"].write_text(self.orders_yaml())
        subprocess.run([str(self.bin), "check", *[self.sidecars[n]["config"] for n in SIDECARS]],
                       check=True, stdout=subprocess.DEVNULL)
        for name in SIDECARS:
            self.start_sidecar(name)

    # What the schedule does.

    def reload_orders(self):
        self.orders_generation += 1
        self.write_atomically(self.sidecars["orders"]["config"], self.orders_yaml())

    def rotate_all(self):
        for name in SIDECARS:
            sc = self.sidecars[name]
            self.issue_into(sc["mount"], sc["service"])

    def knobs(self, app, query):
        status, body = http_get(self.apps[app]["port"], f"/knobs?{query}", method="POST")
        if status != 200:
            raise RuntimeError(f"POST /knobs?{query} on {app}: {status} {body[:200]!r}")

    def port_names(self):
        names = {self.outbound: "orders outbound"}
        for n, sc in self.sidecars.items():
            names[sc["admin"]] = f"{n} admin"
            if sc.get("inbound"):
                names[sc["inbound"]] = f"{n} inbound"
        for n, a in self.apps.items():
            names[a["port"]] = f"app {n}"
        return names

    def crashed(self):
        """Sidecars that are no longer running."""
        return {n: sc["proc"].returncode for n, sc in self.sidecars.items()
                if sc["proc"].poll() is not None}


# ---------------------------------------------------------------------------
# Load generators: each a thread that loops until `stop` is set.


def wrk_script(path):
    path.write_text(f"""\
-- Written by benches/soak.py: mixed requests, a pause between them on each
-- connection (the rate bound), and the statuses counted.
local paths = {{
  {{"GET", "/users/1"}}, {{"GET", "/users/2"}}, {{"GET", "/users/42"}},
  {{"GET", "/echo"}}, {{"GET", "/bytes?n=16384"}}, {{"POST", "/echo"}},
}}
local body = string.rep("x", 1024)
local threads = {{}}
local n = 0
statuses = {{}}

function setup(thread) table.insert(threads, thread) end

function request()
  n = n + 1
  local p = paths[(n % #paths) + 1]
  if p[1] == "POST" then
    return wrk.format("POST", p[2], {{["Content-Type"] = "text/plain"}}, body)
  end
  return wrk.format("GET", p[2])
end

function delay() return {H1_DELAY_MS} end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {{}}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  io.write("SOAK-STATUSES")
  for k, v in pairs(total) do io.write(string.format(" %d=%d", k, v)) end
  io.write("\\n")
  local e = summary.errors
  io.write(string.format("SOAK-ERRORS connect=%d read=%d write=%d timeout=%d\\n",
    e.connect, e.read, e.write, e.timeout))
end
""")


class Load:
    def __init__(self, mesh, procs, tally, work, deadline):
        self.mesh = mesh
        self.procs = procs
        self.tally = tally
        self.work = work
        self.deadline = deadline
        self.stop = threading.Event()
        self.threads = []
        self.errors = []
        self.port = mesh.outbound
        tally.declare("h1", f"HTTP/1.1 (wrk, {H1_CONNS} connections, {H1_DELAY_MS} ms pause between requests)")
        tally.declare("h2", f"HTTP/2 h2c (h2load, {H2_CONNS} connections x {H2_STREAMS} streams, "
                            f"{H2_RPS_PER_CONN}/s each)")
        tally.declare("grpc-check", "gRPC Health/Check")
        tally.declare("grpc-echo", "gRPC Soak/Echo, 32 KiB")
        tally.declare("grpc-slow", "gRPC Soak/Slow past its 100 ms deadline (ok = DEADLINE_EXCEEDED, or "
                                   "UNAVAILABLE from the sidecar's 504 at that deadline)")
        tally.declare("grpc-fail", "gRPC Soak/Fail (ok = UNAVAILABLE after the sidecar's retry)")
        tally.declare("grpc-watch", "gRPC Health/Watch streams, cancelled after 5 s")
        tally.declare("slowloris", "slow client: head a byte per 0.5 s (ok = cut by the header timeout)")
        tally.declare("trickle", "slow client: head trickled over 2.5 s (ok = answered)")
        tally.declare("silent", "slow client: connects, says nothing (ok = closed by the sidecar)")
        tally.declare("slow-reader", "slow client: reads 4 MiB at ~160 KiB/s, half hang up after 5 s")

    def remaining(self):
        return self.deadline - time.monotonic()

    def run(self, name, fn, *args):
        def body():
            while not self.stop.is_set() and self.remaining() > 1:
                try:
                    fn(*args)
                except Stopped:
                    return
                except Exception as e:  # a generator's own bug: report, keep going
                    self.errors.append(f"{name}: {type(e).__name__}: {e}")
                    if len(self.errors) > 50:
                        return
                    self.stop.wait(1)
        t = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def start(self, grpc_mod):
        wrk_script(self.work / "soak.lua")
        self.run("wrk", self.wrk_once)
        self.run("h2load", self.h2load_once)
        self.grpc = GrpcLoad(self, grpc_mod)
        for i in range(GRPC_WORKERS):
            self.run(f"grpc-{i}", self.grpc.unary_once)
        self.run("grpc-watch", self.grpc.watch_once)
        for i in range(SLOWLORIS):
            self.run(f"slowloris-{i}", self.slowloris_once)
        for i in range(TRICKLE):
            self.run(f"trickle-{i}", self.trickle_once)
        silent_targets = [("outbound", self.port),
                          ("users-1 inbound (mTLS)", self.mesh.sidecars["users-1"]["inbound"]),
                          (f"{GRPC_SERVICE} inbound (mTLS)", self.mesh.sidecars[GRPC_SERVICE]["inbound"])]
        for i in range(SILENT):
            self.run(f"silent-{i}", self.silent_once, silent_targets[i % len(silent_targets)])
        for i in range(SLOW_READERS):
            self.run(f"slow-reader-{i}", self.slow_reader_once, i)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)
        self.grpc.close()

    def chunk(self):
        return int(min(RUN_CHUNK, self.remaining()))

    # HTTP/1.1 and HTTP/2 from the tools.

    def wrk_once(self):
        seconds = self.chunk()
        if seconds < 2:
            self.stop.wait(self.remaining())
            return
        proc = self.procs.spawn("wrk", ["wrk", "-t1", f"-c{H1_CONNS}", f"-d{seconds}s", "--timeout", "20s",
                                        "-s", self.work / "soak.lua", "-H", "Host: users",
                                        f"http://127.0.0.1:{self.port}/"], capture=True)
        out, _ = proc.communicate()
        self.procs.done(proc)
        text = out.decode(errors="replace")
        if self.stop.is_set() and proc.returncode != 0:
            return
        m = re.search(r"^SOAK-STATUSES(.*)$", text, re.M)
        e = re.search(r"^SOAK-ERRORS connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+)", text, re.M)
        if not m or not e:
            raise RuntimeError(f"wrk said: {text[-500:]}")
        for pair in m.group(1).split():
            status, count = map(int, pair.split("="))
            self.tally.add("h1", 200 <= status < 400, status, count)
        for what, count in zip(("connect", "read", "write", "timeout"), map(int, e.groups())):
            if count:
                self.tally.add("h1", False, f"socket {what} error", count)

    def h2load_once(self):
        seconds = self.chunk()
        if seconds < 2:
            self.stop.wait(self.remaining())
            return
        base = f"http://127.0.0.1:{self.port}"
        paths = ["/users/3", "/echo", "/bytes?n=65536", "/users/4"]
        proc = self.procs.spawn("h2load", ["h2load", f"-c{H2_CONNS}", f"-m{H2_STREAMS}",
                                           f"--rps={H2_RPS_PER_CONN}", f"-D{seconds}",
                                           "-H", ":authority: users", *[base + p for p in paths]],
                                capture=True)
        out, _ = proc.communicate()
        self.procs.done(proc)
        text = out.decode(errors="replace")
        if self.stop.is_set() and proc.returncode != 0:
            return
        req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if not req or not codes:
            raise RuntimeError(f"h2load said: {text[-500:]}")
        _, started, done, _, _, errored, timeout = map(int, req.groups())
        c2, c3, c4, c5 = map(int, codes.groups())
        for label, count, ok in (("2xx", c2, True), ("3xx", c3, True), ("4xx", c4, False),
                                 ("5xx", c5, False), ("stream errored", errored, False),
                                 ("timed out", timeout, False)):
            if count:
                self.tally.add("h2", ok, label, count)
        unanswered = done - (c2 + c3 + c4 + c5 + errored + timeout)
        if unanswered > 0:
            self.tally.add("h2", False, "done without a status", unanswered)
        if started > done:
            self.tally.add("h2", False, "in flight when the run ended", started - done)

    # Slow clients (raw sockets).

    def connect(self, port, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        return s

    def closed_within(self, s, seconds):
        """Waits up to `seconds` for the peer to close (or answer and close);
        returns the seconds it took, or None."""
        began = time.monotonic()
        while time.monotonic() - began < seconds and not self.stop.is_set():
            r, _, _ = select.select([s], [], [], 0.5)
            if r:
                try:
                    if not s.recv(65536):
                        return time.monotonic() - began
                except OSError:
                    return time.monotonic() - began
        return None

    def slowloris_once(self):
        head = (f"GET /users/1?{NO_FAULTS} HTTP/1.1\r\nHost: users\r\n"
                f"X-Slow: {'a' * 200}\r\n\r\n").encode()
        s = self.connect(self.port)
        began = time.monotonic()
        cut = None
        try:
            for i in range(len(head)):
                if self.stop.is_set():
                    return
                try:
                    s.sendall(head[i:i + 1])
                except OSError:
                    cut = time.monotonic() - began
                    break
                r, _, _ = select.select([s], [], [], 0.5)
                if r:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data or data.startswith(b"HTTP/1.1 408"):
                        cut = time.monotonic() - began
                        break
                if time.monotonic() - began > 30:
                    break
        finally:
            s.close()
        if cut is not None and cut < 20:
            self.tally.add("slowloris", True, f"cut after {round(cut)} s")
        else:
            self.tally.add("slowloris", False, "not cut within 20 s" if cut is None else f"cut after {cut:.0f} s")

    def trickle_once(self):
        head = f"GET /users/5?{NO_FAULTS} HTTP/1.1\r\nHost: users\r\nConnection: close\r\n\r\n".encode()
        s = self.connect(self.port)
        try:
            pause = 2.5 / len(head)
            for i in range(len(head)):
                s.sendall(head[i:i + 1])
                time.sleep(pause)
            s.settimeout(20)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "no response"
            self.tally.add("trickle", status == "200", status)
        except OSError as e:
            self.tally.add("trickle", False, type(e).__name__)
        finally:
            s.close()
        self.stop.wait(1)

    def silent_once(self, target):
        name, port = target
        s = self.connect(port)
        try:
            took = self.closed_within(s, 30)
        finally:
            s.close()
        if took is None:
            if not self.stop.is_set():
                self.tally.add("silent", False, f"{name}: still open after 30 s")
        else:
            self.tally.add("silent", took < 20, f"{name}: closed after {round(took)} s")

    def slow_reader_once(self, i):
        hang_up = random.random() < 0.5
        s = self.connect(self.port, rcvbuf=8192)
        s.settimeout(20)
        outcome, ok = "", False
        try:
            s.sendall(f"GET /bytes?n={SLOW_BODY}&{NO_FAULTS} HTTP/1.1\r\nHost: users\r\n"
                      f"Connection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            head, _, got = data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                outcome = f"status {head[9:12].decode(errors='replace') or 'none'}"
            else:
                received = len(got)
                began = time.monotonic()
                while received < SLOW_BODY:
                    if self.stop.is_set() or (hang_up and time.monotonic() - began > 5):
                        break
                    chunk = s.recv(8192)
                    if not chunk:
                        break
                    received += len(chunk)
                    time.sleep(0.05)
                if received >= SLOW_BODY:
                    outcome, ok = "read whole body", True
                elif hang_up or self.stop.is_set():
                    outcome, ok = "hung up mid-body", True
                else:
                    outcome = "body cut short"
        except OSError as e:
            outcome = type(e).__name__
        finally:
            s.close()
        self.tally.add("slow-reader", ok, outcome)
        self.stop.wait(1)


class GrpcLoad:
    def __init__(self, load, grpc_mod):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        self.grpc = grpc
        self.pb = health_pb2
        self.pb_grpc = health_pb2_grpc
        self.load = load
        self.lock = threading.Lock()
        self.channel = None
        self.born = 0.0
        self.retired = []

    def chan(self):
        with self.lock:
            if self.channel is None or time.monotonic() - self.born > 60:
                if self.channel is not None:
                    self.retired.append((time.monotonic(), self.channel))
                self.channel = self.grpc.insecure_channel(
                    f"127.0.0.1:{self.load.port}",
                    options=[("grpc.default_authority", GRPC_SERVICE),
                             ("grpc.max_receive_message_length", 1 << 20)])
                self.born = time.monotonic()
            # An old channel is closed once its calls (5 s deadlines at
            # most, 10 s for a stream) are over.
            while self.retired and time.monotonic() - self.retired[0][0] > 15:
                self.retired.pop(0)[1].close()
            return self.channel

    def close(self):
        with self.lock:
            for _, c in self.retired:
                c.close()
            if self.channel is not None:
                self.channel.close()
            self.retired, self.channel = [], None

    def unary_once(self):
        ch = self.chan()
        roll = random.random()
        codes = self.grpc.StatusCode
        if roll < 0.80:
            kind, expect = "grpc-check", (codes.OK,)
            call = lambda: self.pb_grpc.HealthStub(ch).Check(self.pb.HealthCheckRequest(service=""), timeout=5)
        elif roll < 0.90:
            kind, expect = "grpc-echo", (codes.OK,)
            payload = os.urandom(32 * 1024)

            def call():
                if ch.unary_unary("/soak.Soak/Echo")(payload, timeout=5) != payload:
                    raise ValueError("echo differs")
        elif roll < 0.95:
            kind, expect = "grpc-slow", (codes.DEADLINE_EXCEEDED, codes.UNAVAILABLE)
            call = lambda: ch.unary_unary("/soak.Soak/Slow")(b"500", timeout=0.1)
        else:
            kind, expect = "grpc-fail", (codes.UNAVAILABLE,)
            call = lambda: ch.unary_unary("/soak.Soak/Fail")(b"", timeout=5)
        try:
            call()
            code = codes.OK
        except self.grpc.RpcError as e:
            code = e.code()
        except ValueError:
            code = "echo differs"
        name = code.name if hasattr(code, "name") else str(code)
        self.load.tally.add(kind, code in expect, name)
        self.load.stop.wait(GRPC_PAUSE)

    def watch_once(self):
        ch = self.chan()
        call = self.pb_grpc.HealthStub(ch).Watch(self.pb.HealthCheckRequest(service=""), timeout=30)
        try:
            first = next(call)
            ok = first.status == self.pb.HealthCheckResponse.SERVING
            self.load.stop.wait(5)
            call.cancel()
            self.load.tally.add("grpc-watch", ok, "SERVING, then cancelled" if ok else f"status {first.status}")
        except self.grpc.RpcError as e:
            self.load.tally.add("grpc-watch", False, e.code().name)
        self.load.stop.wait(5)


# ---------------------------------------------------------------------------
# Sampling, checks, report.


class Sampler:
    def __init__(self, mesh, began):
        self.mesh = mesh
        self.began = began
        self.samples = []

    def take(self, phase):
        t = round(time.monotonic() - self.began, 1)
        for name in SIDECARS:
            sc = self.mesh.sidecars[name]
            pid = sc["proc"].pid
            try:
                # /proc first: the scrape's own connection is not counted.
                rss, fds, threads = proc_stats(pid)
                ms = metrics(sc["admin"])
            except (OSError, KeyError, ValueError):
                continue
            active = {dict(labels).get("listener", "?"): int(v) for (n, labels), v in ms.items()
                      if n == "pilotfish_tcp_connections_active"}
            fd_kinds = describe_fds(pid, self.mesh.port_names())
            self.samples.append({
                "t": t, "phase": phase, "sidecar": name, "rss_kib": rss, "fds": fds,
                "threads": threads, "tasks": int(metric_sum(ms, "pilotfish_runtime_tasks")),
                "connections_active": active, "fd_kinds": fd_kinds,
            })

    def of(self, name, phase=None):
        return [s for s in self.samples if s["sidecar"] == name and (phase is None or s["phase"] == phase)]


def log_summary(path):
    levels = collections.Counter()
    messages = collections.Counter()
    notable = []
    panics = []
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
            level = rec.get("level", "?")
            msg = rec.get("message") or rec.get("fields", {}).get("message", "")
        except ValueError:
            level, msg = "TEXT", line
        levels[level] += 1
        if level in ("WARN", "ERROR", "TEXT"):
            messages[f"{level} {re.sub(r'[0-9]+', 'N', msg)[:140]}"] += 1
            notable.append(line[:500])
        if "panic" in line.lower():
            panics.append(line[:1000])
    return {"levels": dict(levels), "top": messages.most_common(8), "last": notable[-15:],
            "panics": panics[:5]}


def mib(kib):
    return kib / 1024


def evaluate(mesh, sampler, tally, events, crashed, load_seconds, log_sums):
    problems = []
    for name, code in crashed.items():
        problems.append(f"{name} exited during the run (code {code})")
    for name, summary in log_sums.items():
        if summary["panics"] and name in SIDECARS:
            problems.append(f"{name} logged a panic: {summary['panics'][0][:300]}")
    for name in SIDECARS:
        start, end = sampler.of(name, "start"), sampler.of(name, "end")
        if not start or not end:
            problems.append(f"{name}: no start or end sample")
            continue
        s, e = start[0], end[-1]
        if e["fds"] > s["fds"] + FD_TOLERANCE:
            more = {k: v - s["fd_kinds"].get(k, 0) for k, v in e["fd_kinds"].items()
                    if v > s["fd_kinds"].get(k, 0)}
            problems.append(f"{name}: open fds {s['fds']} at start, {e['fds']} at the end "
                            f"(tolerance +{FD_TOLERANCE}); the extra ones: {more}")
        if e["tasks"] > s["tasks"] + TASK_TOLERANCE:
            problems.append(f"{name}: runtime tasks {s['tasks']} at start, {e['tasks']} at the end "
                            f"(tolerance +{TASK_TOLERANCE})")
        if mib(e["rss_kib"] - s["rss_kib"]) > RSS_TOLERANCE_MIB:
            problems.append(f"{name}: RSS {mib(s['rss_kib']):.1f} MiB at start, {mib(e['rss_kib']):.1f} MiB "
                            f"at the end (tolerance +{RSS_TOLERANCE_MIB:.0f} MiB)")
        busy = sampler.of(name, "load")
        if load_seconds >= 180 and len(busy) >= 6:
            third = load_seconds / 3
            t0 = busy[0]["t"]
            middle = [x["rss_kib"] for x in busy if third <= x["t"] - t0 < 2 * third]
            last = [x["rss_kib"] for x in busy if x["t"] - t0 >= 2 * third]
            if middle and last:
                allowed = max(RSS_TREND_TOLERANCE_MIB, mib(max(middle)) * RSS_TREND_TOLERANCE_SHARE)
                if mib(max(last) - max(middle)) > allowed:
                    problems.append(f"{name}: RSS still growing under load: highest {mib(max(middle)):.1f} MiB "
                                    f"in the middle third, {mib(max(last)):.1f} MiB in the last "
                                    f"(tolerance +{allowed:.1f} MiB)")
        if any(v for v in e["connections_active"].values()):
            problems.append(f"{name}: connections still active at the end: {e['connections_active']}")
    for name, r in events["reloads"].items():
        for kind in ("config", "certificates"):
            made = r[f"{kind}_made"]
            if r[f"{kind}_rejected"]:
                problems.append(f"{name}: {r[f'{kind}_rejected']:.0f} {kind} reloads rejected")
            if r[f"{kind}_applied"] < made:
                problems.append(f"{name}: {made} {kind} changes made, {r[f'{kind}_applied']:.0f} applied")
    for kind, k in tally.kinds.items():
        if k["ok"] == 0:
            problems.append(f"no {k['label']} succeeded ({k['sent']} sent: {dict(k['outcomes'])})")
    return problems


def report_markdown(info, mesh, sampler, tally, events, problems, log_sums):
    out = []
    verdict = "PASS" if not problems else "FAIL"
    out.append(f"Soak, {info['load_seconds']:.0f} s of mixed traffic, {info['date']}: **{verdict}**. "
               f"Binary `{info['binary']}` ({info['profile']}), {os.cpu_count()} cores; "
               f"end sampled {info['settle_seconds']:.0f} s after the load stopped.")
    out.append("")
    out.append("| sidecar | RSS MiB start / peak / end | open fds start / peak / end | "
               "tasks start / peak / end | threads start / peak / end | connections peak |")
    out.append("|---|---|---|---|---|---|")
    roles = {"orders": "orders (outbound)", GRPC_SERVICE: f"{GRPC_SERVICE} (inbound, h2c app)"}
    for name in SIDECARS:
        all_ = sampler.of(name)
        start, end = sampler.of(name, "start"), sampler.of(name, "end")
        if not all_ or not start or not end:
            out.append(f"| {name} | no samples | | | | |")
            continue
        s, e = start[0], end[-1]

        def trio(key, f=lambda v: str(v)):
            return f"{f(s[key])} / {f(max(x[key] for x in all_))} / {f(e[key])}"
        conns = max(sum(x["connections_active"].values()) for x in all_)
        out.append(f"| {roles.get(name, name + ' (inbound)')} | {trio('rss_kib', lambda v: f'{mib(v):.1f}')} | "
                   f"{trio('fds')} | {trio('tasks')} | {trio('threads')} | {conns} |")
    out.append("")
    out.append("| traffic (through orders' outbound listener) | sent | ok | failed | outcomes |")
    out.append("|---|---:|---:|---:|---|")
    for kind, k in tally.kinds.items():
        outcomes = ", ".join(f"{o}: {n}" for o, n in k["outcomes"].most_common(6))
        out.append(f"| {k['label']} | {k['sent']} | {k['ok']} | {k['failed']} | {outcomes} |")
    out.append("")
    out.append("| event | made | applied / rejected (`pilotfish_reloads_total`) |")
    out.append("|---|---:|---|")
    r = events["reloads"]
    out.append(f"| config reloads of orders (every {RELOAD_EVERY:.0f} s) | {r['orders']['config_made']} | "
               f"{r['orders']['config_applied']:.0f} / {r['orders']['config_rejected']:.0f} |")
    certs = ", ".join(f"{n} {r[n]['certificates_applied']:.0f} / {r[n]['certificates_rejected']:.0f}"
                      for n in SIDECARS)
    out.append(f"| certificate rotations, each sidecar (every {ROTATE_EVERY:.0f} s) | "
               f"{events['rotations']} | {certs} |")
    out.append(f"| failure phases on users-1 ({KNOB_PHASE_SECONDS:.0f} s each) | {events['knob_phases']} | "
               f"{', '.join(f'{p}: {n}' for p, n in events['knob_phase_counts'].items())} |")
    out.append(f"| users-3 app killed and restarted | {events['app_restarts']} | — |")
    o = events["orders_metrics"]
    out.append(f"| orders: retries / timeouts / ejections / breaker rejections | — | "
               f"{o['retries']:.0f} / {o['timeouts']:.0f} / {o['ejections']:.0f} / {o['breaker_rejections']:.0f} |")
    out.append("")
    warn = ", ".join(f"{n} {s['levels'].get('WARN', 0)}/{s['levels'].get('ERROR', 0)}"
                     for n, s in log_sums.items() if n in SIDECARS)
    out.append(f"Sidecar log lines, WARN/ERROR: {warn}.")
    for n in SIDECARS:
        top = [f"{msg} ({count})" for msg, count in log_sums[n]["top"][:3]]
        if top:
            out.append(f"- {n}: {'; '.join(top)}.")
    out.append("")
    out.append(f"Pass rules: after the load and {info['settle_seconds']:.0f} s idle, per sidecar, open fds "
               f"within +{FD_TOLERANCE} and runtime tasks within +{TASK_TOLERANCE} of the idle start, RSS "
               f"within +{RSS_TOLERANCE_MIB:.0f} MiB of it, no connection active; RSS under load levelling "
               f"off (last third's peak within +max({RSS_TREND_TOLERANCE_MIB:.0f} MiB, "
               f"{RSS_TREND_TOLERANCE_SHARE:.0%}) of the middle third's, runs of 180 s or more); no exit, "
               f"no panic, every reload and rotation applied, every kind of traffic succeeding at least once.")
    if problems:
        out.append("")
        out.append("Problems:")
        out.extend(f"- {p}" for p in problems)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# The run.


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--grpc-server":
        return grpc_server_main(sys.argv[2])
    if len(sys.argv) > 1:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    ensure_tools()
    ensure_python_deps()
    import grpc

    bin_path = find_binary()
    version = subprocess.run([str(bin_path), "--version"], capture_output=True, text=True).stdout.strip()
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(bin_path.stat().st_mtime))
    say(f"{bin_path} ({version}, built {built}); {SECONDS:.0f} s of load, then {SETTLE:.0f} s idle")

    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix="pilotfish-soak-"))
    interrupted = {"signal": None}

    def on_signal(signum, _frame):
        interrupted["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    load = None
    exit_code = 1
    try:
        # A copy: a rebuild during the run must not change what restarts.
        run_bin = work / "pilotfish"
        shutil.copy2(bin_path, run_bin)
        mesh = Mesh(run_bin, work, procs)
        mesh.start()
        say("mesh up: " + ", ".join(f"{n} admin :{mesh.sidecars[n]['admin']}" for n in SIDECARS)
            + f"; orders outbound :{mesh.outbound}")
        time.sleep(2)
        began = time.monotonic()
        sampler = Sampler(mesh, began)
        sampler.take("start")
        profile = next((dict(labels).get("profile") for (n, labels) in
                        metrics(mesh.sidecars["orders"]["admin"]) if n == "pilotfish_build_info"), "?")

        tally = Tally()
        events = {"config_reloads": 0, "rotations": 0, "knob_phases": 0,
                  "knob_phase_counts": collections.Counter(), "app_restarts": 0}
        load_began = time.monotonic()
        deadline = load_began + SECONDS
        load = Load(mesh, procs, tally, work, deadline)
        load.start(grpc)

        next_sample = load_began + SAMPLE_EVERY
        next_reload = load_began + RELOAD_EVERY
        next_rotate = load_began + ROTATE_EVERY - 15
        next_knob = load_began
        knob_index = 0
        next_restart = load_began + APP_RESTART_FIRST
        app_back_at = None
        crashed = {}
        last_progress = load_began
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            crashed = mesh.crashed()
            if crashed:
                say(f"sidecar exited during the run: {crashed}")
                break
            if now >= next_knob:
                label, query = KNOB_PHASES[knob_index % len(KNOB_PHASES)]
                mesh.knobs("users-1", query)
                events["knob_phases"] += 1
                events["knob_phase_counts"][label] += 1
                knob_index += 1
                next_knob += KNOB_PHASE_SECONDS
            if now >= next_restart and app_back_at is None:
                procs.kill(mesh.apps["users-3"]["proc"])
                app_back_at = now + APP_DOWN_SECONDS
                next_restart += APP_RESTART_EVERY
            if app_back_at is not None and now >= app_back_at:
                mesh.start_app("users-3", mesh.apps["users-3"]["port"])
                events["app_restarts"] += 1
                app_back_at = None
            if now >= next_reload:
                mesh.reload_orders()
                events["config_reloads"] += 1
                next_reload += RELOAD_EVERY
            if now >= next_rotate:
                mesh.rotate_all()
                events["rotations"] += 1
                next_rotate += ROTATE_EVERY
            if now >= next_sample:
                sampler.take("load")
                next_sample += SAMPLE_EVERY
            if now - last_progress >= 60:
                last_progress = now
                o = [s for s in sampler.samples if s["sidecar"] == "orders"][-1]
                sent = sum(k["sent"] for k in tally.kinds.values())
                say(f"{now - load_began:.0f} s: {sent} requests so far; orders RSS {mib(o['rss_kib']):.1f} MiB, "
                    f"fds {o['fds']}, tasks {o['tasks']}")
            time.sleep(0.2)

        load_seconds = time.monotonic() - load_began
        say(f"load stopping after {load_seconds:.0f} s")
        load.finish()
        if app_back_at is not None and not crashed:
            mesh.start_app("users-3", mesh.apps["users-3"]["port"])
            events["app_restarts"] += 1
        # Everything back to normal before the idle wait.
        if not crashed:
            mesh.knobs("users-1", KNOB_PHASES[0][1])
            say(f"load stopped; waiting {SETTLE:.0f} s for idle connections to close")
            settle_end = time.monotonic() + SETTLE
            while time.monotonic() < settle_end:
                crashed = mesh.crashed()
                if crashed:
                    break
                time.sleep(min(SAMPLE_EVERY, max(0.0, settle_end - time.monotonic())))
                if time.monotonic() < settle_end - 1:
                    sampler.take("settle")
        if not crashed:
            sampler.take("end")

        reloads = {}
        om = {}
        for name in SIDECARS:
            sc = mesh.sidecars[name]
            try:
                ms = metrics(sc["admin"]) if sc["proc"].poll() is None else {}
            except OSError:
                ms = {}
            reloads[name] = {
                "config_made": events["config_reloads"] if name == "orders" else 0,
                "certificates_made": events["rotations"],
            }
            for kind in ("config", "certificates"):
                for result in ("applied", "rejected"):
                    reloads[name][f"{kind}_{result}"] = metric_sum(ms, "pilotfish_reloads_total",
                                                                   kind=kind, result=result)
            if name == "orders":
                om = {"retries": metric_sum(ms, "pilotfish_retries_total"),
                      "timeouts": metric_sum(ms, "pilotfish_timeouts_total"),
                      "ejections": metric_sum(ms, "pilotfish_outlier_ejections_total"),
                      "breaker_rejections": metric_sum(ms, "pilotfish_breaker_rejections_total"),
                      "requests_by_status": {}}
                for (n, labels), v in ms.items():
                    if n == "pilotfish_requests_total":
                        status = dict(labels).get("status", "?")
                        om["requests_by_status"][status] = om["requests_by_status"].get(status, 0) + v
        events["reloads"] = reloads
        events["orders_metrics"] = om

        exit_codes = procs.stop_all(grace=10)
        log_sums = {n: log_summary(mesh.sidecars[n]["log"]) for n in SIDECARS}
        log_sums.update({f"app {n}": log_summary(a["log"]) for n, a in mesh.apps.items()})
        keep = os.environ.get("SOAK_KEEP_LOGS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for f in mesh.logs.iterdir():
                shutil.copy(f, Path(keep) / f.name)
            say(f"logs copied to {keep}")

        problems = evaluate(mesh, sampler, tally, events, crashed, load_seconds, log_sums)
        problems.extend(f"load generator: {e}" for e in load.errors[:10])
        info = {"date": time.strftime("%Y-%m-%d"), "binary": os.path.relpath(bin_path, ROOT),
                "version": version, "built": built, "profile": profile,
                "load_seconds": load_seconds, "settle_seconds": SETTLE}
        md = report_markdown(info, mesh, sampler, tally, events, problems, log_sums)
        print(md)
        for name in SIDECARS:
            if crashed.get(name) is not None or any(name in p for p in problems):
                print(f"--- {name}: log summary ---\n{json.dumps(log_sums[name], indent=1)}\n"
                      f"--- {name}: last log lines ---\n{tail(mesh.sidecars[name]['log'], 20)}\n")
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "soak-latest.md").write_text(md)
        result = {
            "info": info, "verdict": "pass" if not problems else "fail", "problems": problems,
            "tolerances": {"fds": FD_TOLERANCE, "tasks": TASK_TOLERANCE, "rss_mib": RSS_TOLERANCE_MIB,
                           "rss_trend_mib": RSS_TREND_TOLERANCE_MIB,
                           "rss_trend_share": RSS_TREND_TOLERANCE_SHARE},
            "load": {"h1_connections": H1_CONNS, "h1_delay_ms": H1_DELAY_MS, "h2_connections": H2_CONNS,
                     "h2_streams": H2_STREAMS, "h2_rps_per_connection": H2_RPS_PER_CONN,
                     "grpc_workers": GRPC_WORKERS, "slowloris": SLOWLORIS, "silent": SILENT,
                     "slow_readers": SLOW_READERS},
            "traffic": {k: {**v, "outcomes": dict(v["outcomes"])} for k, v in tally.kinds.items()},
            "events": {**events, "knob_phase_counts": dict(events["knob_phase_counts"])},
            "crashed": crashed, "exit_codes_on_sigterm": exit_codes, "logs": log_sums,
            "samples": sampler.samples,
        }
        (RESULTS / "soak-latest.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        say("wrote benches/results/soak-latest.md and soak-latest.json")
        if problems:
            say("FAIL:\n  " + "\n  ".join(problems))
        exit_code = 0 if not problems else 1
    except KeyboardInterrupt:
        say(f"interrupted ({interrupted['signal'] or 'SIGINT'}); stopping everything, no results written")
        exit_code = 130
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        say(f"failed: {e}")
        exit_code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if load is not None:
            load.stop.set()
        procs.stop_all(grace=5)
        if load is not None and getattr(load, "grpc", None) is not None:
            load.grpc.close()
        shutil.rmtree(work, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
