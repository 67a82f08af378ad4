//! Who may use the admin listener: bearer tokens with roles (from a file and from the
//! environment), the open probes, tokens kept out of `/status` and the logs, token
//! changes on reload, client certificates on the admin listener, the warning of an
//! exposed admin, and filter secrets redacted in `/status`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;
use crate::tls::pki::{Alg, Ca, Leaf};

const VIEWER: &str = "viewer-7f3a9c1e5b2d4f60";
const OPERATOR: &str = "operator-0b8e2d6a4c1f9e37";
const OPERATOR_ENV: &str = "PORTCULLIS_E2E_ADMIN_OPERATOR_TOKEN";

/// `admin` with a viewer token read from `secrets/viewer.token` and an operator token
/// from `$PORTCULLIS_E2E_ADMIN_OPERATOR_TOKEN`.
fn tokens_conf() -> ConfDir {
    let conf = ConfDir::with(&format!(
        "admin:
  address: 127.0.0.1:0
  reload: true
  tokens:
    - {{ name: dashboards, role: viewer, token_file: secrets/viewer.token }}
    - {{ name: deployer, role: operator, token_env: {OPERATOR_ENV} }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: all, upstream: echo@internal }}]
"
    ));
    conf.write("secrets/viewer.token", format!("{VIEWER}\n"));
    conf
}

/// Starts a proxy on `conf` with the operator token in its environment, logging at
/// debug (so that a token logged anywhere is found).
fn start_with_tokens(conf: &ConfDir) -> Proxy {
    Proxy::try_start_with(
        conf,
        &[],
        &[(OPERATOR_ENV, OPERATOR), ("RUST_LOG", "debug")],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `METHOD ADMIN/path` with `token` as a bearer token: status, the
/// `WWW-Authenticate` challenges (joined by ` | `), body.
async fn admin(
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let url = proxy.admin_url(path);
    let mut req = client().request(method.clone(), &url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}\n{}", proxy.logs()));
    let challenge = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(" | ");
    (
        resp.status(),
        challenge,
        resp.text().await.unwrap_or_default(),
    )
}

/// `/status` read with `token`.
async fn status_with(proxy: &Proxy, token: &str) -> Value {
    let (code, _, body) = admin(proxy, reqwest::Method::GET, "/status", Some(token)).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "GET /status with a viewer token: {body}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON: {e}: {body}"))
}

/// Polls `/status` (read with `token`) until `done` holds; 20 s.
async fn status_until(proxy: &Proxy, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_with(proxy, token).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "/status never got there: {status:#}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tokens_gate_every_endpoint_by_role_and_the_probes_stay_open() {
    use reqwest::Method;
    let conf = tokens_conf();
    let proxy = start_with_tokens(&conf);

    // Probes need no token.
    for path in ["/ready", "/live"] {
        let (code, _, body) = admin(&proxy, Method::GET, path, None).await;
        assert_eq!(code, StatusCode::OK, "GET {path} without a token: {body}");
    }

    // No token, or a token that is not configured: 401 with a Bearer challenge.
    for path in ["/status", "/metrics", "/", "/no-such-endpoint"] {
        let (code, challenge, body) = admin(&proxy, Method::GET, path, None).await;
        assert_eq!(
            code,
            StatusCode::UNAUTHORIZED,
            "GET {path} without a token: {body}"
        );
        assert_eq!(
            challenge,
            r#"Bearer realm="portcullis-admin" | Basic realm="portcullis-admin", charset="UTF-8""#,
            "GET {path}: a bearer challenge, and a basic one for browsers"
        );
        assert!(body.contains("Authorization: Bearer"), "GET {path}: {body}");
    }
    let (code, challenge, body) = admin(&proxy, Method::POST, "/reload", None).await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "POST /reload without a token: {body}"
    );
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let wrong = "viewer-0000000000000000";
    let (code, challenge, body) = admin(&proxy, Method::GET, "/status", Some(wrong)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "an unknown token: {body}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(body.contains("not one of admin.tokens"), "{body}");

    // The viewer reads, and may not reload.
    let (code, _, body) = admin(&proxy, Method::GET, "/metrics", Some(VIEWER)).await;
    assert_eq!(code, StatusCode::OK, "GET /metrics as viewer: {body}");
    assert!(body.contains("portcullis_config_generation 1"), "{body}");
    let status = status_with(&proxy, VIEWER).await;
    assert_eq!(status["generation"], 1, "{status:#}");
    let (code, challenge, body) = admin(&proxy, Method::POST, "/reload", Some(VIEWER)).await;
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "POST /reload as viewer: {body}"
    );
    assert_eq!(
        challenge, r#"Bearer realm="portcullis-admin", error="insufficient_scope""#,
        "a 403 asks for no other credentials"
    );
    assert_eq!(
        body.trim(),
        "forbidden: token `dashboards` has the viewer role; POST /reload needs the operator role"
    );
    let (code, _, _) = admin(&proxy, Method::GET, "/no-such-endpoint", Some(VIEWER)).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "an authorised request to no endpoint"
    );

    // A browser sends the token as a Basic password (any user name); roles hold.
    for (method, want) in [
        (Method::GET, StatusCode::OK),
        (Method::POST, StatusCode::FORBIDDEN),
    ] {
        let path = if method == Method::GET {
            "/status"
        } else {
            "/reload"
        };
        let resp = client()
            .request(method.clone(), proxy.admin_url(path))
            .basic_auth("anyone", Some(VIEWER))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} with basic auth: {e}"));
        assert_eq!(
            resp.status(),
            want,
            "{method} {path}, the viewer token as a Basic password"
        );
    }

    // The operator (its token from the environment) reloads.
    let (code, _, body) = admin(&proxy, Method::POST, "/reload", Some(OPERATOR)).await;
    assert_eq!(code, StatusCode::OK, "POST /reload as operator: {body}");
    let reloaded: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(reloaded["ok"], true, "{body}");
    assert_eq!(reloaded["generation"], 2, "{body}");
    let status = status_with(&proxy, OPERATOR).await;
    assert_eq!(status["generation"], 2, "{status:#}");

    // `/status` shows who holds which role and where the token is read from, never
    // the token; neither do the logs (at debug).
    let tokens = &status["admin"]["tokens"];
    assert_eq!(tokens[0]["name"], "dashboards", "{status:#}");
    assert_eq!(tokens[0]["role"], "viewer", "{status:#}");
    assert!(
        tokens[0]["from"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("secrets/viewer.token")),
        "{status:#}"
    );
    assert_eq!(tokens[1]["role"], "operator", "{status:#}");
    assert_eq!(tokens[1]["from"]["env"], OPERATOR_ENV, "{status:#}");
    let text = status.to_string();
    let logs = proxy.logs();
    for token in [VIEWER, OPERATOR] {
        assert!(!text.contains(token), "/status shows a token: {text}");
        assert!(!logs.contains(token), "the log shows a token:\n{logs}");
    }
    assert!(
        logs.contains("token=deployer") && logs.contains("path=\"/reload\""),
        "the reload is logged with the token's name:\n{logs}"
    );
    assert!(
        !logs.contains("reachable beyond this host"),
        "a loopback admin is not exposed:\n{logs}"
    );
}

