//! The chain: order, local responses, rewrites, bodies, failure policy.

use super::*;

#[tokio::test]
async fn request_in_order_response_in_reverse() {
    let a = plugin(&filter("order-a", "headers:a"));
    let b = plugin(&filter("order-b", "headers:b"));
    let mut chain = HttpFilters::new(&[a, b], info());
    let mut req = request("/x", &[("x-in", "hello")]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(
        values(&req.headers, "x-chain"),
        ["a", "b"],
        "request headers: {:?}",
        req.headers
    );
    assert_eq!(header(&req.headers, "x-seen-a"), "hello");
    assert_eq!(header(&req.headers, "x-seen-b"), "hello");
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(values(&resp.headers, "x-resp-chain"), ["b", "a"]);
    chain.finish().await;
    assert_eq!(
        shared::get("logs:a").map(|v| v.0),
        Some(b"1".to_vec()),
        "on_log of a ran once"
    );
}

#[tokio::test]
async fn local_response_skips_the_rest_and_goes_back_through_those_that_saw_it() {
    let a = plugin(&filter("local-a", "headers:la"));
    let b = plugin(&filter("local-b", "local:lb"));
    let c = plugin(&filter("local-c", "headers:lc"));
    let mut chain = HttpFilters::new(&[a, b, c], info());
    let mut req = request("/x", &[]);
    let r = respond(chain.request_headers(&mut req, true).await);
    assert_eq!(r.status(), 403);
    assert_eq!(r.body().as_ref(), b"denied by probe\n");
    assert_eq!(header(r.headers(), "x-denied-by"), "lb");
    assert_eq!(
        values(r.headers(), "x-resp-chain"),
        ["lb", "la"],
        "only filters that saw the request"
    );
    assert!(
        values(&req.headers, "x-seen-lc").is_empty(),
        "the filter after the local response ran"
    );
    chain.finish().await;
    // As Envoy: a filter cut short by a local response still logs the request.
    assert!(
        shared::get("logs:lc").is_some(),
        "the filter after the local response got no on_log"
    );
    assert!(
        shared::get("logs:lb").is_some(),
        "the answering filter got no on_log"
    );
}

#[tokio::test]
async fn writing_pseudo_headers_rewrites_the_request() {
    let p = plugin(&filter("rewrite", "rewrite:rw"));
    let mut chain = HttpFilters::new(&[p], info());
    let mut req = request("/a/b?q=1", &[]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(
        req.uri.path_and_query().map(|p| p.as_str()),
        Some("/rewritten/a/b?q=1")
    );
    assert_eq!(header(&req.headers, "host"), "rewritten.example");
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    chain.finish().await;

    let s = plugin(&filter("status", "status:st"));
    let mut chain = HttpFilters::new(&[s], info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(resp.status, 418, "writing :status");
    chain.finish().await;
}

#[tokio::test]
async fn bodies_are_buffered_while_a_filter_pauses() {
    let p = plugin(&filter("body", "body:bd"));
    let h = plugin(&filter("body-h", "headers:bh"));
    let mut chain = HttpFilters::new(&[h, p], info());
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    match chain
        .request_body(Bytes::from_static(b"hello "), false)
        .await
    {
        BodyDecision::Forward(b) => assert!(b.is_empty(), "paused filter let {b:?} through"),
        BodyDecision::Respond(r) => panic!("unexpected {} response", r.status()),
        BodyDecision::Fail(f) => panic!("unexpected failure: {f}"),
    }
    match chain.request_body(Bytes::from_static(b"world"), true).await {
        BodyDecision::Forward(b) => assert_eq!(b.as_ref(), b"HELLO WORLD"),
        BodyDecision::Respond(r) => panic!("unexpected {} response", r.status()),
        BodyDecision::Fail(f) => panic!("unexpected failure: {f}"),
    }
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, false).await);
    let first = chain.response_body(Bytes::from_static(b"abc"), false).await;
    assert!(
        matches!(first, BodyDecision::Forward(ref b) if b.is_empty()),
        "got {first:?}"
    );
    match chain.response_body(Bytes::from_static(b"def"), true).await {
        BodyDecision::Forward(b) => assert_eq!(b.as_ref(), b"abcdef [probed]"),
        BodyDecision::Respond(r) => panic!("unexpected {} response", r.status()),
        BodyDecision::Fail(f) => panic!("unexpected failure: {f}"),
    }
    chain.finish().await;
}

#[tokio::test]
async fn a_body_walk_that_must_wait_for_a_filter_resumes_where_it_stopped() {
    // The sync filter between two `async: true` ones (whose callbacks run on a fiber,
    // so the walk cannot call them at once) is reached both at once and after a wait.
    let on_fiber = |name: &str| {
        let mut f = filter(name, "body:x");
        f.asynchronous = true;
        plugin(&f)
    };
    let (a, b, c) = (
        on_fiber("walk-a"),
        plugin(&filter("walk-b", "body:y")),
        on_fiber("walk-c"),
    );
    let mut chain = HttpFilters::new(&[a, b, c], info());
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    let first = chain
        .request_body(Bytes::from_static(b"hello "), false)
        .await;
    assert!(
        matches!(first, BodyDecision::Forward(ref b) if b.is_empty()),
        "got {first:?}"
    );
    match chain.request_body(Bytes::from_static(b"world"), true).await {
        BodyDecision::Forward(b) => assert_eq!(b.as_ref(), b"HELLO WORLD"),
        other => panic!("unexpected {other:?}"),
    }
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, false).await);
    match chain.response_body(Bytes::from_static(b"abc"), true).await {
        BodyDecision::Forward(b) => assert_eq!(b.as_ref(), b"abc [probed] [probed] [probed]"),
        other => panic!("unexpected {other:?}"),
    }
    chain.finish().await;
}

