//! Forwarding to real backends: balancing, errors, health, streaming, headers.

mod balance;
mod binary;
mod body_limit;
mod failover;
mod limits;
mod mirror;
mod outlier;
mod refused_stream;
mod retry;
mod split;
mod sticky;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use portcullis::extensions;
use portcullis::snapshot::Snapshot;

use crate::inproc::{
    Backend, Proxy, client, closed_port, config, eventually, health_check, matching, raw, route,
    upstream,
};
/// `portcullis check` on a one-file configuration must report these lines.
pub(crate) use balance::check_reports as check_reports_of;

async fn get(proxy: &Proxy, path: &str) -> (u16, String) {
    let resp = client()
        .get(proxy.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("request {path} failed: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn weighted_distribution_follows_weights() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "pool")],
        vec![upstream("pool", &[(a.addr, 3), (b.addr, 1)])],
    ))
    .await;
    for _ in 0..200 {
        let (status, body) = get(&proxy, "/").await;
        assert_eq!(status, 200, "backend answer expected, got {status} {body}");
    }
    let (na, nb) = (
        a.state.requests.load(Ordering::SeqCst),
        b.state.requests.load(Ordering::SeqCst),
    );
    // Smooth WRR is exact per worker; allow slack for requests landing on other
    // threads' balancers.
    assert_eq!(na + nb, 200, "every request reached a backend");
    assert!(
        (140..=160).contains(&na),
        "a (weight 3) should get ~150 of 200, got {na} (b got {nb})"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_one_is_504() {
    let slow = Backend::start("slow").await;
    slow.state.delay_ms.store(10_000, Ordering::SeqCst);
    let mut slow_upstream = upstream("slow", &[(slow.addr, 1)]);
    slow_upstream.timeouts.request = Duration::from_millis(300);
    let proxy = Proxy::start(config(
        vec![
            route("dead", matching(None, Some("/dead")), "dead"),
            route("slow", matching(None, Some("/slow")), "slow"),
        ],
        vec![upstream("dead", &[(closed_port().await, 1)]), slow_upstream],
    ))
    .await;
    assert_eq!(
        get(&proxy, "/dead").await,
        (502, "upstream unreachable\n".into())
    );
    assert_eq!(
        get(&proxy, "/slow").await,
        (504, "upstream timeout\n".into())
    );
    assert_eq!(get(&proxy, "/").await, (404, "no route\n".into()));
}

#[tokio::test]
async fn refused_target_is_skipped_after_the_first_failure() {
    let good = Backend::start("good").await;
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "pool")],
        vec![upstream(
            "pool",
            &[(closed_port().await, 1), (good.addr, 1)],
        )],
    ))
    .await;
    // A bodyless request refused by one target is retried on the other, and the
    // refusing target is then out of rotation.
    for i in 0..10 {
        let (status, body) = get(&proxy, "/").await;
        assert_eq!((status, body.as_str()), (200, "good 0"), "request {i}");
    }
    let status = proxy.snapshot.upstream_status();
    assert_eq!(
        status[0]["targets"][0]["healthy"], false,
        "refused target marked down: {status}"
    );
    assert_eq!(
        status[0]["targets"][1]["healthy"], true,
        "good target up: {status}"
    );
}

#[tokio::test]
async fn health_checks_eject_and_recover_targets() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let mut pool = upstream("pool", &[(a.addr, 1), (b.addr, 1)]);
    pool.health_check = Some(health_check(Duration::from_millis(100)));
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "pool")],
        vec![pool],
    ))
    .await;

    b.state.healthy.store(false, Ordering::SeqCst);
    let ejected = eventually(Duration::from_secs(10), || {
        proxy.snapshot.upstream_status()[0]["targets"][1]["healthy"] == false
    })
    .await;
    assert!(
        ejected,
        "b should be ejected: {}",
        proxy.snapshot.upstream_status()
    );
    let before = b.state.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            get(&proxy, "/").await,
            (200, "a 0".into()),
            "only a serves while b is down"
        );
    }
    assert_eq!(
        b.state.requests.load(Ordering::SeqCst),
        before,
        "b got no traffic while down"
    );

    b.state.healthy.store(true, Ordering::SeqCst);
    let recovered = eventually(Duration::from_secs(10), || {
        proxy.snapshot.upstream_status()[0]["targets"][1]["healthy"] == true
    })
    .await;
    assert!(
        recovered,
        "b should recover: {}",
        proxy.snapshot.upstream_status()
    );
    for _ in 0..20 {
        get(&proxy, "/").await;
    }
    assert!(
        b.state.requests.load(Ordering::SeqCst) >= before + 5,
        "b serves again after recovery"
    );
}

#[tokio::test]
async fn health_check_task_follows_its_upstream() {
    let a = Backend::start("a").await;
    let mut pool = upstream("pool", &[(a.addr, 1)]);
    pool.health_check = Some(health_check(Duration::from_millis(50)));
    let cfg = Arc::new(config(
        vec![route("r", matching(None, None), "pool")],
        vec![pool],
    ));
    let runtime = extensions::runtime().unwrap_or_else(|e| panic!("runtime: {e}"));
    let first = Snapshot::build(cfg.clone(), &runtime, 1, None)
        .unwrap_or_else(|e| panic!("first build: {e}"));
    assert!(
        eventually(Duration::from_secs(10), || a
            .state
            .probes
            .load(Ordering::SeqCst)
            > 0)
        .await,
        "the health check probes"
    );
    // A reload with the same upstream keeps it (one task, not two).
    let second = Snapshot::build(cfg, &runtime, 2, Some(&first))
        .unwrap_or_else(|e| panic!("second build: {e}"));
    assert!(
        std::ptr::eq(
            Arc::as_ptr(
                first
                    .upstream("pool")
                    .unwrap_or_else(|| panic!("pool in first"))
            ),
            Arc::as_ptr(
                second
                    .upstream("pool")
                    .unwrap_or_else(|| panic!("pool in second"))
            ),
        ),
        "an unchanged upstream is shared across generations"
    );
    drop(first);
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = a.state.probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.state.probes.load(Ordering::SeqCst),
        after_drop,
        "no probes once the upstream is dropped"
    );
}

