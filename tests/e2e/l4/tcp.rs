//! `tcp` listeners: a TCP echo through a route, a reload while a connection is open
//! (it finishes on its old route, new ones take the new), TLS terminated in front of
//! a plain TCP peer, connect failures balanced away, and the configuration's errors.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TcpEcho, connect, read_to_close, round_trip};
use crate::support::{ConfDir, Proxy, run_to_end};
use crate::tls::client::{ClientOptions, connect as tls_connect};
use crate::tls::pki::{Alg, Ca};

fn yaml(upstream: &str, a: &TcpEcho, b: &TcpEcho) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
workers: 1
listeners:
  - {{ name: web, address: "127.0.0.1:0" }}
  - {{ name: db, address: "127.0.0.1:0", protocol: tcp }}
routes:
  - {{ name: web, upstream: echo@internal }}
tcp_routes:
  - {{ name: db, listeners: [db], upstream: {upstream}, idle_timeout: 30s }}
upstreams:
  - {{ name: a, targets: [{{ address: "{}" }}] }}
  - {{ name: b, targets: [{{ address: "{}" }}] }}
"#,
        a.addr(),
        b.addr()
    )
}

#[tokio::test]
async fn tcp_echo_keeps_its_route_across_a_reload_and_new_connections_take_the_new_one() {
    let (a, b) = (TcpEcho::start("A").await, TcpEcho::start("B").await);
    let conf = ConfDir::with(&yaml("a", &a, &b));
    let proxy = Proxy::start(&conf);
    let addr = proxy.addr("db");

    let mut first = connect(addr).await;
    assert!(round_trip(&mut first, "one\n").await.contains("A:one"));

    conf.write("portcullis.yaml", yaml("b", &a, &b));
    proxy.wait_for_generation(2).await;
    let echoed = round_trip(&mut first, "two\n").await;
    assert!(
        echoed.contains("A:two"),
        "the open connection must stay on its old route: {echoed:?}"
    );
    let mut second = connect(addr).await;
    let echoed = round_trip(&mut second, "three\n").await;
    assert!(
        echoed.contains("B:three"),
        "a new one takes the new route: {echoed:?}"
    );

    // A bulk transfer: 4 MiB each way, every byte back.
    // Letters only, so that the echo's `B:` stands out.
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let (mut rd, mut wr) = second.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap_or_else(|e| panic!("{e}"));
        wr.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let (got, closed) = read_to_close(&mut rd).await;
    writer.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        closed,
        "a half-close must reach the peer, whose close comes back"
    );
    let body = String::from_utf8_lossy(&got).replace("B:", "");
    assert!(
        body.as_bytes() == payload,
        "every byte relayed both ways, in order ({} of {})",
        body.len(),
        payload.len()
    );

    drop(first);
    let status = proxy.status().await;
    assert_eq!(status["listeners"][1]["protocol"], "tcp", "{status:#}");
    assert_eq!(status["tcp_routes"][0]["upstream"], "b", "{status:#}");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_l4_connections_total{route="db"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_l4_bytes_total{route="db",direction="upstream"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn tls_is_terminated_in_front_of_a_plain_tcp_peer_whatever_alpn_the_client_offers() {
    let a = TcpEcho::start("A").await;
    let ca = Ca::new("L4 Root");
    let leaf = ca.server(&["db.example.test"], Alg::Ecdsa);
    let conf = ConfDir::new();
    conf.write("certs/db.crt", &leaf.chain_pem);
    conf.write("certs/db.key", &leaf.key_pem);
    conf.write(
        "portcullis.yaml",
        format!(
            r#"
workers: 1
listeners:
  - name: db
    address: "127.0.0.1:0"
    protocol: tcp
    tls: {{ certificates: [{{ cert: certs/db.crt, key: certs/db.key }}] }}
tcp_routes:
  - {{ name: db, upstream: a }}
upstreams:
  - {{ name: a, targets: [{{ address: "{}" }}] }}
"#,
            a.addr()
        ),
    );
    let proxy = Proxy::start(&conf);
    let opts = ClientOptions {
        ca: Some(ca.cert_pem.clone()),
        alpn: vec![b"postgresql"],
        ..ClientOptions::default()
    };
    let mut tls = tls_connect(proxy.addr("db"), "db.example.test", &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        round_trip(&mut tls, "SELECT 1;\n")
            .await
            .contains("A:SELECT 1;")
    );
    assert_eq!(
        a.received(),
        vec![b"SELECT 1;\n".to_vec()],
        "the peer gets plain text"
    );
}

#[tokio::test]
async fn a_target_that_refuses_is_passed_over_and_no_route_closes() {
    let a = TcpEcho::start("A").await;
    // A port nobody listens on: bound, then let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let conf = ConfDir::with(&format!(
        r#"
workers: 1
listeners:
  - {{ name: db, address: "127.0.0.1:0", protocol: tcp }}
  - {{ name: none, address: "127.0.0.1:0", protocol: tcp }}
tcp_routes:
  - {{ name: db, listeners: [db], upstream: a }}
upstreams:
  - {{ name: a, targets: [{{ address: "{dead}" }}, {{ address: "{}" }}] }}
"#,
        a.addr()
    ));
    let proxy = Proxy::start(&conf);
    for i in 0..4 {
        let mut c = connect(proxy.addr("db")).await;
        let line = format!("try {i}\n");
        assert!(
            round_trip(&mut c, &line)
                .await
                .contains(&format!("A:{line}"))
        );
    }
    let mut c = connect(proxy.addr("none")).await;
    let _ = c.write_all(b"anyone?").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(super::PATIENCE, c.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a listener without routes closes: {read:?}"
    );
}

#[test]
fn check_names_file_line_and_field_of_l4_mistakes() {
    let conf = ConfDir::with(
        r#"
listeners:
  - { name: web, address: "127.0.0.1:0" }
  - { name: db, address: "127.0.0.1:0", protocol: tcp }
  - { name: dns, address: "127.0.0.1:0", protocol: udp, tls: { certificates: [] } }
routes:
  - { name: r, listeners: [db], upstream: echo@internal }
  - { name: p, upstream: sender }
tcp_routes:
  - { name: t, listeners: [web], upstream: nowhere }
  - { name: e, upstream: echo@internal }
upstreams:
  - { name: sender, proxy_protocol: v3, targets: [{ address: "127.0.0.1:1" }] }
"#,
    );
    let (code, _, stderr) = run_to_end(["check", "--conf", &conf.path().display().to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "portcullis.yaml:5: listeners.dns.protocol: a udp listener cannot terminate TLS",
        "portcullis.yaml:7: routes.r.listeners: `db` is a tcp listener",
        "portcullis.yaml:10: tcp_routes.t.listeners: `web` is an http listener",
        "portcullis.yaml:10: tcp_routes.t.upstream: unknown upstream `nowhere`",
        "portcullis.yaml:11: tcp_routes.e.upstream: `echo@internal` answers HTTP",
        "portcullis.yaml:13: upstreams.sender.proxy_protocol",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
