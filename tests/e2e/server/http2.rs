//! The HTTP/2 settings a listener announces (`http2:`), read off the wire, and a
//! request body larger than the windows they set, which still arrives whole.

use std::time::Duration;

use crate::support::h2raw::{self, H2Raw};
use crate::support::*;

/// SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 6.5.2).
const INITIAL_WINDOW_SIZE: u16 = 0x4;
/// WINDOW_UPDATE.
const WINDOW_UPDATE: u8 = 0x8;
/// What a connection's window is before any WINDOW_UPDATE (RFC 9113 6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// A proxy whose listener `web` (h2c by prior knowledge) has `http2` as its `http2:`
/// block (empty: none), routing every request to `echo@internal`.
fn proxy(http2: &str) -> Proxy {
    let http2 = if http2.is_empty() {
        String::new()
    } else {
        format!(", http2: {{ {http2} }}")
    };
    Proxy::start(&ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0{http2} }}
routes:
  - {{ name: all, upstream: echo@internal }}
"
    )))
}

/// What the server announced at the start of a connection: its SETTINGS (id, value)
/// and the increment of its first WINDOW_UPDATE on the connection (0 if none came
/// within a second).
async fn announced(proxy: &Proxy) -> (Vec<(u16, u32)>, u32) {
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    let settled = |f: &[h2raw::Frame]| {
        f.iter()
            .any(|f| f.kind == h2raw::SETTINGS && f.flags & 1 == 0)
            && f.iter().any(|f| f.kind == WINDOW_UPDATE && f.stream == 0)
    };
    let (frames, _) = h2.read_frames(Duration::from_secs(1), settled).await;
    let settings = frames
        .iter()
        .find(|f| f.kind == h2raw::SETTINGS && f.flags & 1 == 0)
        .unwrap_or_else(|| panic!("no SETTINGS from the server, got {frames:?}"));
    let pairs = settings
        .payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    let increment = frames
        .iter()
        .find(|f| f.kind == WINDOW_UPDATE && f.stream == 0)
        .map_or(0, |f| {
            u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                & 0x7fff_ffff
        });
    (pairs, increment)
}

fn setting(pairs: &[(u16, u32)], id: u16) -> Option<u32> {
    pairs.iter().rev().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

#[tokio::test]
async fn default_windows_are_one_mebibyte() {
    let proxy = proxy("");
    let (settings, increment) = announced(&proxy).await;
    assert_eq!(
        setting(&settings, INITIAL_WINDOW_SIZE),
        Some(1 << 20),
        "stream window in {settings:?}"
    );
    assert_eq!(
        DEFAULT_WINDOW + increment,
        1 << 20,
        "the connection's window is raised to 1 MiB"
    );
}

#[tokio::test]
async fn configured_windows_are_announced_and_hold() {
    let proxy = proxy("initial_stream_window: 16KiB, initial_connection_window: 128KiB");
    let (settings, increment) = announced(&proxy).await;
    assert_eq!(
        setting(&settings, INITIAL_WINDOW_SIZE),
        Some(16 * 1024),
        "stream window in {settings:?}"
    );
    assert_eq!(DEFAULT_WINDOW + increment, 128 * 1024, "connection window");

    // A body of many windows arrives whole: the proxy opens them as it reads.
    let body = vec![b'x'; 1024 * 1024];
    let resp = h2_client()
        .post(proxy.url("web", "/upload"))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST over h2c: {e}"));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("echo's JSON: {e}"));
    assert_eq!(echoed["body_bytes"], 1024 * 1024, "{echoed}");
}
