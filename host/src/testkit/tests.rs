//! The kit on the repository's probe filter (`tests/filters/probe`, built from source)
//! and on a standard filter: what it reports, and how spec files load and fail.

use std::path::PathBuf;

use super::*;
use crate::wasm::tests::probe_wasm;

/// The probe in `mode`, named `name` (names keep metrics apart between tests).
fn probe(name: &str, mode: &str) -> Filter {
    Filter::wasm_bytes(probe_wasm())
        .name(name)
        .config(mode)
        // Generous: the test machine is loaded; the timeout test sets its own.
        .callback_timeout(Duration::from_secs(5))
}

fn load(f: Filter) -> Harness {
    f.load()
        .unwrap_or_else(|e| panic!("the probe should load, got: {e}"))
}

async fn run(h: &Harness, req: Request) -> Outcome {
    h.run_async(&req, &UpstreamResponse::ok().header("x-up", "1"))
        .await
        .unwrap_or_else(|e| panic!("run: {e}"))
}

fn header(m: &http::HeaderMap, name: &str) -> String {
    m.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

fn forwarded(out: &Outcome) -> &Forwarded {
    out.upstream_request
        .as_ref()
        .unwrap_or_else(|| panic!("expected the request upstream, got: {out}"))
}

#[tokio::test]
async fn a_passing_request_reports_what_went_upstream_and_back() {
    let h = load(probe("tk-pass", "headers:tk"));
    assert!(
        h.configure_logs()
            .iter()
            .any(|l| l.message == "probe vm started" && l.level == LogLevel::Info),
        "on_vm_start's log line: {:?}",
        h.configure_logs()
    );
    let out = run(&h, Request::get("/a?b=1").header("x-in", "hi")).await;
    let up = forwarded(&out);
    assert_eq!((up.method.as_str(), up.path.as_str()), ("GET", "/a?b=1"));
    assert_eq!(header(&up.headers, "x-chain"), "tk");
    assert_eq!(header(&up.headers, "x-seen-tk"), "hi");
    assert!(!out.local, "{out}");
    assert_eq!(out.response.status, 200);
    assert_eq!(header(&out.response.headers, "x-resp-chain"), "tk");
    assert_eq!(header(&out.response.headers, "x-up"), "1");
    assert_eq!(out.failure, None);
    // on_log counts the request: the kit runs it too.
    let counted = out.metric("probe_requests_total").map(|m| m.delta);
    assert_eq!(counted, Some(1), "metrics: {:?}", out.metrics);

    // A second case runs on the same VM; the counter goes on.
    let again = run(&h, Request::get("/")).await;
    let m = again.metric("probe_requests_total");
    assert_eq!(m.map(|m| (m.value, m.delta)), Some((2, 1)), "{m:?}");
}

#[tokio::test]
async fn a_local_response_is_reported_and_checked() {
    let h = load(probe("tk-local", "local:tkl"));
    let out = run(&h, Request::post("/x", "payload")).await;
    assert!(out.upstream_request.is_none(), "{out}");
    assert!(out.local);
    assert_eq!(out.response.status, 403);
    assert_eq!(out.response.body.as_ref(), b"denied by probe\n");
    assert_eq!(header(&out.response.headers, "x-denied-by"), "tkl");

    let good = Expect {
        upstream: Some(false),
        status: Some(403),
        headers: vec![("X-Denied-By".into(), "tkl".into())],
        body_contains: Some("denied".into()),
        ..Expect::default()
    };
    assert_eq!(good.check(&out), [], "all of these hold");
    let bad = Expect {
        status: Some(200),
        upstream_headers: vec![("x-chain".into(), "tkl".into())],
        ..Expect::default()
    };
    let what: Vec<String> = bad.check(&out).iter().map(|m| m.what.clone()).collect();
    assert_eq!(what, ["status", "upstream_*"], "{:?}", bad.check(&out));
    let shown = bad.check(&out)[0].to_string();
    assert!(
        shown.contains("expected 200") && shown.contains("403"),
        "a mismatch says what was expected and what came back: {shown}"
    );
}

/// The kit runs the proxy's own driver. Before it did, its copy of the walk differed:
/// the filter read `connection.tls_version` as `TLSv1_3` where the server reports
/// `TLSv1.3`, and what went upstream kept hop-by-hop headers and a client-forged
/// certificate subject, and lacked the `X-Forwarded-*` headers the proxy adds.
#[tokio::test]
async fn the_kit_forwards_as_the_proxy_does() {
    let h = load(probe("tk-same", "props:tks"));
    let out = run(
        &h,
        Request::get("/p")
            .tls(true)
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-client-cert-subject", "CN=forged"),
    )
    .await;
    let up = &forwarded(&out).headers;
    assert_eq!(
        header(up, "x-prop-connection.tls_version"),
        crate::tls::version_name(rustls::ProtocolVersion::TLSv1_3).unwrap_or_default(),
        "the version string the server reports: {out}"
    );
    assert_eq!(header(up, "x-prop-connection.tls_version"), "TLSv1.3");
    for gone in ["connection", "x-hop", "x-client-cert-subject"] {
        assert!(!up.contains_key(gone), "{gone} went upstream: {out}");
    }
    assert_eq!(header(up, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(header(up, "x-forwarded-proto"), "https");
    assert_eq!(header(up, "x-forwarded-host"), "example.com");
}

#[tokio::test]
async fn bodies_go_through_the_body_phases() {
    let h = load(probe("tk-body", "body:tkb"));
    let out = h
        .run_async(
            &Request::post("/up", "hello"),
            &UpstreamResponse::ok().body("down"),
        )
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(forwarded(&out).body.as_ref(), b"HELLO");
    assert_eq!(out.response.body.as_ref(), b"down [probed]");
}

#[tokio::test]
async fn traps_and_timeouts_are_reported_and_the_next_case_gets_a_fresh_vm() {
    let h = load(probe("tk-trap", "trap:tkt"));
    let out = run(&h, Request::get("/").header("x-trap", "1")).await;
    let f = out
        .failure
        .clone()
        .unwrap_or_else(|| panic!("expected a trap, got: {out}"));
    assert_eq!((f.kind.as_str(), f.filter.as_str()), ("trap", "tk-trap"));
    assert!(f.message.contains("RequestHeaders"), "{f:?}");
    assert_eq!(out.response.status, 500, "deny mode: {out}");
    let next = run(&h, Request::get("/")).await;
    assert_eq!(next.failure, None, "{next}");
    assert!(next.upstream_request.is_some(), "{next}");

    let slow = load(probe("tk-spin", "spin:tks").callback_timeout(Duration::from_millis(200)));
    let out = run(&slow, Request::get("/").header("x-spin", "1")).await;
    assert_eq!(
        out.failure.as_ref().map(|f| f.kind.as_str()),
        Some("timeout"),
        "{out}"
    );
}

#[tokio::test]
async fn http_calls_are_answered_from_the_test_or_reported() {
    let answered = Filter::wasm_bytes(probe_wasm())
        .name("tk-call")
        .config("call:auth")
        .http_call_response("auth", UpstreamResponse::ok().body("alice\n"));
    let out = run(&load(answered), Request::get("/")).await;
    let up = forwarded(&out);
    assert_eq!(header(&up.headers, "x-call-status"), "200");
    assert_eq!(header(&up.headers, "x-call-body"), "alice");
    let call = out.http_calls.first().cloned();
    assert_eq!(
        call.map(|c| (c.upstream, c.path, c.answered)),
        Some(("auth".into(), "/auth".into(), true))
    );

    let unanswered = load(probe("tk-call-none", "call:nowhere"));
    let out = run(&unanswered, Request::get("/")).await;
    assert_eq!(out.response.status, 403, "the probe refuses a failed call");
    assert!(
        out.host_warnings.iter().any(|w| w.contains("no answer")),
        "the kit says why the call failed: {:?}",
        out.host_warnings
    );
}

#[tokio::test]
async fn standard_filters_and_the_client_address() {
    let h = load(Filter::builtin("ip-allowlist").config(r#"{"allow":["10.0.0.0/8"]}"#));
    let inside = run(&h, Request::get("/").client(([10, 1, 2, 3], 999).into())).await;
    assert!(inside.upstream_request.is_some(), "{inside}");
    let outside = run(&h, Request::get("/")).await;
    assert_eq!(outside.response.status, 403, "{outside}");
}

#[test]
fn run_blocks_outside_a_runtime_and_refuses_inside_one() {
    let h = load(probe("tk-block", "headers:tkk"));
    let out = h
        .run(&Request::get("/"), &UpstreamResponse::ok())
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert!(out.upstream_request.is_some(), "{out}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let inside = rt.block_on(async { h.run(&Request::get("/"), &UpstreamResponse::ok()) });
    assert!(matches!(inside, Err(TestkitError::InsideRuntime)));
}

#[test]
fn a_module_that_refuses_its_configuration_does_not_load() {
    match probe("tk-refuse", "reject_configure").load() {
        Ok(_) => panic!("a filter refusing on_configure loaded"),
        Err(e) => assert!(
            matches!(&e, TestkitError::Configure { name, .. } if name == "tk-refuse"),
            "{e}"
        ),
    }
    match Filter::wasm_file("/nonexistent/x.wasm").load() {
        Ok(_) => panic!("a missing file loaded"),
        Err(e) => assert!(e.to_string().contains("/nonexistent/x.wasm"), "{e}"),
    }
}

/// A temp dir with the probe as `probe.wasm` and `spec` as `spec.yaml`.
fn spec_dir(spec: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    };
    write("probe.wasm", probe_wasm());
    let path = write("spec.yaml", spec.as_bytes());
    (dir, path)
}

#[test]
fn a_spec_runs_its_cases_and_names_each_by_line() {
    let (_dir, path) = spec_dir(
        "filter:
  name: tk-spec
  wasm: probe.wasm
  config: local:sp
cases:
  - name: refused
    request: { path: /admin, headers: { x-in: a } }
    expect: { upstream: false, status: 403, headers: { x-denied-by: sp } }
  - name: wrongly expected
    expect:
      status: 200
      body: nope
",
    );
    let spec = spec::load(&path).unwrap_or_else(|e| panic!("spec should load: {e}"));
    let reports = spec::run(&spec).unwrap_or_else(|e| panic!("run: {e}"));
    let lines: Vec<(usize, usize)> = reports
        .iter()
        .map(|r| (r.line, r.mismatches.len()))
        .collect();
    assert_eq!(lines, [(6, 0), (9, 2)], "(line, mismatches): {reports:?}");
}

#[test]
fn a_bad_spec_names_every_problem_with_its_line() {
    let (_dir, path) = spec_dir(
        "filter:
  name: tk-bad
  wasm: missing.wasm
cases:
  - name: one
    request: { path: /x, colour: blue, client: nowhere }
    expect: { status: many }
  - name: two
    expect: {}
  - request: { path: /y }
    expect: { status: 200 }
",
    );
    let errors = match spec::load(&path) {
        Ok(_) => panic!("a bad spec loaded"),
        Err(e) => e.to_string(),
    };
    for want in [
        ":3: filters.tk-bad.wasm: file not found: `missing.wasm`",
        ":6: cases.one.request.colour: unknown field",
        ":6: cases.one.request.client: `nowhere` is not an IP:port",
        ":7: cases.one.expect.status: expected an integer",
        ":9: cases.two.expect: expects nothing",
        ":10: cases.2.name: missing required field",
    ] {
        assert!(errors.contains(want), "expected {want:?} in:\n{errors}");
    }
}

#[test]
fn a_spec_asserts_what_a_shadow_filter_would_have_done() {
    let (_dir, path) = spec_dir(
        "filter:
  name: tk-shadow
  wasm: probe.wasm
  config: local:tks
shadow: true
cases:
  - name: denied in shadow, served for real
    request: { path: /admin }
    expect: { upstream: true, status: 200, would_deny: 403, would_modify: true,
              upstream_headers_absent: [x-seen-tks] }
  - name: wrongly expected
    expect: { would_deny: false }
",
    );
    let spec = spec::load(&path).unwrap_or_else(|e| panic!("spec should load: {e}"));
    let reports = spec::run(&spec).unwrap_or_else(|e| panic!("run: {e}"));
    let first = &reports[0];
    assert!(first.mismatches.is_empty(), "{:?}", first.mismatches);
    assert_eq!(
        first.outcome.shadow,
        [
            crate::wasm::ShadowDecision::WouldModify {
                filter: "tk-shadow".into()
            },
            crate::wasm::ShadowDecision::WouldDeny {
                filter: "tk-shadow".into(),
                status: 403
            }
        ]
    );
    let wrong: Vec<String> = reports[1]
        .mismatches
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(wrong, ["would_deny: expected no reply, got 403"]);
}

#[tokio::test]
async fn an_http_wasm_module_runs_in_the_kit_with_its_bodies() {
    let guest = crate::wasm::tests::httpwasm::guest_wasm();
    let deny = load(
        Filter::wasm_bytes(guest)
            .name("tk-hw-deny")
            .config(r#"{"mode":"deny"}"#)
            .callback_timeout(Duration::from_secs(5)),
    );
    let out = run(&deny, Request::get("/")).await;
    assert!(out.local && out.upstream_request.is_none(), "{out}");
    assert_eq!(out.response.status, 403);
    assert_eq!(&out.response.body[..], b"denied by http-wasm\n");
    let body = load(
        Filter::wasm_bytes(guest)
            .name("tk-hw-body")
            .config(r#"{"mode":"body"}"#)
            .callback_timeout(Duration::from_secs(5)),
    );
    let out = body
        .run_async(
            &Request::post("/", "a cat"),
            &UpstreamResponse::ok().body("from upstream"),
        )
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(&forwarded(&out).body[..], b"a dog");
    assert_eq!(&out.response.body[..], b"FROM UPSTREAM");
}
