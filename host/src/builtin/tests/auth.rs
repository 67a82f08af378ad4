//! basic-auth, api-key and jwt through the runtime.

use super::*;

fn basic(user: &str, pw: &str) -> String {
    use std::io::Write;
    // A tiny base64 encoder keeps the host free of a dependency only tests need.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{pw}").into_bytes();
    let mut out = Vec::new();
    for c in raw.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    let mut s = Vec::new();
    let _ = write!(s, "Basic {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&s).into_owned()
}

#[tokio::test]
async fn basic_auth() {
    let p = plugin(
        "login",
        "basic-auth",
        &format!(
            r#"{{"realm":"staff","users":["alice:{BCRYPT_U_U}","bob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ="],"remove_header":true,"user_header":"x-user"}}"#
        ),
    );
    let ps = [p];
    let out = run(&ps, info("10.0.0.1:1", false), request("GET", "/", &[])).await;
    let r = refused(&out, 401);
    assert_eq!(h(r.headers(), "www-authenticate"), "Basic realm=\"staff\"");

    for (user, pw) in [("alice", "U*U"), ("alice", "U*U"), ("bob", "secret")] {
        let auth = basic(user, pw);
        let out = run(
            &ps,
            info("10.0.0.1:1", false),
            request(
                "GET",
                "/",
                &[("authorization", &auth), ("x-user", "mallory")],
            ),
        )
        .await;
        let up = passed(&out);
        assert_eq!(
            h(&up.headers, "x-user"),
            user,
            "user_header replaces a client-sent value"
        );
        assert_eq!(h(&up.headers, "authorization"), "", "remove_header");
    }
    for auth in [
        basic("alice", "wrong"),
        basic("carol", "x"),
        "Bearer x".into(),
    ] {
        let out = run(
            &ps,
            info("10.0.0.1:1", false),
            request("GET", "/", &[("authorization", &auth)]),
        )
        .await;
        refused(&out, 401);
    }
}

#[tokio::test]
async fn api_key() {
    let p = plugin(
        "keys",
        "api-key",
        r#"{"header":"x-api-key","query":"api_key","hide_credentials":true,"consumer_header":"x-consumer",
            "keys":[{"key":"s3cret","consumer":"alice"},
                    {"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","consumer":"bob"}]}"#,
    );
    let ps = [p];
    let out = run(
        &ps,
        info("10.0.0.1:1", false),
        request("GET", "/a", &[("x-api-key", "s3cret")]),
    )
    .await;
    let up = passed(&out);
    assert_eq!(h(&up.headers, "x-consumer"), "alice");
    assert_eq!(h(&up.headers, "x-api-key"), "", "hide_credentials");
    let out = run(
        &ps,
        info("10.0.0.1:1", false),
        request("GET", "/a?x=1&api_key=test", &[]),
    )
    .await;
    let up = passed(&out);
    assert_eq!(h(&up.headers, "x-consumer"), "bob");
    assert_eq!(
        up.uri.to_string(),
        "/a?x=1",
        "the key is hidden from the query"
    );
    let out = run(&ps, info("10.0.0.1:1", false), request("GET", "/a", &[])).await;
    refused(&out, 401);
    let out = run(
        &ps,
        info("10.0.0.1:1", false),
        request("GET", "/a", &[("x-api-key", "guess")]),
    )
    .await;
    refused(&out, 401);
}

const RS256: &str = include_str!("../../../../filters/jwt/testdata/rs256.jwt");
const HS256: &str = include_str!("../../../../filters/jwt/testdata/hs256.jwt");
const EXPIRED: &str = include_str!("../../../../filters/jwt/testdata/hs256-expired.jwt");
const ES256: &str = include_str!("../../../../filters/jwt/testdata/es256.jwt");
const JWKS: &str = include_str!("../../../../filters/jwt/testdata/jwks.json");
const RSA_PEM: &str = include_str!("../../../../filters/jwt/testdata/rsa.pem");

#[tokio::test]
async fn jwt() {
    let cfg = serde_json::json!({
        "algorithms": ["HS256", "RS256"],
        "secret": "top-secret-for-tests",
        "public_key": RSA_PEM,
        "issuer": "https://issuer",
        "audiences": ["api"],
        "leeway": "30s",
        "required_claims": ["sub"],
        "cookie": "session",
        "query": "token",
        "claims_to_headers": { "sub": "x-user", "n": "x-n" }
    });
    let p = plugin("tokens", "jwt", &cfg.to_string());
    let ps = [p];
    for req in [
        request(
            "GET",
            "/",
            &[("authorization", &format!("Bearer {}", RS256.trim()))],
        ),
        request(
            "GET",
            "/",
            &[("cookie", &format!("a=b; session={}", HS256.trim()))],
        ),
        request("GET", &format!("/?token={}", HS256.trim()), &[]),
    ] {
        let out = run(&ps, info("10.0.0.1:1", false), req).await;
        let up = passed(&out);
        assert_eq!(h(&up.headers, "x-user"), "alice");
        assert_eq!(h(&up.headers, "x-n"), "7");
    }
    let out = run(&ps, info("10.0.0.1:1", false), request("GET", "/", &[])).await;
    assert_eq!(
        h(refused(&out, 401).headers(), "www-authenticate"),
        "Bearer"
    );
    for token in [EXPIRED.trim(), ES256.trim(), "not.a.token"] {
        let auth = format!("Bearer {token}");
        let out = run(
            &ps,
            info("10.0.0.1:1", false),
            request("GET", "/", &[("authorization", &auth)]),
        )
        .await;
        let r = refused(&out, 401);
        let challenge = h(r.headers(), "www-authenticate");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{token}: {challenge}"
        );
    }
    // The same ES256 token passes with the JWKS that holds its key.
    let p = plugin("jwks", "jwt", &format!(r#"{{"jwks":{JWKS}}}"#));
    let auth = format!("Bearer {}", ES256.trim());
    let out = run(
        &[p],
        info("10.0.0.1:1", false),
        request("GET", "/", &[("authorization", &auth)]),
    )
    .await;
    passed(&out);
}
