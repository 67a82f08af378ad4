//! A greeting filter written against the upstream `proxy-wasm` crate only, the way an
//! Envoy filter is written; it runs in Portcullis unchanged.
//!
//! - Every request gets `x-greeting: <greeting>, <x-user or "stranger">` on its way
//!   upstream, and every response `x-powered-by: proxy-wasm-rust`.
//! - `GET /hello` is answered by the filter itself, without reaching the upstream.
//!
//! The configuration is the greeting, as a YAML string (`config: Howdy`), which the
//! host hands to `on_configure` as its raw bytes; none means "Hello".

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(GreetingRoot { greeting: "Hello".to_string() })
    });
}}

/// The filter's root context: holds the configured greeting for its HTTP contexts.
struct GreetingRoot {
    greeting: String,
}

impl Context for GreetingRoot {}

impl RootContext for GreetingRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if let Some(config) = self.get_plugin_configuration() {
            match String::from_utf8(config) {
                Ok(greeting) if !greeting.trim().is_empty() => {
                    self.greeting = greeting.trim().to_string();
                }
                // Refusing the configuration makes the proxy keep its previous one
                // and report the error, rather than greet with garbage.
                _ => {
                    log::error!("the greeting must be a non-empty UTF-8 string");
                    return false;
                }
            }
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Greeting {
            greeting: self.greeting.clone(),
        }))
    }
}

/// One request's context.
struct Greeting {
    greeting: String,
}

impl Context for Greeting {}

impl HttpContext for Greeting {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let user = self
            .get_http_request_header("x-user")
            .unwrap_or_else(|| "stranger".to_string());
        let greeting = format!("{}, {}", self.greeting, user);

        if self.get_http_request_header(":path").as_deref() == Some("/hello") {
            let body = format!("{greeting}!\n");
            self.send_http_response(
                200,
                vec![
                    ("content-type", "text/plain"),
                    ("x-powered-by", "proxy-wasm-rust"),
                ],
                Some(body.as_bytes()),
            );
            // The local response stands in for the upstream's; the request stops here.
            return Action::Pause;
        }

        self.set_http_request_header("x-greeting", Some(&greeting));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-powered-by", Some("proxy-wasm-rust"));
        Action::Continue
    }
}
