#!/usr/bin/env python3
"""Memory of our server (master + workers) under the benchmark's scenarios.

Starts the release binary on the bench apps (server pinned to --server-cpu,
wrk to --client-cpu, as run.py does), drives each scenario with wrk, samples
every process's /proc/PID/smaps_rollup 10x/s and prints, per scenario, the
peak PSS / RSS / Private_Dirty of the master, of the worker(s) and of the
whole server (PSS summed: pages shared between master and worker are counted
once). With --breakdown, each process's smaps at the end of every scenario is
grouped by mapping: the binary's text / data, libpython, other libraries,
[heap], [stack], thread stacks (an anonymous mapping right above a guard
page), and the other anonymous memory split by size (mimalloc's arenas,
Python's 1 MiB obmalloc arenas, the scoreboard's shared mapping, ...).

    python3 xtask/bench/mem.py --bin target/release/wsgi-server [--breakdown]
        [--scenarios hello-ka:1/16/128,hello-close:16,big:16,upload:16] [--duration 3]
        [-- extra server args]

The figure the performance issue aims at: the whole server's PSS <= 10 MiB
in every row.
"""

import argparse
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
HOST = "127.0.0.1"
MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

SCENARIOS = {
    "idle": {"app": "hello", "path": "/", "headers": [], "conns": [0]},
    "hello-ka": {"app": "hello", "path": "/", "headers": [], "conns": [1, 16, 128]},
    "hello-close": {"app": "hello", "path": "/", "headers": ["Connection: close"], "conns": [16]},
    "big": {"app": "echo", "path": "/big", "headers": [], "conns": [16]},
    "upload": {"app": "echo", "path": "/upload", "headers": [], "conns": [16], "post_bytes": 64 * 1024},
    "upload-1m": {"app": "echo", "path": "/upload1m", "headers": [], "conns": [16], "post_bytes": MIB},
}
DEFAULT_SCENARIOS = "idle,hello-ka:1/16/128,hello-close:16,big:16,upload:16"
FIELDS = ("Rss", "Pss", "Private_Dirty", "Shared_Clean", "Private_Clean", "Shared_Dirty", "Swap")


