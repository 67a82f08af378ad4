//! The standard filters through the real binary: each on its own route (one proxy for
//! the lot), allow paths and every deny path with exact status and headers, and a chain
//! of every family on one route. Bad configurations are in `filters_check`, the rate
//! limiter's accuracy and reload behaviour in `filters_ratelimit`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

const BCRYPT_U_U: &str = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
const RS256: &str = include_str!("../../filters/jwt/testdata/rs256.jwt");
const HS256: &str = include_str!("../../filters/jwt/testdata/hs256.jwt");
const ES256: &str = include_str!("../../filters/jwt/testdata/es256.jwt");
const EXPIRED: &str = include_str!("../../filters/jwt/testdata/hs256-expired.jwt");
const RSA_PEM: &str = include_str!("../../filters/jwt/testdata/rsa.pem");

/// Every filter gets a generous callback deadline: the test machine is loaded, and a
/// callback that misses its deadline answers 500 whatever the filter would have said.
fn conf() -> ConfDir {
    // YAML block scalars keep the PEM as is.
    let pem: String = RSA_PEM.lines().map(|l| format!("        {l}\n")).collect();
    ConfDir::with(&format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - {{ name: basic, match: {{ path_prefix: /basic }}, filters: [login], upstream: echo@internal }}
  - {{ name: keys, match: {{ path_prefix: /keys }}, filters: [keys], upstream: echo@internal }}
  - {{ name: jwt, match: {{ path_prefix: /jwt }}, filters: [tokens], upstream: echo@internal }}
  - {{ name: rewrite, match: {{ path_prefix: /api }}, filters: [rewrite], upstream: echo@internal }}
  - {{ name: https, match: {{ path_prefix: /secure }}, filters: [https], upstream: echo@internal }}
  - {{ name: moved, match: {{ path_prefix: /old }}, filters: [moved], upstream: echo@internal }}
  - {{ name: office, match: {{ path_prefix: /office }}, filters: [office], upstream: echo@internal }}
  - {{ name: nolocal, match: {{ path_prefix: /nolocal }}, filters: [nolocal], upstream: echo@internal }}
  - {{ name: cors, match: {{ path_prefix: /cors }}, filters: [cors], upstream: echo@internal }}
  - {{ name: chain, match: {{ path_prefix: /chain }}, filters: [office, chain-limit, keys, rewrite-chain, moved], upstream: echo@internal }}
filters:
  - name: login
    limits: {{ callback_timeout: 5s }}
    builtin: basic-auth
    config:
      realm: staff
      users: ["alice:{BCRYPT_U_U}", "bob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ="]
      remove_header: true
      user_header: x-user
  - name: keys
    limits: {{ callback_timeout: 5s }}
    builtin: api-key
    config:
      header: x-api-key
      query: api_key
      hide_credentials: true
      consumer_header: x-consumer
      keys:
        - {{ key: "s3cret", consumer: alice }}
        - {{ sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", consumer: bob }}
  - name: tokens
    limits: {{ callback_timeout: 5s }}
    builtin: jwt
    config:
      algorithms: [HS256, RS256]
      secret: top-secret-for-tests
      public_key: |
{pem}      issuer: https://issuer
      audiences: [api]
      leeway: 30s
      required_claims: [sub]
      cookie: session
      query: token
      claims_to_headers: {{ sub: x-user, role: x-role }}
  - name: rewrite
    limits: {{ callback_timeout: 5s }}
    builtin: headers
    config:
      request: {{ set: {{ x-env: prod }}, add: {{ x-tag: "${{route}}", x-ip: "${{client_ip}}" }}, remove: [x-debug] }}
      response: {{ set: {{ server: portcullis }}, remove: [x-drop] }}
      strip_prefix: /api
      add_prefix: /v2
      request_id: true
  - name: rewrite-chain
    limits: {{ callback_timeout: 5s }}
    builtin: headers
    config: {{ request: {{ set: {{ x-env: prod }} }}, response: {{ set: {{ x-chain: done }}, add: {{ x-via: portcullis }} }}, replace_path_regex: "^/chain/(.*)", replacement: "/inner/${{1}}" }}
  - {{ name: https, builtin: redirect, config: {{ scheme: https, port: 8443, permanent: true }}, limits: {{ callback_timeout: 5s }} }}
  - name: moved
    limits: {{ callback_timeout: 5s }}
    builtin: redirect
    config: {{ regex: "^http://([^/]+)/old/(.*)", replacement: "http://${{1}}/new/${{2}}" }}
  - {{ name: office, builtin: ip-allowlist, config: {{ allow: [127.0.0.0/8, "::1/128"], deny: [127.0.0.2/32] }}, limits: {{ callback_timeout: 5s }} }}
  - {{ name: nolocal, builtin: ip-allowlist, config: {{ deny: [127.0.0.0/8], status: 451 }}, limits: {{ callback_timeout: 5s }} }}
  - {{ name: chain-limit, builtin: rate-limit, config: {{ rate: 1000, per: 1s, burst: 1000, key: client_ip }}, limits: {{ callback_timeout: 5s }} }}
  - {{ name: cors, builtin: cors, config: {{ allow_origins: ["https://app.example.com"], max_age: 10m }}, limits: {{ callback_timeout: 5s }} }}
"#
    ))
}

struct Rig {
    proxy: Proxy,
    c: reqwest::Client,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            proxy: Proxy::start(&conf()),
            c: client_no_redirects(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, headers).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.c.request(method, self.proxy.url("web", path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap_or_else(|e| {
            panic!(
                "{path}: request failed: {e}\nproxy stderr:\n{}",
                self.proxy.logs()
            )
        })
    }

    /// Expects 200 from the echo upstream; returns what it received.
    async fn echoed(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let resp = self.get(path, headers).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: expected 200 from the upstream, got {status}: {body}"
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: echo body is not JSON ({e}): {body}"))
    }

    /// Expects `status` from the filter; returns the response.
    async fn refused(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
    ) -> reqwest::Response {
        let resp = self.get(path, headers).await;
        assert_eq!(
            resp.status().as_u16(),
            status,
            "{path} with {headers:?}: expected {status}"
        );
        resp
    }
}

fn client_no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

fn hdr(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

fn echoed_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

#[tokio::test]
async fn standard_filters_through_the_binary() {
    let rig = Rig::new();

    // basic-auth
    let r = rig.refused("/basic", &[], 401).await;
    assert_eq!(hdr(&r, "www-authenticate"), "Basic realm=\"staff\"");
    rig.refused(
        "/basic",
        &[("authorization", "Basic YWxpY2U6d3Jvbmc=")],
        401,
    )
    .await; // alice:wrong
    for _ in 0..2 {
        // alice:U*U (bcrypt; the second is served from the cache)
        let e = rig
            .echoed(
                "/basic",
                &[
                    ("authorization", "Basic YWxpY2U6VSpV"),
                    ("x-user", "mallory"),
                ],
            )
            .await;
        assert_eq!(echoed_header(&e, "x-user"), Some("alice"));
        assert_eq!(echoed_header(&e, "authorization"), None, "remove_header");
    }
    let e = rig
        .echoed("/basic", &[("authorization", "Basic Ym9iOnNlY3JldA==")])
        .await; // bob:secret
    assert_eq!(echoed_header(&e, "x-user"), Some("bob"));

    // api-key
    let e = rig.echoed("/keys", &[("x-api-key", "s3cret")]).await;
    assert_eq!(echoed_header(&e, "x-consumer"), Some("alice"));
    assert_eq!(echoed_header(&e, "x-api-key"), None, "hide_credentials");
    let e = rig.echoed("/keys/x?a=1&api_key=test", &[]).await;
    assert_eq!(echoed_header(&e, "x-consumer"), Some("bob"));
    assert_eq!(e["query"], "a=1", "the key is hidden from the query");
    let r = rig.refused("/keys", &[], 401).await;
    assert!(r.text().await.unwrap_or_default().contains("no API key"));
    let r = rig.refused("/keys", &[("x-api-key", "guess")], 401).await;
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("invalid API key")
    );

    // jwt
    let bearer = |t: &str| format!("Bearer {}", t.trim());
    let e = rig
        .echoed(
            "/jwt",
            &[("authorization", &bearer(RS256)), ("x-role", "root")],
        )
        .await;
    assert_eq!(echoed_header(&e, "x-user"), Some("alice"));
    assert_eq!(
        echoed_header(&e, "x-role"),
        Some("admin"),
        "claims_to_headers replaces client values"
    );
    let cookie = format!("session={}", HS256.trim());
    assert_eq!(
        echoed_header(&rig.echoed("/jwt", &[("cookie", &cookie)]).await, "x-user"),
        Some("alice")
    );
    let q = format!("/jwt?token={}", HS256.trim());
    assert_eq!(
        echoed_header(&rig.echoed(&q, &[]).await, "x-user"),
        Some("alice")
    );
    let r = rig.refused("/jwt", &[], 401).await;
    assert_eq!(hdr(&r, "www-authenticate"), "Bearer");
    for (token, why) in [
        (EXPIRED, "token expired"),
        (ES256, "algorithm ES256 not accepted"),
        ("a.b.c", "malformed token"),
    ] {
        let r = rig
            .refused("/jwt", &[("authorization", &bearer(token))], 401)
            .await;
        assert_eq!(
            hdr(&r, "www-authenticate"),
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
        );
    }

    // headers
    let e = rig
        .echoed("/api/users?q=1", &[("x-debug", "1"), ("x-env", "dev")])
        .await;
    assert_eq!(e["path"], "/v2/users");
    assert_eq!(e["query"], "q=1");
    assert_eq!(echoed_header(&e, "x-env"), Some("prod"));
    assert_eq!(echoed_header(&e, "x-tag"), Some("rewrite"));
    assert_eq!(echoed_header(&e, "x-ip"), Some("127.0.0.1"));
    assert_eq!(echoed_header(&e, "x-debug"), None);
    assert_eq!(echoed_header(&e, "x-request-id").map(str::len), Some(36));
    let e = rig.echoed("/api", &[("x-request-id", "mine")]).await;
    assert_eq!(
        echoed_header(&e, "x-request-id"),
        Some("mine"),
        "an existing id is kept"
    );
    let r = rig.get("/api/x", &[]).await;
    assert_eq!(hdr(&r, "server"), "portcullis");

    // redirect
    let r = rig.refused("/secure/a?b=1", &[], 301).await;
    let host = rig.proxy.addr("web").ip().to_string();
    assert_eq!(
        hdr(&r, "location"),
        format!("https://{host}:8443/secure/a?b=1")
    );
    let r = rig.send(reqwest::Method::POST, "/secure/a", &[]).await;
    assert_eq!(r.status(), 308);
    let r = rig.refused("/old/x?y=1", &[], 302).await;
    assert_eq!(
        hdr(&r, "location"),
        format!("http://{}/new/x?y=1", rig.proxy.addr("web"))
    );
    let r = rig.send(reqwest::Method::DELETE, "/old/x", &[]).await;
    assert_eq!(r.status(), 307);

    // ip-allowlist: the test client is 127.0.0.1
    rig.echoed("/office", &[]).await;
    let r = rig.refused("/nolocal", &[], 451).await;
    assert!(r.text().await.unwrap_or_default().contains("forbidden"));

    // cors
    let pre = rig
        .send(
            reqwest::Method::OPTIONS,
            "/cors",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
            ],
        )
        .await;
    assert_eq!(pre.status(), 204);
    assert_eq!(
        hdr(&pre, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(hdr(&pre, "access-control-max-age"), "600");
    let r = rig
        .get("/cors", &[("origin", "https://app.example.com")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        hdr(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );

    // A chain of every family behaves as each alone: ip-allowlist (loopback allowed),
    // rate-limit (under the limit), api-key, headers, redirect (a regex that does not
    // match /chain).
    let r = rig.refused("/chain/x", &[], 401).await;
    assert!(r.text().await.unwrap_or_default().contains("no API key"));
    let e = rig.echoed("/chain/x?z=1", &[("x-api-key", "s3cret")]).await;
    assert_eq!(e["path"], "/inner/x");
    assert_eq!(e["query"], "z=1");
    assert_eq!(echoed_header(&e, "x-consumer"), Some("alice"));
    assert_eq!(echoed_header(&e, "x-env"), Some("prod"));
    // Literal values only: headers sets the response's in its own response phase.
    let r = rig.get("/chain/x", &[("x-api-key", "s3cret")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, "x-chain"), "done");
    assert_eq!(hdr(&r, "x-via"), "portcullis");
}
