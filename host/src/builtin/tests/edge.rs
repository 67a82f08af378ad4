//! rate-limit, headers, redirect, ip-allowlist, cors, and a chain of them all.

use super::*;

#[tokio::test]
async fn rate_limit_denies_over_the_burst_and_survives_a_reload() {
    let cfg = r#"{"rate":1,"per":"1h","burst":2,"key":"client_ip","headers":true}"#;
    let p = plugin("limit-a", "rate-limit", cfg);
    for remaining in ["1", "0"] {
        let out = run(
            std::slice::from_ref(&p),
            info("10.9.0.1:1", false),
            request("GET", "/", &[]),
        )
        .await;
        passed(&out);
        let r = &out.1;
        assert_eq!(h(r.headers(), "ratelimit-limit"), "2");
        assert_eq!(h(r.headers(), "ratelimit-remaining"), remaining);
    }
    let out = run(
        std::slice::from_ref(&p),
        info("10.9.0.1:1", false),
        request("GET", "/", &[]),
    )
    .await;
    let r = refused(&out, 429);
    let retry: u64 = h(r.headers(), "retry-after").parse().unwrap_or(0);
    assert!((3000..=3600).contains(&retry), "Retry-After {retry}");
    assert_eq!(h(r.headers(), "ratelimit-remaining"), "0");
    // Another client has its own bucket.
    let out = run(
        std::slice::from_ref(&p),
        info("10.9.0.2:1", false),
        request("GET", "/", &[]),
    )
    .await;
    passed(&out);
    // A reload with the same name and config keeps the buckets; a changed rate does not.
    let again = plugin("limit-a", "rate-limit", cfg);
    let out = run(
        &[again],
        info("10.9.0.1:1", false),
        request("GET", "/", &[]),
    )
    .await;
    refused(&out, 429);
    let changed = plugin(
        "limit-a",
        "rate-limit",
        r#"{"rate":2,"per":"1h","burst":2}"#,
    );
    let out = run(
        &[changed],
        info("10.9.0.1:1", false),
        request("GET", "/", &[]),
    )
    .await;
    passed(&out);
}

#[tokio::test]
async fn rate_limit_keys() {
    let p = plugin(
        "limit-h",
        "rate-limit",
        r#"{"rate":1,"per":"1h","burst":1,"key":"header:x-tenant"}"#,
    );
    let ps = [p];
    let t = |v| request("GET", "/", &[("x-tenant", v)]);
    passed(&run(&ps, info("10.0.0.1:1", false), t("a")).await);
    refused(&run(&ps, info("10.0.0.2:1", false), t("a")).await, 429);
    passed(&run(&ps, info("10.0.0.1:1", false), t("b")).await);
    let g = plugin(
        "limit-g",
        "rate-limit",
        r#"{"rate":1,"per":"1h","burst":1,"key":"global"}"#,
    );
    passed(&run(std::slice::from_ref(&g), info("10.0.0.1:1", false), t("a")).await);
    refused(&run(&[g], info("10.0.0.2:1", false), t("b")).await, 429);
}

#[tokio::test]
async fn headers_rewrites() {
    let p = plugin(
        "rewrite",
        "headers",
        r#"{"request":{"set":{"x-env":"prod"},"add":{"x-tag":"${route}","x-who":"${client_ip} ${method} ${header.x-in}"},"remove":["x-debug"]},
            "response":{"set":{"server":"portcullis"},"remove":["x-powered-by"]},
            "strip_prefix":"/api","add_prefix":"/v2","request_id":true}"#,
    );
    let out = run(
        &[p],
        info("10.1.2.3:9", false),
        request(
            "POST",
            "/api/users?q=1",
            &[("x-debug", "1"), ("x-in", "hi"), ("x-env", "dev")],
        ),
    )
    .await;
    let up = passed(&out);
    assert_eq!(up.uri.to_string(), "/v2/users?q=1");
    assert_eq!(h(&up.headers, "x-env"), "prod");
    assert_eq!(h(&up.headers, "x-tag"), "api");
    assert_eq!(h(&up.headers, "x-who"), "10.1.2.3 POST hi");
    assert_eq!(h(&up.headers, "x-debug"), "");
    assert_eq!(h(&up.headers, "x-request-id").len(), 36, "a UUID was added");
    let r = &out.1;
    assert_eq!(h(r.headers(), "server"), "portcullis");
    assert_eq!(h(r.headers(), "x-powered-by"), "");
}

