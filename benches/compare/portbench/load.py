"""Load generators: wrk for closed-loop throughput (fixed connection count, as fast as
the server answers) and h2load in HTTP/1.1 mode for open-loop, fixed-rate latency."""

import json
import os
import re
import subprocess

from .procs import cpu_seconds, pinned

# wrk's own summary prints no p99.9 and rounds; this prints exact figures as JSON.
WRK_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PBENCH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p99":%d,"p999":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.mean))
end
"""


def _header_args(headers, flag="-H"):
    out = []
    for k, v in (headers or {}).items():
        out += [flag, f"{k}: {v}"]
    return out


def wrk(url, workdir, cpu, seconds, connections, headers=None, measure_pids=None, env=None):
    """Runs wrk (with `env` as its environment, when given); returns its figures
    (latencies in µs) and, when `measure_pids` is given, the CPU seconds those processes
    used meanwhile."""
    script = os.path.join(workdir, "report.lua")
    with open(script, "w") as f:
        f.write(WRK_REPORT)
    argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "--timeout", "5s", "-s", script] + _header_args(headers) + [url], cpu)
    pids = measure_pids() if measure_pids else []
    cpu0 = cpu_seconds(pids)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 30, env=env)
    cpu1 = cpu_seconds(pids)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^PBENCH (\{.*\})$", out, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk exited {r.returncode} without a report:\n{out[-1500:]}")
    res = json.loads(m.group(1))
    res["seconds"] = res["duration_us"] / 1e6
    res["rps"] = res["requests"] / res["seconds"] if res["seconds"] else 0.0
    res["errors"] = res["connect"] + res["read"] + res["write"] + res["timeout"]
    res["non2xx"] = res["status"]
    res["proxy_cpu_s"] = cpu1 - cpu0 if pids else None
    return res


def h2load_throughput(url, cpu, seconds, clients, streams, headers=None, measure_pids=None):
    """Closed-loop HTTP/2 (h2 by ALPN over https): `clients` connections with up to
    `streams` requests in flight on each, for `seconds`; returns requests/s and, when
    `measure_pids` is given, the CPU seconds those processes used meanwhile."""
    argv = pinned(["h2load", "-c", str(clients), "-m", str(streams), "-D", str(seconds),
                   "-T", "5"] + _header_args(headers) + [url], cpu)
    pids = measure_pids() if measure_pids else []
    cpu0 = cpu_seconds(pids)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 40)
    cpu1 = cpu_seconds(pids)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"h2load exited {r.returncode} without a summary:\n{out[-1500:]}")
    proto = re.search(r"Application protocol: (\S+)", out)
    ok = int(m.group(4))
    return {
        # In duration mode h2load counts the requests of the -D window only.
        "requests": ok,
        "seconds": float(seconds),
        "rps": ok / seconds,
        "errors": int(m.group(5)) + int(m.group(6)) + int(m.group(7)),
        "non2xx": 0,
        "protocol": proto.group(1) if proto else None,
        "proxy_cpu_s": cpu1 - cpu0 if pids else None,
    }


def h2load_fixed_rate(url, workdir, cpu, seconds, rate, clients, headers=None, tag="run"):
    """Open-loop load at `rate` requests/s in all, over HTTP/1.1 keep-alive; latency
    percentiles (µs) come from h2load's per-request log."""
    per_client = max(1, round(rate / clients))
    log = os.path.join(workdir, f"h2load-{tag}.tsv")
    if os.path.exists(log):
        os.remove(log)
    argv = pinned(["h2load", "--h1", "-c", str(clients),
            "--rps", str(per_client), "-D", str(seconds), "--warm-up-time", "1",
            "-T", str(seconds + 10), "--log-file", log] + _header_args(headers) + [url], cpu)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 40)
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0:
        raise RuntimeError(f"h2load exited {r.returncode}:\n{out[-1500:]}")
    lat, bad = [], 0
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            if parts[1].startswith("2"):
                lat.append(int(parts[2]))
            else:
                bad += 1
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    failed = (int(m.group(5)) + int(m.group(6)) + int(m.group(7))) if m else None
    lat.sort()
    return {
        "rate": per_client * clients,
        "requests": len(lat) + bad,
        "achieved_rps": (len(lat) + bad) / seconds,
        "failed": failed,
        "non2xx": bad,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "p999": percentile(lat, 99.9),
        "raw": out[-800:],
    }


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]