#[tokio::test]
async fn forwarding_headers_host_and_hop_by_hop() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "pool")],
        vec![upstream("pool", &[(a.addr, 1)])],
    ))
    .await;
    let answer = raw(
        proxy.addr,
        "GET /p?q=1 HTTP/1.1\r\nHost: Site.Example:8080\r\nConnection: close, x-secret\r\n\
         X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
         TE: trailers\r\nX-Forwarded-For: 198.51.100.1\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "backend answer expected, got {answer}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(
        !lower.contains("x-backend-secret"),
        "response hop-by-hop removed: {answer}"
    );
    assert!(
        !lower.contains("keep-alive: timeout"),
        "response keep-alive removed: {answer}"
    );

    let seen = a
        .state
        .last_headers
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    let get = |name: &str| -> Vec<&str> {
        seen.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        get("host"),
        vec!["Site.Example:8080"],
        "Host preserved: {seen:?}"
    );
    assert_eq!(
        get("x-forwarded-host"),
        vec!["Site.Example:8080"],
        "XFH: {seen:?}"
    );
    assert_eq!(get("x-forwarded-proto"), vec!["http"], "XFP: {seen:?}");
    assert_eq!(
        get("x-forwarded-for"),
        vec!["198.51.100.1, 127.0.0.1"],
        "XFF appended: {seen:?}"
    );
    assert_eq!(
        get("x-kept"),
        vec!["yes"],
        "end-to-end header kept: {seen:?}"
    );
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            get(gone).is_empty(),
            "{gone} should not reach the backend: {seen:?}"
        );
    }
}

/// VmRSS of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_64_mib_body_streams_through_without_buffering() {
    const CHUNK: usize = 256 * 1024;
    const TOTAL: usize = 64 * 1024 * 1024;
    let a = Backend::start("a").await;
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "pool")],
        vec![upstream("pool", &[(a.addr, 1)])],
    ))
    .await;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::iter(
        (0..TOTAL / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );

    let before = rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let resp = client()
        .post(proxy.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload failed: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();

    assert_eq!(
        (status.as_u16(), body),
        (200, format!("a {TOTAL}")),
        "the backend got every byte"
    );
    let grew_mib = peak.load(Ordering::SeqCst).saturating_sub(before) / 1024;
    assert!(
        grew_mib < 32,
        "RSS should not follow a 64 MiB body; it grew by {grew_mib} MiB"
    );
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect
/// to it hangs until the connector gives up. The returned sockets keep it full.
pub(super) fn black_hole() -> (
    std::net::SocketAddr,
    Vec<std::net::TcpStream>,
    socket2::Socket,
) {
    use socket2::{Domain, Socket, Type};
    let listener =
        Socket::new(Domain::IPV4, Type::STREAM, None).unwrap_or_else(|e| panic!("socket: {e}"));
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    listener
        .bind(&any.into())
        .unwrap_or_else(|e| panic!("bind: {e}"));
    listener.listen(0).unwrap_or_else(|e| panic!("listen: {e}"));
    let addr = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or_else(|| panic!("no local address"));
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    (addr, fillers, listener)
}

#[tokio::test]
async fn connect_timeout_is_502() {
    let (addr, _fillers, _listener) = black_hole();
    let mut hole = upstream("hole", &[(addr, 1)]);
    hole.timeouts.connect = Duration::from_millis(200);
    hole.timeouts.request = Duration::from_secs(20);
    let proxy = Proxy::start(config(
        vec![route("r", matching(None, None), "hole")],
        vec![hole],
    ))
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        get(&proxy, "/").await,
        (502, "upstream unreachable\n".into())
    );
    // A lower bound cannot flake on a slow machine: it proves the connect hung.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the connect should have hung until its 200ms timeout, it ended after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the connect timeout, not the request timeout, should end it; took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn buffered_call_reaches_an_upstream_by_name() {
    // What a filter's `http_call` uses: a whole request in, a whole response out.
    let a = Backend::start("a").await;
    let cfg = Arc::new(config(vec![], vec![upstream("pool", &[(a.addr, 1)])]));
    let snapshot = Snapshot::build(
        cfg,
        &extensions::runtime().unwrap_or_else(|e| panic!("runtime: {e}")),
        1,
        None,
    )
    .unwrap_or_else(|e| panic!("build: {e}"));
    let pool = snapshot
        .upstream("pool")
        .unwrap_or_else(|| panic!("pool is configured"));
    let mut req = http::Request::new(Bytes::from_static(b"12345"));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/auth");
    let resp = pool
        .call(req, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("call failed: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.body().as_ref(),
        b"a 5",
        "the backend's whole answer, having read 5 bytes"
    );
}