#[tokio::test]
async fn a_token_change_applies_on_reload_and_a_bad_one_is_refused_naming_the_field() {
    let conf = tokens_conf();
    let proxy = start_with_tokens(&conf);
    let status = status_with(&proxy, VIEWER).await;
    assert_eq!(status["generation"], 1);

    // A rotated token file is a change like any other: the watcher reloads.
    let rotated = "viewer-rotated-5c2e8a1f6b3d";
    conf.write("secrets/viewer.token", rotated);
    status_until(&proxy, OPERATOR, |s| s["generation"] == 2).await;
    let (code, _, body) = admin(&proxy, reqwest::Method::GET, "/status", Some(VIEWER)).await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "the old token after rotation: {body}"
    );
    status_with(&proxy, rotated).await;

    // Too short: refused, naming file, line and field; the last good tokens go on.
    conf.write("secrets/viewer.token", "short\n");
    let status = status_until(&proxy, rotated, |s| s["last_reload"]["ok"] == false).await;
    assert_eq!(status["generation"], 2, "{status:#}");
    let errors = status["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("portcullis.yaml:5: admin.tokens.dashboards: the token in")
            && errors.contains("is 5 characters long; at least 16"),
        "{errors}"
    );
    assert!(
        !errors.contains("short"),
        "the error quotes the token: {errors}"
    );
}

#[tokio::test]
async fn a_missing_token_source_fails_the_check_naming_the_field() {
    let conf = tokens_conf();
    conf.remove("secrets/viewer.token");
    let (cmd_out, _home) = {
        let (mut cmd, home) = portcullis();
        let out = cmd
            .args(["check", "--conf"])
            .arg(conf.path())
            .env_remove(OPERATOR_ENV)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("cannot run portcullis check: {e}"));
        (out, home)
    };
    assert_eq!(cmd_out.status.code(), Some(1), "check must fail");
    let stderr = String::from_utf8_lossy(&cmd_out.stderr);
    assert!(
        stderr.contains("portcullis.yaml:5: admin.tokens.dashboards.token_file: file not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "portcullis.yaml:6: admin.tokens.deployer.token_env: the environment variable `{OPERATOR_ENV}` is not set"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_admin_bound_beyond_loopback_without_tokens_warns() {
    let open = ConfDir::with(
        "admin: { address: 0.0.0.0:0, reload: true }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: all, upstream: echo@internal }]
",
    );
    let proxy = Proxy::start(&open);
    assert!(
        proxy.wait_for_log(
            "is reachable beyond this host and has no admin.tokens",
            Duration::from_secs(5)
        ),
        "expected the exposure warning:\n{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("and can POST /reload"),
        "{}",
        proxy.logs()
    );
    drop(proxy);

    let guarded = tokens_conf();
    let yaml = std::fs::read_to_string(guarded.path().join("portcullis.yaml")).unwrap_or_default();
    guarded.write(
        "portcullis.yaml",
        yaml.replace(
            "address: 127.0.0.1:0\n  reload",
            "address: 0.0.0.0:0\n  reload",
        ),
    );
    let proxy = start_with_tokens(&guarded);
    assert!(
        !proxy.logs().contains("reachable beyond this host"),
        "tokens guard it: no warning expected:\n{}",
        proxy.logs()
    );
}

// === client certificates ===

/// A reqwest client for `https://admin.test:PORT` trusting `ca`, presenting `identity`.
fn tls_client(addr: std::net::SocketAddr, ca: &Ca, identity: Option<&Leaf>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())
        .unwrap_or_else(|e| panic!("CA: {e}"));
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve("admin.test", addr)
        .timeout(Duration::from_secs(30));
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.chain_pem, leaf.key_pem);
        let identity =
            reqwest::Identity::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("identity: {e}"));
        builder = builder.identity(identity);
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("cannot build a TLS client: {e}"))
}

