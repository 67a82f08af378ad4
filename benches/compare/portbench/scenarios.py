"""The three scenarios: the side-by-side comparison, hot reload under load, and memory.
Each returns plain dicts that report.py turns into markdown."""

import os
import shutil
import time

from . import load, profile, servers
from .procs import get_json, rss_kib
from .setup import say

PROXY_CPU, LOAD_CPU = 1, 0

ROWS = [
    ("direct", "backend directly (no proxy)"),
    ("nginx", "nginx reverse proxy"),
    ("haproxy", "HAProxy"),
    ("portcullis", "Portcullis, no filters"),
    ("portcullis-1f", "Portcullis, 1 filter (headers)"),
    ("portcullis-5f", "Portcullis, 5 filters"),
]


def _start(row, opts, backend_port):
    work = os.path.join(opts.workdir, row)
    if row == "nginx":
        return servers.start_nginx_proxy(work, PROXY_CPU, backend_port)
    if row == "haproxy":
        return servers.start_haproxy(work, PROXY_CPU, backend_port)
    chain = {"portcullis-5f": servers.CHAIN_FIVE, "portcullis-1f": ["rewrite"]}.get(row)
    return servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port,
                                    workers=1, chain=chain)


def compare(opts, backend):
    """Closed-loop throughput, then open-loop latency at ~30% of the slowest proxy's
    capacity, for every row; proxies are pinned to one core, load and backend to the
    other. With `opts.repeat` > 1 the rows take turns, round after round, so that a burst
    of other work on the machine hits them all alike; each row keeps its median round."""
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    rows = {}
    for row, label in ROWS:
        if opts.skip_haproxy and row == "haproxy":
            continue
        rows[row] = {"label": label}
        if row == "direct":
            rows[row]["server"] = backend
            continue
        try:
            rows[row]["server"] = _start(row, opts, backend_port)
        except Exception as e:  # a proxy that cannot start is reported, not fatal
            rows[row]["error"] = f"did not start: {e}".splitlines()[0][:300]
            say(f"{row}: {rows[row]['error']}")
    try:
        throughput(opts, rows)
        rate = _fixed_rate(opts, rows)
        _latency(opts, rows, rate)
    finally:
        for row, r in rows.items():
            s = r.pop("server", None)
            if s is not None and row != "direct":
                s.stop()
    return {"rows": rows, "rate": rate}


def _runnable(rows, key="server"):
    return [(row, r) for row, r in rows.items() if key in r and "error" not in r]


