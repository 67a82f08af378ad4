"""The idle scenario: thousands of keep-alive client connections, each after one
request, held open and idle; the RSS each one costs (the server's RSS with them open,
less its RSS before, over their count), nginx and Portcullis side by side.

Each row is a fresh server (nginx as a reverse proxy with `worker_connections` raised
to hold them, or Portcullis with one worker) in front of a backend of its own (sized
for a burst). The client is this harness: plain sockets, and the `ssl` module for TLS
(HTTP/2 by ALPN, with a hand-made request: the preface, an empty SETTINGS, one HEADERS
frame; the same over plain TCP for HTTP/2 with prior knowledge, h2c, which shows what
HTTP/2 costs without TLS's share). *Sequential*: each connection is opened, sends its request and reads the
answer before the next one opens (a crowd of clients arriving over time). *Burst*
(plain HTTP/1.1): every connection opens first, then all send their request, then
all answers are read (the requests arrive at once, and the proxy has them all in
flight together). RSS is read once the connections have been idle for `SETTLE_S`; HTTP/2 connections answer
the server's PINGs meanwhile. Portcullis runs with `idle_timeout: 120s`, nginx's
`keepalive_timeout` here: opening thousands of TLS connections one by one takes most
of a minute."""

import os
import resource
import selectors
import socket
import ssl
import time

from . import servers
from .procs import rss_kib
from .scenarios import LOAD_CPU, PROXY_CPU
from .setup import say

# (key, label, TLS, ALPN protocol)
MODES = [
    ("h1", "HTTP/1.1", False, None),
    ("h1_tls", "HTTP/1.1 over TLS", True, "http/1.1"),
    ("h2c", "HTTP/2 (h2c, prior knowledge)", False, "h2c"),
    ("h2_tls", "HTTP/2 over TLS", True, "h2"),
]
PATTERNS = [("sequential", "one after the other"), ("burst", "all at once")]
ROWS = [("nginx", "nginx"), ("portcullis", "Portcullis")]

# How long the connections idle before RSS is read. Portcullis gives an idle HTTP/1
# connection's buffers back within ~2 s of its last request; nginx at once.
SETTLE_S = 4.0

# Targets (issue 14): KiB per idle connection.
TARGET_H1_KIB, TARGET_H2_KIB = 4.0, 8.0


def _raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        raise RuntimeError(f"needs {need} open files (ulimit -n is {soft}); lower --idle-connections")


def _start(row, work, backend_port, certs, alpn, n):
    if row == "nginx":
        return servers.start_nginx_proxy(work, PROXY_CPU, backend_port, certs=certs,
                                         connections=2 * n + 256, h2c=alpn == "h2c")
    # nginx's keepalive_timeout here (servers.py): opening thousands of TLS
    # connections one by one takes most of a minute, Portcullis's default.
    return servers.start_portcullis(_start.binary, work, PROXY_CPU, backend_port, workers=1,
                                    certs=certs, limits="{ idle_timeout: 120s }")


def _fds(pids):
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def run(opts):
    """Every (row, mode, pattern): RSS before and with `opts.idle_connections` idle
    connections open."""
    from .tls import make_certs
    n = opts.idle_connections
    _raise_nofile(2 * n + 512)
    work = os.path.join(opts.workdir, "idle")
    os.makedirs(work, exist_ok=True)
    certs = make_certs(work)
    _start.binary = opts.portcullis
    backend = servers.start_backend(os.path.join(work, "backend"), LOAD_CPU,
                                    connections=2 * n + 256)
    backend_port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    runs = {}
    try:
        # nginx's base RSS as the other scenarios run it (4,096 worker connections),
        # for the base-RSS target: raised for this scenario, it holds more.
        stock = servers.start_nginx_proxy(os.path.join(work, "nginx-stock"), PROXY_CPU,
                                          backend_port)
        time.sleep(1.0)
        nginx_stock_kib = rss_kib(stock.proc.pids())
        stock.stop()
        for mode, label, use_tls, alpn in MODES:
            if opts.idle_modes and mode not in opts.idle_modes:
                continue
            for pattern, _ in PATTERNS:
                if pattern == "burst" and (use_tls or alpn):
                    continue  # handshakes are too slow here to all arrive at once; an
                    # HTTP/2 client's requests are all in flight together in the
                    # sequential pattern already
                for row, _ in ROWS:
                    key = f"{row}/{mode}/{pattern}"
                    say(f"idle {key}: {n:,} connections")
                    try:
                        runs[key] = _measure(row, os.path.join(work, key.replace("/", "-")),
                                             backend_port, certs if use_tls else None,
                                             alpn, pattern, n)
                    except Exception as e:
                        runs[key] = {"error": str(e).splitlines()[0][:300]}
                        say(f"idle {key}: {runs[key]['error']}")
    finally:
        backend.stop()
    return {"connections": n, "settle_s": SETTLE_S, "runs": runs,
            "nginx_stock_kib": nginx_stock_kib}


