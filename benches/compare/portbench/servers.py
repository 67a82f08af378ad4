"""The servers of a run: the fixed backend, and each proxy under test with the
configuration that makes the comparison fair (one worker, keep-alive to the upstream,
no access log), all bound to 127.0.0.1 only."""

import os
import subprocess
import shutil

from .procs import Proc, free_port, wait_ready

# Every request carries the key the 5-filter chain's api-key filter wants, whatever the
# proxy, so that every row sees the same bytes.
API_KEY = "bench-key-0123456789"
REQUEST_HEADERS = {"x-api-key": API_KEY}
BODY = "x" * 1023 + "\n"  # 1 KiB


class Server:
    """A running server: its process, the URL the load goes to, where it listens."""

    def __init__(self, name, proc, url, admin=None, conf_dir=None):
        self.name = name
        self.proc = proc
        self.url = url
        self.admin = admin
        self.conf_dir = conf_dir

    def stop(self):
        self.proc.stop()


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _nginx(name, workdir, cpu, server_block, connections=4096):
    """nginx in the foreground with its own prefix, pid and logs under `workdir`, its
    worker holding up to `connections` connections."""
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    conf = os.path.join(workdir, "nginx.conf")
    _write(conf, f"""
worker_processes 1;
worker_rlimit_nofile {connections + 64};
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {workdir}/tmp_body;
    proxy_temp_path {workdir}/tmp_proxy;
    fastcgi_temp_path {workdir}/tmp_fcgi;
    uwsgi_temp_path {workdir}/tmp_uwsgi;
    scgi_temp_path {workdir}/tmp_scgi;
{server_block}
}}
""")
    return Proc(name, ["nginx", "-p", workdir, "-c", conf, "-g", "daemon off;"],
                cpu=cpu, log=os.path.join(workdir, "stdout.log"))


