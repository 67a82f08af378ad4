//! Envoy's request, response, connection and upstream attributes, read by a real filter
//! in each phase, with Envoy's encodings: integers and timestamps as 8-byte
//! little-endian, strings as they are, booleans as one byte; NOT_FOUND until known.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// The probe's `attrs` report: name → value, `None` when NOT_FOUND.
fn parse(report: &str) -> HashMap<String, Option<Vec<u8>>> {
    report
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let bytes = (v != "-").then(|| {
                (0..v.len())
                    .step_by(2)
                    .filter_map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
                    .collect()
            });
            (k.to_string(), bytes)
        })
        .collect()
}

fn int(a: &HashMap<String, Option<Vec<u8>>>, name: &str) -> Option<i64> {
    let v = a.get(name).unwrap_or_else(|| panic!("{name} not reported"));
    v.as_ref().map(|b| {
        let arr: [u8; 8] = b
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("{name}: {b:?} is not 8 bytes"));
        i64::from_le_bytes(arr)
    })
}

fn text(a: &HashMap<String, Option<Vec<u8>>>, name: &str) -> Option<String> {
    let v = a.get(name).unwrap_or_else(|| panic!("{name} not reported"));
    v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

fn now_nanos() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[tokio::test]
async fn attributes_appear_as_the_stream_goes_and_encode_as_on_envoy() {
    let p = plugin(&filter("attrs", "attrs:at"));
    let before = now_nanos();
    let mut chain = HttpFilters::new(&[p], info());
    chain.set_upstream_and_peer("backend".into(), Some("CN=alice,O=Example".into()));
    let mut req = request_with("POST", "/upload", &[("content-length", "11")]);
    cont(chain.request_headers(&mut req, false).await);
    let a = parse(&header(&req.headers, "x-attrs"));
    let t = int(&a, "request.time").unwrap_or(0);
    assert!(
        t >= before && t <= now_nanos(),
        "request.time {t} is Unix nanoseconds"
    );
    assert_eq!(int(&a, "request.duration"), None, "known once complete");
    assert_eq!(int(&a, "request.size"), Some(11), "content-length");
    let total = int(&a, "request.total_size").unwrap_or(0);
    assert!(total > 11 + 20, "headers count in the total: {total}");
    for name in [
        "response.size",
        "response.total_size",
        "response.code",
        "response.code_details",
        "response.flags",
        "upstream.address",
    ] {
        assert_eq!(a[name], None, "{name} before the response");
    }
    assert_eq!(text(&a, "cluster_name").as_deref(), Some("backend"));
    assert_eq!(text(&a, "route_name").as_deref(), Some("api"));
    assert_eq!(text(&a, "plugin_name").as_deref(), Some("attrs"));
    assert_eq!(text(&a, "plugin_root_id").as_deref(), Some("root-attrs"));
    // Empty, which the Rust SDK cannot tell from not found (a null pointer).
    assert_eq!(text(&a, "plugin_vm_id"), None);
    assert_eq!(int(&a, "source.port"), Some(4567));
    assert_eq!(
        text(&a, "destination.address").as_deref(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(int(&a, "destination.port"), Some(8080));
    assert_eq!(
        a["connection.mtls"],
        Some(vec![1]),
        "a verified client cert"
    );
    assert_eq!(
        text(&a, "connection.subject_peer_certificate").as_deref(),
        Some("CN=alice,O=Example")
    );

    match chain
        .request_body(Bytes::from_static(b"hello world"), true)
        .await
    {
        BodyDecision::Forward(b) => assert_eq!(&b[..], b"hello world"),
        BodyDecision::Respond(r) => panic!("request body answered {}", r.status()),
        BodyDecision::Fail(f) => panic!("request body failed: {f}"),
    }
    chain.set_upstream_result(Some("10.0.0.7:8080".into()), 0);
    let mut resp = response(201);
    cont(chain.response_headers(&mut resp, false).await);
    let a = parse(&header(&resp.headers, "x-attrs"));
    assert_eq!(int(&a, "response.code"), Some(201));
    assert_eq!(
        text(&a, "upstream.address").as_deref(),
        Some("10.0.0.7:8080")
    );
    assert_eq!(
        int(&a, "response.flags"),
        Some(0),
        "no flag on a good exchange"
    );
    assert_eq!(int(&a, "response.size"), Some(0), "no body sent yet");
    assert!(int(&a, "response.total_size").unwrap_or(0) > 0);
    let _ = chain
        .response_body(Bytes::from_static(b"12345"), true)
        .await;
    chain.finish().await;

    let logged = shared::get("attrs:at").map(|v| v.0).unwrap_or_default();
    let a = parse(&String::from_utf8_lossy(&logged));
    let d = int(&a, "request.duration").unwrap_or(-1);
    assert!(d >= 0, "request.duration in on_log: {d}");
    assert_eq!(int(&a, "response.size"), Some(5));
    assert_eq!(int(&a, "response.code"), Some(201), "kept for on_log");
    assert!(int(&a, "response.total_size").unwrap_or(0) > 5);
    assert_eq!(int(&a, "request.size"), Some(11));
}

#[tokio::test]
async fn plain_text_without_a_client_certificate_is_not_mtls() {
    let p = plugin(&filter("attrs-plain", "attrs:pl"));
    let mut chain = HttpFilters::new(&[p], info());
    chain.set_upstream_and_peer("backend".into(), None);
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    let a = parse(&header(&req.headers, "x-attrs"));
    assert_eq!(a["connection.mtls"], Some(vec![0]));
    assert_eq!(a["connection.subject_peer_certificate"], None);
    assert_eq!(int(&a, "request.size"), Some(0), "a bodiless GET");
    chain.finish().await;
}

#[tokio::test]
async fn a_local_reply_carries_its_details() {
    let p = plugin(&filter("attrs-local", "attrs:lo"));
    let l = plugin(&filter("attrs-close", "close:cl"));
    let mut chain = HttpFilters::new(&[p, l], info());
    let resp = respond(chain.request_headers(&mut request("/", &[]), true).await);
    let a = parse(&header(resp.headers(), "x-attrs"));
    assert_eq!(int(&a, "response.code"), Some(502));
    assert_eq!(
        text(&a, "response.code_details").as_deref(),
        Some("closed by filter")
    );
    chain.finish().await;
}

#[tokio::test]
async fn a_failed_exchange_carries_envoys_response_flags() {
    let p = plugin(&filter("attrs-failed", "attrs:fl"));
    let mut chain = HttpFilters::new(&[p], info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    // What the driver passes when the upstream sent no response headers in time.
    let late = crate::proxy::ProxyError::Upstream(crate::upstream::UpstreamError::Timeout {
        target: "127.0.0.1:9".into(),
        timeout: std::time::Duration::from_secs(1),
    });
    chain.set_upstream_result(None, late.envoy_response_flags());
    let mut resp = response(504);
    cont(chain.response_headers(&mut resp, true).await);
    let a = parse(&header(&resp.headers, "x-attrs"));
    assert_eq!(
        int(&a, "response.flags"),
        Some(0x4),
        "UpstreamRequestTimeout (UT)"
    );
    assert_eq!(a["upstream.address"], None, "no target was reached");
    chain.finish().await;
}
