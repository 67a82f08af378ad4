"""Turns a run's figures into the markdown report: machine and versions, the
comparison tables, the scenarios, and each target with its verdict."""


def _f(v, fmt="{:,.0f}", none="—"):
    return none if v is None else fmt.format(v)


def _ratio(a, b):
    return None if a is None or not b else a / b


def _us(v):
    return _f(v, "{:,.0f}")


def _mib(kib):
    return None if kib is None else kib / 1024


def derive(cmp):
    """Adds per-row derived figures: requests per proxy CPU-second, added p99."""
    rows = cmp["rows"]
    direct_p99 = rows.get("direct", {}).get("fixed", {}).get("p99")
    for name, r in rows.items():
        w = r.get("wrk")
        if w and w.get("proxy_cpu_s"):
            r["per_cpu_s"] = w["requests"] / w["proxy_cpu_s"]
        fx = r.get("fixed")
        if fx and direct_p99 is not None and fx.get("p99") is not None and name != "direct":
            r["added_p99"] = fx["p99"] - direct_p99
    return rows


def targets(results):
    """[(target, measured, verdict)] for every target the issue sets."""
    out = []
    rows = results.get("compare", {}).get("rows", {})
    ng, pc = rows.get("nginx", {}), rows.get("portcullis", {})
    p1, p5 = rows.get("portcullis-1f", {}), rows.get("portcullis-5f", {})

    def check(name, measured, ok):
        out.append((name, measured, "n/a" if ok is None else ("PASS" if ok else "MISS")))

    if rows:
        x = _ratio(pc.get("per_cpu_s"), ng.get("per_cpu_s"))
        check("req per proxy CPU-s, no filters ≥ 0.9× nginx", _f(x, "{:.2f}×"),
              None if x is None else x >= 0.9)
        x = _ratio(p5.get("per_cpu_s"), pc.get("per_cpu_s"))
        check("req per proxy CPU-s, 5 filters ≥ 0.85× no filters", _f(x, "{:.2f}×"),
              None if x is None else x >= 0.85)
        x = _ratio(p1.get("per_cpu_s"), pc.get("per_cpu_s"))
        check("req per proxy CPU-s, 1 filter ≥ 0.85× no filters", _f(x, "{:.2f}×"),
              None if x is None else x >= 0.85)
        for row, label in (("portcullis", "no filters"), ("portcullis-5f", "5 filters")):
            a, n = rows.get(row, {}).get("added_p99"), ng.get("added_p99")
            ok = None if a is None or n is None else a <= n + 25
            check(f"added p99 at fixed load, {label} ≤ nginx's + 25 µs",
                  f"{_us(a)} µs vs {_us(n)} + 25 µs", ok)
    m = results.get("memory")
    if m and "rss_five" in m:
        d = _mib(m["rss_five"] - m["rss_none"])
        check("RSS added by 5 filters × 2 workers ≤ 10 MiB (warm module cache)",
              _f(d, "{:.1f} MiB"), d <= 10)
    st = results.get("startup")
    if st:
        check("startup with 5 filters, warm module cache ≤ 150 ms",
              _f(st["warm"]["ms"], "{:.0f} ms"), st["warm"]["ms"] <= 150)
    if "routing" in results:
        from .routing import targets as routing_targets
        out += routing_targets(results["routing"])
    if "idle" in results:
        from .idle import targets as idle_targets
        out += idle_targets(results["idle"])
    rl = results.get("reload")
    if rl:
        failed = _reload_failures(rl["during"])
        # Zero failures over fewer reloads than the target's 100 proves nothing yet.
        ok = False if failed else (True if rl["reloads"] >= 100 else None)
        check(f"failed requests over {rl['reloads']} reloads = 0 (target: 100 reloads)",
              str(failed), ok)
        b, d = rl["before"].get("p99"), rl["during"].get("p99")
        x = _ratio(d, b)
        check("p99 during reloads ≤ 1.5× before", _f(x, "{:.2f}×") + f" ({_us(d)} vs {_us(b)} µs)",
              None if x is None else x <= 1.5)
        # Polled every 2 ms through /status, so the figure includes up to one poll.
        live = _pct(rl["write_to_live"], 99)
        check("write-to-live p99 ≤ 100 ms (modules cached)", _f(live, "{:.0f} ms"),
              None if live is None else live <= 100)
    return out


