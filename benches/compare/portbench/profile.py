"""`--perf`: after a Portcullis row's measured run, one more run of the same load under
`perf record`, so that the report can say where the proxy's CPU goes. Kept apart from
the measured run because sampling costs CPU."""

import os
import shutil
import signal
import subprocess

from . import load
from .procs import Proc


def available():
    return shutil.which("perf") is not None


def record(server, opts, cpu_for_perf, load_cpu, headers, out_txt):
    """Profiles `server` under load; writes the top of `perf report` to `out_txt`."""
    data = os.path.join(opts.workdir, f"perf-{os.getpid()}-{server.proc.pid}.data")
    p = Proc("perf", ["perf", "record", "-F", "1999", "-g", "-o", data, "-p",
                      str(server.proc.pid)], cpu=cpu_for_perf,
             log=os.path.join(opts.workdir, "perf.log"))
    try:
        load.wrk(server.url, opts.workdir, load_cpu, opts.duration, opts.connections, headers)
    finally:
        p.signal(signal.SIGINT)
        try:
            p.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        p.stop()
    flat = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                           "--percent-limit", "0.7", "-g", "none", "--sort", "dso,symbol"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    incl = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio",
                           "--percent-limit", "3", "-g", "none", "--sort", "symbol"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    with open(out_txt, "w") as f:
        f.write("# self time (perf report --no-children --sort dso,symbol)\n")
        f.write(_strip(flat.stdout.decode("utf-8", "replace")))
        f.write("\n# inclusive time (perf report --children --sort symbol)\n")
        f.write(_strip(incl.stdout.decode("utf-8", "replace")))
    os.remove(data)


def _strip(text):
    return "\n".join(l for l in text.splitlines() if l.strip() and not l.startswith("#")) + "\n"
