"""The filter-cost scenario (issue 12): what one filter costs, in µs of proxy CPU per
request, for Portcullis with a plain proxy-wasm filter and for Traefik with the same
work as an http-wasm plugin, each in chains of 0, 1 and 5 on one route; and the
standard filters (one, and the comparison's chain of five) as ratios of Portcullis
without filters."""

import os
import urllib.request

from . import scenarios, servers, setup
from .scenarios import PROXY_CPU
from .setup import say

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GUESTS = os.path.join(REPO, "benches", "compare", "guests")
MANIFEST = os.path.join(GUESTS, "httpwasm-header", "traefik", ".traefik.yml")

# The guests' response header, added once by every filter of a chain.
SEEN = "x-bench-seen"

# (row, label, proxy, chain length, kind): kind "plain" is the bench guest, "std" the
# standard filters of the load comparison (one: `headers`; five: its whole chain), "hw"
# the http-wasm guest Traefik runs, run by Portcullis's http-wasm host.
ROWS = [
    ("portcullis", "Portcullis, no filters", "portcullis", 0, "plain"),
    ("portcullis-pw1", "Portcullis, 1 proxy-wasm filter", "portcullis", 1, "plain"),
    ("portcullis-pw5", "Portcullis, 5 proxy-wasm filters", "portcullis", 5, "plain"),
    ("portcullis-hw1", "Portcullis, 1 http-wasm filter (Traefik's module)", "portcullis", 1,
     "hw"),
    ("portcullis-hw5", "Portcullis, 5 http-wasm filters (Traefik's module)", "portcullis", 5,
     "hw"),
    ("portcullis-std1", "Portcullis, 1 standard filter (headers)", "portcullis", 1, "std"),
    ("portcullis-std5", "Portcullis, 5 standard filters", "portcullis", 5, "std"),
    ("traefik", "Traefik, no filters", "traefik", 0, "plain"),
    ("traefik-hw1", "Traefik, 1 http-wasm filter", "traefik", 1, "plain"),
    ("traefik-hw5", "Traefik, 5 http-wasm filters", "traefik", 5, "plain"),
]

# Issue 12's targets.
US_PER_FILTER = {5: 2.0, 1: 2.5}
STD_RATIO = {5: 0.6, 1: 0.85}


def _plain_filters(wasm, n):
    """filters.yaml with `n` entries of the bench guest, and their names."""
    names = [f"h{i + 1}" for i in range(n)]
    return names, "filters:\n" + "".join(f"  - name: {name}\n    wasm: {wasm}\n" for name in names)


def _start(row, proxy, n, kind, opts, backend_port, guests, traefik):
    work = os.path.join(opts.workdir, "filtercost", row)
    if proxy == "traefik":
        if isinstance(traefik, Exception):
            raise traefik
        wasm = guests["httpwasm"] if n else None
        return servers.start_traefik(traefik, work, PROXY_CPU, backend_port, wasm, MANIFEST, n)
    upstream = "echo@internal" if getattr(opts, "filtercost_echo", False) else "backend"
    if kind == "std":
        chain = ["rewrite"] if n == 1 else servers.CHAIN_FIVE
        return servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port,
                                        workers=1, chain=chain, upstream=upstream)
    if n == 0:
        return servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port,
                                        workers=1, upstream=upstream)
    names, yaml = _plain_filters(guests["httpwasm" if kind == "hw" else "proxywasm"], n)
    return servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port, workers=1,
                                    chain=names, filters_yaml=yaml, upstream=upstream)


def _check_chain(server, n, kind):
    """Refuses a row whose filters do not run: each plain filter adds one
    `x-bench-seen: yes` (the request carries x-api-key), and the standard chains set
    `x-chain`; a row measuring the wrong chain would be fast for the wrong reason."""
    req = urllib.request.Request(server.url, headers=servers.REQUEST_HEADERS)
    with urllib.request.urlopen(req, timeout=5) as r:
        seen, chain = r.headers.get_all(SEEN) or [], r.headers.get("x-chain")
        r.read()
    if kind == "std":
        if not chain:
            raise RuntimeError("the standard chain set no x-chain response header")
    elif seen != ["yes"] * n:
        raise RuntimeError(f"expected {n} '{SEEN}: yes' response headers, got {seen}")


def run(opts, backend):
    """Starts every row (a row that cannot start is reported, not fatal), checks that
    its chain runs, then measures them all as the comparison does (closed loop, proxy
    pinned, median of `opts.repeat` rounds taking turns)."""
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    out = {"guests": None, "traefik_version": None}
    try:
        guests = setup.build_guests(REPO)
        out["guests"] = {k: {"file": os.path.basename(p), "bytes": os.path.getsize(p)}
                         for k, p in guests.items()}
    except Exception as e:
        guests = e
    try:
        traefik = opts.traefik or setup.ensure_traefik(skip_install=opts.no_install)
        out["traefik_version"] = setup.traefik_version(traefik)
    except Exception as e:
        traefik = e
    rows = {}
    for row, label, proxy, n, kind in ROWS:
        rows[row] = {"label": label, "proxy": proxy, "filters": n, "kind": kind}
        try:
            if isinstance(guests, Exception) and not (kind == "std" or n == 0):
                raise guests
            s = rows[row]["server"] = _start(row, proxy, n, kind, opts, backend_port,
                                             guests, traefik)
            _check_chain(s, n, kind)
        except Exception as e:  # reported in the table, the other rows still run
            rows[row]["error"] = f"did not start: {e}".splitlines()[0][:300]
            say(f"{row}: {rows[row]['error']}")
    try:
        scenarios.throughput(opts, rows)
    finally:
        for r in rows.values():
            s = r.pop("server", None)
            if s is not None:
                s.stop()
    out["rows"] = rows
    return out


