//! `udp` listeners: datagrams of each client go to a target of the route's upstream
//! and its answers come back to that client; a silent session ends.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::PATIENCE;
use crate::support::{ConfDir, Proxy};

/// A UDP server on 127.0.0.1:0 answering each datagram with `TAG:` and its bytes.
async fn udp_echo(tag: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut out = format!("{tag}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&out, from).await;
        }
    });
    (addr, task)
}

async fn ask(socket: &UdpSocket, to: SocketAddr, what: &[u8]) -> Vec<u8> {
    // UDP may drop: ask again a few times before giving up.
    let mut buf = vec![0u8; 65_535];
    for _ in 0..5 {
        socket
            .send_to(what, to)
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        {
            return buf[..n].to_vec();
        }
    }
    panic!(
        "no answer to {:?} through {to}",
        String::from_utf8_lossy(what)
    );
}

#[tokio::test]
async fn udp_echo_through_a_route_with_a_session_per_client() {
    let (echo, _task) = udp_echo("U").await;
    let conf = ConfDir::with(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
workers: 2
listeners:
  - {{ name: dns, address: "127.0.0.1:0", protocol: udp }}
  - {{ name: dns_tcp, address: "127.0.0.1:0", protocol: tcp }}
udp_routes:
  - {{ name: dns, upstream: resolver, idle_timeout: 1s }}
tcp_routes:
  - {{ name: dns_tcp, upstream: resolver }}
upstreams:
  - {{ name: resolver, targets: [{{ address: "{echo}" }}] }}
"#
    ));
    let proxy = Proxy::start(&conf);
    let addr = proxy.addr("dns");
    let (one, two) = (
        UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(ask(&one, addr, b"first").await, b"U:first");
    assert_eq!(ask(&two, addr, b"second").await, b"U:second");
    assert_eq!(ask(&one, addr, b"again").await, b"U:again");
    let big = vec![b'x'; 8000];
    let mut expected = b"U:".to_vec();
    expected.extend_from_slice(&big);
    assert_eq!(
        ask(&two, addr, &big).await,
        expected,
        "a large datagram whole"
    );

    // Both sessions end after a second of silence.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let metrics = proxy.metrics().await;
        if metrics.contains(
            r#"portcullis_l4_connections_closed_total{route="dns",reason="idle_timeout"} 2"#,
        ) {
            assert!(
                metrics.contains(r#"portcullis_l4_connections_total{route="dns"} 2"#),
                "{metrics}"
            );
            assert!(
                metrics.contains(r#"portcullis_l4_connections_active{route="dns"} 0"#),
                "{metrics}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions never ended:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A client coming back starts a new session.
    assert_eq!(ask(&one, addr, b"back").await, b"U:back");
}