#[tokio::test]
async fn admin_tls_refuses_a_client_without_a_certificate_the_client_ca_signed() {
    let server_ca = Ca::new("Admin Server CA");
    let clients = Ca::new("Admin Client CA");
    let stranger = Ca::new("Somebody Else");
    let site = server_ca.server(&["admin.test"], Alg::Ecdsa);
    let conf = ConfDir::new();
    conf.write("certs/admin.crt", &site.chain_pem);
    conf.write("certs/admin.key", &site.key_pem);
    conf.write("certs/clients.crt", &clients.cert_pem);
    conf.write(
        "portcullis.yaml",
        "admin:
  address: 127.0.0.1:0
  tls: { cert: certs/admin.crt, key: certs/admin.key, client_ca: certs/clients.crt }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: all, upstream: echo@internal }]
",
    );
    let proxy = Proxy::start(&conf);
    let addr = proxy.addr("admin");
    let url = format!("https://admin.test:{}/status", addr.port());

    let anonymous = tls_client(addr, &server_ca, None).get(&url).send().await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate must be refused, got {anonymous:?}"
    );
    let mallory = stranger.client("mallory");
    let foreign = tls_client(addr, &server_ca, Some(&mallory))
        .get(&url)
        .send()
        .await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA must be refused, got {foreign:?}"
    );
    let plain = client().get(format!("http://{addr}/ready")).send().await;
    assert!(
        plain
            .as_ref()
            .map_or(true, |r| r.status() != StatusCode::OK),
        "plain HTTP must not be served on a TLS admin listener, got {plain:?}"
    );

    let alice = clients.client("alice");
    let resp = tls_client(addr, &server_ca, Some(&alice))
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "alice's certificate must be accepted: {e}\n{}",
                proxy.logs()
            )
        });
    assert_eq!(resp.status(), StatusCode::OK);
    let status: Value = resp.json().await.unwrap_or_default();
    assert_eq!(status["admin"]["tls"], true, "{status:#}");
    assert_eq!(status["admin"]["client_certificates"], true, "{status:#}");

    let metrics = tls_client(addr, &server_ca, Some(&alice))
        .get(format!("https://admin.test:{}/metrics", addr.port()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains(r#"portcullis_tls_certificate_expiry_days{listener="admin""#),
        "the admin certificate's expiry is a metric:\n{metrics}"
    );
}

// === redaction ===

const BCRYPT: &str = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

#[tokio::test]
async fn filter_secrets_are_redacted_in_status() {
    let conf = ConfDir::with(&format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - {{ name: all, filters: [login, keys, tokens, limit], upstream: echo@internal }}
filters:
  - name: login
    limits: {{ callback_timeout: 5s }}
    builtin: basic-auth
    config: {{ realm: staff, users: ["alice:{BCRYPT}"] }}
  - name: keys
    limits: {{ callback_timeout: 5s }}
    builtin: api-key
    config:
      header: x-api-key
      keys: [{{ key: "clear-api-key-3141", consumer: carol }}]
  - name: tokens
    limits: {{ callback_timeout: 5s }}
    builtin: jwt
    config: {{ algorithms: [HS256], secret: "hs256-secret-2718", issuer: "https://issuer" }}
  - name: limit
    builtin: rate-limit
    config: {{ rate: 100, per: 1s, key: client_ip }}
"#
    ));
    let proxy = Proxy::start(&conf);
    let status = proxy.status().await;
    let text = status.to_string();
    for secret in ["clear-api-key-3141", "hs256-secret-2718", "CCCCCCCC"] {
        assert!(
            !text.contains(secret),
            "/status shows `{secret}`: {status:#}"
        );
    }
    let config = |name: &str| {
        status["filters"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .map(|f| f["config"].clone())
            .unwrap_or_else(|| panic!("no filter {name} in {status:#}"))
    };
    assert_eq!(config("login")["users"][0], "alice:<redacted>");
    assert_eq!(config("login")["realm"], "staff");
    assert_eq!(config("keys")["keys"][0]["key"], "<redacted>");
    assert_eq!(config("keys")["keys"][0]["consumer"], "carol");
    assert_eq!(config("tokens")["secret"], "<redacted>");
    assert_eq!(config("tokens")["issuer"], "https://issuer");
    assert_eq!(config("limit")["key"], "client_ip", "not a secret");
}
