//! Verification against tokens signed by OpenSSL / Python `cryptography`
//! (`testdata/`, keys generated once; claims expire in 2100).

use super::*;

const JWKS: &str = include_str!("../testdata/jwks.json");
const NOW: u64 = 1_800_000_000;

fn filter(json: &str) -> Result<Jwt, ConfigError> {
    portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(Jwt::new)
}

fn tok(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/testdata/{name}.jwt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .trim()
    .to_string()
}

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/testdata/{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn with_pem(name: &str) -> Jwt {
    filter(&serde_json::json!({ "public_key": pem(name) }).to_string()).unwrap()
}

#[test]
fn every_algorithm_verifies() {
    let hs = filter(r#"{"secret":"top-secret-for-tests"}"#).unwrap();
    for alg in ["hs256", "hs384", "hs512"] {
        let claims = hs.verifier.verify(&tok(alg), NOW).unwrap();
        assert_eq!(
            claims.get("sub"),
            Some(&Value::String("alice".into())),
            "{alg}"
        );
    }
    let rsa = with_pem("rsa");
    for alg in ["rs256", "rs384", "rs512"] {
        assert!(rsa.verifier.verify(&tok(alg), NOW).is_ok(), "{alg}");
    }
    assert!(
        with_pem("es256")
            .verifier
            .verify(&tok("es256"), NOW)
            .is_ok()
    );
    assert!(
        with_pem("es384")
            .verifier
            .verify(&tok("es384"), NOW)
            .is_ok()
    );
    assert!(
        with_pem("eddsa")
            .verifier
            .verify(&tok("eddsa"), NOW)
            .is_ok()
    );
    let jwks = filter(&format!(r#"{{"jwks":{JWKS}}}"#)).unwrap();
    for alg in ["rs256", "es256", "es384", "eddsa"] {
        assert!(
            jwks.verifier.verify(&tok(alg), NOW).is_ok(),
            "{alg} via JWKS"
        );
    }
    // The JWKS RSA key is published with alg RS256 only, so RS384 is not accepted.
    assert_eq!(
        jwks.verifier.verify(&tok("rs384"), NOW),
        Err(Invalid::Algorithm("RS384".into()))
    );
}

#[test]
fn refusals() {
    let hs = filter(r#"{"secret":"top-secret-for-tests","algorithms":["HS256"]}"#).unwrap();
    let v = &hs.verifier;
    assert_eq!(
        v.verify(&tok("hs384"), NOW),
        Err(Invalid::Algorithm("HS384".into()))
    );
    assert_eq!(
        v.verify(&tok("none"), NOW),
        Err(Invalid::Algorithm("none".into()))
    );
    assert_eq!(v.verify(&tok("hs256-expired"), NOW), Err(Invalid::Expired));
    assert_eq!(v.verify("a.b", NOW), Err(Invalid::Malformed));
    assert_eq!(v.verify("a.b.c.d", NOW), Err(Invalid::Malformed));
    let mut t = tok("hs256");
    t.push('A');
    assert_eq!(
        v.verify(&t, NOW),
        Err(Invalid::Signature),
        "tampered signature"
    );
    let wrong = filter(r#"{"secret":"another"}"#).unwrap();
    assert_eq!(
        wrong.verifier.verify(&tok("hs256"), NOW),
        Err(Invalid::Signature)
    );
    // An RSA public key used as an HMAC secret (the classic confusion) fails: HS256 is
    // not accepted with only a public key configured.
    assert!(matches!(
        with_pem("rsa").verifier.verify(&tok("hs256"), NOW),
        Err(Invalid::Algorithm(_))
    ));
    // nbf 1000 with now 999 and no leeway.
    assert_eq!(
        hs.verifier.verify(&tok("hs256"), 999),
        Err(Invalid::NotYetValid)
    );
}

#[test]
fn claims() {
    let f =
        |extra: &str| filter(&format!(r#"{{"secret":"top-secret-for-tests"{extra}}}"#)).unwrap();
    let t = tok("hs256");
    assert!(
        f(r#","issuer":"https://issuer""#)
            .verifier
            .verify(&t, NOW)
            .is_ok()
    );
    assert_eq!(
        f(r#","issuer":"https://other""#).verifier.verify(&t, NOW),
        Err(Invalid::Issuer)
    );
    assert!(
        f(r#","audiences":["api"]"#)
            .verifier
            .verify(&t, NOW)
            .is_ok()
    );
    assert!(
        f(r#","audiences":"other""#)
            .verifier
            .verify(&t, NOW)
            .is_ok()
    );
    assert_eq!(
        f(r#","audiences":["web"]"#).verifier.verify(&t, NOW),
        Err(Invalid::Audience)
    );
    assert!(
        f(r#","required_claims":["sub","role"]"#)
            .verifier
            .verify(&t, NOW)
            .is_ok()
    );
    assert_eq!(
        f(r#","required_claims":["email"]"#)
            .verifier
            .verify(&t, NOW),
        Err(Invalid::MissingClaim("email".into()))
    );
    // Expired at 1000: with 30 s of leeway, valid until 1030.
    let e = tok("hs256-expired");
    assert!(f(r#","leeway":"30s""#).verifier.verify(&e, 1029).is_ok());
    assert_eq!(
        f(r#","leeway":"30s""#).verifier.verify(&e, 1030),
        Err(Invalid::Expired)
    );
}

#[test]
fn token_sources() {
    let t = |a, c, p| token(a, c, Some("session"), p, Some("token"));
    assert_eq!(t(Some("Bearer abc"), None, "/").as_deref(), Some("abc"));
    assert_eq!(t(Some("bearer  abc "), None, "/").as_deref(), Some("abc"));
    assert_eq!(t(Some("Basic abc"), None, "/"), None);
    assert_eq!(
        t(None, Some("x=1; session=ck"), "/?token=q").as_deref(),
        Some("ck")
    );
    assert_eq!(t(None, None, "/a?token=q").as_deref(), Some("q"));
    assert_eq!(
        token(None, Some("session=ck"), None, "/?token=q", None),
        None,
        "sources off"
    );
}

#[test]
fn refusal_headers() {
    let r = refusal(Some(&Invalid::Expired));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header_value("www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"token expired\"")
    );
    assert_eq!(
        refusal(None).header_value("www-authenticate"),
        Some("Bearer")
    );
    assert_eq!(claim_value(&serde_json::json!(7)), "7");
    assert_eq!(claim_value(&serde_json::json!("a\r\nb")), "ab");
}

#[test]
fn bad_configs_name_the_field() {
    let e = |j: &str| filter(j).unwrap_err().field;
    assert_eq!(e(r#"{}"#), "");
    assert_eq!(e(r#"{"secret":""}"#), "secret");
    assert_eq!(
        e(r#"{"public_key":"-----BEGIN NOTHING-----"}"#),
        "public_key"
    );
    assert_eq!(
        e(r#"{"secret":"s","algorithms":["HS256","XS1"]}"#),
        "algorithms[1]"
    );
    assert_eq!(
        e(r#"{"secret":"s","algorithms":["RS256"]}"#),
        "algorithms[0]"
    );
    assert_eq!(
        e(r#"{"jwks":{"keys":[{"kty":"EC","crv":"P-999","x":"AA","y":"AA"}]}}"#),
        "jwks.keys[0]"
    );
    assert_eq!(
        e(r#"{"jwks":{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}}"#),
        "jwks.keys[0]"
    );
    assert_eq!(
        e(r#"{"secret":"s","claims_to_headers":{"sub":"bad header"}}"#),
        "claims_to_headers.sub"
    );
    assert_eq!(e(r#"{"secret":"s","leeway":"soon"}"#), "leeway");
    assert_eq!(e(r#"{"secret":"s","cookie":""}"#), "cookie");
    assert_eq!(e(r#"{"secret":"s","issuers":"x"}"#), "issuers");
}

// === the verified-token cache ===

/// When the test tokens expire (2100-01-01).
const EXP: u64 = 4_102_444_800;

#[test]
fn a_verified_token_is_remembered_and_served_from_the_cache() {
    let f = with_pem("rsa");
    let t = tok("rs256");
    let first = f.authenticate(&t, NOW).unwrap();
    assert_eq!(first.get("sub"), Some(&Value::String("alice".into())));
    assert_eq!(
        f.cache.borrow().len(),
        1,
        "the verified token is remembered"
    );
    // Plant other claims under the token's key: a hit must return them unverified.
    let mut planted = serde_json::Map::new();
    planted.insert("sub".into(), Value::String("cached".into()));
    f.cache
        .borrow_mut()
        .insert(cache::fingerprint(&t), std::rc::Rc::new(planted));
    let again = f.authenticate(&format!(" {t} "), NOW).unwrap();
    assert_eq!(
        again.get("sub"),
        Some(&Value::String("cached".into())),
        "the second request was answered from the cache (the token is trimmed first)"
    );
}

#[test]
fn a_cached_token_is_refused_once_it_expires() {
    let f = with_pem("es256");
    let t = tok("es256");
    assert!(f.authenticate(&t, NOW).is_ok());
    assert_eq!(f.cache.borrow().len(), 1);
    assert!(
        f.authenticate(&t, EXP - 1).is_ok(),
        "still valid one second before exp"
    );
    assert_eq!(f.authenticate(&t, EXP).err(), Some(Invalid::Expired));
    assert!(f.cache.borrow().is_empty(), "an expired token is forgotten");
    // nbf is 1000 in the test tokens: re-cache, then ask before it.
    assert!(f.authenticate(&t, NOW).is_ok());
    assert_eq!(f.authenticate(&t, 999).err(), Some(Invalid::NotYetValid));
}

#[test]
fn leeway_holds_for_cached_tokens() {
    let f = filter(&serde_json::json!({ "public_key": pem("rsa"), "leeway": "30s" }).to_string())
        .unwrap();
    let t = tok("rs256");
    assert!(f.authenticate(&t, NOW).is_ok());
    assert!(f.authenticate(&t, EXP + 29).is_ok(), "within the leeway");
    assert_eq!(f.authenticate(&t, EXP + 30).err(), Some(Invalid::Expired));
}

#[test]
fn refused_and_forged_tokens_are_not_remembered() {
    let f = filter(r#"{"secret":"top-secret-for-tests"}"#).unwrap();
    assert_eq!(
        f.authenticate(&tok("hs256-expired"), NOW).err(),
        Some(Invalid::Expired)
    );
    assert!(
        f.cache.borrow().is_empty(),
        "an expired token is not cached"
    );
    let t = tok("hs256");
    assert!(f.authenticate(&t, NOW).is_ok());
    // The same header and claims with another token's signature: a different key, a
    // miss, and a full verification that fails.
    let (signed, _) = t.rsplit_once('.').unwrap();
    let other = tok("hs384");
    let (_, sig) = other.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{sig}");
    assert_eq!(f.authenticate(&forged, NOW).err(), Some(Invalid::Signature));
    assert_eq!(
        f.cache.borrow().len(),
        1,
        "only the genuine token is remembered"
    );
}

#[test]
fn cache_size_bounds_or_disables_the_cache() {
    let f = filter(r#"{"secret":"top-secret-for-tests","cache_size":2}"#).unwrap();
    for alg in ["hs256", "hs384", "hs512"] {
        assert!(f.authenticate(&tok(alg), NOW).is_ok(), "{alg}");
    }
    assert_eq!(f.cache.borrow().len(), 2, "cache_size 2 holds two tokens");
    let off = filter(r#"{"secret":"top-secret-for-tests","cache_size":0}"#).unwrap();
    assert!(off.authenticate(&tok("hs256"), NOW).is_ok());
    assert!(
        off.cache.borrow().is_empty(),
        "cache_size 0 remembers nothing"
    );
    let err = filter(r#"{"secret":"s","cache_size":100001}"#).unwrap_err();
    assert_eq!(
        err.field, "cache_size",
        "a too large cache_size is refused: {err:?}"
    );
}
