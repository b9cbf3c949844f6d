#!/usr/bin/env python3
"""End-to-end benchmark of `cargo xtask bench`: our server beside its peers (stdlib only).

Adapted from the shared bench harness (shared/bench/peers.py): same pinning,
interleaved rounds, medians, RSS / context-switch / noise accounting; extended
with our binary, per-app server starts, more scenarios, the uwsgi_pass case,
a targets table and an SVG chart. Nothing here reads ../shared at run time.

Every server gets ONE worker process, pinned to CPU --server-cpu (taskset;
its threads and children inherit that); wrk (-t1, --latency) runs pinned to
--client-cpu, and so does this script. For `uwsgi-pass`, nginx and the backend
both run on the server CPU (a 2-core machine has no third one).

A server is started once per (round, app) and measured on every scenario that
uses that app: warm-up (wrk stopped with SIGINT after --warmup s), then a
measurement of --duration s, with a response check before and after. Rounds
are interleaved (every round visits every server, order rotated), and the
summary takes medians over rounds.

    python3 xtask/bench/run.py --ours target/release/wsgi-server --venv target/bench-venv \\
        --out target/bench [--quick] [--servers a,b] [--scenarios hello-ka:1/16,big]
    python3 xtask/bench/run.py --report target/bench/results.jsonl --out /tmp/x   # tables again

Output in --out: summary.md, targets.md, results.jsonl, chart.svg,
e2e-versions.json, e2e-logs/ (server output, raw wrk output).
"""

import argparse
import datetime as _dt
import html
import http.client
import json
import math
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
HOST = "127.0.0.1"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20

# --------------------------------------------------------------------------
# Servers. "apps": the apps it can serve (None = every Python app).
# "proto": "http" (wrk talks to it) or "uwsgi" (behind nginx uwsgi_pass).
# "ours": one of ours (excluded from "best peer"); "reference": nginx.
# Placeholders: {ours} {host} {port} {app} {module} {wsgi_file} {apps} {py}
# {bin} {venv} {here} {tmp} {rust_app} {threads}.
# --------------------------------------------------------------------------
OURS_PY = "{ours} --bind {host}:{port}{threads} -H {venv} {app}"
SERVERS = {
    "ours": {"cmd": OURS_PY, "ours": True,
             "note": "release build, Python app, one process"},
    "ours-rust": {"cmd": "{ours} --bind {host}:{port} --rust-app {rust_app}", "ours": True,
                  "apps": {"hello", "echo"},
                  "note": "release build, built-in pure-Rust app: the server's own overhead"},
    "ours-accesslog": {"cmd": "{ours} --bind {host}:{port}{threads} -H {venv} --access-logfile {tmp}/access.log {app}",
                       "ours": True, "apps": {"hello"},
                       "note": "ours with the access log on (combined format, written to a file)"},
    "granian": {"cmd": "{bin}/granian --interface wsgi --workers 1 --host {host} --port {port} {app}",
                "note": "1 worker; default threads (1 runtime thread, blocking threads = backpressure/2)"},
    "granian-bt1": {"cmd": "{bin}/granian --interface wsgi --workers 1 --blocking-threads 1"
                           " --host {host} --port {port} {app}",
                    "note": "granian with one Python blocking thread"},
    "bjoern": {"cmd": "{py} {here}/serve.py bjoern {app} {host} {port}",
               "note": "single thread, libev event loop in C"},
    "fastwsgi": {"cmd": "{py} {here}/serve.py fastwsgi {app} {host} {port}",
                 "note": "single thread, libuv + llhttp in C, Python inline (the TechEmpower WSGI leader)"},
    "uwsgi": {"cmd": "{bin}/uwsgi --http-socket {host}:{port} --wsgi-file {wsgi_file} --callable application"
                     " --processes 1 --master --disable-logging --die-on-term",
              "note": "--http-socket: closes the connection after every response (read error per request)"},
    "uwsgi-http11": {"cmd": "{bin}/uwsgi --http11-socket {host}:{port} --wsgi-file {wsgi_file}"
                            " --callable application --processes 1 --master --disable-logging --die-on-term",
                     "note": "--http11-socket: keep-alive, one connection at a time (starves the others)"},
    "gunicorn-sync": {"cmd": "{bin}/gunicorn --workers 1 --worker-class sync --bind {host}:{port} {app}",
                      "note": "1 sync worker, no keep-alive"},
    "gunicorn-gthread": {"cmd": "{bin}/gunicorn --workers 1 --worker-class gthread --threads 4"
                                " --bind {host}:{port} {app}",
                         "note": "1 worker, 4 threads"},
    "waitress": {"cmd": "{bin}/waitress-serve --host {host} --port {port} --threads 4 {app}",
                 "note": "pure Python, 4 threads"},
    "nginx": {"cmd": "nginx -p {tmp} -c {tmp}/nginx.conf", "prepare": "nginx-static", "reference": True,
              "stop": "QUIT", "proto": "any",
              "note": "ceiling, not WSGI: 1 worker, the same bytes from `return` / static files"},
    # behind nginx uwsgi_pass (scenario uwsgi-pass); nginx + backend share the server CPU
    "ours-uwsgi": {"cmd": "{ours} --socket {host}:{port}{threads} -H {venv} {app}", "ours": True,
                   "proto": "uwsgi", "apps": {"hello"},
                   "note": "ours with --socket behind nginx uwsgi_pass"},
    "ours-rust-uwsgi": {"cmd": "{ours} --socket {host}:{port} --rust-app {rust_app}", "ours": True,
                        "proto": "uwsgi", "apps": {"hello"},
                        "note": "ours, pure-Rust app, --socket behind nginx uwsgi_pass"},
    "uwsgi-socket": {"cmd": "{bin}/uwsgi --socket {host}:{port} --wsgi-file {wsgi_file} --callable application"
                            " --processes 1 --master --disable-logging --die-on-term",
                     "proto": "uwsgi", "apps": {"hello"},
                     "note": "uWSGI --socket behind nginx uwsgi_pass"},
}
FULL_SERVERS = ["ours", "ours-accesslog", "ours-rust", "granian", "granian-bt1", "bjoern", "fastwsgi", "uwsgi", "uwsgi-http11",
                "gunicorn-sync", "gunicorn-gthread", "waitress", "nginx",
                "ours-uwsgi", "ours-rust-uwsgi", "uwsgi-socket"]
