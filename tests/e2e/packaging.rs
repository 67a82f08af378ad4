//! What ships beside the binary, checked against the binary: shell completions parse,
//! the Kubernetes manifests validate against the Kubernetes schemas and agree with the
//! configuration they carry (probes, ports, Secrets, grace period), that
//! configuration and the container image's load, and the systemd unit verifies with
//! reload and drain wired.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;
use crate::tls::pki::{Alg, Ca};

/// `<repository>/<path>`.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// === completions ===

#[test]
fn bash_completions_parse_and_register() {
    let (code, script, stderr) = run_to_end(["completions", "bash"]);
    assert_eq!(code, Some(0), "portcullis completions bash: {stderr}");
    for word in [
        "run",
        "check",
        "compile",
        "filter-test",
        "completions",
        "--conf",
    ] {
        assert!(script.contains(word), "the bash completion lacks `{word}`");
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("portcullis.bash");
    std::fs::write(&file, &script).unwrap_or_else(|e| panic!("write: {e}"));
    let parsed = Command::new("bash").arg("-n").arg(&file).output();
    let parsed = parsed.unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    assert!(
        parsed.status.success(),
        "bash -n refuses the completion: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    // Sourced, it registers a completion for `portcullis`.
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p portcullis",
            file.display()
        ))
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    let registered = String::from_utf8_lossy(&sourced.stdout);
    assert!(
        sourced.status.success() && registered.contains("portcullis"),
        "no completion registered: {registered} {}",
        String::from_utf8_lossy(&sourced.stderr)
    );

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (code, script, stderr) = run_to_end(["completions", shell]);
        assert_eq!(code, Some(0), "portcullis completions {shell}: {stderr}");
        assert!(script.contains("portcullis"), "{shell}: {script}");
    }
    let (code, _, stderr) = run_to_end(["completions", "tcsh"]);
    assert_eq!(code, Some(2), "an unknown shell is a usage error: {stderr}");
}

// === Kubernetes ===

/// Every document of a YAML file, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    docs.iter().map(json).collect()
}

fn json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().map(str::to_owned).unwrap_or_default(), json(v)))
                .collect(),
        ),
        Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
        Yaml::String(s) | Yaml::Real(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Boolean(b) => Value::Bool(*b),
        _ => Value::Null,
    }
}

/// The one document of `kind` among `docs` named `name` (any name when `None`).
fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
        .unwrap_or_else(|| panic!("no {kind} {name:?} in deploy/kubernetes"))
}

fn port_of(address: &str) -> u64 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("`{address}` has no port"))
}

