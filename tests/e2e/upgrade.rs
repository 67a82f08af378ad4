//! Protocol switches through the proxy: WebSockets (HTTP/1.1 `Upgrade`) between a real
//! client and a real server, both Python `websockets` (tests/e2e/upgrade/*.py), with
//! the route's filters applied to the handshake and the tunnel's idle timeout.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A WebSocket server (`ws_server.py MODE`).
type WsServer = PyServer;

fn ws_server(mode: &str) -> WsServer {
    PyServer::start("websockets", "upgrade/ws_server.py", &[mode])
}

/// Runs `ws_client.py URL SCENARIO [ARG]` and returns the JSON it printed.
async fn ws_client(url: String, scenario: &str, arg: Option<&str>) -> Value {
    let mut args = vec![url.as_str(), scenario];
    args.extend(arg);
    py_client("websockets", "upgrade/ws_client.py", &args).await
}

fn ws_url(proxy: &Proxy, path: &str) -> String {
    format!("ws://{}{path}", proxy.addr("web"))
}

/// A proxy (and its configuration directory) with a WebSocket route (a filter on it
/// adds a request header and a response header), a route whose filter refuses every
/// handshake from loopback, a route to an upstream that does not switch, one with a
/// short idle timeout, and one with no filter.
fn proxy(echo: &WsServer, refuse: &WsServer) -> (Proxy, ConfDir) {
    let conf = ConfDir::with(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - {{ name: chat, match: {{ path_prefix: /chat }}, filters: [tag], upstream: ws }}
  - {{ name: denied, match: {{ path_prefix: /denied }}, filters: [nolocal], upstream: ws }}
  - {{ name: plain, match: {{ path_prefix: /plain }}, upstream: refuse }}
  - {{ name: quiet, match: {{ path_prefix: /quiet }}, upstream: ws, upgrade_idle_timeout: 600ms }}
  - {{ name: bare, match: {{ path_prefix: /bare }}, upstream: ws }}
filters:
  - name: tag
    builtin: headers
    limits: {{ callback_timeout: 5s }}
    config: {{ request: {{ set: {{ x-filtered: "yes" }} }}, response: {{ set: {{ x-proxy: portcullis }} }} }}
  - {{ name: nolocal, builtin: ip-allowlist, config: {{ deny: [127.0.0.0/8], status: 403 }}, limits: {{ callback_timeout: 5s }} }}
upstreams:
  - {{ name: ws, targets: [{{ address: {} }}] }}
  - {{ name: refuse, targets: [{{ address: {} }}] }}
"#,
        echo.address(),
        refuse.address()
    ));
    (Proxy::start(&conf), conf)
}

/// The peers of a test and the proxy in front of them.
struct Rig {
    proxy: Proxy,
    echo: WsServer,
    _refuse: WsServer,
    _conf: ConfDir,
}

fn rig() -> Rig {
    let (echo, refuse) = (ws_server("echo"), ws_server("refuse"));
    let (proxy, conf) = proxy(&echo, &refuse);
    Rig {
        proxy,
        echo,
        _refuse: refuse,
        _conf: conf,
    }
}

/// The answer to a WebSocket handshake at `path` that did not switch.
async fn refused(proxy: &Proxy, path: &str) -> Value {
    let seen = ws_client(ws_url(proxy, path), "handshake", None).await;
    assert_eq!(seen["switched"], false, "{path}: {seen}");
    seen
}

/// `portcullis_upgrades_total{route}`, if the route has switched any connection.
async fn upgrades(proxy: &Proxy, route: &str) -> Option<f64> {
    let metrics = proxy.metrics().await;
    series(
        &metrics,
        &format!("portcullis_upgrades_total{{route=\"{route}\"}}"),
    )
}