QUICK_SERVERS = ["ours", "ours-accesslog", "ours-rust", "bjoern", "fastwsgi", "granian", "nginx", "ours-uwsgi", "uwsgi-socket"]

# --------------------------------------------------------------------------
# Scenarios.
# --------------------------------------------------------------------------
HELLO = b"Hello, World!"
JSON_BODY = b'{"message":"Hello, World!"}\n'
SCENARIOS = {
    "hello-ka": {"app": "hello", "path": "/", "conns": [1, 16, 128], "headers": [], "expect_body": HELLO,
                 "desc": "GET /, 13-byte body, keep-alive"},
    "hello-close": {"app": "hello", "path": "/", "conns": [16], "headers": ["Connection: close"],
                    "expect_body": HELLO,
                    "desc": "GET / with `Connection: close` (a TCP connection per request)"},
    "big": {"app": "echo", "path": "/big", "conns": [16], "headers": [], "expect_len": MIB,
            "desc": "GET /big: 1 MiB yielded in 64 KiB chunks, keep-alive"},
    "file": {"app": "files", "path": "/file", "conns": [16], "headers": [], "expect_len": MIB,
             "desc": "GET /file: a 1 MiB file through wsgi.file_wrapper, keep-alive"},
    "upload": {"app": "echo", "path": "/upload", "conns": [16], "headers": [], "post_bytes": 64 * 1024,
               "desc": "POST 64 KiB; the app reads all of wsgi.input and answers its length"},
    "upload-1m": {"app": "echo", "path": "/upload1m", "conns": [16], "headers": [], "post_bytes": MIB,
                  "desc": "POST 1 MiB; the app reads all of wsgi.input and answers its length"},
    "flask": {"app": "flask_json", "path": "/json", "conns": [16], "headers": [], "expect_body": JSON_BODY,
              "desc": "Flask GET /json -> {\"message\":\"Hello, World!\"}"},
    "uwsgi-pass": {"app": "hello", "path": "/", "conns": [16], "headers": [], "expect_body": HELLO,
                   "proto": "uwsgi",
                   "desc": "hello through nginx `uwsgi_pass` (nginx + backend both on the server CPU; "
                           "nginx row = nginx answering by itself)"},
}
FULL_SCENARIOS = "hello-ka:1/16/128,hello-close:16,big:16,file:16,upload:16,flask:16,uwsgi-pass:16"
QUICK_SCENARIOS = "hello-ka:1/16,hello-close:16,big:16,file:16,upload:16,flask:16,uwsgi-pass:16"
RUST_APPS = {"hello": "hello", "echo": "echo"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------
# Process accounting, per session (a server start = one or two sessions).
# --------------------------------------------------------------------------
def _session_procs(sid):
    """Yield (pid, rss_kb, cpu_ticks) for every process whose session id is sid."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = data[data.rfind(")") + 2:].split()
        try:
            if int(rest[6 - 3]) != sid:
                continue
            ticks = int(rest[14 - 3]) + int(rest[15 - 3])
            rss_kb = int(rest[24 - 3]) * PAGE_KB
        except (IndexError, ValueError):
            continue
        yield int(name), rss_kb, ticks


def session_threads_ctxsw(sid):
    nthreads = ctxsw = 0
    for pid, _, _ in _session_procs(sid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        nthreads += len(tids)
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            ctxsw += int(line.split()[1])
            except OSError:
                pass
    return nthreads, ctxsw


def cpu_ticks(sids):
    return sum(p[2] for sid in sids for p in _session_procs(sid))


def pss_kb(pid):
    """Proportional set size (/proc/PID/smaps_rollup): shared pages divided among their mappers,
    so a master and its worker sum to what the server costs; 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples the summed RSS and PSS of one session (the server, not its nginx front) 4x/s."""

    def __init__(self, sid, interval=0.25):
        super().__init__(daemon=True)
        self.sid, self.interval = sid, interval
        self.lock = threading.Lock()
        self.peak_kb = 0
        self.peak_one_kb = 0  # the largest single process (one worker)
        self.peak_pss_kb = 0  # the whole server (master + workers), PSS summed
        self.nprocs = 0
        self._halt = threading.Event()

    def sample(self):
        procs = list(_session_procs(self.sid))
        rss = sum(p[1] for p in procs)
        pss = sum(pss_kb(p[0]) for p in procs)
        with self.lock:
            self.peak_kb = max(self.peak_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_one_kb = max([self.peak_one_kb] + [p[1] for p in procs])
            self.nprocs = max(self.nprocs, len(procs))
        return rss

    def reset_peak(self):
        with self.lock:
            self.peak_kb = 0
            self.peak_one_kb = 0
            self.peak_pss_kb = 0

    def run(self):
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self):
        self._halt.set()


def system_ticks():
    """(user+nice+system+irq, softirq, steal) ticks summed over all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 10
    return v[0] + v[1] + v[2] + v[5], v[6], v[7]


# --------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------
def free_port():
    for _ in range(200):
        port = random.randint(20000, 29999)
        s = socket.socket()
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def http_check(port, scen, timeout=3.0):
    """One request; (ok, detail). Checks status, body length or exact body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if scen.get("post_bytes"):
            conn.request("POST", scen["path"], body=b"x" * scen["post_bytes"],
                         headers={"Content-Type": "application/octet-stream"})
        else:
            conn.request("GET", scen["path"])
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return False, f"status {resp.status}"
        if scen.get("post_bytes"):
            if data.strip() != str(scen["post_bytes"]).encode():
                return False, f"echo body {data[:40]!r}"
        elif scen.get("expect_body") is not None and data != scen["expect_body"]:
            return False, f"body {data[:40]!r} != {scen['expect_body'][:40]!r}"
        elif scen.get("expect_len") is not None and len(data) != scen["expect_len"]:
            return False, f"body length {len(data)} != {scen['expect_len']}"
        return True, "ok"
    except (OSError, http.client.HTTPException) as e:
        return False, repr(e)
    finally:
        conn.close()


def wait_tcp(port, procs, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            return False, "server exited"
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True, "ok"
        except OSError:
            time.sleep(0.05)
    return False, f"port {port} not open after {timeout}s"


def wait_ready(port, scen, procs, timeout):
    deadline = time.time() + timeout
    last = "not started"
    while time.time() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            return False, f"server exited with {dead[0].returncode}"
        ok, detail = http_check(port, scen)
        if ok:
            return True, "ok"
        last = detail
        time.sleep(0.05)
    return False, f"not ready after {timeout}s: {last}"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(tok):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", tok)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out):
    r = {"rps": None, "requests": None, "p50_ms": None, "p75_ms": None, "p90_ms": None,
         "p99_ms": None, "lat_avg_ms": None, "lat_max_ms": None,
         "err_connect": 0, "err_read": 0, "err_write": 0, "err_timeout": 0, "non2xx": 0}
    for line in out.splitlines():
        s = line.strip()
        m = re.match(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", s)
        if m:
            r["lat_avg_ms"], r["lat_max_ms"] = _ms(m.group(1)), _ms(m.group(3))
        m = re.match(r"(50|75|90|99)%\s+(\S+)", s)
        if m:
            r[f"p{m.group(1)}_ms"] = _ms(m.group(2))
        m = re.match(r"(\d+) requests in", s)
        if m:
            r["requests"] = int(m.group(1))
        m = re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
        if m:
            r["err_connect"], r["err_read"], r["err_write"], r["err_timeout"] = map(int, m.groups())
        m = re.match(r"Non-2xx or 3xx responses: (\d+)", s)
        if m:
            r["non2xx"] = int(m.group(1))
        m = re.match(r"Requests/sec:\s+([\d.]+)", s)
        if m:
            r["rps"] = float(m.group(1))
    return r


def post_script(tmpdir, nbytes):
    path = os.path.join(tmpdir, f"post_{nbytes}.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n'
                f'wrk.body = string.rep("x", {nbytes})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    return path


def wrk_argv(args, port, scen, conns, seconds, script):
    cmd = ["taskset", "-c", str(args.client_cpu), args.wrk, "-t1", f"-c{conns}", f"-d{seconds}s",
           "--latency", f"--timeout={args.wrk_timeout}s"]
    for h in scen["headers"]:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(f"http://{HOST}:{port}{scen['path']}")
    return cmd


def warm_up(args, port, scen, conns, script, logpath):
    """wrk for --warmup seconds (may be fractional: wrk is stopped with SIGINT)."""
    cmd = wrk_argv(args, port, scen, conns, max(1, math.ceil(args.warmup)) + 1, script)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(args.warmup)
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    with open(logpath, "a") as f:
        f.write("$ (warm-up) " + " ".join(shlex.quote(c) for c in cmd) + "\n" + (out or "") + "\n")


def run_wrk(args, port, scen, conns, script, logpath):
    cmd = wrk_argv(args, port, scen, conns, max(1, int(round(args.duration))), script)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 30)
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        out += "\n[harness] wrk timed out\n"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(logpath, "a") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n" + out + "\n")
    return cmd, out, wrk_cpu


def nginx_dirs(tmp):
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)


def write_nginx_conf(tmp, template, port, backend=None):
    nginx_dirs(tmp)
    with open(os.path.join(HERE, template)) as f:
        conf = f.read()
    conf = conf.replace("@TMP@", tmp).replace("@HOST@", HOST).replace("@PORT@", str(port))
    if backend:
        conf = conf.replace("@BACKEND@", backend)
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(conf)


# --------------------------------------------------------------------------
# Starting and stopping.
# --------------------------------------------------------------------------
class Started:
    """One server start: its processes (main first), the port wrk talks to, scratch dir."""

    def __init__(self, name, spec, app, args, out_dir, rnd):
        self.name, self.spec, self.app, self.args = name, spec, app, args
        self.tmp = tempfile.mkdtemp(prefix=f"e2e-{name}-")
        os.chmod(self.tmp, 0o755)
        logdir = os.path.join(out_dir, "e2e-logs")
        os.makedirs(logdir, exist_ok=True)
        self.base = os.path.join(logdir, f"r{rnd}-{app}-{name}")
        self.slog = open(self.base + ".server.log", "w")
        self.wlog = self.base + ".wrk.log"
        self.procs = []  # (proc, stop signal)
        self.cmd = ""
        self.port = free_port()

    def spawn(self, cmd_str, stop):
        argv = ["taskset", "-c", str(self.args.server_cpu)] + shlex.split(cmd_str)
        env = dict(os.environ)
        env["PYTHONPATH"] = APPS + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PATH"] = os.path.join(self.args.venv, "bin") + os.pathsep + env.get("PATH", "") + ":/usr/sbin"
        env["VIRTUAL_ENV"] = self.args.venv
        self.slog.write(f"$ {cmd_str}\n")
        self.slog.flush()
        proc = subprocess.Popen(argv, cwd=APPS, env=env, stdout=self.slog, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((proc, stop))
        return proc

    def start(self):
        a, spec = self.args, self.spec
        fmt = {
            "ours": a.ours, "ours_b": a.ours_b, "host": HOST, "port": self.port, "app": f"{self.app}:application",
            "module": self.app, "wsgi_file": os.path.join(APPS, self.app + ".py"), "apps": APPS,
            "py": os.path.join(a.venv, "bin", "python"), "bin": os.path.join(a.venv, "bin"),
            "venv": a.venv, "here": HERE, "tmp": self.tmp, "rust_app": RUST_APPS.get(self.app, self.app),
            "threads": f" --threads {a.ours_threads}" if a.ours_threads else "",
        }
        if spec.get("prepare") == "nginx-static":
            write_nginx_conf(self.tmp, "nginx-static.conf", self.port)
            with open(os.path.join(self.tmp, "big.bin"), "wb") as f:
                f.write(b"x" * MIB)
            with open(os.path.join(self.tmp, "json.txt"), "wb") as f:
                f.write(JSON_BODY)
        if spec.get("proto") == "uwsgi":
            # backend on its own port, then nginx in front of it on self.port
            bport = free_port()
            self.cmd = spec["cmd"].format(**dict(fmt, port=bport))
            backend = self.spawn(self.cmd, spec.get("stop", "TERM"))
            ok, detail = wait_tcp(bport, [backend], a.ready_timeout)
            if not ok:
                return False, "backend: " + detail
            write_nginx_conf(self.tmp, "nginx-uwsgi.conf", self.port, f"{HOST}:{bport}")
            self.cmd += f"  (behind nginx uwsgi_pass on port {self.port})"
            self.spawn(f"nginx -p {self.tmp} -c {self.tmp}/nginx.conf", "QUIT")
        else:
            self.cmd = spec["cmd"].format(**fmt)
            self.spawn(self.cmd, spec.get("stop", "TERM"))
        return True, "ok"

    @property
    def main(self):
        return self.procs[0][0]

    def sids(self):
        return [p.pid for p, _ in self.procs]

    def alive(self):
        return all(p.poll() is None for p, _ in self.procs)

    def stop(self, grace=10.0):
        for proc, signame in reversed(self.procs):
            try:
                os.killpg(proc.pid, getattr(signal, "SIG" + signame))
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"  !! pid {proc.pid} ignored SIG{signame} for {grace}s, SIGKILL")
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever outlived its leader
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.slog.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def measure(args, st, sampler, scen, conns, script, base_rec):
    sampler.reset_peak()
    sampler.sample()
    ticks0 = cpu_ticks(st.sids())
    _, csw0 = session_threads_ctxsw(st.main.pid)
    busy0, soft0, steal0 = system_ticks()
    t_start = time.time()
    cmd, out, wrk_cpu = run_wrk(args, st.port, scen, conns, script, st.wlog)
    elapsed = time.time() - t_start
    busy1, soft1, steal1 = system_ticks()
    sampler.sample()
    ticks1 = cpu_ticks(st.sids())
    nthreads, csw1 = session_threads_ctxsw(st.main.pid)
    server_cpu = (ticks1 - ticks0) / CLK_TCK
    other_cpu = max(0.0, (busy1 - busy0) / CLK_TCK - server_cpu - wrk_cpu)
    steal = (steal1 - steal0) / CLK_TCK
    r = parse_wrk(out)
    alive = st.alive()
    check_ok, check_detail = http_check(st.port, scen) if alive else (False, "server died")
    reqs = r["requests"]
    rec = dict(base_rec, conns=conns, duration_s=args.duration, **r,
               rss_peak_kb=sampler.peak_kb, rss_one_peak_kb=sampler.peak_one_kb,
               pss_peak_kb=sampler.peak_pss_kb, nprocs=sampler.nprocs, threads=nthreads,
               ctxsw_per_req=round((csw1 - csw0) / reqs, 3) if reqs else None,
               cpu_us_per_req=round(1e6 * server_cpu / reqs, 2) if reqs else None,
               server_cpu_pct=round(100 * server_cpu / elapsed, 1),
               wrk_cpu_pct=round(100 * wrk_cpu / elapsed, 1),
               softirq_pct=round(100 * (soft1 - soft0) / CLK_TCK / elapsed, 1),
               noise_pct=round(100 * (other_cpu + steal) / elapsed, 1),
               alive_after=alive, check_after=check_detail,
               wrk_cmd=" ".join(shlex.quote(c) for c in cmd))
    if r["rps"] is None:
        tail = out.strip().splitlines()[-1] if out.strip() else "no output"
        rec["failed"] = "wrk produced no result: " + tail
    elif not check_ok:
        rec["failed"] = "response check after the run: " + check_detail
    return rec


def bench_group(args, name, app, scens, rnd, out_dir, results, res_path):
    """Start `name` serving `app` once; measure every (scenario, conns) in scens."""
    spec = SERVERS[name]
    st = Started(name, spec, app, args, out_dir, rnd)
    t0 = time.time()
    base = {"round": rnd, "server": name, "app": app, "reference": bool(spec.get("reference")),
            "ours": bool(spec.get("ours")), "ts": _dt.datetime.now().isoformat(timespec="seconds")}
    new = []
    try:
        ok, detail = st.start()
        log(f"round {rnd} {app:10s} {name:16s} port {st.port}: {st.cmd}")
        sampler = Sampler(st.main.pid)
        sampler.start()
        try:
            if ok:
                ok, detail = wait_ready(st.port, SCENARIOS[scens[0][0]], [p for p, _ in st.procs],
                                        args.ready_timeout)
            startup_s = round(time.time() - t0, 2)
            if not ok:
                log(f"  !! {name} not ready: {detail}")
                for sname, conns_list in scens:
                    for c in conns_list:
                        new.append(dict(base, scenario=sname, conns=c, cmd=st.cmd, failed=f"startup: {detail}"))
                return
            time.sleep(0.1)
            idle_rss = sampler.sample()
            for sname, conns_list in scens:
                scen = SCENARIOS[sname]
                ok, detail = http_check(st.port, scen)
                if not ok:
                    log(f"  !! {name} {sname}: response check failed: {detail}")
                    for c in conns_list:
                        new.append(dict(base, scenario=sname, conns=c, cmd=st.cmd,
                                        failed=f"response check: {detail}"))
                    continue
                script = post_script(st.tmp, scen["post_bytes"]) if scen.get("post_bytes") else None
                for conns in conns_list:
                    if args.warmup > 0:
                        warm_up(args, st.port, scen, conns, script, st.wlog)
                    attempts = []
                    rb = dict(base, scenario=sname, cmd=st.cmd, rss_idle_kb=idle_rss, startup_s=startup_s)
                    while True:
                        rec = measure(args, st, sampler, scen, conns, script, rb)
                        attempts.append(rec)
                        if rec.get("failed") or not rec["alive_after"] or rec["noise_pct"] <= args.max_noise \
                                or len(attempts) > args.retries:
                            break
                        log(f"  .. {sname} c={conns}: other processes + steal took {rec['noise_pct']}% of a "
                            f"CPU (rps {rec.get('rps')}), measuring again")
                    keep = min(attempts, key=lambda a: a.get("noise_pct") or 0)
                    for a in attempts:
                        if a is not keep:
                            a["superseded"] = True
                    new.extend(attempts)
                    rec = keep
                    log(f"  {sname:11s} c={conns:<4d} rps={rec.get('rps') or 0:>9.0f} p50={_lat(rec.get('p50_ms'))} "
                        f"p99={_lat(rec.get('p99_ms'))} errs={_errs(rec)} rss={rec['rss_peak_kb'] / 1024:.1f}MiB "
                        f"csw/req={rec.get('ctxsw_per_req')} cpu/req={rec.get('cpu_us_per_req')}us "
                        f"wrk_cpu={rec['wrk_cpu_pct']}% noise={rec['noise_pct']}% check={rec['check_after']}")
                    if not rec["alive_after"]:
                        log(f"  !! {name} died")
                        return
        finally:
            sampler.stop()
    finally:
        st.stop()
        results.extend(new)
        with open(res_path, "a") as f:
            for r in new:
                f.write(json.dumps(r) + "\n")


# --------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------
def _errs(r):
    return sum(r.get(k) or 0 for k in ("err_connect", "err_read", "err_write", "err_timeout", "non2xx"))


def _fmt(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"


def _lat(ms):
    if ms is None:
        return "-"
    return f"{ms * 1000:.0f}us" if ms < 1 else f"{ms:.2f}ms" if ms < 100 else f"{ms:.0f}ms"


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(results):
    """{(scenario, conns): [row, ...]} with medians over rounds, plus best peer / ceiling."""
    groups = {}
    for r in results:
        if not r.get("superseded"):
            groups.setdefault((r["scenario"], r["conns"], r["server"]), []).append(r)
    table = {}
    for (sname, conns, server), rs in groups.items():
        good = [r for r in rs if r.get("rps") is not None and not r.get("failed")]
        rps = [r["rps"] for r in good]
        row = {
            "server": server, "n": len(good), "runs": len(rs),
            "ours": any(r.get("ours") for r in rs), "ref": any(r.get("reference") for r in rs),
            "rps": _median(rps), "rps_min": min(rps) if rps else None, "rps_max": max(rps) if rps else None,
            "p50": _median([r.get("p50_ms") for r in good]), "p99": _median([r.get("p99_ms") for r in good]),
            "errs": sum(_errs(r) for r in good), "reqs": sum(r.get("requests") or 0 for r in good),
            "rss": max((r.get("rss_peak_kb") or 0 for r in good), default=0) / 1024,
            "rss_one": max((r.get("rss_one_peak_kb") or 0 for r in good), default=0) / 1024,
            "pss": max((r.get("pss_peak_kb") or 0 for r in good), default=0) / 1024,
            "csw": _median([r.get("ctxsw_per_req") for r in good]),
            "cpu": _median([r.get("cpu_us_per_req") for r in good]),
            "wrk": _median([r.get("wrk_cpu_pct") for r in good]),
            "noise": _median([r.get("noise_pct") for r in good]),
            "busy": _median([r["rps"] * r["lat_avg_ms"] / 1000 for r in good if r.get("lat_avg_ms") is not None]),
            "fail": "; ".join(sorted({r["failed"] for r in rs if r.get("failed")})),
        }
        row["starving"] = conns > 1 and row["busy"] is not None and row["busy"] < 0.25 * conns
        table.setdefault((sname, conns), []).append(row)
    for key, rows in table.items():
        peers = [r for r in rows if not r["ours"] and not r["ref"] and r["rps"]]
        best = max(peers, key=lambda r: r["rps"]) if peers else None
        ceil = next((r for r in rows if r["ref"] and r["rps"]), None)
        for r in rows:
            r["best_peer"] = best["server"] if best else None
            r["vs_best"] = r["rps"] / best["rps"] if best and r["rps"] and not r["ref"] else None
            r["vs_nginx"] = r["rps"] / ceil["rps"] if ceil and r["rps"] else None
        rows.sort(key=lambda r: -(r["rps"] or 0))
    return table


def scenario_order(table):
    keys = sorted(table, key=lambda k: (list(SCENARIOS).index(k[0]) if k[0] in SCENARIOS else 99, k[1]))
    return keys


def summary_md(table, meta):
    out = [f"# End-to-end benchmark, {meta.get('when', '')}\n",
           f"{meta.get('setup', '')}\n",
           "Medians over rounds. `vs best peer`: against the fastest WSGI peer (not ours, not nginx) in the "
           "same table; `vs nginx`: against nginx answering the same bytes by itself. `busy conns` = req/s x "
           "mean latency (Little's law): far below c means connections were starved (marked STARVING); it uses "
           "wrk's mean latency, which is skewed by outliers, so it can read above c. "
           "`errors` counts wrk socket errors and non-2xx answers (uWSGI `--http-socket` closes keep-alive "
           "connections without `Connection: close`: one read error per request). RSS is the peak of the "
           "server's processes summed (master and worker; for uwsgi-pass: the backend only, not nginx); the "
           "targets' RSS of one worker is the largest single process; PSS is the peak of the processes' "
           "proportional set sizes summed (pages shared between master and worker counted once; "
           "`xtask/bench/mem.py` breaks ours down by mapping); CPU us/req is all CPU of the "
           "server's processes (for uwsgi-pass: backend + nginx) per request.\n"]
    if meta.get("versions"):
        out.append(f"versions: `{json.dumps(meta['versions'])}`\n")
    for (sname, conns) in scenario_order(table):
        rows = table[(sname, conns)]
        out.append(f"\n## {sname}, c={conns}\n\n{SCENARIOS.get(sname, {}).get('desc', '')}\n")
        out.append("| server | req/s (median) | min-max | vs best peer | vs nginx | p50 | p99 | busy conns "
                   "| errors/requests | RSS MiB | PSS MiB | ctx-sw/req | CPU us/req | runs | notes |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            label = f"**{r['server']}**" if r["ours"] else r["server"] + (" (ref)" if r["ref"] else "")
            if r["rps"] is None:
                out.append(f"| {label} | FAILED | | | | | | | | | | | | {r['n']}/{r['runs']} | {r['fail']} |")
                continue
            notes = []
            if r["starving"]:
                notes.append("STARVING: busy conns << c")
            if r["fail"]:
                notes.append(r["fail"])
            out.append(
                f"| {label} | {_fmt(r['rps'])} | {_fmt(r['rps_min'])}-{_fmt(r['rps_max'])} | "
                f"{_fmt(r['vs_best'], 2) + 'x' if r['vs_best'] else '-'} | "
                f"{_fmt(r['vs_nginx'], 2) + 'x' if r['vs_nginx'] else '-'} | {_lat(r['p50'])} | {_lat(r['p99'])} | "
                f"{_fmt(r['busy'], 1)} | {r['errs']:,}/{r['reqs']:,} | {r['rss']:.1f} | {r['pss']:.1f} | {_fmt(r['csw'], 2)} | "
                f"{_fmt(r['cpu'], 1)} | {r['n']}/{r['runs']} | {'; '.join(notes)} |")
    return "\n".join(out) + "\n"


def _row(table, sname, conns, server):
    return next((r for r in table.get((sname, conns), []) if r["server"] == server and r["rps"]), None)


def targets(table):
    """[(target, measured, required, status)]; status met / missed / n/a."""
    res = []

    def ratio_target(label, sname, conns, other, factor, ours="ours"):
        me = _row(table, sname, conns, ours)
        if other == "best-peer":
            rows = table.get((sname, conns), [])
            name = rows[0]["best_peer"] if rows else None
        else:
            name = other
        them = _row(table, sname, conns, name) if name else None
        if not me or not them:
            res.append((label, "not measured", f">= {factor:.2f}x", "n/a"))
            return
        ratio = me["rps"] / them["rps"]
        res.append((label, f"{ratio:.2f}x ({_fmt(me['rps'])} vs {name} {_fmt(them['rps'])} req/s)",
                    f">= {factor:.2f}x", "met" if ratio >= factor else "missed"))

    me, ng = _row(table, "hello-ka", 1, "ours"), _row(table, "hello-ka", 1, "nginx")
    if me and ng and me["p50"] is not None and ng["p50"] is not None:
        d = (me["p50"] - ng["p50"]) * 1000
        res.append(("hello-ka c=1: p50 within 10 us of nginx",
                    f"{d:+.0f} us ({_lat(me['p50'])} vs {_lat(ng['p50'])})", "<= +10 us",
                    "met" if d <= 10 else "missed"))
    else:
        res.append(("hello-ka c=1: p50 within 10 us of nginx", "not measured", "<= +10 us", "n/a"))
    ratio_target("hello-ka c=16 vs nginx", "hello-ka", 16, "nginx", 0.98)
    ratio_target("hello-ka c=128 vs nginx", "hello-ka", 128, "nginx", 0.95)
    ratio_target("hello-close c=16 vs best peer", "hello-close", 16, "best-peer", 1.0)
    ratio_target("1 MiB streamed (big) c=16 vs best peer", "big", 16, "best-peer", 1.1)
    ratio_target("64 KiB upload c=16 vs granian", "upload", 16, "granian", 1.15)
    ratio_target("uwsgi_pass c=16 vs uWSGI --socket", "uwsgi-pass", 16, "uwsgi-socket", 1.2, ours="ours-uwsgi")
    # The server's own footprint: the hello app (Flask alone adds ~20 MiB to every server).
    # One worker: the largest single process of ours (the master, a few MiB
    # of mostly shared pages, is reported in the summary's RSS column).
    rss = [(r.get("rss_one") or r["rss"], f"{s} c={c}") for (s, c), rows in table.items() for r in rows
           if r["server"] == "ours" and r["rps"] and s in ("hello-ka", "hello-close")]
    if rss:
        peak, where = max(rss)
        every = max(r.get("rss_one") or r["rss"] for rows in table.values() for r in rows
                    if r["server"] == "ours" and r["rps"])
        res.append(("RSS of one worker (ours, hello app, peak) <= 16 MiB",
                    f"{peak:.1f} MiB (in {where}; {every:.1f} MiB peak over all scenarios, Flask included)",
                    "<= 16 MiB", "met" if peak <= 16 else "missed"))
    # The whole server (master + worker), PSS summed, in every row but Flask's
    # and the file's (mem.py breaks it down by mapping). PSS depends on what
    # else maps the same libraries (libpython's text is shared with any other
    # Python process on the machine).
    pss = [(r["pss"], f"{s} c={c}") for (s, c), rows in table.items() for r in rows
           if r["server"] == "ours" and r["rps"] and r.get("pss") and s in ("hello-ka", "hello-close", "big", "upload")]
    if pss:
        peak, where = max(pss)
        res.append(("PSS of the whole server (ours, master + worker, peak; hello, close, stream, upload) <= 10 MiB",
                    f"{peak:.1f} MiB (in {where})", "<= 10 MiB", "met" if peak <= 10 else "missed"))
    for (sname, conns) in scenario_order(table):
        ours = "ours-uwsgi" if sname == "uwsgi-pass" else "ours"
        me = _row(table, sname, conns, ours)
        rows = table[(sname, conns)]
        best = rows[0]["best_peer"] if rows else None
        them = _row(table, sname, conns, best) if best else None
        if me and them and me["p99"] is not None and them["p99"] is not None:
            res.append((f"p99 {sname} c={conns}: no worse than the best peer ({best})",
                        f"{_lat(me['p99'])} vs {_lat(them['p99'])}", "<= best peer's",
                        "met" if me["p99"] <= them["p99"] else "missed"))
    return res


def targets_md(tg, meta):
    met = sum(1 for t in tg if t[3] == "met")
    out = [f"# Targets, {meta.get('when', '')}\n", f"{meta.get('setup', '')}\n",
           f"{met} of {len(tg)} met (ratios from the same run; medians over rounds).\n",
           "| target | measured | required | status |", "|---|---|---|---|"]
    for label, measured, req, status in tg:
        out.append(f"| {label} | {measured} | {req} | {'**missed**' if status == 'missed' else status} |")
    return "\n".join(out) + "\n"


PALETTE = ["#d62728", "#ff9896", "#1f77b4", "#aec7e8", "#2ca02c", "#98df8a", "#9467bd", "#c5b0d5",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e", "#c49c94", "#dbdb8d"]


def chart_svg(table, server_order, title):
    """Grouped bars, one panel per scenario (each with its own scale): median req/s per server."""
    keys = scenario_order(table)
    servers = [s for s in server_order if any(r["server"] == s and r["rps"] for k in keys for r in table[k])]
    servers.sort(key=lambda s: 1 if SERVERS.get(s, {}).get("reference") else 0)  # nginx last
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(servers)}
    cols = 3
    pw, ph = 360, 275  # panel size
    top, left_pad = 60, 10
    rows_n = max(1, math.ceil(len(keys) / cols))
    legend_h = 24 * math.ceil(len(servers) / 5) + 10
    width, height = cols * pw + 2 * left_pad, top + rows_n * ph + legend_h + 10
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{e(title)}</text>',
           f'<text x="{width / 2}" y="42" text-anchor="middle" fill="#555">median requests/s per server '
           f'(one worker process, server on CPU 0, wrk on CPU 1); each panel has its own scale</text>']
    for i, key in enumerate(keys):
        px, py = left_pad + (i % cols) * pw, top + (i // cols) * ph
        rows = {r["server"]: r for r in table[key]}
        present = [s for s in servers if s in rows and rows[s]["rps"]]
        vmax = max([rows[s]["rps"] for s in present] or [1])
        # a round axis maximum
        mag = 10 ** math.floor(math.log10(vmax))
        axis = next(m * mag for m in (1, 1.2, 1.6, 2, 2.4, 3.2, 4, 6, 8, 10) if m * mag >= vmax)
        x0, y0, w, h = px + 55, py + 30, pw - 70, ph - 100
        out.append(f'<text x="{px + pw / 2}" y="{py + 18}" text-anchor="middle" font-weight="bold">'
                   f'{e(key[0])} c={key[1]}</text>')
        for t in range(5):
            v = axis * t / 4
            y = y0 + h - h * t / 4
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
            label = f"{v / 1000:g}k" if axis >= 10000 else f"{v:,.0f}"
            out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{label}</text>')
        n = max(1, len(present))
        bw = w / n
        for j, s in enumerate(present):
            r = rows[s]
            bh = h * r["rps"] / axis
            bx, by = x0 + j * bw + 1, y0 + h - bh
            stroke = ' stroke="black" stroke-width="1.5"' if r["ours"] else ""
            out.append(f'<rect x="{bx:.1f}" y="{by:.1f}" width="{max(1.0, bw - 2):.1f}" height="{bh:.1f}" '
                       f'fill="{colors[s]}"{stroke}>'
                       f'<title>{e(s)}: {r["rps"]:,.0f} req/s, p99 {_lat(r["p99"])}</title></rect>')
            tx, ty = bx + (bw - 2) / 2 + 3, y0 + h + 4
            out.append(f'<text x="{tx:.1f}" y="{ty:.1f}" transform="rotate(-45 {tx:.1f} {ty:.1f})" '
                       f'text-anchor="end" font-size="9">{e(s)}</text>')
        out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#333"/>')
    ly = top + rows_n * ph + 10
    for i, s in enumerate(servers):
        lx, lyy = left_pad + 10 + (i % 5) * 210, ly + 24 * (i // 5)
        out.append(f'<rect x="{lx}" y="{lyy}" width="14" height="14" fill="{colors[s]}"/>'
                   f'<text x="{lx + 20}" y="{lyy + 11}">{e(s)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_reports(results, server_order, out_dir, meta):
    table = aggregate(results)
    summary = summary_md(table, meta)
    tg = targets_md(targets(table), meta)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary)
    with open(os.path.join(out_dir, "targets.md"), "w") as f:
        f.write(tg)
    with open(os.path.join(out_dir, "chart.svg"), "w") as f:
        f.write(chart_svg(table, server_order, f"wsgi-server vs peers, {meta.get('when', '')}"))
    return summary, tg


def versions(args):
    v = {}
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {'python': sys.version.split()[0]}\n"
            "for p in ['granian', 'gunicorn', 'uwsgi', 'bjoern', 'waitress', 'flask']:\n"
            "    try: out[p] = m.version(p)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))\n")
    try:
        v.update(json.loads(subprocess.run([os.path.join(args.venv, "bin", "python"), "-c", code],
                                           capture_output=True, text=True, timeout=60).stdout))
    except Exception as e:  # noqa: BLE001
        v["venv_error"] = repr(e)
    for tool, cmd in (("ours", [args.ours, "--version"]), ("wrk", [args.wrk, "-v"]), ("nginx", ["nginx", "-v"])):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            v[tool] = (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001
            v[tool] = repr(e)
    try:
        v["ours_git"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                                       text=True, timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001
        v["ours_git"] = repr(e)
    v["kernel"] = os.uname().release
    v["cpus"] = os.cpu_count()
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="1 round of 2 s (0.5 s warm-up), fewer servers, c=16 plus hello-ka c=1")
    ap.add_argument("--ours", default=os.path.join(HERE, "..", "..", "target", "release", "wsgi-server"),
                    help="our release binary")
    ap.add_argument("--ours-b", default=None, metavar="BIN",
                    help="a second build of ours, measured as a twin NAME-b of each of our servers in the same "
                         "interleaved rounds (an A/B on one machine state: the host's load moves wall-clock "
                         "figures between runs)")
    ap.add_argument("--ours-threads", type=int, default=None,
                    help="--threads for our Python app (default: the server's own default)")
    ap.add_argument("--venv", default=os.environ.get("BENCH_VENV", os.path.join(HERE, "..", "..", "target",
                                                                                 "bench-venv")))
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "target", "bench"))
    ap.add_argument("--servers", default=None, help="comma list (default: all, or the quick list)")
    ap.add_argument("--scenarios", default=None,
                    help=f"comma list of NAME[:c1/c2...] from {list(SCENARIOS)} (default: {FULL_SCENARIOS})")
    ap.add_argument("--duration", type=float, default=None, help="seconds per measurement (5; quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (1; quick 0.5)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; quick 1)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    ap.add_argument("--wrk-timeout", type=int, default=5, help="wrk per-request timeout, seconds")
    ap.add_argument("--ready-timeout", type=float, default=30)
    ap.add_argument("--max-noise", type=float, default=25,
                    help="measure again when other processes + steal took more than this %% of a CPU")
    ap.add_argument("--retries", type=int, default=None, help="noise retries (1; quick 0)")
    ap.add_argument("--seed", type=int, default=None, help="shuffle the server order with this seed")
    ap.add_argument("--list", action="store_true", help="list servers and scenarios, then exit")
    ap.add_argument("--report", nargs="+", metavar="JSONL",
                    help="write summary/targets/chart into --out from saved results.jsonl files, then exit")
    args = ap.parse_args()
    q = args.quick
    args.duration = args.duration if args.duration is not None else (2 if q else 5)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if q else 1)
    args.rounds = args.rounds if args.rounds is not None else (1 if q else 3)
    args.retries = args.retries if args.retries is not None else (0 if q else 1)
    args.out = os.path.abspath(args.out)
    args.venv = os.path.abspath(args.venv)
    args.ours = os.path.abspath(args.ours)
    args.ours_b = os.path.abspath(args.ours_b) if args.ours_b else None
    os.makedirs(args.out, exist_ok=True)

    if args.report:
        results, order = [], []
        for path in args.report:
            with open(path) as f:
                for line in f:
                    r = json.loads(line)
                    results.append(r)
                    if r["server"] not in order:
                        order.append(r["server"])
        meta = {"when": "from " + ", ".join(args.report),
                "setup": f"{max(r['round'] for r in results)} round(s), "
                         f"{max(r.get('duration_s') or 0 for r in results):g} s measurement; one worker process "
                         "per server pinned to CPU 0 (uwsgi-pass: nginx and the backend both on CPU 0); "
                         "wrk -t1 on CPU 1"}
        vpath = os.path.join(os.path.dirname(os.path.abspath(args.report[0])), "e2e-versions.json")
        if os.path.exists(vpath):
            with open(vpath) as f:
                meta["versions"] = json.load(f)
        summary, tg = write_reports(results, order, args.out, meta)
        print(summary + "\n" + tg)
        return 0

    if args.list:
        for n, s in SERVERS.items():
            print(f"{n:16s} {s['cmd']}\n{'':16s} # {s.get('note', '')}")
        for n, s in SCENARIOS.items():
            print(f"scenario {n:12s} app={s['app']:10s} c={s['conns']}  {s['desc']}")
        return 0

    names = [s for s in (args.servers or ",".join(QUICK_SERVERS if q else FULL_SERVERS)).split(",") if s]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; known: {list(SERVERS)}")
    if args.ours_b:
        if not os.access(args.ours_b, os.X_OK):
            ap.error(f"--ours-b {args.ours_b} is not an executable")
        for name in [n for n in names if SERVERS[n].get("ours") and "{ours}" in SERVERS[n]["cmd"]]:
            twin = dict(SERVERS[name], cmd=SERVERS[name]["cmd"].replace("{ours}", "{ours_b}"),
                        note=f"{name} with the --ours-b build")
            SERVERS[name + "-b"] = twin
            names.insert(names.index(name) + 1, name + "-b")
    plan = []
    for tok in (args.scenarios or (QUICK_SCENARIOS if q else FULL_SCENARIOS)).split(","):
        sname, _, levels = tok.partition(":")
        if sname not in SCENARIOS:
            ap.error(f"unknown scenario {sname!r}; known: {list(SCENARIOS)}")
        plan.append((sname, [int(x) for x in levels.split("/")] if levels else SCENARIOS[sname]["conns"]))
    if not os.access(args.ours, os.X_OK):
        ap.error(f"{args.ours} is not an executable (cargo build --release -p wsgi-server)")
    if max(args.server_cpu, args.client_cpu) >= (os.cpu_count() or 1):
        ap.error("cpu index out of range")

    # group the plan by (app, proto): one server start per group
    groups = {}
    for sname, conns in plan:
        s = SCENARIOS[sname]
        groups.setdefault((s["app"], s.get("proto", "http")), []).append((sname, conns))

    def serves(name, app, proto):
        spec = SERVERS[name]
        sp = spec.get("proto", "http")
        return (sp == "any" or sp == proto) and (spec.get("apps") is None or app in spec["apps"])

    os.sched_setaffinity(0, {args.client_cpu})  # keep the harness off the server's CPU
    # Measure a private copy of our binary: a `cargo build` elsewhere during the run
    # (the target directory is shared) must not swap the build under test between rounds.
    bin_dir = tempfile.mkdtemp(prefix="e2e-ours-")
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(args.ours).st_mtime))
    args.ours = shutil.copy2(args.ours, os.path.join(bin_dir, os.path.basename(args.ours)))
    if args.ours_b:
        args.ours_b = shutil.copy2(args.ours_b, os.path.join(bin_dir, "b-" + os.path.basename(args.ours_b)))
    vers = versions(args)
    vers["ours_built"] = built
    with open(os.path.join(args.out, "e2e-versions.json"), "w") as f:
        json.dump(vers, f, indent=1)
    shutil.rmtree(os.path.join(args.out, "e2e-logs"), ignore_errors=True)
    res_path = os.path.join(args.out, "results.jsonl")
    open(res_path, "w").close()
    started = time.time()
    setup = (f"{'quick' if q else 'full'} run: {args.rounds} round(s), {args.duration:g} s measurement, "
             f"{args.warmup:g} s warm-up; one worker process per server pinned to CPU {args.server_cpu} "
             f"(uwsgi-pass: nginx and the backend both on CPU {args.server_cpu}); wrk -t1 on CPU "
             f"{args.client_cpu}; {os.cpu_count()} CPUs; ours: default threads"
             f"{'' if not args.ours_threads else f' -> --threads {args.ours_threads}'}")
    log(f"versions: {vers}")
    log(setup)
    results = []
    rng = random.Random(args.seed)

    def _on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    try:
        for rnd in range(1, args.rounds + 1):
            for (app, proto), scens in groups.items():
                order = [n for n in names if serves(n, app, proto)]
                if not order:
                    continue
                k = (rnd - 1) % len(order)
                order = order[k:] + order[:k]
                if args.seed is not None:
                    rng.shuffle(order)
                for name in order:
                    bench_group(args, name, app, scens, rnd, args.out, results, res_path)
    except KeyboardInterrupt:
        log("interrupted; writing partial reports")
    took = time.time() - started
    shutil.rmtree(bin_dir, ignore_errors=True)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "setup": setup + f"; took {took:.0f} s", "versions": vers}
    summary, tg = write_reports(results, names, args.out, meta)
    print(summary + "\n" + tg)
    log(f"wrote {args.out}/summary.md, targets.md, results.jsonl, chart.svg in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
