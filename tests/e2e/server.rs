//! Serving: protocols, limits, timeouts, workers, graceful shutdown.

use crate::support::*;

/// A minimal config: one listener and an admin listener, both on port 0.
pub fn basic_conf(extra: &str) -> ConfDir {
    ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: web, address: 127.0.0.1:0 }}\nroutes:\n  - {{ name: all, upstream: echo@internal }}\n{extra}"
    ))
}

#[tokio::test]
async fn serves_http1_keep_alive() {
    let proxy = Proxy::start(&basic_conf(""));
    let c = client();
    for i in 0..3 {
        let resp = c
            .get(proxy.url("web", &format!("/k/{i}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}\n{}", proxy.logs()));
        assert!(
            resp.status().as_u16() < 500,
            "unexpected status {}",
            resp.status()
        );
    }
}