_LAYOUT_WORDS = {
    "inplace": "in place",
    "rename": "written beside it and renamed over it",
    "configmap": "as the kubelet updates a ConfigMap (new timestamped directory, `..data` swapped)",
}


def _reload_failures(fx):
    # h2load's "failed" already counts non-2xx/3xx answers as well as errors and
    # timeouts; without it (no summary line), fall back on the log's non-2xx.
    return fx["failed"] if fx.get("failed") is not None else (fx.get("non2xx") or 0)


def markdown(results):
    m, o = results["machine"], results["options"]
    lines = [f"# Portcullis load comparison — {results['date']}", ""]
    lines += [f"Command: `{results['command']}`", ""]
    lines += ["| machine | |", "|---|---|"]
    for k in ("cpu", "cores", "memory", "os", "kernel", "loadavg_at_start", "portcullis",
              "rustc", "nginx", "haproxy", "wrk", "h2load", "openssl"):
        lines.append(f"| {k} | {m.get(k, '?')} |")
    lines += ["", f"Proxy under test pinned to CPU 1 with one worker; backend (nginx `return 200`, "
              f"1 KiB body) and load generator pinned to CPU 0. HTTP/1.1 keep-alive, "
              f"{o['connections']} connections, {o['duration']} s per run after a "
              f"{o['warmup']} s warm-up. Every request carries the `x-api-key` header."
              + (f" {o['repeat']} rounds with the rows taking turns; each row shows its "
                 f"median round (by requests per proxy CPU-second; fixed rate: by p99)."
                 if o.get("repeat", 1) > 1 else "")
              + (f" Servers and load generators run at nice {o['nice']}." if o.get("nice") else ""),
              ""]

    if "compare" in results:
        cmp = results["compare"]
        rows = derive(cmp)
        ng = rows.get("nginx", {})
        lines += ["## Throughput (closed loop, wrk)", "",
                  "| | req/s | × nginx | req per proxy CPU-s | × nginx | p50 µs | p99 µs "
                  "| p99.9 µs | RSS MiB | × nginx | errors |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, r in rows.items():
            w = r.get("wrk") or {}
            err = r.get("error") or (f"{w['errors']} socket, {w['non2xx']} non-2xx"
                                     if w.get("errors") or w.get("non2xx") else "0")
            rss = _mib(r.get("rss_kib"))
            lines.append(
                f"| {r['label']} | {_f(w.get('rps'))} | {_f(_ratio(w.get('rps'), ng.get('wrk', {}).get('rps')), '{:.2f}')} "
                f"| {_f(r.get('per_cpu_s'))} | {_f(_ratio(r.get('per_cpu_s'), ng.get('per_cpu_s')), '{:.2f}')} "
                f"| {_us(w.get('p50'))} | {_us(w.get('p99'))} | {_us(w.get('p999'))} "
                f"| {_f(rss, '{:.1f}')} | {_f(_ratio(rss, _mib(ng.get('rss_kib'))), '{:.2f}')} | {err} |")
        lines += ["", f"## Latency at a fixed rate ({cmp['rate']:,} req/s, ~30% of the slowest "
                  f"proxy's capacity; h2load --h1, {o['rate_clients']} connections)", "",
                  "| | p50 µs | p99 µs | p99.9 µs | added p99 µs | × nginx's added p99 | failed |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, r in rows.items():
            fx = r.get("fixed")
            if not fx:
                lines.append(f"| {r['label']} | — | — | — | — | — | {r.get('error', 'not run')} |")
                continue
            lines.append(
                f"| {r['label']} | {_us(fx['p50'])} | {_us(fx['p99'])} | {_us(fx['p999'])} "
                f"| {_us(r.get('added_p99'))} | {_f(_ratio(r.get('added_p99'), ng.get('added_p99')), '{:.2f}')} "
                f"| {_reload_failures(fx)} |")
        lines.append("")

    if "reload" in results:
        rl = results["reload"]
        b, d, wl = rl["before"], rl["during"], rl["write_to_live"]
        lines += ["## Hot reload under load", "",
                  f"Portcullis, 1 worker, fixed rate {b['rate']:,} req/s; `routes.yaml` rewritten "
                  f"{_LAYOUT_WORDS[rl.get('layout', 'inplace')]} every 100 ms, alternating a "
                  f"5-filter and a 3-filter chain.", "",
                  "| | value |", "|---|---|",
                  f"| reloads done (missed: never went live within 5 s) | {rl['reloads']} ({rl['missed']}) |",
                  f"| failed requests during (incl. connection errors, non-2xx) | {_reload_failures(d)} of {d['requests']:,} |",
                  f"| p99 before / during | {_us(b['p99'])} / {_us(d['p99'])} µs |",
                  f"| p99.9 before / during | {_us(b['p999'])} / {_us(d['p999'])} µs |",
                  f"| write-to-live p50 / p99 / max | {_f(_pct(wl, 50), '{:.0f}', '—')} / "
                  f"{_f(_pct(wl, 99), '{:.0f}', '—')} / "
                  f"{_f(wl[-1] * 1000 if wl else None, '{:.0f}')} ms |",
                  f"| /status generation at the end, last reload ok | {rl['generation']}, {rl['last_reload_ok']} |",
                  ""]
    if "reload_error" in results:
        lines += ["## Hot reload under load", "", f"Not measured: {results['reload_error']}", ""]

    if "memory" in results:
        mm = results["memory"]
        lines += ["## Memory (RSS, after a short load)", "", "| | MiB |", "|---|---:|",
                  f"| Portcullis, 2 workers, no filters | {_mib(mm['rss_none']):.1f} |",
                  f"| Portcullis, 2 workers, 5 filters (warm module cache) | {_mib(mm['rss_five']):.1f} |",
                  f"| added by 5 filters × 2 workers | {_mib(mm['rss_five'] - mm['rss_none']):.1f} |"]
        if "rss_five_cold" in mm:
            lines += [f"| 5 filters, empty module cache (compiled at start) | {_mib(mm['rss_five_cold']):.1f} |",
                      f"| added by 5 filters × 2 workers, compiled at start | {_mib(mm['rss_five_cold'] - mm['rss_none']):.1f} |"]
        if "rss_after_reloads" in mm:
            n = o["memory_reloads"]
            lines += [f"| 5 filters, after {n} reloads ({mm['reload_seconds']:.0f} s, "
                      f"{mm['reload_missed']} missed) | {_mib(mm['rss_after_reloads']):.1f} |",
                      f"| growth over {n} reloads | {_mib(mm['rss_after_reloads'] - mm['rss_five']):.1f} |"]
        lines.append("")
    if "memory_error" in results:
        lines += ["## Memory", "", f"Not measured: {results['memory_error']}", ""]

    if "startup" in results:
        from .startup import section
        lines += section(results["startup"])
    if "startup_error" in results:
        lines += ["## Startup", "", f"Not measured: {results['startup_error']}", ""]

    if "tls" in results:
        lines += tls_section(results["tls"], o)
    if "tls_error" in results:
        lines += ["## TLS termination", "", f"Not measured: {results['tls_error']}", ""]

    if "routing" in results:
        from .routing import section
        lines += section(results["routing"], o)
    if "routing_error" in results:
        lines += ["## Routing at scale", "", f"Not measured: {results['routing_error']}", ""]
    if "idle" in results:
        from .idle import section as idle_section
        lines += idle_section(results["idle"])
    if "idle_error" in results:
        lines += ["## Idle connections", "", f"Not measured: {results['idle_error']}", ""]
    if "filtercost" in results:
        from . import filtercost
        lines += filtercost.section(results["filtercost"], o)
    if "filtercost_error" in results:
        lines += ["## Filter cost, side by side with Traefik", "",
                  f"Not measured: {results['filtercost_error']}", ""]

    t = targets(results)
    if t:
        lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in t]
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def tls_section(tls, o):
    """The TLS scenario: one table row per measurement, nginx and Portcullis side by
    side, then what each handshake negotiated."""
    from .tls import MEASURES
    rows = tls["rows"]
    ng, pc = rows.get("nginx", {}), rows.get("portcullis", {})
    hs = (pc.get("handshake") or ng.get("handshake") or {}).get("client_handshakes")
    counted = [r["handshake"]["client_handshakes"] for r in (ng, pc)
               if r.get("handshake", {}).get("client_handshakes")]
    full = sum(c.get("full", 0) for c in counted)
    resumed = sum(c.get("resumed", 0) for c in counted)
    lines = ["## TLS termination (same certificate, same backend)", "",
             "nginx (`worker_processes 1`, `ssl_protocols TLSv1.2 TLSv1.3`, default ciphers, "
             "`ssl_session_cache off`, `ssl_session_tickets off`, `http2`) and Portcullis "
             "(`workers: 1`, a listener with `tls.certificates`, defaults otherwise) serve one "
             "ECDSA P-256 certificate made for this run by a test CA, pinned as above. "
             f"{o['connections']} connections, {o['duration']} s per run. *Full handshakes*: "
             "`wrk -H 'Connection: close'`, so every request is a new connection, with the "
             "client's session dropped before each handshake (`nosession.c` preloaded) so "
             "that none is resumed, whatever the server offers"
             + (f"; the client counted {full:,} full and {resumed:,} resumed handshakes"
                if hs is not None else "") + ". "
             f"*HTTP/2*: `h2load -m{tls['h2_streams']}`.", "",
             "| | nginx req/s | nginx req per proxy CPU-s | Portcullis req/s "
             "| Portcullis req per proxy CPU-s | × nginx req/s | × nginx per CPU-s | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for m, label in MEASURES:
        a, b = ng.get(m) or {}, pc.get(m) or {}
        errs = []
        for name, r, res in (("nginx", ng, a), ("Portcullis", pc, b)):
            e = (r.get("errors") or {}).get(m) or r.get("error")
            if e:
                errs.append(f"{name}: {e}")
            elif res.get("errors") or res.get("non2xx"):
                errs.append(f"{name}: {res.get('errors', 0)} socket, {res.get('non2xx', 0)} non-2xx")
        lines.append(
            f"| {label} | {_f(a.get('rps'))} | {_f(a.get('per_cpu_s'))} | {_f(b.get('rps'))} "
            f"| {_f(b.get('per_cpu_s'))} | {_f(_ratio(b.get('rps'), a.get('rps')), '{:.2f}')} "
            f"| {_f(_ratio(b.get('per_cpu_s'), a.get('per_cpu_s')), '{:.2f}')} "
            f"| {'; '.join(errs) or '0'} |")
    lines += ["", "What one handshake negotiates (`openssl s_client`, which offers the session "
              "back on a second connection):", "",
              "| | protocol | cipher | key exchange | tickets sent | resumes an offered session |",
              "|---|---|---|---|---:|---|"]
    for r in (ng, pc):
        p = r.get("probe")
        if not p:
            continue
        lines.append(f"| {r['label']} | {p['protocol'] or '?'} | {p['cipher'] or '?'} "
                     f"| {p['key_exchange'] or '?'} | {p['tickets']} "
                     f"| {'yes' if p['resumes'] else 'no'} |")
    lines.append("")
    return lines


def _pct(sorted_s, p):
    if not sorted_s:
        return None
    k = min(len(sorted_s) - 1, int(p / 100 * len(sorted_s)))
    return sorted_s[k] * 1000
