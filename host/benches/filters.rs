//! Per-request cost of each standard filter on its allow path: the embedded module,
//! configured by the real runtime, driven in-process through `HttpFilters` (request
//! and response headers phases, then `finish`). The `empty_chain` case is the
//! driver's own cost, to subtract.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{FilterConfig, FilterLimits, FilterSource, OnError, Origin};
use portcullis::wasm::{Decision, HttpFilters, Plugin, StreamInfo};

const HS256: &str = include_str!("../../filters/jwt/testdata/hs256.jwt");
const RS256: &str = include_str!("../../filters/jwt/testdata/rs256.jwt");
const ES256: &str = include_str!("../../filters/jwt/testdata/es256.jwt");
const RSA_PEM: &str = include_str!("../../filters/jwt/testdata/rsa.pem");
const ES_PEM: &str = include_str!("../../filters/jwt/testdata/es256.pem");
const BCRYPT: &str = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

fn plugin(name: &str, builtin: &str, json: &str) -> Arc<Plugin> {
    let cfg = FilterConfig {
        name: name.into(),
        source: FilterSource::Builtin(builtin.into()),
        root_id: String::new(),
        config: json.as_bytes().to_vec(),
        on_error: OnError::Deny,
        limits: FilterLimits::default(),
        asynchronous: false,
        integrity: Default::default(),
        origin: Origin::default(),
    };
    let rt = portcullis::extensions::runtime().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.plugin(&cfg).unwrap_or_else(|e| panic!("{builtin}: {e}"))
}

fn info() -> StreamInfo {
    StreamInfo {
        client: "10.1.2.3:4567".parse().unwrap_or_else(|_| unreachable!()),
        local: "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
        listener: "web".into(),
        route: "api".into(),
        tls_version: Some("TLSv1_3"),
    }
}

fn request(path: &str, headers: &[(&str, String)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .uri(path)
        .header("host", "api.example.com");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(()).unwrap_or_else(|e| panic!("{e}")).into_parts().0
}

async fn one(plugins: &[Arc<Plugin>], req: &http::request::Parts) {
    let mut chain = HttpFilters::new(plugins, info());
    let mut head = req.clone();
    match chain.request_headers(&mut head, true).await {
        Decision::Continue => {}
        Decision::Respond(r) => panic!("the allow path answered {}: {:?}", r.status(), r.body()),
        Decision::Fail(f) => panic!("the allow path failed: {f}"),
    }
    let mut resp = http::Response::new(()).into_parts().0;
    black_box(chain.response_headers(&mut resp, true).await);
    chain.finish().await;
}

fn filters(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let bearer = |t: &str| vec![("authorization", format!("Bearer {}", t.trim()))];
    let cases: Vec<(&str, Vec<Arc<Plugin>>, http::request::Parts)> = vec![
        ("empty_chain", vec![], request("/", &[])),
        (
            "rate-limit",
            vec![plugin(
                "b-limit",
                "rate-limit",
                r#"{"rate":1000000000,"per":"1s","key":"client_ip","headers":true}"#,
            )],
            request("/", &[]),
        ),
        (
            "basic-auth(bcrypt,cached)",
            vec![plugin(
                "b-basic",
                "basic-auth",
                &format!(r#"{{"users":["alice:{BCRYPT}"],"user_header":"x-user"}}"#),
            )],
            request("/", &[("authorization", "Basic YWxpY2U6VSpV".into())]),
        ),
        (
            "api-key",
            vec![plugin(
                "b-keys",
                "api-key",
                r#"{"keys":[{"key":"k1","consumer":"a"},{"key":"k2","consumer":"b"}]}"#,
            )],
            request("/", &[("x-api-key", "k2".into())]),
        ),
        (
            "jwt(HS256,cached)",
            vec![plugin(
                "b-hs",
                "jwt",
                r#"{"secret":"top-secret-for-tests","claims_to_headers":{"sub":"x-user"}}"#,
            )],
            request("/", &bearer(HS256)),
        ),
        (
            "jwt(HS256,uncached)",
            vec![plugin(
                "b-hs-nc",
                "jwt",
                r#"{"secret":"top-secret-for-tests","claims_to_headers":{"sub":"x-user"},"cache_size":0}"#,
            )],
            request("/", &bearer(HS256)),
        ),
        // The same token on every iteration: after the warm-up request, each one is a
        // hit of the filter's verified-token cache; `uncached` turns it off to show
        // what a first-seen token costs.
        (
            "jwt(RS256,cached)",
            vec![plugin(
                "b-rs",
                "jwt",
                &serde_json::json!({ "public_key": RSA_PEM }).to_string(),
            )],
            request("/", &bearer(RS256)),
        ),
        (
            "jwt(RS256,uncached)",
            vec![plugin(
                "b-rs-nc",
                "jwt",
                &serde_json::json!({ "public_key": RSA_PEM, "cache_size": 0 }).to_string(),
            )],
            request("/", &bearer(RS256)),
        ),
        (
            "jwt(ES256,cached)",
            vec![plugin(
                "b-es",
                "jwt",
                &serde_json::json!({ "public_key": ES_PEM }).to_string(),
            )],
            request("/", &bearer(ES256)),
        ),
        (
            "jwt(ES256,uncached)",
            vec![plugin(
                "b-es-nc",
                "jwt",
                &serde_json::json!({ "public_key": ES_PEM, "cache_size": 0 }).to_string(),
            )],
            request("/", &bearer(ES256)),
        ),
        (
            "headers",
            vec![plugin(
                "b-headers",
                "headers",
                r#"{"request":{"set":{"x-env":"prod"},"add":{"x-tag":"${route}"},"remove":["x-debug"]},
                    "response":{"set":{"server":"portcullis"}},"strip_prefix":"/api"}"#,
            )],
            request("/api/x", &[]),
        ),
        (
            "redirect(no-op)",
            vec![plugin("b-redirect", "redirect", r#"{"scheme":"https"}"#)],
            request("/", &[]),
        ),
        (
            "ip-allowlist",
            vec![plugin(
                "b-ip",
                "ip-allowlist",
                r#"{"allow":["192.168.0.0/16","10.0.0.0/8"],"deny":["10.6.0.0/16"]}"#,
            )],
            request("/", &[]),
        ),
    ];
    let mut g = c.benchmark_group("filters");
    for (name, plugins, req) in &cases {
        // Warm: every worker VM is created on first use.
        rt.block_on(one(plugins, req));
        g.bench_function(*name, |b| b.iter(|| rt.block_on(one(plugins, req))));
    }
    g.finish();
}

criterion_group!(benches, filters);
criterion_main!(benches);