def _median(runs, key):
    return sorted(runs, key=key)[len(runs) // 2]


def throughput(opts, rows):
    """Closed-loop runs of every runnable row (`{row: {"server": Server, ...}}`): a
    warm-up, then `opts.repeat` measured rounds taking turns; each row keeps its median
    round (by requests per proxy CPU-second) as "wrk", or gets an "error"."""
    hdrs = servers.REQUEST_HEADERS
    runs = {row: [] for row in rows}
    for rnd in range(opts.repeat):
        for row, r in _runnable(rows):
            s = r["server"]
            say(f"{row}: throughput, {opts.connections} connections, {opts.duration}s"
                + (f" (round {rnd + 1}/{opts.repeat})" if opts.repeat > 1 else ""))
            try:
                if rnd == 0:
                    load.wrk(s.url, opts.workdir, LOAD_CPU, opts.warmup, opts.connections, hdrs)
                pids = None if row == "direct" else s.proc.pids
                runs[row].append(load.wrk(s.url, opts.workdir, LOAD_CPU, opts.duration,
                                          opts.connections, hdrs, measure_pids=pids))
                r["rss_kib"] = rss_kib(s.proc.pids())
            except Exception as e:
                r["error"] = f"throughput run failed: {e}".splitlines()[0][:300]
                say(f"{row}: {r['error']}")
    for row, r in rows.items():
        if runs[row] and "error" not in r:
            # Requests per proxy CPU-second is the figure compared; the direct row has
            # no proxy, so its median is by requests/s.
            r["wrk"] = _median(runs[row], lambda w: w["requests"] / w["proxy_cpu_s"]
                               if w.get("proxy_cpu_s") else w["rps"])
            r["rounds"] = len(runs[row])
    if opts.perf:
        for row, r in _runnable(rows, "wrk"):
            if row.startswith("portcullis"):
                out = os.path.join(opts.results_dir, f"{opts.stamp}-perf-{row}.txt")
                say(f"{row}: profiling one more run with perf -> {out}")
                try:
                    profile.record(r["server"], opts, LOAD_CPU, LOAD_CPU, hdrs, out)
                    r["perf"] = os.path.relpath(out, opts.results_dir)
                except Exception as e:
                    say(f"{row}: perf failed: {e}")


def _fixed_rate(opts, rows):
    # A row answering errors is fast for the wrong reason: it sets no rate.
    caps = [r["wrk"]["rps"] for k, r in _runnable(rows, "wrk")
            if k != "direct" and r["wrk"]["non2xx"] + r["wrk"]["errors"]
            <= 0.01 * r["wrk"]["requests"]]
    if not caps and "wrk" in rows.get("direct", {}):
        caps = [rows["direct"]["wrk"]["rps"]]
    rate = int(max(100, 0.3 * min(caps))) if caps else 1000
    return rate // opts.rate_clients * opts.rate_clients


def _latency(opts, rows, rate):
    hdrs = servers.REQUEST_HEADERS
    runs = {row: [] for row in rows}
    for rnd in range(opts.repeat):
        for row, r in _runnable(rows, "wrk"):
            say(f"{row}: fixed rate {rate} req/s, {opts.rate_clients} connections, "
                f"{opts.duration}s" + (f" (round {rnd + 1}/{opts.repeat})" if opts.repeat > 1 else ""))
            try:
                runs[row].append(load.h2load_fixed_rate(
                    r["server"].url, opts.workdir, LOAD_CPU, opts.duration, rate,
                    opts.rate_clients, hdrs, tag=row))
            except Exception as e:
                r["error"] = f"fixed-rate run failed: {e}".splitlines()[0][:300]
                say(f"{row}: {r['error']}")
    for row, r in rows.items():
        if runs[row]:
            r["fixed"] = _median(runs[row], lambda f: f["p99"] if f["p99"] is not None else 1e12)


def _generation(admin):
    return get_json(admin + "/status").get("generation")


# How `routes.yaml` is rewritten for a reload (`--reload-layout`): the ways a file
# reaches a config directory in production.
LAYOUTS = ("inplace", "rename", "configmap")


def _configmap_update(conf_dir, name, text):
    """What the kubelet's atomic writer does for an update: every key written into a
    new timestamped directory, a `..data_tmp` symlink to it renamed over `..data`, the
    old directory removed."""
    old = os.readlink(os.path.join(conf_dir, "..data"))
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    new = os.path.join(conf_dir, ".." + stamp)
    os.makedirs(new)
    for key in os.listdir(os.path.join(conf_dir, old)):
        with open(os.path.join(conf_dir, old, key)) as f:
            body = text if key == name else f.read()
        with open(os.path.join(new, key), "w") as f:
            f.write(body)
    tmp = os.path.join(conf_dir, "..data_tmp")
    os.symlink(".." + stamp, tmp)
    os.rename(tmp, os.path.join(conf_dir, "..data"))
    shutil.rmtree(os.path.join(conf_dir, old))


def _rewrite_routes(conf_dir, chain, layout="inplace"):
    text = servers.routes_yaml(chain)
    path = os.path.join(conf_dir, "routes.yaml")
    if layout == "inplace":
        # Open, truncate, write, close, as an editor or `cat >` does.
        with open(path, "w") as f:
            f.write(text)
    elif layout == "rename":
        # Written beside it and renamed over it, as `mv`, Ansible or a careful editor do.
        with open(os.path.join(conf_dir, ".routes.yaml.tmp"), "w") as f:
            f.write(text)
        os.rename(os.path.join(conf_dir, ".routes.yaml.tmp"), path)
    else:
        _configmap_update(conf_dir, "routes.yaml", text)


def _reload_once(server, chain, timeout=5.0, layout="inplace"):
    """Rewrites routes.yaml; returns seconds until /status shows the next generation,
    or None if it never did."""
    g0 = _generation(server.admin)
    t0 = time.monotonic()
    _rewrite_routes(server.conf_dir, chain, layout)
    while time.monotonic() - t0 < timeout:
        g = _generation(server.admin)
        if g is not None and g0 is not None and g > g0:
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


def reload(opts, backend, rate):
    """Fixed-rate load before, and during `opts.reloads` reloads that alternate two
    filter chains every 100 ms by rewriting routes.yaml."""
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    work = os.path.join(opts.workdir, "reload")
    layout = getattr(opts, "reload_layout", "inplace")
    s = servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port, workers=1,
                                 chain=servers.CHAIN_FIVE,
                                 layout=layout)
    hdrs = servers.REQUEST_HEADERS
    try:
        say(f"reload: fixed rate {rate} req/s for {opts.duration}s before reloading")
        load.wrk(s.url, opts.workdir, LOAD_CPU, opts.warmup, opts.connections, hdrs)
        before = load.h2load_fixed_rate(s.url, work, LOAD_CPU, opts.duration, rate,
                                        opts.rate_clients, hdrs, tag="before")
        # Size the loaded window to the reloads: a reload slower than the interval
        # spaces them out, and every one of them should happen under load.
        probe = [t for t in (_reload_once(s, c, layout=layout) for c in (servers.CHAIN_ALT, servers.CHAIN_FIVE))
                 if t is not None]
        interval = 0.1
        step = max(interval, 1.3 * max(probe)) if probe else interval
        during_s = int(opts.reloads * step + 4)
        say(f"reload: {opts.reloads} reloads every {interval * 1000:.0f} ms under the same load")
        bg = _background_h2load(s.url, work, during_s, rate, opts.rate_clients, hdrs)
        time.sleep(1.5)  # past h2load's warm-up second
        lives, missed = [], 0
        deadline = time.monotonic() + during_s - 2.0
        for i in range(opts.reloads):
            t0 = time.monotonic()
            if t0 > deadline:
                break
            chain = servers.CHAIN_ALT if i % 2 == 0 else servers.CHAIN_FIVE
            took = _reload_once(s, chain, layout=layout)
            if took is None:
                missed += 1
            else:
                lives.append(took)
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
        during = bg.result()
        status = get_json(s.admin + "/status")
        return {"before": before, "during": during, "reloads": len(lives) + missed,
                "missed": missed, "write_to_live": sorted(lives), "layout": layout,
                "generation": status.get("generation"),
                "last_reload_ok": (status.get("last_reload") or {}).get("ok")}
    finally:
        s.stop()


