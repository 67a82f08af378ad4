"""The TLS scenario: nginx and Portcullis terminating TLS with the same certificate, in
front of the same backend. Measured: full handshakes (a new connection, and a new
session, for every request), keep-alive HTTP/1.1 over TLS, and HTTP/2 over TLS.

A full handshake is forced on the client's side, whatever the server offers: wrk and
h2load reuse the session of a connection's previous handshake when the server issued
a ticket (Portcullis does by default; so would nginx with its default tickets), so the
load generator runs with `nosession.c` preloaded, which drops that session before each
handshake and counts the handshakes it saw complete, full or resumed. The report shows
those counts, and `probe` shows what each server offers a client that does resume."""

import json
import os
import re
import shutil
import subprocess

from . import load, servers
from .scenarios import LOAD_CPU, PROXY_CPU
from .setup import say

HERE = os.path.dirname(os.path.abspath(__file__))

ROWS = [
    ("nginx", "nginx, TLS"),
    ("portcullis", "Portcullis, TLS"),
]

# (key, label) of each measurement, in report order.
MEASURES = [
    ("handshake", "full handshakes (new connection per request, HTTP/1.1)"),
    ("keepalive", "keep-alive HTTP/1.1 over TLS"),
    ("h2", "HTTP/2 over TLS"),
]

# Streams in flight per HTTP/2 connection.
H2_STREAMS = 10


def make_certs(workdir):
    """A test CA and an ECDSA P-256 server certificate for 127.0.0.1 and localhost signed
    by it, made with the openssl command-line tool; returns {ca, cert, key} paths. The
    served chain is the leaf alone, as the CA is the client's trust anchor."""
    d = os.path.join(workdir, "certs")
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
    cert, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
    csr, ext = os.path.join(d, "server.csr"), os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
        ["openssl", "req", "-x509", "-new"] + p256 + ["-days", "2", "-subj", "/CN=Portcullis bench CA",
                                                      "-keyout", ca_key, "-out", ca],
        ["openssl", "req", "-new"] + p256 + ["-subj", "/CN=localhost", "-keyout", key, "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext, "-out", cert],
    ):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {r.stdout.decode()[-500:]}")
    return {"ca": ca, "cert": cert, "key": key}


