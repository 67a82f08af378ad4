//! ACME through the real binary against a real ACME CA (pebble, [`pebble`]), which
//! validates every challenge against the proxy's own listeners: issuance by HTTP-01
//! and by TLS-ALPN-01, then HTTPS that verifies against pebble's root; the stored
//! certificate reused by a restart; renewal under load without a failed request;
//! the CA down at renewal; a name added on reload; bad configurations refused.

mod pebble;

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pebble::{Options, Pebble, free_port};

use crate::support::{ConfDir, Proxy, run_to_end};
use crate::tls::client::{ClientOptions, Http1, connect, served_chain};
use crate::tls::pki::{Alg, Ca};

/// How long issuance may take on a loaded machine (pebble answers in well under a
/// second when idle).
const ISSUE: Duration = Duration::from_secs(90);

/// The proxy's two listeners, on ports fixed ahead so that pebble can be told them.
struct Ports {
    web: u16,
    websecure: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            web: free_port(),
            websecure: free_port(),
        }
    }

    fn pebble(&self, validity: Option<Duration>) -> Pebble {
        Pebble::start(&Options {
            http_port: self.web,
            tls_port: self.websecure,
            validity,
        })
    }
}

/// The configuration: a plain `web` listener, a TLS `websecure` one whose `acme`
/// block is `acme` (YAML lines, indented under `acme:`), and `routes`.
fn yaml(ports: &Ports, acme: &str, extra_tls: &str, routes: &str) -> String {
    format!(
        r#"admin: {{ address: "127.0.0.1:0", reload: true }}
workers: 1
listeners:
  - name: web
    address: "127.0.0.1:{web}"
  - name: websecure
    address: "127.0.0.1:{websecure}"
    tls:
{extra_tls}      acme:
{acme}
routes:
{routes}
"#,
        web = ports.web,
        websecure = ports.websecure,
    )
}

/// The `acme` block for `pebble`: `names` (`domains: [...]` or `from_routes: true`),
/// `challenge`, and the test's storage.
fn acme_block(pebble: &Pebble, names: &str, challenge: &str) -> String {
    format!(
        "        directory: \"{}\"\n        email: ops@portcullis.test\n        {names}\n        challenge: {challenge}\n        storage: acme\n        ca_roots: \"{}\"",
        pebble.directory,
        pebble.https_ca.display()
    )
}

