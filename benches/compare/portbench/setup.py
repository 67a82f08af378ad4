"""What a run needs before it can measure anything: the tools (installed from Debian
when missing), the Portcullis release binary (built here), and a description of the
machine and versions for the report."""

import os
import platform
import shutil
import subprocess
import sys
import time

# Tool on PATH -> the Debian package that provides it.
TOOLS = {
    "nginx": "nginx",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "haproxy": "haproxy",
    "taskset": "util-linux",
    "openssl": "openssl",
}


def say(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ensure_tools(skip_install=False):
    """Installs the Debian packages of missing tools (apt-get update first), saying so."""
    missing = {t: p for t, p in TOOLS.items() if shutil.which(t) is None}
    if not missing:
        return
    pkgs = sorted(set(missing.values()))
    if skip_install:
        raise SystemExit(f"missing tools {sorted(missing)}; install: apt-get install {' '.join(pkgs)}")
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing tools {sorted(missing)} and no apt-get to install {pkgs}")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n", "-E"]
    say(f"missing {sorted(missing)}: installing {pkgs} with apt-get (apt-get update first)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Another apt may hold the lock (e.g. unattended upgrades): wait for it, bounded.
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends"] + pkgs):
        for attempt in range(30):
            r = subprocess.run(sudo + cmd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
            if r.returncode == 0:
                break
            out = r.stdout.decode("utf-8", "replace")
            if "lock" in out and attempt < 29:
                time.sleep(5)
                continue
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-2000:]}")
    still = [t for t in missing if shutil.which(t) is None]
    if still:
        raise SystemExit(f"still missing after install: {still}")
    say("installed " + ", ".join(pkgs))


def _first_line(argv, ok_only=False):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if ok_only and r.returncode != 0:
        return None
    text = r.stdout.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "?"


def target_dir():
    """The same convention as .ci/run: CARGO_TARGET_DIR, else ~/.cache/portcullis/target."""
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "portcullis", "target")


def build_portcullis(repo):
    """`cargo build --release -p portcullis`; returns the binary's path."""
    tdir = target_dir()
    say(f"building Portcullis: cargo build --release -p portcullis (CARGO_TARGET_DIR={tdir})")
    env = dict(os.environ, CARGO_TARGET_DIR=tdir)
    _ensure_wasm_target(repo)
    t0 = time.monotonic()
    r = subprocess.run(["cargo", "build", "--release", "-p", "portcullis"], cwd=repo, env=env,
                       timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"cargo build --release failed with exit {r.returncode}")
    say(f"built in {time.monotonic() - t0:.0f}s")
    return os.path.join(tdir, "release", "portcullis")


def _ensure_wasm_target(repo):
    """The standard filters build for wasm32-wasip1 inside the host's build; rustup does
    not add a target that rust-toolchain.toml lists to an installed toolchain (as .ci/run
    knows), so add it here too."""
    if shutil.which("rustup") is None:
        return
    r = subprocess.run(["rustup", "target", "list", "--installed"], cwd=repo,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    if b"wasm32-wasip1" not in r.stdout:
        say("adding the wasm32-wasip1 target (rustup target add)")
        subprocess.run(["rustup", "target", "add", "wasm32-wasip1"], cwd=repo, timeout=600)


def machine(repo, portcullis_bin):
    """Facts for the report's header."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024} MiB"
    except (OSError, ValueError, IndexError):
        pass
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else "?"
    commit = _first_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_name(),
        "loadavg_at_start": " ".join(load),
        "portcullis": f"{commit}{' (dirty)' if dirty else ''}" + _version(portcullis_bin),
        "rustc": _first_line(["rustc", "-V"]),
        "nginx": _first_line(["nginx", "-v"]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "h2load": _first_line(["h2load", "--version"]),
        "openssl": _first_line(["openssl", "version"]),
    }


def _version(binary):
    if not binary or not os.path.exists(binary):
        return ", no binary"
    v = _first_line([binary, "--version"], ok_only=True)
    return f", {v}" if v else ""


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()
