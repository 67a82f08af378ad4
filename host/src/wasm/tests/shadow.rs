//! Shadow filters: run on every request, recorded, never enforced.

use super::*;
use crate::metrics::global;

/// The value of the `/metrics` line starting with `series` (0 when absent).
fn metric(series: &str) -> u64 {
    global()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_denying_shadow_filter_lets_the_request_through_and_is_counted() {
    let deny = plugin(&filter("shadow-deny", "local:sd"));
    let after = plugin(&filter("shadow-deny-after", "headers:sda"));
    let mut chain = shadowed(&[deny, after], &[true]);
    let mut req = request("/x", &[("x-in", "hello")]);
    cont(chain.request_headers(&mut req, true).await);
    assert!(
        values(&req.headers, "x-seen-sd").is_empty(),
        "the shadow filter's header went through: {:?}",
        req.headers
    );
    assert_eq!(
        values(&req.headers, "x-chain"),
        ["sda"],
        "{:?}",
        req.headers
    );
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(
        values(&resp.headers, "x-resp-chain"),
        ["sda"],
        "a shadow filter that answered gets no response phase"
    );
    chain.finish().await;
    assert!(
        shared::get("logs:sd").is_some(),
        "the shadow filter got no on_log"
    );
    let series = r#"portcullis_filter_shadow_would_deny_total{filter="shadow-deny",route="api",status="403"}"#;
    assert_eq!(metric(series), 1, "{}", global().render());
    let series = r#"portcullis_filter_shadow_requests_total{filter="shadow-deny",route="api"}"#;
    assert_eq!(metric(series), 1);
}

#[tokio::test]
async fn a_header_setting_shadow_filter_leaves_request_and_response_untouched() {
    let set = plugin(&filter("shadow-set", "rewrite:ss"));
    let mut chain = shadowed(&[set], &[true]);
    let mut req = request("/a?q=1", &[("x-in", "hello")]);
    let before = req.clone();
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(req.uri, before.uri, "the shadow filter rewrote the path");
    assert_eq!(req.headers, before.headers, "the shadow filter set headers");
    let mut resp = response(200);
    let sent = resp.headers.clone();
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(resp.headers, sent, "the shadow filter set response headers");
    chain.finish().await;
    let series = r#"portcullis_filter_shadow_would_modify_total{filter="shadow-set",route="api"}"#;
    assert_eq!(metric(series), 1, "counted once a request");
}

#[tokio::test]
async fn a_shadow_body_filter_neither_holds_nor_changes_the_body() {
    let body = plugin(&filter("shadow-body", "body:sb"));
    let mut chain = shadowed(&[body], &[true]);
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    for (chunk, eos) in [(&b"hello "[..], false), (&b"world"[..], true)] {
        match chain.request_body(Bytes::from_static(chunk), eos).await {
            BodyDecision::Forward(b) => assert_eq!(b.as_ref(), chunk, "the chunk must go on"),
            other => panic!("unexpected {other:?}"),
        }
    }
    chain.finish().await;
    let series = r#"portcullis_filter_shadow_would_modify_total{filter="shadow-body",route="api"}"#;
    assert_eq!(metric(series), 1, "the upper-casing is recorded");
}

#[tokio::test]
async fn a_failing_shadow_filter_never_fails_the_request() {
    let close = plugin(&filter("shadow-close", "close:sc"));
    let mut chain = shadowed(&[close], &[true]);
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(resp.status, 200);
    chain.finish().await;
    let series = r#"portcullis_filter_shadow_would_deny_total{filter="shadow-close",route="api",status="502"}"#;
    assert_eq!(metric(series), 1, "a closed stream is a 502 not sent");
}
