//! HTTP/3 requests per proxy CPU-second next to HTTP/2 over TLS, on the same
//! listener and route (`benches/http3/run`; ignored in the normal run: it measures,
//! it does not check).

use std::sync::Arc;
use std::time::Instant;

use super::connect;
use crate::support::{Backend, Proxy, Reply};

/// Requests per protocol, and how many are in flight at once (streams on one
/// connection, as a browser multiplexes).
const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 16;

/// The proxy's CPU time so far (user + system), in seconds, from /proc.
fn cpu_seconds(proxy: &Proxy) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", proxy.pid()))
        .unwrap_or_else(|e| panic!("/proc stat: {e}"));
    // The fields after the command name (which may hold spaces) end with ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let ticks = field(11) + field(12);
    // In USER_HZ, which Linux fixes at 100 for user space.
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/http3/run"]
async fn requests_per_cpu_second() {
    let backend = Backend::start(|_| Reply::text(200, "ok\n"));
    let (proxy, ca, _conf) = super::start(&backend, "");
    let addr = proxy.addr("web");

    // HTTP/2 over TLS: one connection, CONCURRENCY streams.
    let h2 = super::https_client(
        reqwest::Client::builder().http2_prior_knowledge(),
        &ca,
        addr,
    );
    let url = Arc::new(format!("https://localhost:{}/plain", addr.port()));
    let h2_rate = measure(&proxy, "HTTP/2 over TLS", move |_| {
        let (h2, url) = (h2.clone(), Arc::clone(&url));
        async move {
            let resp = h2
                .get(url.as_str())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            resp.bytes().await.map_err(|e| e.to_string())?;
            Ok(status)
        }
    })
    .await;

    let h3 = connect(&proxy, &ca).await;
    let h3_rate = measure(&proxy, "HTTP/3", move |_| {
        let mut h3 = h3.clone();
        async move { h3.get("localhost", "/plain").await.map(|a| a.status) }
    })
    .await;
    println!(
        "HTTP/3 / HTTP/2-over-TLS requests per proxy CPU-second: {:.2}",
        h3_rate / h2_rate
    );
}

/// Sends REQUESTS requests made by `send`, CONCURRENCY at a time, and prints and
/// returns the requests per second of the proxy's CPU.
async fn measure<F, Fut>(proxy: &Proxy, name: &str, send: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u16, String>> + Send + 'static,
{
    // Warm-up: connections, VMs, pools.
    for i in 0..200 {
        let status = send(i)
            .await
            .unwrap_or_else(|e| panic!("{name} warm-up: {e}"));
        assert_eq!(status, 200);
    }
    let send = Arc::new(send);
    let cpu = cpu_seconds(proxy);
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let send = Arc::clone(&send);
        tasks.push(tokio::spawn(async move {
            // Every failure is counted (the first few kept), not only the first.
            let mut errors = Vec::new();
            for i in (t..REQUESTS).step_by(CONCURRENCY) {
                match send(i).await {
                    Ok(200) => {}
                    Ok(status) => errors.push(format!("status {status}")),
                    Err(e) => errors.push(e),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds(proxy) - cpu;
    let rate = REQUESTS as f64 / cpu;
    println!(
        "{name}: {REQUESTS} requests in {wall:.2} s, {} errors, proxy CPU {cpu:.2} s: {rate:.0} requests per CPU-second ({:.0} per second)",
        errors.len(),
        REQUESTS as f64 / wall
    );
    assert!(
        errors.is_empty(),
        "{name}: {} of {REQUESTS} failed, e.g.:\n{}",
        errors.len(),
        errors
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    rate
}
