//! The PROXY protocol: headers v1 and v2 sent to upstreams that ask for them (seen by
//! a real TCP peer, byte for byte), accepted from trusted downstreams (the client is
//! then the one the header names: the echo, filters and logs see it), required from
//! them, and not read from anyone else.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{PATIENCE, TcpEcho, connect, round_trip};
use crate::support::{ConfDir, Proxy, Raw};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header (PROXY, TCP over IPv4) naming `source` connected to `destination`,
/// built here from the specification rather than by the proxy's code.
fn v2_tcp4(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
        panic!("IPv4 only");
    };
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

fn config(backend: &TcpEcho) -> String {
    format!(
        r#"
workers: 1
listeners:
  - {{ name: web, address: "127.0.0.1:0", proxy_protocol: {{ trusted: [127.0.0.0/8] }},
      limits: {{ header_timeout: 2s }} }}
  - {{ name: web_untrusted, address: "127.0.0.1:0", proxy_protocol: {{ trusted: [10.0.0.0/8] }} }}
  - {{ name: tcp_v1, address: "127.0.0.1:0", protocol: tcp, proxy_protocol: {{ trusted: ["127.0.0.1"] }} }}
  - {{ name: tcp_v2, address: "127.0.0.1:0", protocol: tcp }}
routes:
  - {{ name: web, listeners: [web, web_untrusted], upstream: echo@internal }}
tcp_routes:
  - {{ name: v1, listeners: [tcp_v1], upstream: v1 }}
  - {{ name: v2, listeners: [tcp_v2], upstream: v2 }}
upstreams:
  - {{ name: v1, proxy_protocol: v1, targets: [{{ address: "{0}" }}] }}
  - {{ name: v2, proxy_protocol: v2, targets: [{{ address: "{0}" }}] }}
"#,
        backend.addr()
    )
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn headers_go_to_upstreams_and_come_from_trusted_clients_only() {
    let backend = TcpEcho::start("E").await;
    let conf = ConfDir::with(&config(&backend));
    let proxy = Proxy::start(&conf);
    let client: SocketAddr = "203.0.113.9:5555".parse().unwrap_or_else(|e| panic!("{e}"));
    let dest: SocketAddr = "10.0.0.1:80".parse().unwrap_or_else(|e| panic!("{e}"));

    // A trusted client's v1 and v2 headers name the client the route sees.
    for header in [
        b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n".to_vec(),
        v2_tcp4(client, dest),
    ] {
        let mut raw = Raw::connect(proxy.addr("web")).await;
        let mut bytes = header.clone();
        bytes.extend_from_slice(GET);
        raw.send(&bytes).await.unwrap_or_else(|e| panic!("{e}"));
        let resp = raw
            .read_response(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no answer to {header:?}"));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.contains(r#""client_address":"203.0.113.9:5555""#),
            "the echo must see the header's client: {resp}"
        );
    }
    assert!(
        proxy.wait_for_log(r#"client="203.0.113.9:5555""#, Duration::from_secs(5)),
        "the access log names the header's client:\n{}",
        proxy.logs()
    );

    // A trusted peer must send one: without it (or with a broken one) the connection
    // is closed unanswered.
    for bad in [GET.to_vec(), b"PROXY TCP4 1.2.3.4\r\n".to_vec()] {
        let mut raw = Raw::connect(proxy.addr("web")).await;
        raw.send(&bad).await.unwrap_or_else(|e| panic!("{e}"));
        let (got, closed) = raw.read_to_close(PATIENCE).await;
        assert!(
            closed && got.is_empty(),
            "{:?}: got {got:?}",
            String::from_utf8_lossy(&bad)
        );
    }

    // From anyone not trusted, nothing is read as a header: it is the request, and
    // `PROXY ...` is no HTTP request line.
    let mut raw = Raw::connect(proxy.addr("web_untrusted")).await;
    let mut bytes = b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n".to_vec();
    bytes.extend_from_slice(GET);
    raw.send(&bytes).await.unwrap_or_else(|e| panic!("{e}"));
    let resp = raw.read_response(PATIENCE).await.unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let mut raw = Raw::connect(proxy.addr("web_untrusted")).await;
    raw.send(GET).await.unwrap_or_else(|e| panic!("{e}"));
    let resp = raw.read_response(PATIENCE).await.unwrap_or_default();
    assert!(resp.contains(r#""client_address":"127.0.0.1:"#), "{resp}");

    // To upstreams: a trusted client's v2 header in, v1 out, naming that client.
    let tcp_v1 = proxy.addr("tcp_v1");
    let mut c = connect(tcp_v1).await;
    c.write_all(&v2_tcp4(client, dest))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(round_trip(&mut c, "hello\n").await.contains("hello"));
    let expected = format!(
        "PROXY TCP4 203.0.113.9 127.0.0.1 5555 {}\r\nhello\n",
        tcp_v1.port()
    );
    assert_eq!(
        String::from_utf8_lossy(&backend.received()[0]),
        expected,
        "the backend sees the v1 header, then the client's bytes"
    );

    // v2 from a client that sent none: the peer itself.
    let tcp_v2 = proxy.addr("tcp_v2");
    let mut c = connect(tcp_v2).await;
    let me = c.local_addr().unwrap_or_else(|e| panic!("{e}"));
    assert!(round_trip(&mut c, "again\n").await.contains("again"));
    let mut expected = v2_tcp4(me, tcp_v2);
    expected.extend_from_slice(b"again\n");
    assert_eq!(
        backend.received()[1],
        expected,
        "the v2 header, byte for byte"
    );
}
