//! The etcd provider end to end: the real binary, a real `etcd` (Debian's
//! `etcd-server`), documents written through etcd's own gateway. Listeners and the
//! admin come from the directory, routes from etcd (the combination is every test's
//! set-up); a change written to etcd is served (and how fast, over 50 changes); an
//! invalid one is refused naming the key, line and field while the old configuration
//! serves; with etcd unreachable the proxy serves on and picks up, once back, what was
//! written meanwhile; `portcullis check` reads a prefix; 100 etcd-driven reloads under
//! load fail no request.

use std::time::{Duration, Instant};

use crate::support::*;

const PREFIX: &str = "/portcullis/";

/// The directory's part: admin, a listener, and where the rest is.
fn dir_conf(etcd: &EtcdServer) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
providers:
  etcd:
    endpoints: [{}]
    prefix: {PREFIX}
    timeout: 1s
",
        etcd.endpoint()
    )
}

/// etcd's part: one route, answered by `echo@internal` as `route`.
fn routes_doc(route: &str) -> String {
    format!("routes:\n  - name: {route}\n    upstream: echo@internal\n")
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

const TEN_SECONDS: Duration = Duration::from_secs(10);

/// `last_reload.errors` of a `/status`, as one string.
fn errors_of(status: &serde_json::Value) -> String {
    status["last_reload"]["errors"].to_string()
}

/// Polls `GET /` until `route` serves it; returns how long that took. Panics after
/// `within`.
async fn wait_served_by(proxy: &Proxy, route: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = served_by(proxy, "/").await;
        if seen == route {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!(
                "GET / still served by {seen:?}, expected {route:?} within {within:?}\n/status: {:#}\nstderr:\n{}",
                proxy.status().await,
                proxy.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A running etcd holding `routes.yaml` = route `first`, and a proxy reading it.
async fn set_up(first: &str) -> (EtcdServer, ConfDir, Proxy) {
    let etcd = EtcdServer::start();
    etcd.put(&key("routes.yaml"), &routes_doc(first)).await;
    let conf = ConfDir::with(&dir_conf(&etcd));
    let proxy = Proxy::start(&conf);
    (etcd, conf, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_written_to_etcd_is_served_fast() {
    let (etcd, _conf, proxy) = set_up("r0").await;
    assert_eq!(served_by(&proxy, "/").await, "r0");
    let status = proxy.status().await;
    let at_start = &status["providers"]["etcd"];
    assert_eq!(at_start["connected"], true, "{status:#}");
    assert_eq!(at_start["keys"], serde_json::json!([key("routes.yaml")]));
    let mut latencies = Vec::new();
    let mut last_revision = 0;
    for i in 1..=50 {
        let route = format!("r{i}");
        last_revision = etcd.put(&key("routes.yaml"), &routes_doc(&route)).await;
        latencies.push(wait_served_by(&proxy, &route, Duration::from_secs(10)).await);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "etcd write -> serving over {} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(p(0.50)),
        ms(p(0.99)),
        ms(latencies[latencies.len() - 1]),
    );
    let status = proxy.status().await;
    assert_eq!(
        status["generation"], 51,
        "one reload per change: {status:#}"
    );
    assert_eq!(
        status["providers"]["etcd"]["revision"], last_revision,
        "/status shows the revision serving: {status:#}"
    );
    // A generous bound, for a loaded CI machine; the issue's target (200 ms p99) is
    // measured and printed above.
    assert!(
        p(0.99) < Duration::from_secs(1),
        "p99 write -> serving {:?}",
        p(0.99)
    );
}

#[tokio::test]
async fn an_invalid_change_is_refused_naming_key_line_and_field() {
    let (etcd, _conf, proxy) = set_up("good").await;
    let bad = "routes:\n  - name: good\n    upstream: echo@internal\n    colour: red\n";
    let revision = etcd.put(&key("routes.yaml"), bad).await;
    let status = proxy
        .wait_for_status(TEN_SECONDS, "the change refused", |s| {
            s["last_reload"]["ok"] == false
        })
        .await;
    let errors = errors_of(&status);
    assert!(
        errors.contains("/portcullis/routes.yaml:4: routes.good.colour: unknown field"),
        "errors name key, line and field: {errors}"
    );
    assert_eq!(status["generation"], 1, "{status:#}");
    let etcd_status = &status["providers"]["etcd"];
    assert_eq!(etcd_status["latest_revision"], revision, "{status:#}");
    assert!(
        etcd_status["revision"].as_i64() < Some(revision),
        "the revision serving is the old one: {status:#}"
    );
    assert_eq!(
        served_by(&proxy, "/").await,
        "good",
        "the old configuration serves"
    );

    // A document may not move where documents come from.
    etcd.put(
        &key("zz.yaml"),
        "# a comment\nproviders: { etcd: { endpoints: [http://127.0.0.1:1] } }\n",
    )
    .await;
    etcd.put(&key("routes.yaml"), &routes_doc("fixed")).await;
    let status = proxy
        .wait_for_status(TEN_SECONDS, "zz.yaml refused", |s| {
            errors_of(s).contains("/portcullis/zz.yaml:2: providers:")
        })
        .await;
    assert!(errors_of(&status).contains("directory only"), "{status:#}");
    etcd.delete(&key("zz.yaml")).await;
    wait_served_by(&proxy, "fixed", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn etcd_down_the_proxy_serves_on_and_catches_up_once_back() {
    let (mut etcd, _conf, proxy) = set_up("before").await;
    etcd.stop();
    // Watch broken, retries failing: still serving the last good configuration.
    proxy
        .wait_for_status(TEN_SECONDS, "etcd unreachable", |s| {
            s["providers"]["etcd"]["connected"] == false
                && s["providers"]["etcd"]["last_error"].is_string()
        })
        .await;
    for _ in 0..20 {
        assert_eq!(served_by(&proxy, "/").await, "before");
    }
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("portcullis_etcd_connected 0"), "{metrics}");
    assert!(
        !metrics.contains("portcullis_etcd_failures_total 0"),
        "{metrics}"
    );
    // Up again, but where the proxy cannot reach it: a change made while it is cut off.
    let elsewhere = etcd.restart_elsewhere();
    let revision = EtcdServer::put_at(&elsewhere, &key("routes.yaml"), &routes_doc("after")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_by(&proxy, "/").await, "before", "not reachable yet");
    // Back where the proxy looks (same data dir): it reads the prefix again.
    etcd.restart();
    wait_served_by(&proxy, "after", Duration::from_secs(20)).await;
    let status = proxy.status().await;
    let etcd_status = &status["providers"]["etcd"];
    assert!(
        etcd_status["revision"].as_i64() >= Some(revision),
        "serving the revision written while cut off: {status:#}"
    );
    assert_eq!(status["generation"], 2, "{status:#}");
    // The watch is back too: a change now is live as before.
    proxy
        .wait_for_status(TEN_SECONDS, "the watch back", |s| {
            s["providers"]["etcd"]["connected"] == true
        })
        .await;
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("portcullis_etcd_connected 1"), "{metrics}");
    etcd.put(&key("routes.yaml"), &routes_doc("later")).await;
    wait_served_by(&proxy, "later", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn directory_and_etcd_combine() {
    let etcd = EtcdServer::start();
    // etcd: the route and its upstream; the directory: the filter the route names.
    etcd.put(
        &key("routes.yaml"),
        "routes:\n  - name: api\n    filters: [stamp]\n    upstream: echo@internal\n",
    )
    .await;
    let conf = ConfDir::with(&dir_conf(&etcd));
    conf.write(
        "filters.yaml",
        "filters:\n  - { name: stamp, builtin: headers, config: { request: { set: { x-stamp: one } } } }\n",
    );
    let proxy = Proxy::start(&conf);
    let stamp = |json: serde_json::Value| json["headers"]["x-stamp"].as_str().map(str::to_owned);
    let get = || async {
        let url = proxy.url("web", "/");
        let resp = client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.json::<serde_json::Value>()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not the echo's JSON: {e}"))
    };
    assert_eq!(stamp(get().await).as_deref(), Some("one"));
    // A change on disk reloads with etcd's documents as held…
    conf.write(
        "filters.yaml",
        "filters:\n  - { name: stamp, builtin: headers, config: { request: { set: { x-stamp: two } } } }\n",
    );
    proxy.wait_for_generation(2).await;
    assert_eq!(stamp(get().await).as_deref(), Some("two"));
    // …and a change in etcd with the directory's files.
    etcd.put(
        &key("routes.yaml"),
        "routes:\n  - name: api2\n    filters: [stamp]\n    upstream: echo@internal\n",
    )
    .await;
    let status = proxy.wait_for_generation(3).await;
    let json = get().await;
    assert_eq!(
        (json["route"].as_str(), stamp(json.clone()).as_deref()),
        (Some("api2"), Some("two")),
        "{status:#}"
    );
    // A route in etcd naming a filter nobody defines: refused, at the key.
    etcd.put(
        &key("routes.yaml"),
        "routes:\n  - name: api3\n    filters: [nope]\n    upstream: echo@internal\n",
    )
    .await;
    proxy
        .wait_for_status(TEN_SECONDS, "the unknown filter refused", |s| {
            errors_of(s)
                .contains("/portcullis/routes.yaml:3: routes.api3.filters: unknown filter `nope`")
        })
        .await;
    assert_eq!(get().await["route"], "api2");
}

#[tokio::test]
async fn check_reads_an_etcd_prefix() {
    let mut etcd = EtcdServer::start();
    etcd.put(&key("routes.yaml"), &routes_doc("r")).await;
    etcd.put(
        "/staging/routes.yaml",
        "routes:\n  - name: s\n    upstream: nowhere\n",
    )
    .await;
    let conf = ConfDir::with(&dir_conf(&etcd));
    let dir = conf.path().display().to_string();

    let (code, out, err) = run_to_end(["check", "--conf", &dir]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("etcd /portcullis/ at revision"), "{out}");

    // The same directory against another prefix.
    let (code, out, err) = run_to_end(["check", "--conf", &dir, "--etcd-prefix", "/staging"]);
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("/staging/routes.yaml:3: routes.s.upstream: unknown upstream `nowhere`"),
        "{err}"
    );

    // The prefix alone (no directory): it has no listener.
    let (code, _, err) = run_to_end(["check", "--etcd", &etcd.endpoint()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no listener is configured"), "{err}");

    // etcd down: check and run both fail, saying where etcd was configured.
    etcd.stop();
    let (code, _, err) = run_to_end(["check", "--conf", &dir]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("portcullis.yaml:5: providers.etcd: cannot read the configuration: etcd at"),
        "{err}"
    );
    let err = match Proxy::try_start(&conf) {
        Ok(_) => panic!("run must fail when etcd cannot be read at start"),
        Err(err) => err,
    };
    assert!(
        err.contains("providers.etcd: cannot read the configuration"),
        "{err}"
    );
}

#[tokio::test]
async fn an_etcd_with_authentication_is_read_as_its_user() {
    let mut etcd = EtcdServer::start();
    etcd.enable_auth("s3cret").await;
    etcd.put(&key("routes.yaml"), &routes_doc("authed")).await;
    let with_password = |password: &str| {
        format!(
            "{}    auth: {{ username: root, password: {password} }}\n",
            dir_conf(&etcd)
        )
    };
    let wrong = ConfDir::with(&with_password("wrong"));
    let err = match Proxy::try_start(&wrong) {
        Ok(_) => panic!("a wrong password must fail the start"),
        Err(err) => err,
    };
    assert!(err.contains("cannot log in as `root`"), "{err}");
    assert!(!err.contains("wrong"), "the password is not shown: {err}");

    let inline = ConfDir::with(&with_password("s3cret"));
    assert_eq!(served_by(&Proxy::start(&inline), "/").await, "authed");

    // The secret in a file beside the configuration, as admin tokens are.
    let with_file = format!(
        "{}    auth: {{ username: root, password_file: etcd-password }}\n",
        dir_conf(&etcd)
    );
    let conf = ConfDir::with(&with_file);
    conf.write("etcd-password", "");
    let err = match Proxy::try_start(&conf) {
        Ok(_) => panic!("an empty password_file must fail the start"),
        Err(err) => err,
    };
    assert!(
        err.contains("providers.etcd.auth.password_file") && err.contains("is empty"),
        "{err}"
    );
    conf.write("etcd-password", "s3cret\n");
    let proxy = Proxy::start(&conf);
    assert_eq!(served_by(&proxy, "/").await, "authed");
    etcd.put(&key("routes.yaml"), &routes_doc("authed2")).await;
    wait_served_by(&proxy, "authed2", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_etcd_over_tls_asking_for_client_certificates() {
    use crate::tls::pki::{Alg, Ca};
    let ca = Ca::new("etcd test CA");
    // etcd's gateway dials its own gRPC port with its server certificate: with
    // `--client-cert-auth` that certificate must be good for client auth too.
    let server = ca.leaf(&["127.0.0.1"], Alg::Ecdsa, None, |p| {
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
    });
    let client = ca.client("portcullis");
    let conf = ConfDir::new();
    let etcd = EtcdServer::start_tls(EtcdTls {
        cert: conf.write("tls/etcd.crt", &server.chain_pem),
        key: conf.write("tls/etcd.key", &server.key_pem),
        client_ca: conf.write("tls/ca.pem", &ca.cert_pem),
        server_ca_pem: ca.cert_pem.clone(),
        client_identity_pem: format!("{}{}", client.chain_pem, client.key_pem),
    });
    conf.write("tls/client.crt", &client.chain_pem);
    conf.write("tls/client.key", &client.key_pem);
    etcd.put(&key("routes.yaml"), &routes_doc("tls1")).await;
    assert!(etcd.endpoint().starts_with("https://"));

    // Without a client certificate, etcd refuses the handshake: the start fails.
    conf.write(
        "portcullis.yaml",
        format!("{}    tls: {{ ca: tls/ca.pem }}\n", dir_conf(&etcd)),
    );
    let err = match Proxy::try_start(&conf) {
        Ok(_) => panic!("etcd must refuse a client without a certificate"),
        Err(err) => err,
    };
    assert!(
        err.contains("providers.etcd: cannot read the configuration"),
        "{err}"
    );

    conf.write(
        "portcullis.yaml",
        format!(
            "{}    tls: {{ ca: tls/ca.pem, cert: tls/client.crt, key: tls/client.key }}\n",
            dir_conf(&etcd)
        ),
    );
    let proxy = Proxy::start(&conf);
    assert_eq!(served_by(&proxy, "/").await, "tls1");
    etcd.put(&key("routes.yaml"), &routes_doc("tls2")).await;
    wait_served_by(&proxy, "tls2", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_etcd_reloads_under_load_fail_no_request() {
    let (etcd, _conf, proxy) = set_up("r0").await;
    let load = Load::start(proxy.addr("web"), "/load", 2, 1, 1);
    assert!(
        load.wait_for_ok(50, Duration::from_secs(10)).await,
        "the load did not start"
    );
    for i in 1..=100u64 {
        etcd.put(&key("routes.yaml"), &routes_doc(&format!("r{i}")))
            .await;
        proxy.wait_for_generation(i + 1).await;
    }
    let ok = load.tally.ok.load(std::sync::atomic::Ordering::Relaxed);
    let failures = load.tally.failures();
    assert!(
        load.stop(Duration::from_secs(10)).await,
        "a client did not stop"
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    eprintln!("100 etcd-driven reloads under load: {ok} requests, 0 failed");
    assert_eq!(served_by(&proxy, "/").await, "r100");
}
