//! Reload end to end: the real binary watching a real directory. Every way a file can
//! change (in place, renamed over, moved in, deleted and re-created, the directory
//! replaced, Kubernetes' `..data` swap, a module outside the directory) puts the new
//! configuration in force; a bad change leaves the old one serving and says why in
//! `/status`; an open keep-alive connection sees the new configuration on its next
//! request.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// A whole configuration whose one route answers from `echo@internal` as `route`.
fn conf_with_route(route: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
routes:
  - name: {route}
    upstream: echo@internal
"
    )
}

/// Polls until `GET path` is served by `route` (20 s).
async fn wait_served_by(proxy: &Proxy, path: &str, route: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = served_by(proxy, path).await;
        if seen == route {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "expected GET {path} to be served by route {route:?} after the change; it still gets {seen:?}\n/status: {:#}\nstderr:\n{}",
                proxy.status().await,
                proxy.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/status` until the last reload failed (20 s); returns the status.
async fn wait_failed_reload(proxy: &Proxy) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = proxy.status().await;
        if status["last_reload"]["ok"] == false {
            return status;
        }
        if Instant::now() > deadline {
            panic!(
                "expected a failed reload in /status; last /status: {status:#}\nstderr:\n{}",
                proxy.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `/status` reload errors as strings.
fn reload_errors(status: &serde_json::Value) -> Vec<String> {
    status["last_reload"]["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn start(conf: &ConfDir, route: &str) -> Proxy {
    let proxy = Proxy::start(conf);
    assert_eq!(
        proxy.status().await["generation"],
        1,
        "a fresh proxy serves generation 1"
    );
    assert_eq!(served_by(&proxy, "/").await, route);
    proxy
}

#[tokio::test]
async fn an_in_place_write_is_picked_up() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    conf.write("portcullis.yaml", conf_with_route("v2"));
    let status = proxy.wait_for_generation(2).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
    wait_served_by(&proxy, "/", "v2").await;
}

#[tokio::test]
async fn a_slow_in_place_writer_is_only_read_once_it_closes() {
    use std::io::Write;
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    let text = conf_with_route("v2");
    let (head, tail) = text.split_at(text.len() / 2);
    let mut file = std::fs::File::create(conf.path().join("portcullis.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    file.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    file.flush().unwrap_or_else(|e| panic!("{e}"));
    // Well past the debounce: a watcher that does not wait for the writer would load
    // the truncated file now (and fail, or worse, apply half of it).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = proxy.status().await;
    assert_eq!(
        status["generation"], 1,
        "reloaded while the writer had the file open: {status:#}"
    );
    assert_eq!(
        status["last_reload"]["ok"], true,
        "read the half-written file: {status:#}"
    );
    file.write_all(tail.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(file);
    proxy.wait_for_generation(2).await;
    wait_served_by(&proxy, "/", "v2").await;
    assert_eq!(
        proxy.status().await["generation"],
        2,
        "one reload for one write"
    );
}

#[tokio::test]
async fn an_editor_rename_over_is_picked_up() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    // What vim (backupcopy=no), VS Code and most tools do: write a temp file, rename it.
    let tmp = conf.write(".portcullis.yaml.swp", conf_with_route("v2"));
    std::fs::rename(&tmp, conf.path().join("portcullis.yaml")).unwrap_or_else(|e| panic!("{e}"));
    proxy.wait_for_generation(2).await;
    wait_served_by(&proxy, "/", "v2").await;
}

#[tokio::test]
async fn a_new_file_moved_into_place_is_picked_up() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    let staging = tempfile::tempdir_in(conf.path().parent().unwrap_or(Path::new("/tmp")))
        .unwrap_or_else(|e| panic!("{e}"));
    let staged = staging.path().join("extra.yaml");
    std::fs::write(
        &staged,
        "routes:\n  - { name: extra, match: { path_prefix: /extra }, upstream: echo@internal }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&staged, conf.path().join("extra.yaml")).unwrap_or_else(|e| panic!("{e}"));
    proxy.wait_for_generation(2).await;
    wait_served_by(&proxy, "/extra/x", "extra").await;
}

#[tokio::test]
async fn delete_and_recreate_is_picked_up() {
    let conf = ConfDir::with(
        "admin: { address: 127.0.0.1:0 }\nlisteners:\n  - { name: web, address: 127.0.0.1:0 }\n",
    );
    conf.write(
        "routes.yaml",
        "routes:\n  - { name: v1, upstream: echo@internal }\n",
    );
    let proxy = start(&conf, "v1").await;
    conf.remove("routes.yaml");
    conf.write(
        "routes.yaml",
        "routes:\n  - { name: v2, upstream: echo@internal }\n",
    );
    wait_served_by(&proxy, "/", "v2").await;
    assert_eq!(proxy.status().await["last_reload"]["ok"], true);
}

#[tokio::test]
async fn the_directory_replaced_is_picked_up_and_still_watched() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    let dir = conf.path().to_path_buf();
    let old = dir.with_extension("old");
    let new = dir.with_extension("new");
    std::fs::create_dir(&new).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(new.join("portcullis.yaml"), conf_with_route("v2"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&dir, &old).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&new, &dir).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&old);
    wait_served_by(&proxy, "/", "v2").await;
    // The new directory is the one watched now.
    conf.write("portcullis.yaml", conf_with_route("v3"));
    wait_served_by(&proxy, "/", "v3").await;
}

#[tokio::test]
async fn a_kubernetes_configmap_update_is_picked_up() {
    // The layout the kubelet mounts: a timestamped directory, `..data` pointing at it,
    // and each key a symlink through `..data`.
    let conf = ConfDir::new();
    let dir = conf.path();
    std::fs::create_dir(dir.join("..2026_11_26_1")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("..2026_11_26_1/portcullis.yaml"),
        conf_with_route("v1"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    symlink("..2026_11_26_1", dir.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    symlink("..data/portcullis.yaml", dir.join("portcullis.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let proxy = start(&conf, "v1").await;

    // An update: a new directory, a new symlink renamed over `..data`, the old removed.
    std::fs::create_dir(dir.join("..2026_11_26_2")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("..2026_11_26_2/portcullis.yaml"),
        conf_with_route("v2"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    symlink("..2026_11_26_2", dir.join("..data_tmp")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(dir.join("..2026_11_26_1")).unwrap_or_else(|e| panic!("{e}"));
    proxy.wait_for_generation(2).await;
    wait_served_by(&proxy, "/", "v2").await;
}

#[tokio::test]
async fn editor_droppings_do_not_reload() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    for name in [
        ".portcullis.yaml.swp",
        "portcullis.yaml~",
        ".#portcullis.yaml",
        "4913",
        "notes.txt",
    ] {
        conf.write(name, "junk: [");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = proxy.status().await;
    assert_eq!(
        status["generation"], 1,
        "droppings caused a reload: {status:#}"
    );
    assert_eq!(
        status["last_reload"]["ok"], true,
        "droppings were loaded: {status:#}"
    );
}

#[tokio::test]
async fn a_bad_change_keeps_the_old_config_serving_and_says_why() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;

    // Not YAML at all.
    conf.write("portcullis.yaml", "routes: [\n");
    let status = wait_failed_reload(&proxy).await;
    assert_eq!(status["generation"], 1, "{status:#}");
    let errors = reload_errors(&status);
    assert!(
        errors.len() == 1 && errors[0].starts_with("portcullis.yaml:1: invalid YAML"),
        "expected one YAML syntax error at line 1, got {errors:?}"
    );
    assert_eq!(
        served_by(&proxy, "/").await,
        "v1",
        "the old configuration must keep serving"
    );

    // An unknown field.
    conf.write(
        "portcullis.yaml",
        conf_with_route("v2").replace("    upstream:", "    matchh: {}\n    upstream:"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let errors = loop {
        let errors = reload_errors(&proxy.status().await);
        if errors.iter().any(|e| e.contains("matchh")) || Instant::now() > deadline {
            break errors;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        errors,
        [
            "portcullis.yaml:6: routes.v2.matchh: unknown field (expected one of: name, listeners, match, priority, filters, upstream, upstreams, max_request_body, upgrade_idle_timeout, mirror)"
        ]
    );
    assert_eq!(proxy.status().await["generation"], 1);
    assert_eq!(served_by(&proxy, "/").await, "v1");

    // A module that does not exist.
    conf.write(
        "portcullis.yaml",
        conf_with_route("v2").replace("    upstream:", "    filters: [f]\n    upstream:")
            + "filters:\n  - { name: f, wasm: modules/missing.wasm }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let errors = loop {
        let errors = reload_errors(&proxy.status().await);
        if errors.iter().any(|e| e.contains("missing.wasm")) || Instant::now() > deadline {
            break errors;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "portcullis.yaml:9: filters.f.wasm: file not found: `modules/missing.wasm`"
        ),
        "expected the missing module at its `wasm` key, got {errors:?}"
    );
    assert_eq!(proxy.status().await["generation"], 1);
    assert_eq!(served_by(&proxy, "/").await, "v1");

    // Fixed: the next good change goes through, and the status says so.
    conf.write("portcullis.yaml", conf_with_route("v2"));
    let status = proxy.wait_for_generation(2).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
    assert_eq!(reload_errors(&status), Vec::<String>::new());
    wait_served_by(&proxy, "/", "v2").await;
}

#[tokio::test]
async fn a_keep_alive_connection_sees_the_change_on_its_next_request() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    let mut conn = Raw::connect(proxy.addr("web")).await;
    let request = b"GET /ka HTTP/1.1\r\nhost: test\r\n\r\n";
    conn.send(request).await.unwrap_or_else(|e| panic!("{e}"));
    let first = conn
        .read_response(Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(
        first.contains("\"route\":\"v1\""),
        "expected v1's echo, got {first:?}"
    );

    conf.write("portcullis.yaml", conf_with_route("v2"));
    proxy.wait_for_generation(2).await;

    conn.send(request)
        .await
        .unwrap_or_else(|e| panic!("the connection was dropped by the reload: {e}"));
    let second = conn.read_response(Duration::from_secs(10)).await;
    let second =
        second.unwrap_or_else(|| panic!("the keep-alive connection was closed by the reload"));
    assert!(
        second.contains("\"route\":\"v2\""),
        "expected v2's echo on the same connection, got {second:?}"
    );
}

#[tokio::test]
async fn sighup_reloads() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    proxy.reload();
    let status = proxy.wait_for_generation(2).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
}

/// The `x-chain` request header the probe filter added, as the echo saw it.
async fn probe_mark(proxy: &Proxy) -> String {
    echo_header(proxy, "x-chain").await
}

/// Request header `name` as the echo behind `GET /` saw it.
async fn echo_header(proxy: &Proxy, name: &str) -> String {
    let url = proxy.url("web", "/");
    let resp = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let json: serde_json::Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url} not JSON: {e}"));
    json["headers"][name]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

#[tokio::test]
async fn a_module_outside_the_directory_reloads_when_it_changes() {
    let probe = std::fs::read(crate::wasm_build::filter("probe")).unwrap_or_else(|e| panic!("{e}"));
    let modules = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wasm = modules.path().join("probe.wasm");
    std::fs::write(&wasm, &probe).unwrap_or_else(|e| panic!("{e}"));
    let conf = ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
routes:
  - {{ name: v1, filters: [p], upstream: echo@internal }}
filters:
  - {{ name: p, wasm: {}, config: \"pass:one\" }}
",
        wasm.display()
    ));
    let proxy = start(&conf, "v1").await;
    assert_eq!(probe_mark(&proxy).await, "one");

    // Replaced by a rename (what a deploy does).
    let staged = modules.path().join("probe.wasm.new");
    std::fs::write(&staged, &probe).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&staged, &wasm).unwrap_or_else(|e| panic!("{e}"));
    proxy.wait_for_generation(2).await;
    // Rewritten in place.
    std::fs::write(&wasm, &probe).unwrap_or_else(|e| panic!("{e}"));
    let status = proxy.wait_for_generation(3).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
    assert_eq!(probe_mark(&proxy).await, "one");
}

#[tokio::test]
async fn a_module_copied_in_after_its_config_is_picked_up() {
    let conf = ConfDir::with(&conf_with_route("v1"));
    let proxy = start(&conf, "v1").await;
    // The config first (the module is not there yet: the reload fails)...
    conf.write(
        "portcullis.yaml",
        conf_with_route("v2").replace("    upstream:", "    filters: [p]\n    upstream:")
            + "filters:\n  - { name: p, wasm: modules/late.wasm, config: \"pass:late\" }\n",
    );
    let status = wait_failed_reload(&proxy).await;
    assert!(
        reload_errors(&status)
            .iter()
            .any(|e| e.contains("filters.p.wasm: file not found")),
        "{status:#}"
    );
    // ...then the module, into a directory that did not exist either.
    let probe = std::fs::read(crate::wasm_build::filter("probe")).unwrap_or_else(|e| panic!("{e}"));
    conf.write("modules/late.wasm", probe);
    proxy.wait_for_generation(2).await;
    wait_served_by(&proxy, "/", "v2").await;
    assert_eq!(probe_mark(&proxy).await, "late");
}

#[tokio::test]
async fn an_unchanged_filter_keeps_its_vm_across_a_reload_and_a_changed_one_starts_fresh() {
    let wasm = crate::wasm_build::filter("probe");
    // The filter comes first so that a change to the route leaves its lines alone.
    let conf_text = |route: &str, filter_config: &str| {
        format!(
            "admin: {{ address: 127.0.0.1:0 }}
workers: 1
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
filters:
  - {{ name: p, wasm: {}, config: \"{filter_config}\" }}
routes:
  - {{ name: {route}, filters: [p], upstream: echo@internal }}
",
            wasm.display()
        )
    };
    let conf = ConfDir::with(&conf_text("v1", "count:a"));
    let proxy = start(&conf, "v1").await;
    // The probe counts the streams its VM has seen (starting up sent some already).
    let count = |v: String| -> u32 { v.parse().unwrap_or_else(|e| panic!("{v:?}: {e}")) };
    let before = count(echo_header(&proxy, "x-vm-count").await);

    conf.write("portcullis.yaml", conf_text("v2", "count:a"));
    proxy.wait_for_generation(2).await;
    assert_eq!(
        count(echo_header(&proxy, "x-vm-count").await),
        before + 1,
        "a reload that leaves the filter as it was keeps its VM and its state"
    );

    conf.write("portcullis.yaml", conf_text("v2", "count:b"));
    proxy.wait_for_generation(3).await;
    assert_eq!(
        echo_header(&proxy, "x-vm-count").await,
        "1",
        "a changed filter starts with a fresh VM"
    );
}