/// The value of the series `name{labels}` in `/metrics` text, if present.
fn series(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn websocket_messages_of_every_kind_pass_both_ways() {
    let rig = rig();
    let proxy = &rig.proxy;

    let seen = ws_client(ws_url(proxy, "/chat/room"), "exchange", None).await;
    assert_eq!(seen["text"], "hello", "text echo: {seen}");
    assert_eq!(seen["binary_ok"], true, "binary echo: {seen}");
    assert_eq!(seen["pong"], true, "ping answered by a pong: {seen}");
    assert_eq!(seen["mib_ok"], true, "1 MiB message echoed whole: {seen}");
    assert_eq!(
        seen["close_code"], 4001,
        "the client's close code came back: {seen}"
    );
    assert_eq!(seen["close_reason"], "done here", "{seen}");

    // The handshake went through the route's request phase and the forwarding rules.
    let upstream = &seen["upstream_saw"];
    assert_eq!(
        upstream["x-filtered"], "yes",
        "request filter ran: {upstream}"
    );
    assert_eq!(upstream["x-forwarded-for"], "127.0.0.1", "{upstream}");
    assert_eq!(upstream["x-from-client"], "1", "{upstream}");
    assert_eq!(upstream["upgrade"], "websocket", "{upstream}");
    assert!(upstream["sec-websocket-key"].is_string(), "{upstream}");
    // And its 101 through the response phase.
    assert_eq!(seen["response_headers"]["x-proxy"], "portcullis", "{seen}");

    assert_eq!(upgrades(proxy, "chat").await, Some(1.0));
    // The tunnel ends once both sides have closed, just after the client returned.
    let mut closed = None;
    for _ in 0..100 {
        let metrics = proxy.metrics().await;
        closed = series(
            &metrics,
            r#"portcullis_upgrades_closed_total{route="chat",reason="closed"}"#,
        );
        if closed.is_some() {
            assert_eq!(
                series(&metrics, r#"portcullis_upgrades_active{route="chat"}"#),
                Some(0.0),
                "{metrics}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(closed, Some(1.0), "tunnel counted as closed");
}

#[tokio::test]
async fn a_filter_that_refuses_the_handshake_stops_the_switch() {
    let rig = rig();
    let proxy = &rig.proxy;

    let seen = refused(proxy, "/denied").await;
    assert_eq!(seen["status"], 403, "the allowlist's answer: {seen}");
    assert_eq!(upgrades(proxy, "denied").await, None);
}

#[tokio::test]
async fn an_upstream_that_does_not_switch_is_answered_as_usual() {
    let rig = rig();
    let proxy = &rig.proxy;

    let seen = refused(proxy, "/plain").await;
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["body"], "no websocket here\n", "{seen}");

    // The connection then carries HTTP/1.1 as before: a raw upgrade request and a
    // plain one after it on the same connection.
    let mut raw = Raw::connect(proxy.addr("web")).await;
    let handshake = "GET /plain HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                     sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let _ = raw.send(handshake.as_bytes()).await;
    let first = raw.read_response(Duration::from_secs(10)).await;
    let first =
        first.unwrap_or_else(|| panic!("no answer to the upgrade; logs:\n{}", proxy.logs()));
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.ends_with("no websocket here\n"), "{first}");
    let _ = raw
        .send(b"GET /plain/again HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let second = raw.read_response(Duration::from_secs(10)).await;
    let second = second.unwrap_or_else(|| panic!("no second answer; logs:\n{}", proxy.logs()));
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(upgrades(proxy, "plain").await, None);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let rig = rig();
    let proxy = &rig.proxy;

    // A message every 100 ms for 2 s: over three idle timeouts, never idle for one.
    let busy = ws_client(ws_url(proxy, "/quiet"), "busy", Some("2")).await;
    assert_eq!(busy["open"], true, "a busy tunnel stays open: {busy}");

    let idle = ws_client(ws_url(proxy, "/quiet"), "idle", Some("10")).await;
    assert_eq!(
        idle["closed"], true,
        "the proxy closed the idle tunnel: {idle}"
    );
    let after = idle["after_s"].as_f64().unwrap_or_default();
    assert!(
        (0.5..5.0).contains(&after),
        "closed {after} s after the last message; the route's idle timeout is 600 ms"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"portcullis_upgrades_closed_total{route="quiet",reason="idle_timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The round trip of a small message through the proxy and straight to the server,
/// printed (`cargo test --test e2e websocket_round_trip -- --nocapture`); the figure
/// in docs/performance.md comes from here. Asserts only that both paths work.
#[tokio::test]
async fn websocket_round_trip_through_the_proxy_and_direct() {
    let rig = rig();
    let proxy = &rig.proxy;
    let n = "2000";
    let direct = ws_client(format!("ws://{}/chat", rig.echo.address()), "rtt", Some(n)).await;
    let proxied = ws_client(ws_url(proxy, "/bare"), "rtt", Some(n)).await;
    for (name, r) in [("direct", &direct), ("through portcullis", &proxied)] {
        assert!(r["median_us"].as_f64().is_some(), "{name}: {r}");
        println!(
            "websocket round trip, 32-byte message, {name}: median {:.0} µs, p99 {:.0} µs ({n} round trips)",
            r["median_us"].as_f64().unwrap_or_default(),
            r["p99_us"].as_f64().unwrap_or_default()
        );
    }
}

/// A WebSocket over HTTP/2 (RFC 8441): the client opens it with an extended CONNECT,
/// the upstream (HTTP/1.1 only) sees a WebSocket handshake, and frames pass both ways
/// over the HTTP/2 stream.
#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncWriteExt;

    let rig = rig();
    let proxy = &rig.proxy;
    let tcp = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 handshake: {e}"));
    tokio::spawn(conn);

    let open = |path: &str, protocol: &'static str| {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{}{path}", proxy.addr("web")))
            .header("sec-websocket-version", "13")
            .extension(hyper::ext::Protocol::from_static(protocol))
            .body(Empty::new())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // The server's SETTINGS (which allow extended CONNECT) may not be in yet: the
    // client refuses to send one until they are.
    let mut resp = None;
    for _ in 0..50 {
        match sender.send_request(open("/chat/h2", "websocket")).await {
            Ok(r) => {
                resp = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let resp =
        resp.unwrap_or_else(|| panic!("no answer to the extended CONNECT:\n{}", proxy.logs()));
    assert_eq!(resp.status(), 200, "an open WebSocket stream: {resp:?}");
    assert_eq!(
        resp.headers()["x-proxy"],
        "portcullis",
        "response filter ran"
    );
    assert!(
        !resp.headers().contains_key("sec-websocket-accept"),
        "{resp:?}"
    );
    let mut ws = TokioIo::new(
        hyper::upgrade::on(resp)
            .await
            .unwrap_or_else(|e| panic!("no stream: {e}")),
    );

    ws_frame::send(&mut ws, 0x1, b"hello over h2").await;
    assert_eq!(
        ws_frame::recv(&mut ws).await,
        (0x1, b"hello over h2".to_vec())
    );
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws_frame::send(&mut ws, 0x2, &big).await;
    let (opcode, back) = ws_frame::recv(&mut ws).await;
    assert!(
        opcode == 0x2 && back == big,
        "1 MiB binary message echoed whole"
    );
    ws_frame::send(&mut ws, 0x1, b"headers").await;
    let (_, seen) = ws_frame::recv(&mut ws).await;
    let seen: Value = serde_json::from_slice(&seen).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        seen["upgrade"], "websocket",
        "the upstream saw an HTTP/1.1 upgrade: {seen}"
    );
    assert!(seen["sec-websocket-key"].is_string(), "{seen}");
    assert_eq!(seen["x-filtered"], "yes", "request filter ran: {seen}");
    ws_frame::send(&mut ws, 0x8, &[0x03, 0xe8]).await;
    assert_eq!(ws_frame::recv(&mut ws).await.0, 0x8, "close answered");
    let _ = ws.shutdown().await;

    // An upstream that answers 200 without switching: the HTTP/2 client would take
    // any 2xx for an open stream, so it gets 502.
    let refused = sender
        .send_request(open("/plain", "websocket"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 502);
    // And the allowlist refuses the handshake before any upstream.
    let denied = sender
        .send_request(open("/denied", "websocket"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(denied.status(), 403);
}

/// WebSocket frames as a client writes (masked) and reads (unmasked) them, for the
/// HTTP/2 test (no client library here speaks RFC 8441).
mod ws_frame {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Sends one final frame of `opcode` with `payload`, masked.
    pub async fn send(io: &mut (impl AsyncWrite + Unpin), opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        io.write_all(&frame)
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Reads one unmasked frame: its opcode and payload.
    pub async fn recv(io: &mut (impl AsyncRead + Unpin)) -> (u8, Vec<u8>) {
        let read = async {
            let mut head = [0u8; 2];
            io.read_exact(&mut head).await?;
            let len = match head[1] & 0x7f {
                126 => u64::from(io.read_u16().await?),
                127 => io.read_u64().await?,
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            io.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>((head[0] & 0x0f, payload))
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| panic!("no frame within 10 s"))
            .unwrap_or_else(|e| panic!("recv: {e}"))
    }
}