#[tokio::test]
async fn trailers_reach_filters() {
    let p = plugin(&filter("trailers", "headers:tr"));
    let mut chain = HttpFilters::new(&[p], info());
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", http::HeaderValue::from_static("0"));
    cont(chain.request_trailers(&mut t).await);
    assert_eq!(header(&t, "x-probe-trailer"), "tr");
    assert_eq!(header(&t, "grpc-status"), "0");
    chain.finish().await;
}

#[tokio::test]
async fn on_error_allow_skips_a_failing_filter() {
    let mut f = filter("allow-trap", "trap:at");
    f.on_error = OnError::Allow;
    let p = plugin(&f);
    let h = plugin(&filter("allow-next", "headers:an"));
    let mut chain = HttpFilters::new(&[p.clone(), h], info());
    let mut req = request("/", &[("x-trap", "1")]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(
        header(&req.headers, "x-chain"),
        "at,an",
        "the failing filter's earlier edits stay"
    );
    chain.finish().await;
    assert!(
        failures("allow-trap", "trap") >= 1,
        "the trap was not counted"
    );
    // A fresh VM serves the next request.
    let mut chain = HttpFilters::new(&[p], info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    chain.finish().await;
}

#[tokio::test]
async fn set_header_map_pairs_replaces_the_map() {
    let p = plugin(&filter("pairs", "pairs:pr"));
    let mut chain = HttpFilters::new(&[p], info());
    let mut req = request("/p", &[("x-drop", "1"), ("x-keep", "2")]);
    cont(chain.request_headers(&mut req, true).await);
    assert!(
        req.headers.get("x-drop").is_none(),
        "x-drop survived: {:?}",
        req.headers
    );
    assert_eq!(header(&req.headers, "x-keep"), "2");
    assert_eq!(
        req.uri.path(),
        "/p",
        "pseudo-headers round-trip through set pairs"
    );
    assert!(!header(&req.headers, "x-pairs").is_empty());
    chain.finish().await;
}

#[tokio::test]
async fn old_plugins_vms_are_freed() {
    let p = plugin(&filter("freed", "headers:fr"));
    let weak = Arc::downgrade(&p);
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    chain.finish().await;
    let before = worker::live_slots();
    drop(p);
    assert!(
        weak.upgrade().is_none(),
        "the plugin is still referenced after its last request"
    );
    let q = plugin(&filter("freed-2", "headers:fr2"));
    let mut chain = HttpFilters::new(&[q], info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    chain.finish().await;
    assert_eq!(
        worker::live_slots(),
        before,
        "the old plugin's slot was not swept"
    );
}

/// The builtin `headers` filter (built with portcullis-sdk) with `config`.
fn sdk_plugin_with(name: &str, config: &str) -> Arc<Plugin> {
    let mut f = filter(name, "");
    f.source = FilterSource::Builtin("headers".into());
    f.config = config.as_bytes().to_vec();
    Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.plugin(&f).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("the headers builtin should configure, got: {e}"))
}

/// The builtin `headers` filter setting `x-ho` on responses.
fn sdk_plugin(name: &str) -> Arc<Plugin> {
    sdk_plugin_with(name, r#"{"response": {"set": {"x-ho": "1"}}}"#)
}

#[tokio::test]
async fn an_sdk_filter_with_nothing_to_do_on_the_response_skips_that_phase() {
    let quiet = sdk_plugin_with("rp-quiet", r#"{"request": {"set": {"x-q": "1"}}}"#);
    let loud = sdk_plugin("rp-loud");
    let mut chain = HttpFilters::new(&[quiet, loud], info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(header(&req.headers, "x-q"), "1");
    assert_eq!(
        chain.response_phase_filters(),
        1,
        "only the filter with a response header to set should stay in the response phase"
    );
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(header(&resp.headers, "x-ho"), "1");
    chain.finish().await;
}

#[tokio::test]
async fn sdk_filters_are_headers_only_and_bodies_stream_past_them() {
    let sdk = sdk_plugin("ho-sdk");
    assert!(
        sdk.headers_only(),
        "an SDK filter should export portcullis_headers_only"
    );
    let probe = plugin(&filter("ho-probe", "body:ho"));
    assert!(
        !probe.headers_only(),
        "the probe (plain proxy-wasm crate) was taken for headers-only"
    );
    assert!(HttpFilters::new(&[sdk.clone(), probe.clone()], info()).takes_bodies());

    // Mixed: the SDK filter is skipped in the body phase, the probe still gets it all.
    let mut chain = HttpFilters::new(&[sdk.clone(), probe], info());
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, false).await);
    assert_eq!(header(&resp.headers, "x-ho"), "1");
    match chain.response_body(Bytes::from_static(b"xyz"), true).await {
        BodyDecision::Forward(b) => assert_eq!(b.as_ref(), b"xyz [probed]"),
        BodyDecision::Respond(r) => panic!("unexpected {} response", r.status()),
        BodyDecision::Fail(f) => panic!("unexpected failure: {f}"),
    }
    chain.finish().await;

    // Only headers-only filters: the body wrapper passes frames and the size through.
    let mut chain = HttpFilters::new(std::slice::from_ref(&sdk), info());
    assert!(!chain.takes_bodies(), "a chain of SDK filters takes bodies");
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, false).await);
    assert_eq!(header(&resp.headers, "x-ho"), "1");
    let inner = http_body_util::Full::new(Bytes::from_static(b"payload"));
    let body = FilteredBody::response(inner, chain.into_shared());
    assert_eq!(
        http_body::Body::size_hint(&body).exact(),
        Some(7),
        "the length was lost"
    );
    let got = http_body_util::BodyExt::collect(body)
        .await
        .unwrap_or_else(|e| panic!("body: {e}"))
        .to_bytes();
    assert_eq!(got.as_ref(), b"payload");
}

/// One request through `plugins` (request headers, response headers, finish): how
/// many times it entered a guest, callbacks and allocator calls together.
async fn entries_of_one_request(plugins: &[Arc<Plugin>], headers: &[(&str, &str)]) -> u64 {
    let before = vm::entries();
    let mut chain = HttpFilters::new(plugins, info());
    cont(
        chain
            .request_headers(&mut request("/", headers), true)
            .await,
    );
    cont(chain.response_headers(&mut response(200), true).await);
    chain.finish().await;
    vm::entries() - before
}

#[tokio::test]
async fn guest_entries_per_request_are_the_callbacks_and_one_allocation_per_value() {
    let min = plugin(&filter("entries-min", "min:em"));
    // The first request makes the VM: count from the second.
    entries_of_one_request(std::slice::from_ref(&min), &[]).await;
    // A plain proxy-wasm filter gets every callback it exports, as on Envoy (context
    // create, request headers, response headers, done, log, delete), in three entries:
    // create and request headers fused, response headers, done-log-delete fused.
    let plain = 3;
    let n = entries_of_one_request(std::slice::from_ref(&min), &[("x-in", "v")]).await;
    assert_eq!(
        n,
        plain + 1,
        "one more entry: the allocator, for the header's value"
    );
    let n = entries_of_one_request(std::slice::from_ref(&min), &[]).await;
    assert_eq!(
        n, plain,
        "an absent header is handed back without allocating"
    );
    let n = entries_of_one_request(std::slice::from_ref(&min), &[("x-in", "")]).await;
    assert_eq!(
        n, plain,
        "an empty value is handed back as (null, 0), as Envoy does"
    );

    // A portcullis-sdk filter declares it is headers-only and, with nothing to do on
    // the response, skips that phase: context create with request headers, delete.
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let mut f = filter("entries-sdk", "");
    f.source = FilterSource::Builtin("headers".into());
    f.config = br#"{"request":{"set":{"x-env":"prod"}}}"#.to_vec();
    let sdk = rt.plugin(&f).unwrap_or_else(|e| panic!("{e}"));
    entries_of_one_request(std::slice::from_ref(&sdk), &[]).await;
    let n = entries_of_one_request(std::slice::from_ref(&sdk), &[]).await;
    assert_eq!(n, 2, "a headers-only SDK filter with no response work");

    // A chain costs the sum of its filters: nothing per chain.
    let n = entries_of_one_request(&[min.clone(), sdk.clone(), min, sdk], &[]).await;
    assert_eq!(n, 2 * plain + 2 * 2);

    // The values an SDK filter reads land in the buffer it registered (the first
    // request registers it): no allocator entry for the key `api-key` reads, nor for
    // the client address `ip-allowlist` reads.
    for (name, config, headers) in [
        (
            "api-key",
            r#"{"keys":[{"key":"k1","consumer":"c"}]}"#,
            &[("x-api-key", "k1")][..],
        ),
        ("ip-allowlist", r#"{"allow":["10.0.0.0/8"]}"#, &[][..]),
    ] {
        let mut f = filter(&format!("entries-{name}"), "");
        f.source = FilterSource::Builtin(name.into());
        f.config = config.as_bytes().to_vec();
        let sdk = rt.plugin(&f).unwrap_or_else(|e| panic!("{e}"));
        entries_of_one_request(std::slice::from_ref(&sdk), headers).await;
        let n = entries_of_one_request(std::slice::from_ref(&sdk), headers).await;
        assert_eq!(n, 2, "{name}: its value landed, no allocator entry");
    }
}

/// The response through `plugins` as a head and its whole body, taken together
/// (`whole`: `HttpFilters::response_whole`) or as the head and then the body: the
/// body that goes on, the `x-resp-chain` values and the guest entries it took.
async fn through_response(plugins: &[Arc<Plugin>], whole: bool) -> (String, Vec<String>, u64) {
    let before = vm::entries();
    let mut chain = HttpFilters::new(plugins, info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    let mut resp = response(200);
    let body = Bytes::from_static(b"xyz");
    let body = if whole {
        let (d, body) = chain.response_whole(&mut resp, body).await;
        cont(d);
        body
    } else {
        cont(chain.response_headers(&mut resp, false).await);
        match chain.response_body(body, true).await {
            BodyDecision::Forward(b) => b,
            BodyDecision::Respond(r) => panic!("unexpected {} response", r.status()),
            BodyDecision::Fail(f) => panic!("unexpected failure: {f}"),
        }
    };
    chain.finish().await;
    let tags = resp
        .headers
        .get_all("x-resp-chain")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (
        String::from_utf8_lossy(&body).into_owned(),
        tags,
        vm::entries() - before,
    )
}

#[tokio::test]
async fn a_whole_response_reaches_each_filter_as_its_head_then_its_body() {
    let a = plugin(&filter("whole-a", "late:wla"));
    let b = plugin(&filter("whole-b", "body:wlb"));
    let min = plugin(&filter("whole-min", "min:wm"));
    let chain = [a, b, min.clone()];
    through_response(&chain, true).await;
    let apart = through_response(&chain, false).await;
    let together = through_response(&chain, true).await;
    // Every filter changed the body in turn, from the last one up, and none saw the
    // head from its body callback, either way.
    assert_eq!(apart.0, "xyz [probed] [late wla: head gone]");
    assert_eq!(together.0, apart.0);
    assert_eq!(together.1, ["wlb", "wla"]);
    assert_eq!(together.1, apart.1);
    // Headers and body in one entry per filter instead of two.
    assert_eq!(
        together.2 + 3,
        apart.2,
        "entries: {together:?} vs {apart:?}"
    );
    let (_, _, lone) = through_response(std::slice::from_ref(&min), true).await;
    assert_eq!(lone, 3, "a plain filter: begin, respond, finish");
}

#[tokio::test]
async fn a_whole_response_answered_by_a_headers_callback_gets_no_body_callback() {
    let answer = plugin(&filter("whole-answer", "answer:wan"));
    for whole in [false, true] {
        let mut chain = HttpFilters::new(std::slice::from_ref(&answer), info());
        cont(chain.request_headers(&mut request("/", &[]), true).await);
        let mut resp = response(200);
        let d = match whole {
            true => {
                chain
                    .response_whole(&mut resp, Bytes::from_static(b"xyz"))
                    .await
                    .0
            }
            false => chain.response_headers(&mut resp, false).await,
        };
        let Decision::Respond(r) = d else {
            panic!("the local reply should replace the response (whole: {whole})");
        };
        assert_eq!(r.status(), 502);
        chain.finish().await;
    }
    assert_eq!(
        shared::get("answer:wan"),
        None,
        "no body callback after the reply"
    );
}
