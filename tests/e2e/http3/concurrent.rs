//! Many HTTP/3 requests at once on one connection, with and without bodies, and with
//! the end of the stream (the FIN) sent at once or only after a pause: every one must
//! get its whole answer, whatever packet its FIN arrives in.

use std::time::Duration;

use bytes::Bytes;

use super::client::{H3, Sending};
use super::{connect, start};
use crate::support::Backend;

/// Streams in flight at once, and requests each of them sends in turn.
const STREAMS: usize = 16;
const ROUNDS: usize = 14;

/// How long a late FIN (or body piece) waits: long enough to land in a packet of
/// its own, after the proxy has read what came before; and a FIN later than the
/// proxy waits for it after a head (it then reads the rest after answering).
const LATE: Duration = Duration::from_millis(30);
const VERY_LATE: Duration = Duration::from_millis(150);

/// The requests a stream cycles through: method, body pieces, pause.
fn kind(i: usize) -> (&'static str, Vec<Bytes>, Duration) {
    let body = |n: usize| Bytes::from(vec![b'a' + (i % 26) as u8; n]);
    match i % 7 {
        0 => ("GET", vec![], Duration::ZERO),
        1 => ("GET", vec![], LATE),
        6 => ("GET", vec![], VERY_LATE),
        2 => ("POST", vec![body(300)], Duration::ZERO),
        3 => ("POST", vec![body(300)], LATE),
        4 => ("POST", vec![body(20_000), body(5)], LATE),
        _ => ("POST", vec![Bytes::new()], LATE),
    }
}

/// Sends request `i` of stream `stream` and checks what the backend got and the
/// client got back; the error says which request went wrong and how.
async fn one(h3: &mut H3, stream: usize, i: usize) -> Result<(), String> {
    let (method, parts, pause) = kind(i);
    let route = if stream.is_multiple_of(2) {
        "plain"
    } else {
        "filtered"
    };
    let path = format!("/{route}/{stream}/{i}");
    let req = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(())
        .map_err(|e| e.to_string())?;
    let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let sending = Sending { parts, pause };
    let what = format!("{method} {path} (pause {pause:?})");
    let got = h3
        .send(req, &sending)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if got.status != 200 {
        return Err(format!(
            "{what}: status {}: {}",
            got.status,
            String::from_utf8_lossy(&got.body)
        ));
    }
    let echo: serde_json::Value =
        serde_json::from_slice(&got.body).map_err(|e| format!("{what}: {e}"))?;
    let checks = [
        (echo["method"] == method, "method"),
        (echo["path"] == path.as_str(), "path"),
        (
            echo["body"].as_str().map(str::as_bytes) == Some(expected.as_slice()),
            "body",
        ),
        // A GET goes upstream without a body whenever its FIN came: not as a
        // streamed request (chunked, or cut short by the upstream connection).
        (
            method != "GET" || echo["headers"].get("transfer-encoding").is_none(),
            "no transfer-encoding on a GET",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, which)) => Err(format!("{what}: wrong {which}: {echo}")),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_succeed_whenever_the_fin_arrives() {
    let backend = Backend::echo("b1");
    let (proxy, ca, _conf) = start(&backend, "");
    let h3 = connect(&proxy, &ca).await;
    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        let mut h3 = h3.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..ROUNDS {
                if let Err(e) = one(&mut h3, stream, stream + round).await {
                    failures.push(e);
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}\n{}",
        failures.len(),
        STREAMS * ROUNDS,
        failures.join("\n"),
        proxy.logs()
    );
    assert_eq!(backend.requests(), STREAMS * ROUNDS);
}
