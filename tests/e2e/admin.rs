//! The admin listener: /ready, /status, /metrics.

use crate::server::basic_conf;
use crate::support::*;

#[tokio::test]
async fn ready_and_status() {
    let proxy = Proxy::start(&basic_conf(""));
    let resp = client()
        .get(proxy.admin_url("/ready"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /ready failed: {e}"));
    assert_eq!(resp.status(), 200, "/ready once serving");
    let status = proxy.status().await;
    assert_eq!(status["generation"], 1, "status: {status:#}");
}
