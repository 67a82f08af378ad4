//! A real `etcd` (Debian's `etcd-server`, 3.4) for the tests of the etcd provider: a
//! one-member cluster on free loopback ports (client and peer), a temp data dir,
//! stopped by PID. Written to through its JSON gateway with a plain HTTP client, not
//! through the proxy's own etcd client. Without the binary the test fails saying what
//! to install.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// A running `etcd`; killed on drop.
pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    /// The token writes are made with, once auth is enabled.
    token: Option<String>,
}

impl EtcdServer {
    /// Starts one on free ports and waits until it reports healthy.
    pub fn start() -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-etcd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let mut server = EtcdServer {
            child: None,
            client_port: 0,
            peer_port: 0,
            dir,
            token: None,
        };
        // The ports are free when read; another process may take one before etcd
        // binds it, so try a few pairs.
        for _ in 0..5 {
            server.client_port = free_port();
            server.peer_port = free_port();
            if server.spawn_on(server.client_port) {
                return server;
            }
        }
        panic!("etcd did not start on any of 5 pairs of free ports");
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
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
                return format!("http://127.0.0.1:{port}");
            }
        }
        panic!("etcd did not start again on any of 5 free ports");
    }

    /// Writes `key` = `value` through `endpoint`; returns the store revision.
    pub async fn put_at(endpoint: &str, key: &str, value: &str) -> i64 {
        let body = serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
        let json = post(endpoint, "/v3/kv/put", &body, None).await;
        revision(&json)
    }

    /// Writes `key` = `value`; returns the store revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let body = serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
        let json = post(&self.endpoint(), "/v3/kv/put", &body, self.token.as_deref()).await;
        revision(&json)
    }

    /// Deletes `key`; returns the store revision.
    pub async fn delete(&self, key: &str) -> i64 {
        let body = serde_json::json!({ "key": B64.encode(key) });
        let json = post(
            &self.endpoint(),
            "/v3/kv/deleterange",
            &body,
            self.token.as_deref(),
        )
        .await;
        revision(&json)
    }

    /// Turns etcd's authentication on with user `root` (password `password`), as
    /// `etcdctl user add root && etcdctl auth enable` would; later writes here log in.
    pub async fn enable_auth(&mut self, password: &str) {
        let endpoint = self.endpoint();
        let user = serde_json::json!({ "name": "root", "password": password });
        post(&endpoint, "/v3/auth/user/add", &user, None).await;
        post(
            &endpoint,
            "/v3/auth/role/add",
            &serde_json::json!({ "name": "root" }),
            None,
        )
        .await;
        let grant = serde_json::json!({ "user": "root", "role": "root" });
        post(&endpoint, "/v3/auth/user/grant", &grant, None).await;
        post(&endpoint, "/v3/auth/enable", &serde_json::json!({}), None).await;
        let login = post(&endpoint, "/v3/auth/authenticate", &user, None).await;
        let token = login["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {login}"));
        self.token = Some(token.to_string());
    }

    fn spawn_on(&mut self, client_port: u16) -> bool {
        self.stop();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let spawned = Command::new("etcd")
            .args(["--name", "e2e", "--data-dir"])
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
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "etcd is not installed: run `apt-get install -y etcd-server` \
                 (.ci/install-toolchains installs it)"
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if healthy(client_port) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false; // exited: a port was taken
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
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

/// Whether etcd on `port` answers `/health` with `"health":"true"`.
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
    endpoint: &str,
    path: &str,
    body: &serde_json::Value,
    token: Option<&str>,
) -> serde_json::Value {
    let url = format!("{endpoint}{path}");
    let mut req = super::client().post(&url).json(body);
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
