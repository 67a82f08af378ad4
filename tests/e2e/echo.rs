//! `echo@internal`: the JSON it answers with describes the request as an upstream
//! would see it.

use serde_json::Value;

use crate::inproc::{Proxy, client, config, matching, route};

#[tokio::test]
async fn echo_describes_the_request() {
    let proxy = Proxy::start(config(
        vec![route("echo-route", matching(None, None), "echo@internal")],
        vec![],
    ))
    .await;
    let body = vec![7u8; 12345];
    let resp = client()
        .post(proxy.url("/some/path?a=1&b=two"))
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("X-Upper", "Value")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("request to the proxy failed: {e}"));
    assert_eq!(resp.status(), 200, "echo answers 200");
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "echo answers JSON"
    );
    let json: Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("echo body is not JSON: {e}"));
    assert_eq!(json["method"], "POST", "method in {json}");
    assert_eq!(json["path"], "/some/path", "path without query in {json}");
    assert_eq!(json["query"], "a=1&b=two", "query in {json}");
    assert_eq!(json["body_bytes"], 12345, "body_bytes in {json}");
    assert_eq!(json["route"], "echo-route", "route in {json}");
    assert_eq!(
        json["headers"]["x-multi"], "one, two",
        "repeated headers joined in {json}"
    );
    assert_eq!(
        json["headers"]["x-upper"], "Value",
        "names lower-cased in {json}"
    );
    assert_eq!(
        json["headers"]["host"],
        proxy.addr.to_string(),
        "Host as the client sent it in {json}"
    );
    assert_eq!(
        json["headers"]["x-forwarded-for"], "127.0.0.1",
        "XFF in {json}"
    );
    assert_eq!(
        json["headers"]["x-forwarded-proto"], "http",
        "XFP in {json}"
    );
    assert_eq!(
        json["headers"]["x-forwarded-host"],
        proxy.addr.to_string(),
        "XFH in {json}"
    );
    let client_address = json["client_address"].as_str().unwrap_or_default();
    assert!(
        client_address.starts_with("127.0.0.1:") && client_address.len() > "127.0.0.1:".len(),
        "client_address should be IP:port of the peer, got {json}"
    );
}

#[tokio::test]
async fn echo_without_query_or_body() {
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "echo@internal")],
        vec![],
    ))
    .await;
    let json: Value = client()
        .get(proxy.url("/"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("echo body is not JSON: {e}"));
    assert_eq!(json["query"], "", "empty query in {json}");
    assert_eq!(json["body_bytes"], 0, "no body in {json}");
    assert_eq!(
        json["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
        "the peer is appended to an existing X-Forwarded-For in {json}"
    );
}

#[tokio::test]
async fn echo_through_the_binary_over_http2() {
    let conf = crate::support::ConfDir::with(
        "admin: { address: 127.0.0.1:0 }\nlisteners: [{ name: web, address: 127.0.0.1:0 }]\nroutes: [{ name: default, upstream: echo@internal }]\n",
    );
    let proxy = crate::support::Proxy::start(&conf);
    let resp = crate::support::h2_client()
        .put(proxy.url("web", "/h2/path?x=y"))
        .header("x-test", "1")
        .body("hello")
        .send()
        .await
        .unwrap_or_else(|e| panic!("h2 request failed: {e}"));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "spoke HTTP/2");
    let json: Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("not JSON: {e}"));
    let addr = proxy.addr("web").to_string();
    assert_eq!(json["method"], "PUT", "{json}");
    assert_eq!(json["path"], "/h2/path", "{json}");
    assert_eq!(json["query"], "x=y", "{json}");
    assert_eq!(json["body_bytes"], 5, "{json}");
    assert_eq!(json["route"], "default", "{json}");
    assert_eq!(json["headers"]["x-test"], "1", "{json}");
    assert_eq!(
        json["headers"]["host"],
        addr.as_str(),
        ":authority becomes Host: {json}"
    );
    assert_eq!(json["headers"]["x-forwarded-host"], addr.as_str(), "{json}");
    assert_eq!(json["headers"]["x-forwarded-proto"], "http", "{json}");
    assert_eq!(json["headers"]["x-forwarded-for"], "127.0.0.1", "{json}");
    assert!(
        json["client_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "client_address is the peer's IP:port: {json}"
    );
}
