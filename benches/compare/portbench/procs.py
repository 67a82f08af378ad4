"""Processes a run starts: pinned to a core, logged to a file, measured through /proc,
and always stopped at exit (even on Ctrl-C, SIGTERM or an error)."""

import atexit
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every process group we started and have not stopped yet: stopped at exit.
_live = []

# Niceness for everything measured (servers and load generators); negative values let a
# run hold its cores against other work on a shared machine (`--nice`).
NICE = 0


def pinned(argv, cpu):
    """`argv` pinned to `cpu` (taskset execs, so the pid stays the server's), reniced."""
    out = ["taskset", "-c", str(cpu)] + list(argv) if cpu is not None else list(argv)
    return (["nice", "-n", str(NICE)] + out) if NICE else out


class Proc:
    """A process we started, in its own process group so that its children (nginx and
    haproxy workers) are stopped with it."""

    def __init__(self, name, argv, cpu=None, log=None, env=None, cwd=None):
        self.name = name
        argv = pinned(argv, cpu)
        self.log = log
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        if log:
            out.close()
        self.pid = self.popen.pid
        _live.append(self)

    def alive(self):
        return self.popen.poll() is None

    def pids(self):
        """This process and its descendants (taskset execs, so the pid is the server's)."""
        return tree(self.pid)

    def log_tail(self, lines=15):
        if not self.log or not os.path.exists(self.log):
            return "(no log)"
        with open(self.log, "rb") as f:
            data = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(data[-lines:])

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, grace=3.0):
        """SIGTERM to the group, then SIGKILL after `grace` seconds."""
        if self in _live:
            _live.remove(self)
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.popen.poll() is None:
            time.sleep(0.05)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def stop_all():
    for p in list(reversed(_live)):
        p.stop(grace=1.0)


def install_cleanup(budget_s):
    """Stops everything at exit, on SIGINT/SIGTERM/SIGHUP, and when the whole run
    exceeds `budget_s` seconds (so nothing outlives a stuck run)."""
    atexit.register(stop_all)

    def on_signal(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}; cleaning up")

    def on_alarm(_signum, _frame):
        raise SystemExit(f"run exceeded its {budget_s}s budget; cleaning up")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(budget_s))


def tree(root):
    """`root` and all its descendants, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids):
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state is field 3, so utime (14) and stime (15)
        # sit at offsets 11 and 12.
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kib(pids):
    """Sum of VmRSS over these processes (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def free_port():
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, headers=None, timeout=2.0, cafile=None):
    """(status, headers, body) of a GET; HTTP errors are answers, not exceptions. An
    https URL is verified against `cafile`."""
    req = urllib.request.Request(url, headers=headers or {})
    ctx = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_ready(proc, url, timeout=30.0, headers=None, want=200, cafile=None):
    """Waits until `url` answers `want` (an https one verified against `cafile`);
    raises with the log's tail if the process dies or the time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before {url} "
                f"answered {want}; its log ends:\n{proc.log_tail()}"
            )
        try:
            status, _, body = http_get(url, headers=headers, timeout=1.0, cafile=cafile)
            if status == want:
                return
            last = f"status {status}: {body[:200]!r}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(
        f"{proc.name}: {url} did not answer {want} within {timeout}s (last: {last}); "
        f"its log ends:\n{proc.log_tail()}"
    )


def get_json(url, timeout=2.0):
    status, _, body = http_get(url, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: expected 200, got {status}: {body[:200]!r}")
    return json.loads(body)
