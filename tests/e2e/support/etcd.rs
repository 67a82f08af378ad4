//! A real `etcd` (Debian's `etcd-server`, 3.4) for the tests of the etcd provider: a
//! one-member cluster on free loopback ports (client, peer, and a plain-HTTP metrics
//! port its health is read on), a temp data dir, stopped by PID; optionally serving
//! its clients over TLS, requiring a client certificate. Written to through its JSON gateway with a plain HTTP client, not
//! through the proxy's own etcd client. Without the binary the test fails saying what
//! to install.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// A running `etcd`; killed on drop.
pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    dir: tempfile::TempDir,
    tls: Option<EtcdTls>,
    /// What writes go through: plain, or with the CA and a client certificate.
    http: reqwest::Client,
    /// The token writes are made with, once auth is enabled.
    token: Option<String>,
}

/// TLS on the client port: etcd's certificate and key, and the CA its clients'
/// certificates must chain to (`--client-cert-auth`).
pub struct EtcdTls {
    /// etcd's certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA of the client certificates (PEM).
    pub client_ca: PathBuf,
    /// What the writes of the test present: the CA of etcd's certificate, and a client
    /// certificate and key (PEM, concatenated).
    pub server_ca_pem: String,
    /// A client certificate and its key, PEM, concatenated.
    pub client_identity_pem: String,
}

impl EtcdServer {
    /// Starts one on free ports and waits until it reports healthy.
    pub fn start() -> EtcdServer {
        Self::start_with(None)
    }

    /// Starts one serving its clients over TLS only, a client certificate required.
    pub fn start_tls(tls: EtcdTls) -> EtcdServer {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTls>) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-etcd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let http = match &tls {
            None => super::client(),
            Some(tls) => {
                let ca = reqwest::Certificate::from_pem(tls.server_ca_pem.as_bytes())
                    .unwrap_or_else(|e| panic!("the test CA: {e}"));
                let id = reqwest::Identity::from_pem(tls.client_identity_pem.as_bytes())
                    .unwrap_or_else(|e| panic!("the test client certificate: {e}"));
                reqwest::Client::builder()
                    .no_proxy()
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(ca)
                    .identity(id)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap_or_else(|e| panic!("cannot build a TLS client: {e}"))
            }
        };
        let mut server = EtcdServer {
            child: None,
            client_port: 0,
            peer_port: 0,
            metrics_port: 0,
            dir,
            tls,
            http,
            token: None,
        };
        // The ports are free when read; another process may take one before etcd
        // binds it, so try a few.
        for _ in 0..5 {
            server.client_port = free_port();
            server.peer_port = free_port();
            server.metrics_port = free_port();
            if server.spawn_on(server.client_port) {
                return server;
            }
        }
        panic!("etcd did not start on any of 5 sets of free ports");
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), the client URL.
    pub fn endpoint(&self) -> String {
        self.endpoint_on(self.client_port)
    }

    fn endpoint_on(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{port}")
    }

    /// Kills the server (SIGKILL, as a crash) and waits for it to be gone; its data
    /// stays in the data dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its data dir and client port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn_on(self.client_port),
            "etcd did not start again on port {}",
            self.client_port
        );
    }

    /// Starts it again on its data dir but on another client port, where nobody
    /// configured with [`EtcdServer::endpoint`] can reach it: "cut off" while it
    /// takes writes. Returns that port's endpoint.
    pub fn restart_elsewhere(&mut self) -> String {
        self.stop();
        for _ in 0..5 {
            let port = free_port();
            if self.spawn_on(port) {
                return self.endpoint_on(port);
            }
        }
        panic!("etcd did not start again on any of 5 free ports");
    }

    /// Writes `key` = `value` through `endpoint`; returns the store revision.
    pub async fn put_at(endpoint: &str, key: &str, value: &str) -> i64 {
        let body = serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
        revision(&post(&super::client(), endpoint, "/v3/kv/put", &body, None).await)
    }

    /// Writes `key` = `value`; returns the store revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let body = serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
        revision(&self.post("/v3/kv/put", &body).await)
    }

    /// Deletes `key`; returns the store revision.
    pub async fn delete(&self, key: &str) -> i64 {
        let body = serde_json::json!({ "key": B64.encode(key) });
        revision(&self.post("/v3/kv/deleterange", &body).await)
    }

    /// Turns etcd's authentication on with user `root` (password `password`), as
    /// `etcdctl user add root && etcdctl auth enable` would; later writes here log in.
    pub async fn enable_auth(&mut self, password: &str) {
        let user = serde_json::json!({ "name": "root", "password": password });
        self.post("/v3/auth/user/add", &user).await;
        self.post("/v3/auth/role/add", &serde_json::json!({ "name": "root" }))
            .await;
        let grant = serde_json::json!({ "user": "root", "role": "root" });
        self.post("/v3/auth/user/grant", &grant).await;
        self.post("/v3/auth/enable", &serde_json::json!({})).await;
        let login = self.post("/v3/auth/authenticate", &user).await;
        let token = login["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {login}"));
        self.token = Some(token.to_string());
    }

    /// POSTs `body` to `path` here, logged in once auth is enabled.
    async fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        post(
            &self.http,
            &self.endpoint(),
            path,
            body,
            self.token.as_deref(),
        )
        .await
    }

    fn spawn_on(&mut self, client_port: u16) -> bool {
        self.stop();
        let client = self.endpoint_on(client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "e2e", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("e2e={peer}")])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--log-level", "error"]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca);
        }
        let metrics_port = self.metrics_port;
        self.child = super::start_server(&mut cmd, "etcd-server", Duration::from_secs(20), || {
            healthy(metrics_port)
        });
        self.child.is_some()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Whether etcd's metrics listener on `port` answers `/health` with
/// `"health":"true"` (plain HTTP whatever the client port speaks).
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

async fn post(
    http: &reqwest::Client,
    endpoint: &str,
    path: &str,
    body: &serde_json::Value,
    token: Option<&str>,
) -> serde_json::Value {
    let url = format!("{endpoint}{path}");
    let mut req = http.post(&url).json(body);
    if let Some(token) = token {
        req = req.header("authorization", token);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {url}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {text}"))
}

fn revision(json: &serde_json::Value) -> i64 {
    json["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no header.revision in {json}"))
}