#[test]
fn kubernetes_manifests_validate_and_agree_with_their_configuration() {
    let dir = repo("deploy/kubernetes");
    let files = [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "secret.yaml",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();

    // Against the Kubernetes schemas (strict: unknown fields are errors).
    let python = python("kubernetes_validate");
    let out = Command::new(&python)
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(&paths)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubernetes-validate: {e}"));
    assert!(
        out.status.success(),
        "the manifests do not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = read(&dir.join("kustomization.yaml"));
    for f in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        assert!(listed.contains(f), "kustomization.yaml does not list {f}");
    }

    let docs: Vec<Value> = paths.iter().flat_map(|p| documents(p)).collect();
    let deployment = find(&docs, "Deployment", None);
    let service = find(&docs, "Service", None);
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let selects = |selector: &Value, what: &str| {
        let selector = selector.as_object().cloned().unwrap_or_default();
        assert!(!selector.is_empty(), "{what} selects nothing");
        for (k, v) in selector {
            assert_eq!(
                labels[&k], v,
                "{what} selects {k}={v}, the pods are {labels}"
            );
        }
    };
    selects(
        &deployment["spec"]["selector"]["matchLabels"],
        "the Deployment",
    );
    selects(&service["spec"]["selector"], "the Service");
    let container = &pod["spec"]["containers"][0];
    let ports = container["ports"].as_array().cloned().unwrap_or_default();
    let container_port = |name_or_number: &Value| -> u64 {
        if let Some(n) = name_or_number.as_u64() {
            return n;
        }
        ports
            .iter()
            .find(|p| p["name"] == *name_or_number)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name_or_number}"))
    };

    // The configuration the ConfigMap carries.
    let conf_map = find(&docs, "ConfigMap", None);
    let conf_text = conf_map["data"]["portcullis.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no portcullis.yaml"))
        .to_owned();
    let conf = json(&yaml_rust2::YamlLoader::load_from_str(&conf_text).unwrap_or_default()[0]);
    let admin_port = port_of(conf["admin"]["address"].as_str().unwrap_or_default());
    assert!(
        conf["admin"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("0.0.0.0:")),
        "the kubelet probes the pod's address: the admin listener must bind it"
    );

    // Probes: readiness on /ready, liveness (and startup) on /live, on the admin port.
    for (probe, path) in [
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/live"),
        ("startupProbe", "/live"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(&get["port"]), admin_port, "{probe}'s port");
    }
    // Every listener has its container port, and the Service's target ports exist.
    for l in conf["listeners"].as_array().cloned().unwrap_or_default() {
        let port = port_of(l["address"].as_str().unwrap_or_default());
        assert!(
            ports.iter().any(|p| p["containerPort"] == port),
            "listener {} (port {port}) has no container port",
            l["name"]
        );
    }
    for p in service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let target = container_port(&p["targetPort"]);
        assert!(
            target != admin_port,
            "the admin port is not for the Service"
        );
    }
    for what in ["requests", "limits"] {
        let r = &container["resources"][what];
        assert!(
            r["cpu"].is_string() && r["memory"].is_string(),
            "resources.{what}: {r}"
        );
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    // Volumes: the ConfigMap at the directory `run --conf` reads, the TLS Secret where
    // the configuration's certificates are.
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mount_of = |volume: &Value| -> String {
        mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("volume {} is not mounted", volume["name"]))
            .to_owned()
    };
    let conf_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == conf_map["metadata"]["name"])
        .unwrap_or_else(|| panic!("no volume of the ConfigMap"));
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let conf_dir = mount_of(conf_volume);
    assert!(
        args.windows(2).any(|w| w == ["--conf", conf_dir.as_str()]),
        "the container must run --conf {conf_dir}: {args:?}"
    );
    let tls_secret = find(&docs, "Secret", Some("portcullis-tls"));
    assert_eq!(tls_secret["type"], "kubernetes.io/tls");
    let tls_volume = volumes
        .iter()
        .find(|v| v["secret"]["secretName"] == tls_secret["metadata"]["name"])
        .unwrap_or_else(|| panic!("no volume of the TLS Secret"));
    let tls_dir = mount_of(tls_volume);
    assert!(
        conf_text.contains(&format!("{tls_dir}/tls.crt"))
            && conf_text.contains(&format!("{tls_dir}/tls.key")),
        "the configuration's certificate is not the mounted Secret's ({tls_dir})"
    );

    // Admin tokens: each token_env is set from a key the token Secret has.
    let env = container["env"].as_array().cloned().unwrap_or_default();
    let secret_keys = |name: &Value| -> BTreeSet<String> {
        find(&docs, "Secret", name.as_str())["stringData"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut token_env = Vec::new();
    for t in conf["admin"]["tokens"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let var = t["token_env"].as_str().unwrap_or_default().to_owned();
        let from = env
            .iter()
            .find(|e| e["name"] == var.as_str())
            .map(|e| &e["valueFrom"]["secretKeyRef"])
            .unwrap_or_else(|| panic!("token_env {var} is not in the container's env"));
        let key = from["key"].as_str().unwrap_or_default();
        assert!(
            secret_keys(&from["name"]).contains(key),
            "{var} comes from {}.{key}, which the Secret does not have",
            from["name"]
        );
        token_env.push(var);
    }
    assert!(!token_env.is_empty(), "an admin on 0.0.0.0 needs tokens");

    // The grace period covers accept_grace + drain_timeout.
    let secs = |d: &Value| -> u64 {
        d.as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let needed = secs(&conf["shutdown"]["accept_grace"]) + secs(&conf["shutdown"]["drain_timeout"]);
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} must exceed accept_grace + drain_timeout ({needed} s)"
    );

    // The configuration loads, with a certificate where the Secret is mounted and the
    // tokens in the environment.
    let ca = Ca::new("Manifest CA");
    let leaf = ca.server(&["portcullis.test"], Alg::Ecdsa);
    let check_dir = ConfDir::new();
    let certs = check_dir.path().join("tls");
    check_dir.write("tls/tls.crt", &leaf.chain_pem);
    check_dir.write("tls/tls.key", &leaf.key_pem);
    check_dir.write(
        "portcullis.yaml",
        conf_text.replace(&tls_dir, &certs.display().to_string()),
    );
    let (mut cmd, _cache) = portcullis();
    cmd.args(["check", "--conf"]).arg(check_dir.path());
    for (i, var) in token_env.iter().enumerate() {
        cmd.env(var, format!("{i}-0123456789abcdef0123456789abcdef"));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("portcullis check: {e}"));
    assert!(
        out.status.success(),
        "the ConfigMap's configuration does not load:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// === the container image ===

#[test]
fn the_dockerfile_builds_in_stages_and_serves_a_configuration_that_loads() {
    let dockerfile = read(&repo("Dockerfile"));
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect::<Vec<_>>();
    assert!(
        stages.len() >= 2,
        "a multi-stage build: {} FROM",
        stages.len()
    );
    let (build, runtime) = (stages[0], stages[stages.len() - 1]);
    assert!(
        build.contains("rustup target add wasm32-wasip1"),
        "the build stage must add the wasm target"
    );
    assert!(
        build.contains("cargo build --profile dist"),
        "the build stage builds the shipped (dist) binary"
    );
    // The dist profile is the small one: whole-program LTO and no symbols.
    let manifest = read(&repo("Cargo.toml"));
    let dist = manifest
        .split("[profile.dist]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_else(|| panic!("Cargo.toml has no [profile.dist]"));
    for want in ["lto = \"fat\"", "codegen-units = 1", "strip = \"symbols\""] {
        assert!(dist.contains(want), "[profile.dist] lacks {want}");
    }
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap_or_else(|| panic!("the final stage sets no USER"));
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "the final stage runs as {user}"
    );
    assert!(
        runtime.contains("VOLUME [\"/etc/portcullis\"]"),
        "conf as a volume"
    );
    assert!(
        runtime.contains("CMD [\"run\", \"--conf\", \"/etc/portcullis\"]"),
        "serves /etc/portcullis"
    );
    assert!(
        !runtime.contains("cargo"),
        "the final stage carries no toolchain"
    );
    let ignore = read(&repo(".dockerignore"));
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "target/ stays out of the context"
    );

    // The configuration the image serves by default loads, admin on loopback.
    let conf = repo("deploy/docker/conf");
    let text = read(&conf.join("portcullis.yaml"));
    assert!(
        text.contains("address: 127.0.0.1:9901"),
        "admin stays on loopback"
    );
    let (code, stdout, stderr) =
        run_to_end(["check".into(), "--conf".into(), conf.into_os_string()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

// === systemd ===

#[test]
fn the_systemd_unit_verifies_with_reload_and_drain_wired() {
    let unit = read(&repo("deploy/systemd/portcullis.service"));
    let has = |line: &str| unit.lines().any(|l| l == line);
    assert!(has("Type=notify"), "the proxy says READY=1 once serving");
    assert!(
        has("ExecReload=/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
    assert!(has("KillSignal=SIGTERM"), "stop is SIGTERM, the drain");
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        stop > 30,
        "TimeoutStopSec={stop} must exceed the 30 s drain_timeout"
    );
    let socket = "--upgrade-socket /run/portcullis/upgrade.sock";
    assert!(unit.contains(socket), "ExecStart offers upgrades");
    let upgrade = read(&repo("deploy/systemd/upgrade.conf"));
    assert!(
        upgrade.contains("ExecReload=\n") && upgrade.contains(socket),
        "the drop-in replaces ExecReload with an upgrade on the unit's socket"
    );
    assert!(
        upgrade.contains("--upgrade-from /run/portcullis/upgrade.sock"),
        "the drop-in takes over from the running process"
    );

    // systemd's own parser, with the binary this test built in place of /usr/bin's
    // (verify checks that the commands exist); the drop-in applied too.
    let verify = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        verify.is_ok_and(|o| o.status.success()),
        "this test needs systemd-analyze: apt-get install systemd (or .ci/install-toolchains)"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let binary = env!("CARGO_BIN_EXE_portcullis");
    let file = dir.path().join("portcullis.service");
    std::fs::write(&file, unit.replace("/usr/bin/portcullis", binary))
        .unwrap_or_else(|e| panic!("write: {e}"));
    let dropins = dir.path().join("portcullis.service.d");
    let _ = std::fs::create_dir(&dropins);
    std::fs::write(
        dropins.join("upgrade.conf"),
        upgrade.replace("/usr/bin/portcullis", binary),
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze verify: {e}"));
    let said = String::from_utf8_lossy(&out.stderr);
    // Only lines about this unit: on a host without systemd running, verify also
    // complains about the system's own units.
    let about: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("portcullis") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        out.status.success() && about.is_empty(),
        "systemd-analyze verify: {said}"
    );
}