def start_backend(workdir, cpu, connections=4096):
    """nginx answering every request with 200 and a 1 KiB body."""
    port = free_port()
    proc = _nginx("backend", workdir, cpu, f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{ default_type text/plain; return 200 "{BODY[:-1]}\\n"; }}
    }}""", connections)
    url = f"http://127.0.0.1:{port}/"
    wait_ready(proc, url)
    return Server("backend", proc, url)


def start_nginx_proxy(workdir, cpu, backend_port, certs=None, connections=4096, h2c=False):
    """nginx as a reverse proxy: one worker, upstream keep-alive, no access log. With
    `certs` (see `tls_certs`) it terminates TLS 1.2/1.3 (and HTTP/2 by ALPN) with its
    default ciphers, and keeps no session cache and issues no reusable ticket, so that
    every handshake is a full one. Its worker holds up to `connections` connections
    (client and upstream ones together). With `h2c` its port speaks HTTP/2 with prior
    knowledge only (nginx 1.22 tells no HTTP/1.1 apart there), and a second, HTTP/1.1
    port answers the readiness check."""
    port = free_port()
    tls = ""
    if certs:
        # nginx 1.22 offers only up to TLS 1.2 unless told; Portcullis offers 1.2 and 1.3.
        tls = f"""
        ssl_certificate {certs['cert']};
        ssl_certificate_key {certs['key']};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;"""
    listen = f"127.0.0.1:{port}" + (" ssl http2" if certs else " http2" if h2c else "")
    ready_port = free_port() if h2c else port
    ready_listen = f"\n        listen 127.0.0.1:{ready_port};" if h2c else ""
    proc = _nginx("nginx", workdir, cpu, f"""
    upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 128; }}
    server {{
        listen {listen} backlog=4096;{ready_listen}{tls}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}""", connections)
    url = f"{'https' if certs else 'http'}://127.0.0.1:{port}/"
    wait_ready(proc, url.replace(f":{port}/", f":{ready_port}/"), cafile=certs and certs["ca"])
    return Server("nginx", proc, url)


def start_haproxy(workdir, cpu, backend_port):
    """HAProxy: one thread, keep-alive on both sides, connection reuse to the backend."""
    port = free_port()
    cfg = os.path.join(workdir, "haproxy.cfg")
    _write(cfg, f"""
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:{backend_port}
""")
    proc = Proc("haproxy", ["haproxy", "-db", "-f", cfg], cpu=cpu,
                log=os.path.join(workdir, "stdout.log"))
    url = f"http://127.0.0.1:{port}/"
    wait_ready(proc, url)
    return Server("haproxy", proc, url)


# === Portcullis ===

FIVE_FILTERS = """
filters:
  - name: allow
    builtin: ip-allowlist
    config: { allow: [127.0.0.0/8, "::1/128"] }
  - name: limit
    builtin: rate-limit
    # Never hit: the bench measures the check, not the refusal.
    config: { rate: 100000000, per: 1s, burst: 100000000, key: client_ip }
  - name: keys
    builtin: api-key
    config: { header: x-api-key, keys: [ { key: "%s", consumer: bench } ] }
  - name: rewrite
    builtin: headers
    config:
      request: { set: { x-env: bench } }
      response: { set: { x-chain: CHAIN } }
  - name: moved
    builtin: redirect
    # Never fires: the bench's host is 127.0.0.1.
    config: { regex: "^https?://old\\\\.example\\\\.com/(.*)", replacement: "https://new.example.com/${1}" }
""" % API_KEY

CHAIN_FIVE = ["allow", "limit", "keys", "rewrite", "moved"]
# The reload scenario's second chain: different order and length, same outcome (200).
CHAIN_ALT = ["rewrite", "keys", "allow"]


def portcullis_files(port, admin_port, backend_port, workers, chain, chain_tag="a", certs=None,
                     filters_yaml=None, limits=None, upstream="backend"):
    """{file name: YAML} for a conf dir: routes live in their own file so that the
    reload scenario rewrites only that one. With `certs`, the listener terminates TLS
    with them (Portcullis's defaults otherwise: TLS 1.2 and 1.3, ALPN h2 and http/1.1).
    The chain's filters are the five standard ones unless `filters_yaml` defines them;
    `limits` is the listener's `limits:` mapping (flow style), if any; `upstream` the
    route's (`echo@internal` answers from the proxy itself)."""
    tls = ""
    if certs:
        tls = f"""
    tls:
      certificates:
        - {{ cert: "{certs['cert']}", key: "{certs['key']}" }}"""
    limits_yaml = f"\n    limits: {limits}" if limits else ""
    main = f"""admin:
  address: 127.0.0.1:{admin_port}
workers: {workers}
listeners:
  - name: web
    address: 127.0.0.1:{port}{tls}{limits_yaml}
upstreams:
  - name: backend
    targets:
      - {{ address: 127.0.0.1:{backend_port} }}
"""
    files = {"main.yaml": main, "routes.yaml": routes_yaml(chain, upstream)}
    if chain:
        files["filters.yaml"] = filters_yaml or FIVE_FILTERS.replace("CHAIN", chain_tag)
    return files


def routes_yaml(chain, upstream="backend"):
    filters = f"    filters: [{', '.join(chain)}]\n" if chain else ""
    return f"routes:\n  - name: all\n{filters}    upstream: {upstream}\n"


def spawn_portcullis(binary, workdir, cpu, backend_port, workers=1, chain=None, env=None,
                     certs=None, cache=None, filters_yaml=None, limits=None, upstream="backend",
                     layout=None):
    """`portcullis run --conf DIR` with the access log silenced (nginx's is off too),
    started and not waited for: (proc, port, admin_port, conf dir). Its module cache is
    `cache`, by default a directory of `workdir` (never the user's own); `filters_yaml`
    as in `portcullis_files`; `layout="configmap"` lays the directory out as a mounted
    Kubernetes ConfigMap."""
    if not binary or not os.path.exists(binary):
        raise RuntimeError(f"no Portcullis binary at {binary}")
    port, admin_port = free_port(), free_port()
    conf = os.path.join(workdir, "conf")
    files = portcullis_files(port, admin_port, backend_port, workers, chain, certs=certs,
                             filters_yaml=filters_yaml, limits=limits, upstream=upstream)
    for name, text in files.items():
        _write(os.path.join(conf, name), text)
    if layout == "configmap":
        to_configmap(conf)
    penv = dict(os.environ, RUST_LOG="warn",
                PORTCULLIS_MODULE_CACHE=cache or os.path.join(workdir, "module-cache"))
    penv.update(env or {})
    proc = Proc("portcullis", [binary, "run", "--conf", conf], cpu=cpu,
                log=os.path.join(workdir, "stdout.log"), env=penv)
    return proc, port, admin_port, conf


def to_configmap(conf_dir):
    """Turns a flat config dir into the layout the kubelet mounts a ConfigMap as: the
    files in a timestamped directory, `..data` pointing at it, each key a symlink
    through `..data`. Done before the proxy starts."""
    first = "..2026_01_01_00_00_00.000000000"
    os.makedirs(os.path.join(conf_dir, first))
    for name in sorted(os.listdir(conf_dir)):
        if name.startswith("."):
            continue
        os.rename(os.path.join(conf_dir, name), os.path.join(conf_dir, first, name))
        os.symlink(os.path.join("..data", name), os.path.join(conf_dir, name))
    os.symlink(first, os.path.join(conf_dir, "..data"))


def compile_builtins(binary, cache):
    """`portcullis compile --builtins` into `cache`: a warm module cache."""
    subprocess.run([binary, "compile", "--builtins", "--cache-dir", cache], check=True,
                   stdout=subprocess.DEVNULL)


def start_portcullis(binary, workdir, cpu, backend_port, workers=1, chain=None, env=None,
                     certs=None, cache=None, filters_yaml=None, limits=None, upstream="backend",
                     layout=None):
    """`spawn_portcullis`, waited for until it serves; with `certs` (see `tls_certs`),
    its listener terminates TLS."""
    proc, port, admin_port, conf = spawn_portcullis(binary, workdir, cpu, backend_port,
                                                    workers, chain, env, certs, cache,
                                                    filters_yaml, limits, upstream, layout)
    admin = f"http://127.0.0.1:{admin_port}"
    wait_ready(proc, admin + "/ready", timeout=60)
    url = f"{'https' if certs else 'http'}://127.0.0.1:{port}/"
    wait_ready(proc, url, headers=REQUEST_HEADERS, cafile=certs and certs["ca"])
    return Server("portcullis", proc, url, admin=admin, conf_dir=conf)


# === Traefik ===

TRAEFIK_PLUGIN = "benchheader"


def start_traefik(binary, workdir, cpu, backend_port, plugin_wasm, manifest, chain_length):
    """Traefik with one router to the backend through `chain_length` instances of the
    http-wasm plugin `plugin_wasm` (a local plugin: plugins-local/src/<module>/ in its
    working dir, with the `manifest` .traefik.yml; none is loaded for a chain of 0),
    GOMAXPROCS=1, log at ERROR, no access log, no version check or usage report
    (nothing leaves 127.0.0.1)."""
    if not binary or not os.path.exists(binary):
        raise RuntimeError(f"no Traefik binary at {binary}")
    port = free_port()
    names = [f"h{i + 1}" for i in range(chain_length)]
    plugins = middlewares = ""
    if names:
        plugin_dir = os.path.join(workdir, "plugins-local", "src", TRAEFIK_PLUGIN)
        os.makedirs(plugin_dir, exist_ok=True)
        shutil.copyfile(plugin_wasm, os.path.join(plugin_dir, "plugin.wasm"))
        shutil.copyfile(manifest, os.path.join(plugin_dir, ".traefik.yml"))
        plugins = f"""experimental:
  localPlugins:
    {TRAEFIK_PLUGIN}: {{ moduleName: {TRAEFIK_PLUGIN} }}
"""
        middlewares = f"""      middlewares: [{", ".join(names)}]
  middlewares:
""" + "".join(f"    {n}: {{ plugin: {{ {TRAEFIK_PLUGIN}: {{}} }} }}\n" for n in names)
    _write(os.path.join(workdir, "traefik.yml"), f"""global: {{ checkNewVersion: false, sendAnonymousUsage: false }}
log: {{ level: ERROR }}
entryPoints:
  web: {{ address: "127.0.0.1:{port}" }}
providers:
  file: {{ filename: {workdir}/dynamic.yml }}
{plugins}""")
    _write(os.path.join(workdir, "dynamic.yml"), f"""http:
  services:
    backend:
      loadBalancer:
        servers: [ {{ url: "http://127.0.0.1:{backend_port}" }} ]
  routers:
    all:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      service: backend
{middlewares}""")
    # Local plugins are found relative to the working directory.
    proc = Proc("traefik", [binary, f"--configFile={workdir}/traefik.yml"], cpu=cpu,
                log=os.path.join(workdir, "stdout.log"), cwd=workdir,
                env=dict(os.environ, GOMAXPROCS="1"))
    url = f"http://127.0.0.1:{port}/"
    wait_ready(proc, url, headers=REQUEST_HEADERS, timeout=60)
    return Server("traefik", proc, url)
