//! A real headless browser: Debian's `chromium`, driven over the Chrome DevTools
//! Protocol (one WebSocket, JSON commands) — what the dashboard test looks through.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A headless Chromium with one page open; killed (and its profile deleted) on drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

/// `$PORTCULLIS_CHROMIUM`, else `chromium` on the PATH; panics saying how to install
/// it when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_CHROMIUM") {
        return path.into();
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "this test needs a headless browser and found no `chromium` on the PATH.\n\
             Install it: apt-get install chromium (or run .ci/install-toolchains), or set \
             PORTCULLIS_CHROMIUM to a Chromium binary"
        )
    })
}

impl Browser {
    /// Starts Chromium headless on a fresh profile, with a `width`×`height` window,
    /// and opens a blank page.
    pub async fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("portcullis-chromium-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let mut child = Command::new(chromium())
            .arg("--headless")
            // Root (as CI runs) has no user namespace sandbox to drop into.
            .arg("--no-sandbox")
            .args(["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .args([
                "--no-default-browser-check",
                "--disable-extensions",
                "--mute-audio",
            ])
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        let url = devtools_url(&mut child);
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Chromium's DevTools at {url}: {e}"));
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target = target["targetId"].clone();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.attachToTarget gave no session: {attached}"))
            .to_owned();
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Sends one DevTools command (to the page, once attached) and returns its result;
    /// panics on an error answer. Events in between are skipped.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{method}: cannot send to Chromium: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.ws.next()).await;
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => panic!("{method}: DevTools connection failed: {e}"),
                Ok(None) => panic!("{method}: Chromium closed the DevTools connection"),
                Err(_) => panic!("{method}: no answer from Chromium in 30 s"),
            };
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("{method}: DevTools sent no JSON ({e}): {text}"));
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if !answer["error"].is_null() {
                panic!("{method} {params}: {}", answer["error"]);
            }
            return answer["result"].clone();
        }
    }

    /// Navigates to `url` and waits until its document has loaded.
    pub async fn goto(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            nav["errorText"].is_null(),
            "cannot open {url}: {}",
            nav["errorText"]
        );
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|last| panic!("{url} did not finish loading: {last}"));
    }

    /// The value of the JavaScript expression `expr` in the page (promises awaited);
    /// panics if it throws.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy (every 100 ms) and returns that value, or the
    /// last value it had when `timeout` runs out.
    pub async fn wait_for(&mut self, expr: &str, timeout: Duration) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the page `width`×`height` CSS pixels, as a phone (`mobile`) or a desktop.
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        let scale = if mobile { 2 } else { 1 };
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile }),
        )
        .await;
    }

    /// Saves a PNG of the whole page (beyond the window, when `full_page`) to `path`.
    pub async fn screenshot(&mut self, path: &Path, full_page: bool) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": full_page }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("the screenshot is not base64: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads Chromium's stderr up to its `DevTools listening on ws://…` line (then keeps
/// draining it, so that the browser never blocks on a full pipe).
fn devtools_url(child: &mut Child) -> String {
    let Some(stderr) = child.stderr.take() else {
        panic!("chromium's stderr was not captured");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    sent = tx.send(Ok(url.trim().to_owned())).is_ok();
                } else {
                    seen.push(line);
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(url)) => url,
        Ok(Err(stderr)) => panic!("chromium exited before listening for DevTools:\n{stderr}"),
        Err(_) => panic!("chromium printed no DevTools address in 60 s"),
    }
}
