//! One module, two roles, picked by the plugin configuration:
//!
//! - `service <tag> <upstream>`: a service module (`services:`), on no route. Each VM
//!   it gets adds one to the shared `service:<tag>:vms`, so a test can count them. It
//!   ticks every 20 ms, counting its ticks in the shared `service:<tag>:ticks`; its
//!   first tick makes an `http_call` to `<upstream>` and keeps the status in
//!   `service:<tag>:call`; it registers the queue `service-inbox` and appends what it
//!   dequeues to the shared `service:got` (comma-separated).
//!   With a fourth word `<grpc upstream>`, its first tick also opens a gRPC stream
//!   there (`portcullis.test.Echo/SlowStream`, asking for 3 messages) and writes what
//!   arrives to the shared `service:<tag>:stream`: the messages comma-separated, then
//!   `|closed=<status>`.
//! - `reader`: a route filter. Each request gets `x-service-<what>` headers with every
//!   shared value above of the tag in its `x-tag` header, and its `x-send` header is
//!   enqueued on `service-inbox`.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    tag: Option<String>,
    upstream: String,
    grpc: Option<String>,
    ticks: u64,
    queue: u32,
}

/// Adds `delta` to the number in shared `key`, retrying on a CAS mismatch.
fn bump(key: &str, delta: u64) {
    loop {
        let (value, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let n: u64 = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let next = (n + delta).to_string();
        match hostcalls::set_shared_data(key, Some(next.as_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

fn shared(key: &str) -> String {
    hostcalls::get_shared_data(key)
        .ok()
        .and_then(|(v, _)| v)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

/// Appends `item` to the shared `key`, comma-separated.
fn append(key: &str, item: &str) {
    let got = shared(key);
    let next = if got.is_empty() {
        item.to_string()
    } else {
        format!("{got},{item}")
    };
    let _ = hostcalls::set_shared_data(key, Some(next.as_bytes()), None);
}

impl Context for Root {
    fn on_grpc_stream_message(&mut self, _: u32, size: usize) {
        let message = self.get_grpc_stream_message(0, size).unwrap_or_default();
        if let Some(tag) = &self.tag {
            append(
                &format!("service:{tag}:stream"),
                &String::from_utf8_lossy(&message),
            );
        }
    }

    fn on_grpc_stream_close(&mut self, _: u32, status: u32) {
        if let Some(tag) = &self.tag {
            let key = format!("service:{tag}:stream");
            let got = shared(&key);
            let _ = hostcalls::set_shared_data(
                &key,
                Some(format!("{got}|closed={status}").as_bytes()),
                None,
            );
        }
    }

    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_else(|| "failed".into());
        if let Some(tag) = &self.tag {
            let _ = hostcalls::set_shared_data(
                &format!("service:{tag}:call"),
                Some(status.as_bytes()),
                None,
            );
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.first() == Some(&"service") {
            let tag = words.get(1).unwrap_or(&"s").to_string();
            self.upstream = words.get(2).unwrap_or(&"echo@internal").to_string();
            self.grpc = words.get(3).map(|g| g.to_string());
            bump(&format!("service:{tag}:vms"), 1);
            self.tag = Some(tag);
            self.queue = self.register_shared_queue("service-inbox");
            self.set_tick_period(Duration::from_millis(20));
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(tag) = self.tag.clone() else { return };
        self.ticks += 1;
        bump(&format!("service:{tag}:ticks"), 1);
        if self.ticks == 1 {
            let headers = vec![
                (":method", "GET"),
                (":path", "/from-service"),
                (":authority", "service"),
            ];
            if self
                .dispatch_http_call(
                    &self.upstream,
                    headers,
                    None,
                    vec![],
                    Duration::from_secs(2),
                )
                .is_err()
            {
                let _ = hostcalls::set_shared_data(
                    &format!("service:{tag}:call"),
                    Some(b"refused"),
                    None,
                );
            }
            if let Some(grpc) = self.grpc.clone() {
                let opened =
                    self.open_grpc_stream(&grpc, "portcullis.test.Echo", "SlowStream", vec![]);
                match opened {
                    Ok(token) => self.send_grpc_stream_message(token, Some(b"3"), true),
                    Err(e) => append(&format!("service:{tag}:stream"), &format!("refused {e:?}")),
                }
            }
        }
    }

    fn on_queue_ready(&mut self, queue: u32) {
        while let Ok(Some(item)) = hostcalls::dequeue_shared_queue(queue) {
            append("service:got", &String::from_utf8_lossy(&item));
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Reader))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Reader;

impl Context for Reader {}

impl HttpContext for Reader {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let tag = self.get_http_request_header("x-tag").unwrap_or_default();
        for what in ["vms", "ticks", "call", "stream"] {
            let value = shared(&format!("service:{tag}:{what}"));
            self.set_http_request_header(&format!("x-service-{what}"), Some(&value));
        }
        self.set_http_request_header("x-service-got", Some(&shared("service:got")));
        if let Some(send) = self.get_http_request_header("x-send") {
            let queued = hostcalls::resolve_shared_queue("", "service-inbox")
                .ok()
                .flatten()
                .map(|q| hostcalls::enqueue_shared_queue(q, Some(send.as_bytes())).is_ok())
                .unwrap_or(false);
            self.set_http_request_header("x-service-queued", Some(&queued.to_string()));
        }
        Action::Continue
    }
}