def build_shim(workdir):
    """Compiles nosession.c into a preloadable library; returns its path."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the no-session shim")
    out = os.path.join(workdir, "nosession.so")
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", out,
                        os.path.join(HERE, "nosession.c"), "-ldl"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"building the no-session shim failed:\n{r.stdout.decode()[-800:]}")
    return out


def probe(url, ca, workdir):
    """What one handshake negotiates (protocol, cipher, key exchange) and whether the
    server resumes a session for a client that offers one back (openssl s_client,
    -sess_out then -sess_in, reading a response in between so that a TLS 1.3 ticket
    arrives)."""
    host, port = url.split("//", 1)[1].strip("/").rsplit(":", 1)
    sess = os.path.join(workdir, f"probe-{port}.sess")
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: " + \
        servers.API_KEY.encode() + b"\r\nConnection: close\r\n\r\n"

    def s_client(extra):
        argv = ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
                "-CAfile", ca, "-ign_eof"] + extra
        r = subprocess.run(argv, input=req, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=15)
        return r.stdout.decode("utf-8", "replace")

    first = s_client(["-sess_out", sess])
    again = s_client(["-sess_in", sess]) if os.path.exists(sess) else ""
    m = re.search(r"^(New|Reused), (\S+), Cipher is (\S+)", first, re.M)
    kx = re.search(r"(?:Server|Peer) Temp Key: ([^,\n]+)", first)
    return {
        "protocol": m.group(2) if m else None,
        "cipher": m.group(3) if m else None,
        "key_exchange": kx.group(1) if kx else None,
        "verified": "Verify return code: 0 (ok)" in first,
        "tickets": len(re.findall(r"Post-Handshake New Session Ticket arrived", first)),
        "resumes": bool(re.search(r"^Reused,", again, re.M)),
    }


def _start(row, opts, work, backend_port, certs):
    if row == "nginx":
        return servers.start_nginx_proxy(work, PROXY_CPU, backend_port, certs=certs)
    return servers.start_portcullis(opts.portcullis, work, PROXY_CPU, backend_port,
                                    workers=1, certs=certs)


def run(opts, backend):
    """Every measurement for both rows; with `opts.repeat` > 1 the rows take turns,
    round after round, and each keeps its median round (by requests per proxy
    CPU-second)."""
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    work = os.path.join(opts.workdir, "tls")
    os.makedirs(work, exist_ok=True)
    certs = make_certs(work)
    shim = build_shim(work)
    rows = {}
    for row, label in ROWS:
        rows[row] = {"label": label}
        try:
            rows[row]["server"] = _start(row, opts, os.path.join(work, row), backend_port, certs)
        except Exception as e:  # a proxy that cannot start is reported, not fatal
            rows[row]["error"] = f"did not start: {e}".splitlines()[0][:300]
            say(f"tls {row}: {rows[row]['error']}")
            continue
        try:
            rows[row]["probe"] = probe(rows[row]["server"].url, certs["ca"], work)
        except Exception as e:  # only the report's description needs it
            say(f"tls {row}: openssl s_client probe failed: {e}".splitlines()[0][:300])
    runs = {(row, m): [] for row in rows for m, _ in MEASURES}
    try:
        for rnd in range(opts.repeat):
            for row, r in rows.items():
                if "server" not in r or "error" in r:
                    continue
                for m, _ in MEASURES:
                    try:
                        runs[(row, m)].append(_measure(m, r["server"], opts, work, shim, rnd))
                    except Exception as e:
                        r.setdefault("errors", {})[m] = str(e).splitlines()[0][:300]
                        say(f"tls {row} {m}: {r['errors'][m]}")
    finally:
        for r in rows.values():
            s = r.pop("server", None)
            if s is not None:
                s.stop()
    for (row, m), got in runs.items():
        if got:
            rows[row][m] = sorted(got, key=_per_cpu_s)[len(got) // 2]
            rows[row][m]["per_cpu_s"] = _per_cpu_s(rows[row][m])
    return {"rows": rows, "h2_streams": H2_STREAMS}


def _per_cpu_s(res):
    return res["requests"] / res["proxy_cpu_s"] if res.get("proxy_cpu_s") else 0.0


def _measure(m, server, opts, work, shim, rnd):
    hdrs = servers.REQUEST_HEADERS
    pids = server.proc.pids
    c = opts.connections
    say(f"tls {server.name}: {m}, {c} connections, {opts.duration}s"
        + (f" (round {rnd + 1}/{opts.repeat})" if opts.repeat > 1 else ""))
    if m == "handshake":
        counts = os.path.join(work, "handshakes.json")
        env = dict(os.environ, LD_PRELOAD=shim, PBENCH_TLS_COUNT=counts)
        h = dict(hdrs, Connection="close")
        if rnd == 0:
            load.wrk(server.url, work, LOAD_CPU, opts.warmup, c, h, env=env)
        if os.path.exists(counts):
            os.remove(counts)
        res = load.wrk(server.url, work, LOAD_CPU, opts.duration, c, h, measure_pids=pids,
                       env=env)
        try:
            with open(counts) as f:
                res["client_handshakes"] = json.load(f)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"the no-session shim left no handshake counts ({e}): was it "
                               f"preloaded into wrk?")
        if res["client_handshakes"].get("resumed"):
            raise RuntimeError(f"{res['client_handshakes']['resumed']} handshakes were "
                               f"resumed: not a full-handshake measurement")
        return res
    if m == "keepalive":
        if rnd == 0:
            load.wrk(server.url, work, LOAD_CPU, opts.warmup, c, hdrs)
        return load.wrk(server.url, work, LOAD_CPU, opts.duration, c, hdrs, measure_pids=pids)
    if rnd == 0:
        load.h2load_throughput(server.url, LOAD_CPU, opts.warmup, c, H2_STREAMS, hdrs)
    res = load.h2load_throughput(server.url, LOAD_CPU, opts.duration, c, H2_STREAMS, hdrs,
                                 measure_pids=pids)
    if res["protocol"] != "h2":
        raise RuntimeError(f"h2load negotiated {res['protocol']}, expected h2")
    return res