def rollup(pid):
    """{field: kB} from /proc/PID/smaps_rollup, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in FIELDS:
            out[key] = int(rest.split()[0])
    return out


def children(pid):
    """Direct children of pid (every thread's children file)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def thread_names(pid):
    names = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    names[int(tid)] = f.read().strip()
            except OSError:
                pass
    except OSError:
        pass
    return names


MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")


def smaps(pid):
    """[(start, end, perms, path, {field: kB})] from /proc/PID/smaps."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            text = f.read()
    except OSError:
        return []
    maps = []
    for line in text.splitlines():
        m = MAP_RE.match(line)
        if m:
            maps.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).strip(), {}))
            continue
        key, _, rest = line.partition(":")
        if maps and key in FIELDS:
            maps[-1][4][key] = int(rest.split()[0])
    return maps


def classify(maps, binary):
    """Groups mappings: [(group, {field: kB}, count)] largest PSS first."""
    groups = {}
    base = os.path.basename(binary)
    for i, (start, end, perms, path, f) in enumerate(maps):
        size = end - start
        if path:
            name = os.path.basename(path)
            if name == base or path.endswith(" (deleted)") and base in name:
                group = f"binary {'text' if 'x' in perms else 'rodata' if 'w' not in perms else 'data'}"
            elif name.startswith("libpython"):
                group = f"libpython {'text' if 'x' in perms else 'rodata' if 'w' not in perms else 'data'}"
            elif path == "[heap]":
                group = "[heap] (glibc main arena)"
            elif path.startswith("["):
                group = path
            elif path.startswith("/dev/shm") or path.startswith("/memfd:") or "(deleted)" in path:
                group = f"shared file {name}"
            elif ".so" in name:
                group = "python extension .so" if "lib-dynload" in path or "site-packages" in path \
                    else f"lib {name.split('.so')[0]}"
            else:
                group = f"file {name}"
        else:
            # A thread stack: rw anonymous memory right above a PROT_NONE guard page.
            prev = maps[i - 1] if i else None
            if prev and prev[1] == start and prev[2].startswith("---") and not prev[3] \
                    and prev[1] - prev[0] <= 64 * 1024 and perms.startswith("rw"):
                group = f"thread stack ({size // 1024} KiB)"
            elif perms.startswith("---"):
                group = "anon PROT_NONE (reserved)"
            elif perms[3] == "s":
                group = f"anon shared ({size // 1024} KiB)"
            elif size >= 256 * MIB:
                # mimalloc reserves its first arena (1 GiB) at start-up.
                group = "mimalloc arena"
            elif start % (64 * MIB) == 0 and i + 1 < len(maps) and maps[i + 1][2].startswith("---") \
                    and maps[i + 1][0] == end and (maps[i + 1][1] - start) == 64 * MIB:
                # glibc's per-thread malloc heaps: 64 MiB aligned reservations.
                group = "glibc thread arenas"
            else:
                group = "anon other (Python obmalloc arenas, mmapped blocks)"
        g = groups.setdefault(group, [dict.fromkeys(FIELDS, 0), 0])
        for k in FIELDS:
            g[0][k] += f.get(k, 0)
        g[1] += 1
    return sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda r: -r[1]["Pss"])


def resident_pfns(pid):
    """The physical frames of pid's resident pages (/proc/PID/pagemap; needs root), or None."""
    frames = set()
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if start >= 1 << 47:  # [vsyscall]
                    continue
                pagemap.seek(start // PAGE * 8)
                data = pagemap.read((end - start) // PAGE * 8)
                for (entry,) in struct.iter_unpack("<Q", data):
                    if entry >> 63:
                        frames.add(entry & ((1 << 55) - 1))
    except OSError:
        return None
    frames.discard(0)  # PFNs hidden (not root)
    return frames


def footprint_kib(pids):
    """Pages resident in any of pids, each counted once (what the server costs the machine,
    whoever else maps its libraries), in KiB; None without root."""
    union = set()
    for pid in pids:
        frames = resident_pfns(pid)
        if not frames:
            return None
        union |= frames
    return len(union) * PAGE // 1024


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


class Sampler(threading.Thread):
    """Peaks of each process's rollup fields and of the summed PSS, 10x/s."""

    def __init__(self, pids_fn):
        super().__init__(daemon=True)
        self.pids_fn = pids_fn
        self.halt = threading.Event()
        self.peak = {}  # role -> {field: kB}
        self.peak_total_pss = 0

    def sample(self):
        total = 0
        for role, pid in self.pids_fn():
            r = rollup(pid)
            if r is None:
                continue
            total += r.get("Pss", 0)
            p = self.peak.setdefault(role, dict.fromkeys(FIELDS, 0))
            for k in FIELDS:
                p[k] = max(p[k], r.get(k, 0))
        self.peak_total_pss = max(self.peak_total_pss, total)

    def run(self):
        while not self.halt.wait(0.1):
            self.sample()


def wrk(args, port, scen, conns, tmp):
    cmd = ["taskset", "-c", str(args.client_cpu), "wrk", "-t1", f"-c{conns}", f"-d{args.duration}s",
           "--timeout=5s"]
    for h in scen["headers"]:
        cmd += ["-H", h]
    if scen.get("post_bytes"):
        script = os.path.join(tmp, f"post_{scen['post_bytes']}.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\n'
                    f'wrk.body = string.rep("x", {scen["post_bytes"]})\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        cmd += ["-s", script]
    cmd.append(f"http://{HOST}:{port}{scen['path']}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    return (float(m.group(1)) if m else 0.0), (errs.group(0) if errs else "")


def kib(x):
    return f"{x / 1024:6.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"),
                                                  "release", "wsgi-server"))
    ap.add_argument("--venv", default=os.environ.get("BENCH_VENV") or os.environ.get("VIRTUAL_ENV")
                    or "/work/main/target/test-venv")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--settle", type=float, default=1.5, help="seconds of quiet before each run")
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--port", type=int, default=0,
                    help="first port to use (one per app; default: any free port)")
    ap.add_argument("--breakdown", action="store_true", help="group each process's smaps by mapping")
    ap.add_argument("--min-kib", type=int, default=64, help="breakdown: hide groups below this PSS")
    ap.add_argument("extra", nargs="*", help="more server arguments (after --)")
    args = ap.parse_args()

    plan = []
    for tok in args.scenarios.split(","):
        name, _, cs = tok.partition(":")
        scen = SCENARIOS[name]
        for c in ([int(x) for x in cs.split("/")] if cs else scen["conns"]):
            plan.append((name, c))
    tmp = tempfile.mkdtemp(prefix="mem-")
    rows = []
    by_app = {}
    for name, c in plan:
        by_app.setdefault(SCENARIOS[name]["app"], []).append((name, c))
    for n, (app, items) in enumerate(by_app.items()):
        port = args.port + n if args.port else free_port()
        argv = ["taskset", "-c", args.server_cpu, os.path.abspath(args.bin), "--bind", f"{HOST}:{port}",
                "-w", str(args.workers), *args.extra, f"{app}:application"]
        env = dict(os.environ, VIRTUAL_ENV=args.venv, PYTHONPATH=APPS)
        log = open(os.path.join(tmp, f"{app}.log"), "w")
        proc = subprocess.Popen(argv, cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            if not wait_ready(port, proc):
                sys.exit(f"server did not start: see {log.name}")
            time.sleep(0.5)

            def pids():
                kids = children(proc.pid)
                return [("master", proc.pid)] + [(f"worker{i}", k) for i, k in enumerate(kids)] \
                    if kids else [("single", proc.pid)]

            for name, c in items:
                scen = SCENARIOS[name]
                # What a burst before leaves is returned within a second (the
                # worker's idle hook); the bench's warm-up gives it that time too.
                time.sleep(args.settle)
                sampler = Sampler(pids)
                sampler.sample()
                sampler.start()
                # Mid-run (under load): the union of resident pages and the breakdown.
                snap = {}

                def snapshot():
                    snap["footprint"] = footprint_kib([pid for _, pid in pids()])
                    if args.breakdown:
                        snap["maps"] = [(role, pid, thread_names(pid), classify(smaps(pid), args.bin))
                                        for role, pid in pids()]
                timer = threading.Timer(args.duration / 2 if c else 0.5, snapshot)
                timer.start()
                if c:
                    rps, errs = wrk(args, port, scen, c, tmp)
                else:
                    time.sleep(1)
                    rps, errs = 0.0, ""
                timer.join()
                sampler.halt.set()
                sampler.join()
                sampler.footprint = snap.get("footprint")
                rows.append((name, c, rps, errs, sampler))
                if args.breakdown:
                    print(f"\n== {name} c={c}: smaps in mid-run, by mapping (kB; PSS >= {args.min_kib} KiB)")
                    for role, pid, ts, groups in snap.get("maps", []):
                        print(f"  {role} pid {pid}, {len(ts)} threads: "
                              + ", ".join(sorted(set(ts.values()))))
                        print(f"    {'group':48s} {'n':>4s} {'Pss':>7s} {'Rss':>7s} {'PrivDirty':>9s}")
                        for group, f, n in groups:
                            if f["Pss"] >= args.min_kib:
                                print(f"    {group:48s} {n:4d} {f['Pss']:7d} {f['Rss']:7d} {f['Private_Dirty']:9d}")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()

    print("\nPeaks over each run (MiB); total = master + workers' PSS summed at the same instant;"
          " union = pages resident in any of them, each once, in mid-run (needs root)")
    print(f"{'scenario':14s} {'c':>4s} {'req/s':>9s} | {'total PSS':>9s} {'union':>6s} | "
          f"{'master PSS':>10s} {'RSS':>6s} {'PrivD':>6s} | {'worker PSS':>10s} {'RSS':>6s} {'PrivD':>6s}  errors")
    for name, c, rps, errs, s in rows:
        m = s.peak.get("master") or s.peak.get("single") or dict.fromkeys(FIELDS, 0)
        w = s.peak.get("worker0") or dict.fromkeys(FIELDS, 0)
        union = kib(s.footprint) if s.footprint else "-"
        print(f"{name:14s} {c:4d} {rps:9.0f} | {kib(s.peak_total_pss):>9s} {union:>6s} | "
              f"{kib(m['Pss']):>10s} {kib(m['Rss'])} {kib(m['Private_Dirty'])} | "
              f"{kib(w['Pss']):>10s} {kib(w['Rss'])} {kib(w['Private_Dirty'])}  {errs}")


if __name__ == "__main__":
    main()