/// Waits until `/status` shows `name` of `websecure` in `state`; the name's status.
async fn wait_for_state(
    proxy: &Proxy,
    name: &str,
    state: &str,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let status = proxy.status().await;
        let websecure = status["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == "websecure"))
            .cloned()
            .unwrap_or_default();
        let entry = websecure["acme"]["names"][name].clone();
        if entry["state"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not become {state} within {limit:?}; acme status: {}\nlog:\n{}",
            websecure["acme"],
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /` over HTTPS as `name`, verified against `root` (PEM): the status, and the
/// served leaf (DER).
async fn https_get(proxy: &Proxy, name: &str, root: &str) -> Result<(u16, Vec<u8>), String> {
    let opts = ClientOptions {
        ca: Some(root.to_owned()),
        ..ClientOptions::default()
    };
    let stream = connect(proxy.addr("websecure"), name, &opts).await?;
    let leaf = served_chain(&stream).into_iter().next().unwrap_or_default();
    let mut http = Http1::new(stream).await?;
    let (code, _) = http.get(name, "/", &[]).await?;
    Ok((code, leaf))
}

/// Waits until `name` has its certificate, then serves `GET /` over HTTPS with it,
/// verified against pebble's root: the root (PEM) and the served leaf (DER).
async fn issued_and_served(proxy: &Proxy, pebble: &Pebble, name: &str) -> (String, Vec<u8>) {
    let status = wait_for_state(proxy, name, "valid", ISSUE).await;
    assert!(status["valid_until"].is_string(), "{status}");
    let root = pebble.root_pem().await;
    match https_get(proxy, name, &root).await {
        Ok((200, leaf)) => (root, leaf),
        other => panic!(
            "HTTPS to {name} with pebble's certificate: {other:?}\nlog:\n{}",
            proxy.logs()
        ),
    }
}

/// The leaf served to a client asking for `name`, unverified.
async fn served_leaf(proxy: &Proxy, name: &str) -> Vec<u8> {
    let stream = connect(proxy.addr("websecure"), name, &ClientOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    served_chain(&stream).into_iter().next().unwrap_or_default()
}

/// The `certificates` line of a listener whose default is [`fallback_certificate`].
const FALLBACK_FILES: &str =
    "      certificates: [ { cert: certs/fallback.crt, key: certs/fallback.key } ]\n";

/// Writes the listener's default certificate (for `fallback.test`, from a CA of its
/// own) under `conf`.
fn fallback_certificate(conf: &ConfDir) -> crate::tls::pki::Leaf {
    let fallback = Ca::new("Fallback CA").server(&["fallback.test"], Alg::Ecdsa);
    conf.write("certs/fallback.key", &fallback.key_pem);
    conf.write("certs/fallback.crt", &fallback.chain_pem);
    fallback
}

const ECHO_ROUTE: &str =
    "  - { name: site, match: { host: site.acme.test }, upstream: echo@internal }";

#[tokio::test]
async fn http01_issues_a_certificate_that_verifies_and_a_restart_reuses_it() {
    let ports = Ports::new();
    let mut pebble = ports.pebble(None);
    let conf = ConfDir::new();
    let acme = acme_block(&pebble, "domains: [site.acme.test]", "http-01");
    conf.write("portcullis.yaml", yaml(&ports, &acme, "", ECHO_ROUTE));
    let mut proxy = Proxy::start(&conf);

    let (root, leaf) = issued_and_served(&proxy, &pebble, "site.acme.test").await;
    assert!(
        proxy
            .metrics()
            .await
            .contains("portcullis_tls_certificate_expiry_days{listener=\"websecure\""),
        "the expiry gauge covers the ACME certificate"
    );

    // Stored 0600: the account and the certificate.
    let storage = conf.path().join("acme");
    let mut stored: Vec<_> = std::fs::read_dir(&storage)
        .unwrap_or_else(|e| panic!("{}: {e}", storage.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "json"))
        .collect();
    stored.sort();
    assert_eq!(
        stored.len(),
        2,
        "expected the account and one certificate: {stored:?}"
    );
    for path in &stored {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600), "{}", path.display());
    }

    // The CA gone, a restart serves the stored certificate at once.
    pebble.stop();
    proxy.signal(libc::SIGTERM);
    proxy.wait_exit(Duration::from_secs(20));
    let proxy = Proxy::start(&conf);
    let (code, again) = https_get(&proxy, "site.acme.test", &root)
        .await
        .unwrap_or_else(|e| panic!("after the restart: {e}\nlog:\n{}", proxy.logs()));
    assert_eq!(code, 200);
    assert_eq!(again, leaf, "the restart serves the stored certificate");
}

#[tokio::test]
async fn tls_alpn01_issues_a_certificate_and_names_without_one_get_the_default() {
    let ports = Ports::new();
    let pebble = ports.pebble(None);
    let conf = ConfDir::new();
    let fallback = fallback_certificate(&conf);
    let acme = acme_block(&pebble, "domains: [alpn.acme.test]", "tls-alpn-01");
    let routes = "  - { name: site, match: { host: alpn.acme.test }, upstream: echo@internal }";
    conf.write(
        "portcullis.yaml",
        yaml(&ports, &acme, FALLBACK_FILES, routes),
    );
    let proxy = Proxy::start(&conf);

    let (_, leaf) = issued_and_served(&proxy, &pebble, "alpn.acme.test").await;
    assert_ne!(leaf, fallback.leaf_der);
    // A name ACME has no certificate for: the listener's default.
    assert_eq!(
        served_leaf(&proxy, "other.acme.test").await,
        fallback.leaf_der
    );
}

#[tokio::test]
async fn a_challenge_the_ca_cannot_validate_shows_its_reason_and_the_default_keeps_serving() {
    let ports = Ports::new();
    // Pebble validates HTTP-01 on a port nothing listens on.
    let pebble = Pebble::start(&Options {
        http_port: free_port(),
        tls_port: ports.websecure,
        validity: None,
    });
    let conf = ConfDir::new();
    let fallback = fallback_certificate(&conf);
    let acme = acme_block(&pebble, "domains: [site.acme.test]", "http-01");
    conf.write(
        "portcullis.yaml",
        yaml(&ports, &acme, FALLBACK_FILES, ECHO_ROUTE),
    );
    let proxy = Proxy::start(&conf);

    let deadline = Instant::now() + ISSUE;
    let status = loop {
        let status = wait_for_state(&proxy, "site.acme.test", "pending", ISSUE).await;
        if status["last_error"].is_string() {
            break status;
        }
        assert!(Instant::now() < deadline, "no error shown: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = status["last_error"].as_str().unwrap_or_default();
    // Pebble's own words: it tried the proxy's challenge URL on the port it was given.
    assert!(
        error.contains("acme-challenge") && error.contains("connection refused"),
        "expected the CA's reason: {error}"
    );
    assert_eq!(
        served_leaf(&proxy, "site.acme.test").await,
        fallback.leaf_der
    );
}

/// Clients opening a new TLS connection per request (each verifying the served
/// certificate against `root`), until stopped: (successes, failures).
struct TlsLoad {
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TlsLoad {
    fn start(addr: std::net::SocketAddr, name: &'static str, root: &str, clients: usize) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failures, stop) = (ok.clone(), failures.clone(), stop.clone());
                let opts = ClientOptions {
                    ca: Some(root.to_owned()),
                    ..ClientOptions::default()
                };
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let result = async {
                            let stream = connect(addr, name, &opts).await?;
                            Http1::new(stream).await?.get(name, "/", &[]).await
                        }
                        .await;
                        match result {
                            Ok((200, _)) => drop(ok.fetch_add(1, Ordering::Relaxed)),
                            Ok((code, body)) => failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("{code}: {body}")),
                            Err(e) => failures.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                        }
                    }
                })
            })
            .collect();
        Self {
            ok,
            failures,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_under_load_without_a_failed_request() {
    let ports = Ports::new();
    // Renewed halfway: 20 s after issuance.
    let pebble = ports.pebble(Some(Duration::from_secs(40)));
    let conf = ConfDir::new();
    let acme = acme_block(&pebble, "domains: [site.acme.test]", "http-01");
    conf.write("portcullis.yaml", yaml(&ports, &acme, "", ECHO_ROUTE));
    let proxy = Proxy::start(&conf);
    wait_for_state(&proxy, "site.acme.test", "valid", ISSUE).await;
    let root = pebble.root_pem().await;
    let first = served_leaf(&proxy, "site.acme.test").await;

    let load = TlsLoad::start(proxy.addr("websecure"), "site.acme.test", &root, 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    while served_leaf(&proxy, "site.acme.test").await == first {
        assert!(
            Instant::now() < deadline,
            "no renewal within 60s; status: {}\nlog:\n{}",
            proxy.status().await,
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Some requests on the new certificate too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests across the renewal: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests went through");
    let status = wait_for_state(&proxy, "site.acme.test", "valid", ISSUE).await;
    assert!(status["last_error"].is_null(), "{status}");
}

#[tokio::test]
async fn with_the_ca_down_at_renewal_the_old_certificate_serves_and_status_shows_the_error() {
    let ports = Ports::new();
    let mut pebble = ports.pebble(Some(Duration::from_secs(40)));
    let conf = ConfDir::new();
    let acme = acme_block(&pebble, "domains: [site.acme.test]", "http-01");
    conf.write("portcullis.yaml", yaml(&ports, &acme, "", ECHO_ROUTE));
    let proxy = Proxy::start(&conf);
    let (root, leaf) = issued_and_served(&proxy, &pebble, "site.acme.test").await;
    pebble.stop();

    // The renewal, due 20 s after issuance, fails.
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        let status = wait_for_state(&proxy, "site.acme.test", "valid", ISSUE).await;
        if status["last_error"].is_string() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal error shown: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status["failures"].as_u64() >= Some(1), "{status}");
    assert!(status["next_attempt"].is_string(), "{status}");
    let (code, still) = https_get(&proxy, "site.acme.test", &root)
        .await
        .unwrap_or_else(|e| panic!("the old certificate no longer serves: {e}"));
    assert_eq!(
        (code, still),
        (200, leaf),
        "the old certificate keeps serving"
    );
}

#[tokio::test]
async fn a_name_added_to_a_route_on_reload_gets_a_certificate_without_a_restart() {
    let ports = Ports::new();
    let pebble = ports.pebble(None);
    let conf = ConfDir::new();
    let fallback = fallback_certificate(&conf);
    let acme = acme_block(&pebble, "from_routes: true", "http-01");
    let one = "  - { name: a, match: { host: a.acme.test }, upstream: echo@internal }";
    conf.write("portcullis.yaml", yaml(&ports, &acme, FALLBACK_FILES, one));
    let proxy = Proxy::start(&conf);
    wait_for_state(&proxy, "a.acme.test", "valid", ISSUE).await;
    assert_eq!(served_leaf(&proxy, "b.acme.test").await, fallback.leaf_der);

    let two = format!(
        "{one}\n  - {{ name: b, match: {{ host: b.acme.test }}, upstream: echo@internal }}"
    );
    conf.write("portcullis.yaml", yaml(&ports, &acme, FALLBACK_FILES, &two));
    let resp = crate::support::client()
        .post(proxy.admin_url("/reload"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    wait_for_state(&proxy, "b.acme.test", "valid", ISSUE).await;
    let root = pebble.root_pem().await;
    for name in ["a.acme.test", "b.acme.test"] {
        let (code, _) = https_get(&proxy, name, &root)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(code, 200, "{name}");
    }
}

#[test]
fn bad_acme_configurations_are_refused_with_file_line_and_field() {
    let ports = Ports::new();
    let conf = ConfDir::new();
    let text = format!(
        r#"listeners:
  - name: websecure
    address: "127.0.0.1:{}"
    tls:
      acme:
        directory: "ftp://ca.test/dir"
        email: not-an-address
        domains: ["*.acme.test", "ok.acme.test"]
        challenge: dns-01
        storage: acme
        renew_before: soon
  - name: second
    address: "127.0.0.1:0"
    tls:
      acme: {{ directory: "https://ca.test/dir", from_routes: true, storage: acme }}
routes:
  - {{ name: r, upstream: echo@internal }}
"#,
        ports.websecure
    );
    conf.write("portcullis.yaml", &text);
    let (code, _, stderr) = run_to_end([
        OsStr::new("check"),
        OsStr::new("--conf"),
        conf.path().as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "portcullis.yaml:6: listeners.websecure.tls.acme.directory: `ftp://ca.test/dir` is not an http(s) URL",
        "portcullis.yaml:7: listeners.websecure.tls.acme.email: `not-an-address` is not an email address",
        "portcullis.yaml:8: listeners.websecure.tls.acme.domains.0: `*.acme.test`: a wildcard needs the DNS-01 challenge",
        "portcullis.yaml:9: listeners.websecure.tls.acme.challenge: `dns-01` is not one of: http-01, tls-alpn-01",
        "portcullis.yaml:11: listeners.websecure.tls.acme.renew_before: ",
        "portcullis.yaml:15: listeners.second.tls.acme.challenge: http-01 is answered on a plain-text http listener",
    ] {
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}
