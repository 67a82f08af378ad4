"""The startup scenario: time from exec to `/ready` answering 200 with the 5-filter
chain, with an empty module cache (every module compiled by cranelift) and with the
cache the previous start left (every module loaded from disk), against no filters."""

import os
import shutil
import statistics
import time
import urllib.error

from . import servers
from .procs import cpu_seconds, http_get, rss_kib
from .setup import say

PROXY_CPU = 1
ROWS = [
    ("none", "no filters"),
    ("cold", "5 filters, empty module cache"),
    ("warm", "5 filters, warm module cache"),
]


def _ready_after(binary, work, backend_port, chain, cache, timeout=60.0):
    """Starts Portcullis; returns (seconds to /ready 200, CPU seconds and RSS KiB
    then), polling every 2 ms."""
    t0 = time.monotonic()
    proc, _, admin_port, _ = servers.spawn_portcullis(binary, work, PROXY_CPU, backend_port,
                                                      workers=2, chain=chain, cache=cache)
    url = f"http://127.0.0.1:{admin_port}/ready"
    try:
        while time.monotonic() - t0 < timeout:
            if not proc.alive():
                raise RuntimeError(f"portcullis exited while starting:\n{proc.log_tail()}")
            try:
                if http_get(url, timeout=0.5)[0] == 200:
                    took = time.monotonic() - t0
                    return took, cpu_seconds(proc.pids()), rss_kib(proc.pids())
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.002)
        raise RuntimeError(f"portcullis not ready within {timeout}s:\n{proc.log_tail()}")
    finally:
        proc.stop()


def run(opts, backend):
    """`rounds` rounds of: no filters; 5 filters with a fresh cache dir; 5 filters again
    with the dir the previous start filled. Medians per row."""
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    rounds = 3 if opts.quick else 7
    samples = {tag: [] for tag, _ in ROWS}
    for i in range(rounds):
        work = os.path.join(opts.workdir, f"startup-{i}")
        cache = os.path.join(work, "module-cache")
        samples["none"].append(_ready_after(opts.portcullis, work, backend_port, None, cache))
        shutil.rmtree(cache, ignore_errors=True)
        samples["cold"].append(_ready_after(opts.portcullis, work, backend_port,
                                            servers.CHAIN_FIVE, cache))
        samples["warm"].append(_ready_after(opts.portcullis, work, backend_port,
                                            servers.CHAIN_FIVE, cache))
        say("startup: round {}: {}".format(i + 1, ", ".join(
            f"{tag} {samples[tag][-1][0] * 1000:.0f} ms" for tag, _ in ROWS)))
    out = {"rounds": rounds}
    for tag, _ in ROWS:
        s = samples[tag]
        out[tag] = {
            "ms": statistics.median(x[0] for x in s) * 1000,
            "min_ms": min(x[0] for x in s) * 1000,
            "max_ms": max(x[0] for x in s) * 1000,
            "cpu_ms": statistics.median(x[1] for x in s) * 1000,
            "rss_kib": statistics.median(x[2] for x in s),
        }
    return out


def section(st):
    """The report's startup table."""
    lines = ["## Startup (exec → `/ready` 200, polled every 2 ms)", "",
             f"Portcullis, 2 workers, pinned to CPU {PROXY_CPU}; median of {st['rounds']} "
             "rounds (min–max). CPU is the process's user+system time and RSS its size "
             "at that moment.", "",
             "| | ms | min–max ms | CPU ms | RSS MiB |", "|---|---:|---:|---:|---:|"]
    for tag, label in ROWS:
        r = st[tag]
        lines.append(f"| {label} | {r['ms']:.0f} | {r['min_ms']:.0f}–{r['max_ms']:.0f} "
                     f"| {r['cpu_ms']:.0f} | {r['rss_kib'] / 1024:.1f} |")
    lines.append("")
    return lines