def _measure(row, work, backend_port, certs, alpn, pattern, n):
    server = _start(row, work, backend_port, certs, alpn, n)
    conns = []
    # HTTP/2 connections answer the server's PINGs while they idle, as a client's
    # HTTP/2 stack does (Portcullis closes a connection whose PING goes unanswered).
    pings = selectors.DefaultSelector()
    try:
        pids = server.proc.pids()
        time.sleep(1.0)
        base, base_fds = rss_kib(pids), _fds(pids)
        host, port = server.url.split("//", 1)[1].strip("/").rsplit(":", 1)
        ctx = None
        if certs:
            ctx = ssl.create_default_context(cafile=certs["ca"])
            ctx.set_alpn_protocols([alpn])
            # Every connection a handshake of its own, as separate clients make.
            ctx.options |= ssl.OP_NO_TICKET
        t0 = time.monotonic()
        if pattern == "sequential":
            for i in range(n):
                c = _Client(host, int(port), ctx, alpn)
                c.send_request()
                c.read_response()
                conns.append(c)
                if c.h2:
                    pings.register(c.sock, selectors.EVENT_READ, c)
                if i % 100 == 0:
                    _answer_pings(pings, 0)
        else:
            conns = [_Client(host, int(port), ctx, alpn) for _ in range(n)]
            for c in conns:
                c.send_request()
            for c in conns:
                c.read_response()
        opened_s = time.monotonic() - t0
        _answer_pings(pings, SETTLE_S)
        pids = server.proc.pids()
        rss, fds = rss_kib(pids), _fds(pids)
        if fds - base_fds < n:
            raise RuntimeError(f"only {fds - base_fds} of {n} connections still open at the "
                               f"reading")
        return {"base_kib": base, "rss_kib": rss, "per_conn_kib": (rss - base) / n,
                "opened_s": opened_s}
    finally:
        pings.close()
        for c in conns:
            c.close()
        server.stop()