#[tokio::test]
async fn redirects() {
    let p = plugin(
        "https",
        "redirect",
        r#"{"scheme":"https","permanent":true}"#,
    );
    let out = run(
        std::slice::from_ref(&p),
        info("10.0.0.1:1", false),
        request("GET", "/a?b=1", &[]),
    )
    .await;
    let r = refused(&out, 301);
    assert_eq!(h(r.headers(), "location"), "https://api.example.com/a?b=1");
    let out = run(
        std::slice::from_ref(&p),
        info("10.0.0.1:1", false),
        request("POST", "/a", &[]),
    )
    .await;
    refused(&out, 308);
    passed(&run(&[p], info("10.0.0.1:1", true), request("GET", "/a", &[])).await);

    let p = plugin(
        "moved",
        "redirect",
        r#"{"regex":"^http://api\\.example\\.com/old/(.*)","replacement":"https://new.example.com/${1}"}"#,
    );
    let out = run(
        std::slice::from_ref(&p),
        info("10.0.0.1:1", false),
        request("GET", "/old/x?y", &[]),
    )
    .await;
    let r = refused(&out, 302);
    assert_eq!(h(r.headers(), "location"), "https://new.example.com/x?y");
    refused(
        &run(
            std::slice::from_ref(&p),
            info("10.0.0.1:1", false),
            request("PUT", "/old/x", &[]),
        )
        .await,
        307,
    );
    passed(
        &run(
            &[p],
            info("10.0.0.1:1", false),
            request("GET", "/new/x", &[]),
        )
        .await,
    );
}

#[tokio::test]
async fn ip_allowlist() {
    let p = plugin(
        "office",
        "ip-allowlist",
        r#"{"allow":["10.0.0.0/8","2001:db8::/32"],"deny":["10.6.6.0/24"]}"#,
    );
    let ps = [p];
    passed(&run(&ps, info("10.1.1.1:5", false), request("GET", "/", &[])).await);
    passed(
        &run(
            &ps,
            info("[2001:db8::7]:5", false),
            request("GET", "/", &[]),
        )
        .await,
    );
    passed(
        &run(
            &ps,
            info("[::ffff:10.1.1.1]:5", false),
            request("GET", "/", &[]),
        )
        .await,
    );
    refused(
        &run(&ps, info("10.6.6.6:5", false), request("GET", "/", &[])).await,
        403,
    );
    refused(
        &run(&ps, info("192.168.1.1:5", false), request("GET", "/", &[])).await,
        403,
    );

    let p = plugin(
        "xff",
        "ip-allowlist",
        r#"{"allow":["1.1.1.1"],"source":"x-forwarded-for","depth":1,"trusted_proxies":["127.0.0.1/32"],"status":451}"#,
    );
    let ps = [p];
    let xff = |v| request("GET", "/", &[("x-forwarded-for", v)]);
    passed(&run(&ps, info("127.0.0.1:5", false), xff("9.9.9.9, 1.1.1.1")).await);
    refused(
        &run(&ps, info("127.0.0.1:5", false), xff("1.1.1.1, 9.9.9.9")).await,
        451,
    );
    refused(
        &run(&ps, info("10.0.0.1:5", false), xff("1.1.1.1")).await,
        451,
    );
}

#[tokio::test]
async fn cors() {
    let p = plugin(
        "cors",
        "cors",
        r#"{"allow_origins":["https://app.example.com"],"max_age":"10m"}"#,
    );
    let ps = [p];
    let pre = request(
        "OPTIONS",
        "/",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ],
    );
    let out = run(&ps, info("10.0.0.1:1", false), pre).await;
    let r = refused(&out, 204);
    assert_eq!(
        h(r.headers(), "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(h(r.headers(), "access-control-max-age"), "600");
    let out = run(
        &ps,
        info("10.0.0.1:1", false),
        request("GET", "/", &[("origin", "https://app.example.com")]),
    )
    .await;
    passed(&out);
    assert_eq!(
        h(out.1.headers(), "access-control-allow-origin"),
        "https://app.example.com"
    );
}

#[tokio::test]
async fn a_chain_of_every_family_behaves_as_each_alone() {
    let chain = [
        plugin("c-ip", "ip-allowlist", r#"{"allow":["10.0.0.0/8"]}"#),
        plugin(
            "c-limit",
            "rate-limit",
            r#"{"rate":1,"per":"1h","burst":1,"key":"client_ip"}"#,
        ),
        plugin(
            "c-keys",
            "api-key",
            r#"{"keys":[{"key":"k1","consumer":"alice"}]}"#,
        ),
        plugin(
            "c-rewrite",
            "headers",
            r#"{"request":{"set":{"x-env":"prod"}},"strip_prefix":"/api"}"#,
        ),
        plugin("c-https", "redirect", r#"{"scheme":"https"}"#),
    ];
    let key = [("x-api-key", "k1")];
    refused(
        &run(
            &chain,
            info("192.168.0.1:1", false),
            request("GET", "/api/x", &key),
        )
        .await,
        403,
    );
    refused(
        &run(
            &chain,
            info("10.0.0.5:1", true),
            request("GET", "/api/x", &[]),
        )
        .await,
        401,
    );
    refused(
        &run(
            &chain,
            info("10.0.0.6:1", false),
            request("GET", "/api/x", &key),
        )
        .await,
        302,
    );
    let out = run(
        &chain,
        info("10.0.0.7:1", true),
        request("GET", "/api/x", &key),
    )
    .await;
    let up = passed(&out);
    assert_eq!(up.uri.to_string(), "/x");
    assert_eq!(h(&up.headers, "x-env"), "prod");
    assert_eq!(h(&up.headers, "x-consumer"), "alice");
    refused(
        &run(
            &chain,
            info("10.0.0.7:1", true),
            request("GET", "/api/x", &key),
        )
        .await,
        429,
    );
}
