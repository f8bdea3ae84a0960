#!/usr/bin/env python3
"""Scenarios of the load benchmark (called by run.sh, which starts and stops the processes).

S1 TCP bulk, S2 HTTP keep-alive, S3 connection rate, S4 idle connections; each run once per
target per round, rounds interleaved so drift hits every target alike; medians over rounds.
Writes results JSON and prints a table with vipgate/HAProxy ratios.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[load-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # after "pid (comm)": state=rest[0], utime=field 14 -> rest[11], stime -> rest[12]
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def established_to(port):
    """Established TCP sockets (v4) whose remote port is `port`."""
    hexport = f"{port:04X}"
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "01" and parts[2].endswith(":" + hexport):
                n += 1
    return n


def taskset(cpu, argv):
    return ["taskset", "-c", str(cpu)] + argv


# ---- S1 ---------------------------------------------------------------------------------------
def s1_bulk(t, a, size_bytes):
    url = f"http://127.0.0.1:{t['tcp']}/big"
    timeout = max(60, size_bytes * 4 / 50e6)  # never slower than 50 MB/s, or give up
    c0 = cpu_seconds(t["pid"])
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(taskset(a.cpu_load, ["curl", "-sS", "--fail", "-o", "/dev/null",
                                               "-w", "%{size_download}", url]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    total = 0
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"curl via {t['name']}: rc={p.returncode} {err.decode().strip()}")
        total += int(out.decode().strip() or 0)
    dt = time.monotonic() - t0
    cpu = cpu_seconds(t["pid"]) - c0
    if total != 4 * size_bytes:
        raise RuntimeError(f"S1 via {t['name']}: got {total} bytes, expected {4 * size_bytes}")
    gb = total / 1e9
    return {"gb_per_s": gb / dt, "cpu_s_per_gb": (cpu / gb) if t["pid"] else None,
            "seconds": dt, "bytes": total, "cpu_s": cpu if t["pid"] else None}


# ---- S2 / S3 (wrk) ----------------------------------------------------------------------------
UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    return float(m.group(1)) * UNIT_US[m.group(2)]


def run_wrk(t, a, port, close):
    url = f"http://127.0.0.1:{port}/1k"
    argv = ["wrk", "-t1", "-c64", f"-d{a.duration}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    c0 = cpu_seconds(t["pid"])
    p = subprocess.run(taskset(a.cpu_load, argv), capture_output=True, text=True,
                       timeout=a.duration + 30)
    cpu = cpu_seconds(t["pid"]) - c0
    out = p.stdout
    if p.returncode != 0:
        raise RuntimeError(f"wrk via {t['name']}: rc={p.returncode} {p.stderr.strip()}")
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    per = (cpu / reqs * 1e6) if (t["pid"] and reqs) else None
    return {"req_per_s": rps, "requests": reqs, "p50_us": parse_latency(lat["50"]),
            "p99_us": parse_latency(lat["99"]), "cpu_us_per_req": per,
            "cpu_s": cpu if t["pid"] else None, "socket_errors": errors, "non_2xx": non2xx}


def s2_http(t, a):
    return run_wrk(t, a, t["http"], close=False)


def s3_connrate(t, a):
    r = run_wrk(t, a, t["tcp"], close=True)
    return {"conn_per_s": r["req_per_s"], "connections": r["requests"],
            "cpu_us_per_conn": r["cpu_us_per_req"], "p50_us": r["p50_us"], "p99_us": r["p99_us"],
            "cpu_s": r["cpu_s"], "socket_errors": r["socket_errors"], "non_2xx": r["non_2xx"]}


# ---- S4 ---------------------------------------------------------------------------------------
def s4_idle(t, a, backend_port):
    if t["pid"] is None:
        return None
    n = a.idle
    time.sleep(0.3)
    rss0 = rss_kib(t["pid"])
    fd0 = fd_count(t["pid"])
    socks = []
    pending = {}
    poller = select.epoll()
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", t["tcp"]))
            socks.append(s)
            if err not in (0, 115):  # EINPROGRESS
                raise RuntimeError(f"connect: errno {err}")
            pending[s.fileno()] = s
            poller.register(s.fileno(), select.EPOLLOUT)
        deadline = time.monotonic() + 60
        failed = 0
        while pending and time.monotonic() < deadline:
            for fd, _ev in poller.poll(1.0):
                s = pending.pop(fd)
                poller.unregister(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    failed += 1
        if pending or failed:
            raise RuntimeError(f"S4 via {t['name']}: {len(pending)} connects pending, {failed} failed")
        # wait until the proxy has accepted each and connected it to the backend:
        # two more descriptors per connection in the proxy
        deadline = time.monotonic() + 60
        held = 0
        while time.monotonic() < deadline:
            held = (fd_count(t["pid"]) - fd0) // 2
            if held >= n:
                break
            time.sleep(0.25)
        if held < n:
            log(f"S4 via {t['name']}: only {held} of {n} connections proxied after 60 s; "
                f"RSS is divided by {held}")
        held = max(held, 1)
        # let the proxy settle, then take the RSS (max of a few samples 0.5 s apart)
        time.sleep(1.0)
        samples = []
        for _ in range(3):
            samples.append(rss_kib(t["pid"]))
            time.sleep(0.5)
        rss1 = max(samples)
    finally:
        poller.close()
        for s in socks:
            s.close()
    # let the proxy close its side before the next target
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and fd_count(t["pid"]) > fd0 + 10:
        time.sleep(0.25)
    return {"connections": n, "rss_before_kib": rss0, "rss_after_kib": rss1,
            "proxied": held, "kib_per_conn": (rss1 - rss0) / held}


# ---- driver -----------------------------------------------------------------------------------
def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


SCENARIOS = [
    # key, metric keys to take medians of
    ("S1", ["gb_per_s", "cpu_s_per_gb"]),
    ("S2", ["req_per_s", "p50_us", "p99_us", "cpu_us_per_req"]),
    ("S3", ["conn_per_s", "cpu_us_per_conn", "p99_us"]),
    ("S4", ["kib_per_conn", "rss_after_kib"]),
]


def size_bytes(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def machine_info(a):
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"^Model name:\s+(.*)$", out, re.M)
        model = m.group(1).strip() if m else ""
    except OSError:
        pass
    ha = subprocess.run([a.haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()
    vg = subprocess.run([a.vipgate, "--version"], capture_output=True, text=True).stdout.strip()
    ng = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wv = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "haproxy": ha[0] if ha else "", "vipgate": vg, "nginx": ng,
            "wrk": wv[0] if wv else "", "clk_tck": CLK_TCK}


def fmt(v, nd=2):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def ratio(a_, b_):
    if a_ is None or b_ is None or b_ == 0:
        return None
    return a_ / b_


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", default='[{"name": "direct", "pid": null, "tcp": 0, "http": 0}]')
    ap.add_argument("--cpu-load", default="1")
    ap.add_argument("--big-size", default="1G")
    ap.add_argument("--haproxy", default="haproxy")
    ap.add_argument("--vipgate", default="vipgate")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="S1,S2,S3,S4")
    ap.add_argument("--render", help="re-make table and JSON from the runs in this results file")
    a = ap.parse_args()
    a.runs = 1 if a.quick else 3
    a.duration = 3 if a.quick else 10
    a.idle = 2000 if a.quick else 9800
    targets = json.loads(a.targets)
    backend_port = next(t["tcp"] for t in targets if t["name"] == "direct")
    big = size_bytes(a.big_size)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.idle + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    only = set(a.only.split(","))
    failures = []
    runs = {t["name"]: {s: [] for s, _ in SCENARIOS} for t in targets}
    t_start = time.monotonic()
    prev = None
    if a.render:
        with open(a.render) as f:
            prev = json.load(f)
        runs = prev["runs"]
        targets = [{"name": n, "pid": None if n == "direct" else 0} for n in runs]
        a.quick, a.runs = prev["quick"], prev["runs_per_scenario"]
        a.idle = prev["settings"]["idle_connections"]
        a.duration = int(prev["settings"]["wrk"].split("-d")[1].rstrip("s"))
        only = {k for k, _ in SCENARIOS if any(runs[n].get(k) for n in runs)}
        failures = prev.get("failures", [])
    for key, fn in [("S1", lambda t: s1_bulk(t, a, big)), ("S2", lambda t: s2_http(t, a)),
                    ("S3", lambda t: s3_connrate(t, a)), ("S4", lambda t: s4_idle(t, a, backend_port))]:
        if key not in only or prev:
            continue
        for r in range(a.runs):
            for t in targets:
                if key == "S4" and t["pid"] is None:
                    continue
                try:
                    res = fn(t)
                except Exception as e:  # one failed run must not lose the others
                    log(f"{key} run {r + 1}/{a.runs} {t['name']}: FAILED: {e}")
                    failures.append(f"{key} {t['name']} run {r + 1}: {e}")
                    continue
                if res is None:
                    continue
                runs[t["name"]][key].append(res)
                brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}
                log(f"{key} run {r + 1}/{a.runs} {t['name']}: {brief}")
                time.sleep(0.5 if key != "S3" else 2.0)

    med = {}
    for t in targets:
        med[t["name"]] = {}
        for key, metrics in SCENARIOS:
            rs = runs[t["name"]][key]
            med[t["name"]][key] = {m: median([x.get(m) for x in rs]) for m in metrics} if rs else None
            if key == "S4" and rs:
                # HAProxy keeps the memory of its first 9,800 connections in its pools, so later
                # runs grow by ~0: the per-connection cost is the first (cold) run's.
                med[t["name"]][key]["kib_per_conn"] = rs[0]["kib_per_conn"]

    def get(name, key, m):
        d = med.get(name, {}).get(key)
        return d.get(m) if d else None

    ratios = {}
    rows = [
        ("S1", "gb_per_s", "S1 TCP bulk GB/s", 2),
        ("S1", "cpu_s_per_gb", "S1 proxy CPU s/GB", 3),
        ("S2", "req_per_s", "S2 HTTP keep-alive req/s", 0),
        ("S2", "p50_us", "S2 p50 µs", 0),
        ("S2", "p99_us", "S2 p99 µs", 0),
        ("S2", "cpu_us_per_req", "S2 proxy CPU µs/req", 2),
        ("S3", "conn_per_s", "S3 conn/s (Connection: close)", 0),
        ("S3", "cpu_us_per_conn", "S3 proxy CPU µs/conn", 2),
        ("S4", "kib_per_conn", f"S4 RSS KiB/idle conn (first run, {a.idle})", 2),
        ("S4", "rss_after_kib", f"S4 RSS KiB holding {a.idle} idle", 0),
    ]
    names = [t["name"] for t in targets]
    header = ["metric"] + names + ["vg/HA", "vg/HA-splice"]
    table = []
    for key, m, label, nd in rows:
        if key not in only:
            continue
        vals = [get(n, key, m) for n in names]
        r1 = ratio(get("vipgate", key, m), get("haproxy", key, m))
        r2 = ratio(get("vipgate", key, m), get("haproxy-splice", key, m))
        ratios[f"{key}.{m}"] = {"vs_haproxy": r1, "vs_haproxy_splice": r2}
        table.append([label] + [fmt(v, nd) if v is not None else "-" for v in vals]
                     + [fmt(r1) + "×" if r1 else "-", fmt(r2) + "×" if r2 else "-"])
    # throughput vs direct
    rd = ratio(get("vipgate", "S1", "gb_per_s"), get("direct", "S1", "gb_per_s"))
    rhd = ratio(get("haproxy-splice", "S1", "gb_per_s"), get("direct", "S1", "gb_per_s"))
    ratios["S1.gb_per_s.vs_direct"] = {"vipgate": rd, "haproxy-splice": rhd,
                                       "haproxy": ratio(get("haproxy", "S1", "gb_per_s"),
                                                        get("direct", "S1", "gb_per_s"))}

    widths = [max(len(str(row[i])) for row in [header] + table) for i in range(len(header))]
    md = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
          "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in table:
        md.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    print()
    print("\n".join(md))
    if rd is not None:
        print(f"\nS1 throughput vs direct: vipgate {rd:.2f}×, haproxy-splice {rhd:.2f}×")
    elapsed = time.monotonic() - t_start

    if prev:
        elapsed = prev.get("scenario_seconds", 0)
    result = {"machine": prev["machine"] if prev else machine_info(a), "quick": a.quick, "runs_per_scenario": a.runs,
              "settings": {"wrk": f"-t1 -c64 -d{a.duration}s", "bulk_file_bytes": big,
                           "bulk_parallel": 4, "idle_connections": a.idle},
              "medians": med, "ratios": ratios, "runs": runs, "table_markdown": "\n".join(md),
              "scenario_seconds": round(elapsed, 1), "failures": failures}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nresults: {a.out}")
    if failures:
        print("FAILED runs:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
