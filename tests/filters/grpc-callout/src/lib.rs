//! gRPC callouts made the way the Rust SDK's `grpc_auth_random` example makes them,
//! against the e2e tests' gRPC server (`tests/e2e/grpc/grpc_server.py`, service
//! `portcullis.test.Echo`, raw bytes for messages).
//!
//! The plugin configuration is `<mode> <upstream> [timeout ms]`:
//!
//! - `unary`: each request's `x-token` goes to `Unary` (which upper-cases it) with the
//!   request's `x-user` as the `x-from-client` metadata. `ALLOW` lets the request on
//!   with `x-grpc-reply: <answer>`; any other answer is a 403 naming it; a failed call
//!   is a 503 with `x-grpc-status` and the status message as body.
//! - `slow`: as `unary`, but to `Slow` with `x-token` as the seconds it sleeps.
//! - `stream`: each request's `x-words` (comma-separated) go to `Bidi` as messages on
//!   one stream, closed after the last; the request goes on once the stream closed,
//!   with `x-stream-replies` (the answers, comma-separated), `x-stream-status`,
//!   `x-stream-initial` (how many initial metadata entries came, and the content type)
//!   and `x-stream-trailers` (the trailing metadata's names).
//!
//! A call or stream that cannot start at all is a 500 naming the status the host
//! returned.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const SERVICE: &str = "portcullis.test.Echo";

#[derive(Default, Clone)]
struct Settings {
    mode: String,
    upstream: String,
    timeout: Duration,
}

#[derive(Default)]
struct Root {
    settings: Settings,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config).into_owned();
        let mut words = text.split_whitespace();
        self.settings = Settings {
            mode: words.next().unwrap_or("unary").to_string(),
            upstream: words.next().unwrap_or("grpc").to_string(),
            timeout: Duration::from_millis(
                words.next().and_then(|t| t.parse().ok()).unwrap_or(2000),
            ),
        };
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Callout {
            settings: self.settings.clone(),
            replies: Vec::new(),
            initial: String::new(),
            trailers: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Callout {
    settings: Settings,
    replies: Vec<String>,
    initial: String,
    trailers: String,
}

impl Callout {
    fn refuse(&self, what: &str, status: Status) {
        let body = format!("{what} failed: {status:?}\n");
        self.send_http_response(500, vec![], Some(body.as_bytes()));
    }

    fn unary(&mut self, method: &str) -> proxy_wasm::types::Action {
        let token = self.get_http_request_header("x-token").unwrap_or_default();
        let user = self.get_http_request_header("x-user").unwrap_or_default();
        let s = &self.settings;
        let metadata = vec![("x-from-client", user.as_bytes())];
        match self.dispatch_grpc_call(
            &s.upstream,
            SERVICE,
            method,
            metadata,
            Some(token.as_bytes()),
            s.timeout,
        ) {
            Ok(_) => proxy_wasm::types::Action::Pause,
            Err(status) => {
                self.refuse("dispatch_grpc_call", status);
                proxy_wasm::types::Action::Pause
            }
        }
    }

    fn stream(&mut self) -> proxy_wasm::types::Action {
        let words = self.get_http_request_header("x-words").unwrap_or_default();
        let token = match self.open_grpc_stream(&self.settings.upstream, SERVICE, "Bidi", vec![]) {
            Ok(token) => token,
            Err(status) => {
                self.refuse("open_grpc_stream", status);
                return proxy_wasm::types::Action::Pause;
            }
        };
        let words: Vec<&str> = words.split(',').collect();
        for (i, word) in words.iter().enumerate() {
            let last = i + 1 == words.len();
            self.send_grpc_stream_message(token, Some(word.as_bytes()), last);
        }
        proxy_wasm::types::Action::Pause
    }
}

impl HttpContext for Callout {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> proxy_wasm::types::Action {
        match self.settings.mode.as_str() {
            "stream" => self.stream(),
            "slow" => self.unary("Slow"),
            _ => self.unary("Unary"),
        }
    }
}

impl Context for Callout {
    fn on_grpc_call_response(&mut self, _: u32, status_code: u32, size: usize) {
        if status_code != 0 {
            let (code, message) = self.get_grpc_status();
            let code = code.to_string();
            let body = format!("{}\n", message.unwrap_or_default());
            self.send_http_response(
                503,
                vec![("x-grpc-status", code.as_str())],
                Some(body.as_bytes()),
            );
            return;
        }
        let reply = self
            .get_grpc_call_response_body(0, size)
            .unwrap_or_default();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        if reply == "ALLOW" {
            self.set_http_request_header("x-grpc-reply", Some(&reply));
            self.resume_http_request();
        } else {
            let body = format!("denied: {reply}\n");
            self.send_http_response(403, vec![], Some(body.as_bytes()));
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, _: u32, count: u32) {
        let ct = self
            .get_grpc_stream_initial_metadata_value("content-type")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        self.initial = format!("{count} {ct}");
    }

    fn on_grpc_stream_message(&mut self, _: u32, size: usize) {
        let message = self.get_grpc_stream_message(0, size).unwrap_or_default();
        self.replies
            .push(String::from_utf8_lossy(&message).into_owned());
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _: u32, _: u32) {
        let names: Vec<String> = self
            .get_grpc_stream_trailing_metadata()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.trailers = names.join(",");
    }

    fn on_grpc_stream_close(&mut self, _: u32, status_code: u32) {
        let replies = self.replies.join(",");
        self.set_http_request_header("x-stream-replies", Some(&replies));
        self.set_http_request_header("x-stream-status", Some(&status_code.to_string()));
        self.set_http_request_header("x-stream-initial", Some(&self.initial.clone()));
        self.set_http_request_header("x-stream-trailers", Some(&self.trailers.clone()));
        self.resume_http_request();
    }
}