def _answer_pings(pings, seconds):
    """Answers what the HTTP/2 connections in `pings` receive (PINGs) for `seconds`
    (0: once, what is there now)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        for key, _ in pings.select(timeout=max(left, 0)):
            key.data.answer()
        if left <= 0:
            return


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


class _Client:
    """One client connection: a GET of / and its whole answer, then nothing."""

    def __init__(self, host, port, ctx, alpn):
        s = socket.create_connection((host, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="localhost")
            if s.selected_alpn_protocol() != alpn:
                raise RuntimeError(f"negotiated {s.selected_alpn_protocol()}, wanted {alpn}")
        self.sock, self.h2, self.host = s, alpn in ("h2", "h2c"), f"{host}:{port}"
        self.buf = b""

    def send_request(self):
        if not self.h2:
            self.sock.sendall(f"GET / HTTP/1.1\r\nHost: {self.host}\r\nx-api-key: "
                              f"{servers.API_KEY}\r\n\r\n".encode())
            return
        auth = self.host.encode()
        key = servers.API_KEY.encode()
        # :method GET, :scheme https, :path / (static table); :authority and x-api-key
        # as literals without indexing.
        scheme = b"\x87" if isinstance(self.sock, ssl.SSLSocket) else b"\x86"
        block = (b"\x82" + scheme + b"\x84" + b"\x01" + bytes([len(auth)]) + auth
                 + b"\x00\x09x-api-key" + bytes([len(key)]) + key)
        self.sock.sendall(PREFACE + _frame(4, 0, 0) + _frame(1, 0x5, 1, block))

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        self.buf += data

    def answer(self):
        """Reads what arrived and answers it (SETTINGS and PING acks)."""
        self.sock.settimeout(0.5)
        try:
            self._more()
            self._frames()
        except (OSError, RuntimeError):
            pass  # a closed connection shows in the count of open ones
        finally:
            self.sock.settimeout(30)

    def _frames(self):
        """Handles the whole frames buffered; True once stream 1 has ended."""
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return False
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
            if kind == 4 and not flags & 1:
                self.sock.sendall(_frame(4, 1, 0))  # SETTINGS ack
            elif kind == 6 and not flags & 1:
                self.sock.sendall(_frame(6, 1, 0, payload))  # PING ack
            elif kind == 7:
                raise RuntimeError("GOAWAY")
            elif kind == 3 and stream == 1:
                raise RuntimeError("stream reset")
            elif kind in (0, 1) and stream == 1 and flags & 1:
                return True
        return False

    def read_response(self):
        if self.h2:
            return self._read_h2()
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").lower().split("\r\n")
        if not lines[0].startswith("http/1.1 200"):
            raise RuntimeError(f"answer {lines[0]!r}")
        length = next((int(h.split(":", 1)[1]) for h in lines if h.startswith("content-length:")), None)
        if length is None:
            while not self.buf.endswith(b"0\r\n\r\n"):
                self._more()
            self.buf = b""
            return
        while len(self.buf) < length:
            self._more()
        self.buf = self.buf[length:]

    def _read_h2(self):
        while not self._frames():
            self._more()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def section(res):
    """The report's lines for this scenario."""
    runs = res["runs"]
    lines = ["## Idle connections", "",
             f"{res['connections']:,} keep-alive client connections, each after one `GET /` "
             f"(1 KiB answer), then idle; RSS read after {res['settle_s']:.0f} s of idling. "
             "Per connection: (RSS with them open − RSS before) / connections. Fresh server per "
             "row: nginx (1 worker, `worker_connections` raised) and Portcullis (1 worker, "
             "`idle_timeout: 120s` as nginx's `keepalive_timeout`), HTTP/2 clients answering "
             "PINGs, "
             f"pinned as above. nginx's base RSS with the 4,096 worker connections of the other "
             f"scenarios: {res['nginx_stock_kib'] / 1024:.1f} MiB.", "",
             "| protocol | pattern | nginx base MiB | nginx KiB/conn | Portcullis base MiB "
             "| Portcullis KiB/conn | × nginx |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for mode, label, use_tls, _ in MODES:
        for pattern, plabel in PATTERNS:
            ng, pc = runs.get(f"nginx/{mode}/{pattern}"), runs.get(f"portcullis/{mode}/{pattern}")
            if ng is None and pc is None:
                continue

            def cell(r, k, scale=1.0, fmt="{:.1f}"):
                if r is None or "error" in r:
                    return (r or {}).get("error", "—")
                return fmt.format(r[k] / scale)
            x = "—"
            if ng and pc and "error" not in ng and "error" not in pc and ng["per_conn_kib"] > 0:
                x = f"{pc['per_conn_kib'] / ng['per_conn_kib']:.1f}"
            lines.append(f"| {label} | {plabel} | {cell(ng, 'base_kib', 1024)} "
                         f"| {cell(ng, 'per_conn_kib')} | {cell(pc, 'base_kib', 1024)} "
                         f"| {cell(pc, 'per_conn_kib')} | {x} |")
    lines.append("")
    return lines


def targets(res):
    """[(target, measured, verdict)]."""
    runs, out = res["runs"], []
    what = {"h1": "HTTP/1.1", "h2c": "HTTP/2 (h2c)", "h2_tls": "HTTP/2 over TLS"}
    for mode, limit in (("h1", TARGET_H1_KIB), ("h2c", TARGET_H2_KIB), ("h2_tls", TARGET_H2_KIB)):
        r = runs.get(f"portcullis/{mode}/sequential") or {}
        if "per_conn_kib" in r:
            out.append((f"idle {what[mode]} connection ≤ {limit:.0f} KiB (sequential)",
                        f"{r['per_conn_kib']:.1f} KiB", "PASS" if r["per_conn_kib"] <= limit else "MISS"))
    pc, ng = runs.get("portcullis/h1/sequential") or {}, res.get("nginx_stock_kib")
    if "base_kib" in pc and ng:
        out.append(("base RSS ≤ nginx's (4,096 worker connections)",
                    f"{pc['base_kib'] / 1024:.1f} vs {ng / 1024:.1f} MiB",
                    "PASS" if pc["base_kib"] <= ng else "MISS"))
    return out