def derive(fc):
    """Per row: requests per proxy CPU-second and µs of proxy CPU per request; per
    filter row, µs per filter = (1/rate_n − 1/rate_0) / n against its proxy's row
    without filters, and for the standard rows the ratio to Portcullis without
    filters."""
    rows = fc["rows"]
    for r in rows.values():
        w = r.get("wrk")
        if w and w.get("proxy_cpu_s") and "error" not in r:
            r["per_cpu_s"] = w["requests"] / w["proxy_cpu_s"]
            r["us_per_request"] = 1e6 / r["per_cpu_s"]
    base = {r["proxy"]: r for r in rows.values() if r["filters"] == 0 and "per_cpu_s" in r}
    for r in rows.values():
        b = base.get(r["proxy"])
        if r["filters"] and b and "per_cpu_s" in r:
            r["us_per_filter"] = (r["us_per_request"] - b["us_per_request"]) / r["filters"]
            r["ratio_to_none"] = r["per_cpu_s"] / b["per_cpu_s"]
    return rows


def targets(fc):
    """[(target, measured, verdict)] for issue 12's filter-cost targets."""
    rows = derive(fc)
    out = []
    for row, n in (("portcullis-pw5", 5), ("portcullis-pw1", 1)):
        us = rows.get(row, {}).get("us_per_filter")
        what = "in a chain of 5" if n == 5 else "lone"
        out.append((f"µs CPU per plain proxy-wasm filter, {what} ≤ {US_PER_FILTER[n]}",
                    "—" if us is None else f"{us:.2f} µs",
                    "n/a" if us is None else ("met" if us <= US_PER_FILTER[n] else "missed")))
    for row, n in (("portcullis-std5", 5), ("portcullis-std1", 1)):
        x = rows.get(row, {}).get("ratio_to_none")
        what = "5 standard filters" if n == 5 else "1 standard filter"
        out.append((f"{what} ≥ {STD_RATIO[n]}× Portcullis without filters",
                    "—" if x is None else f"{x:.2f}×",
                    "n/a" if x is None else ("met" if x >= STD_RATIO[n] else "missed")))
    return out


def section(fc, o):
    """The report's markdown for this scenario."""
    rows = derive(fc)
    g = fc.get("guests") or {}
    sizes = ", ".join(f"{v['file']} {v['bytes'] / 1024:.0f} KiB" for v in g.values())
    lines = ["## Filter cost, side by side with Traefik", "",
             "One route to the backend through a chain of 0, 1 or 5 filters that each read "
             "one request header (`x-api-key`) and add one response header "
             "(`x-bench-seen`): for Portcullis a plain proxy-wasm filter (the `proxy-wasm` "
             "0.2 crate), for Traefik "
             f"{fc.get('traefik_version') or '?'} the same as an http-wasm plugin (the "
             "`http-wasm-guest` crate), both built from `benches/compare/guests` "
             f"(release, wasm32-wasip1{'; ' + sizes if sizes else ''}). One worker / "
             "`GOMAXPROCS=1`, the proxy pinned to CPU 1, `wrk -t1 "
             f"-c{o['connections']}` keep-alive, {o['duration']} s per run. "
             "*µs per filter* = (1/rate₍ₙ₎ − 1/rate₀) / n, rates in requests per proxy "
             "CPU-second, against the same proxy without filters."
             + (" Portcullis's routes answer from `echo@internal` (`--filtercost-echo`): "
                "its core is saturated, Traefik's goes to the backend."
                if o.get("filtercost_echo") else ""), "",
             "| | filters | req/s | req per proxy CPU-s | µs CPU per request "
             "| µs per filter | × no filters | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows.values():
        w = r.get("wrk") or {}
        err = r.get("error") or (f"{w['errors']} socket, {w['non2xx']} non-2xx"
                                 if w.get("errors") or w.get("non2xx") else "0")
        lines.append(
            f"| {r['label']} | {r['filters']} | {_f(w.get('rps'), '{:,.0f}')} "
            f"| {_f(r.get('per_cpu_s'), '{:,.0f}')} | {_f(r.get('us_per_request'), '{:.2f}')} "
            f"| {_f(r.get('us_per_filter'), '{:.2f}')} | {_f(r.get('ratio_to_none'), '{:.2f}')} "
            f"| {err} |")
    pc, tk = rows.get("portcullis", {}), rows.get("traefik", {})
    if pc.get("per_cpu_s") and tk.get("per_cpu_s"):
        lines += ["", f"Without filters Portcullis serves {pc['per_cpu_s'] / tk['per_cpu_s']:.2f}× "
                  "Traefik's requests per proxy CPU-second."]
    lines += ["", "| target (issue 12) | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets(fc)]
    for row in ("traefik-hw5", "traefik-hw1"):
        us = rows.get(row, {}).get("us_per_filter")
        if us is not None:
            lines.append(f"| for reference: {rows[row]['label']}, µs per filter "
                         f"| {us:.2f} µs | — |")
    lines.append("")
    return lines


def _f(v, fmt):
    return "—" if v is None else fmt.format(v)