class _background_h2load:
    """h2load on a thread, so that the reload loop runs while it loads."""

    def __init__(self, *args):
        import threading
        self._out = {}
        self._t = threading.Thread(target=self._run, args=args, daemon=True)
        self._t.start()

    def _run(self, url, work, seconds, rate, clients, hdrs):
        try:
            self._out["r"] = load.h2load_fixed_rate(url, work, LOAD_CPU, seconds, rate,
                                                    clients, hdrs, tag="during")
        except Exception as e:
            self._out["e"] = e

    def result(self):
        self._t.join()
        if "e" in self._out:
            raise self._out["e"]
        return self._out["r"]


def memory(opts, backend):
    """RSS with 5 filters x 2 workers against none x 2 workers, each after a short load:
    with the modules compiled at start (an empty module cache) and loaded from a cache
    `portcullis compile --builtins` filled; then RSS after `opts.memory_reloads` reloads
    against before them."""
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    hdrs = servers.REQUEST_HEADERS
    out = {}
    warm = os.path.join(opts.workdir, "memory-module-cache")
    servers.compile_builtins(opts.portcullis, warm)
    for tag, chain in (("none", None), ("five_cold", servers.CHAIN_FIVE),
                       ("five", servers.CHAIN_FIVE)):
        work = os.path.join(opts.workdir, f"memory-{tag}")
        s = servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port, workers=2,
                                     chain=chain, cache=warm if tag == "five" else None)
        try:
            out[f"idle_{tag}"] = rss_kib(s.proc.pids())
            load.wrk(s.url, opts.workdir, LOAD_CPU, opts.warmup + 1, opts.connections, hdrs)
            out[f"rss_{tag}"] = rss_kib(s.proc.pids())
            if tag == "five":
                say(f"memory: {opts.memory_reloads} reloads, one after the other")
                t0, missed = time.monotonic(), 0
                for i in range(opts.memory_reloads):
                    alt = servers.CHAIN_ALT if i % 2 == 0 else servers.CHAIN_FIVE
                    if _reload_once(s, alt) is None:
                        missed += 1
                out["reload_seconds"] = time.monotonic() - t0
                out["reload_missed"] = missed
                load.wrk(s.url, opts.workdir, LOAD_CPU, opts.warmup + 1, opts.connections, hdrs)
                out["rss_after_reloads"] = rss_kib(s.proc.pids())
                out["generation"] = _generation(s.admin)
        finally:
            s.stop()
    return out
