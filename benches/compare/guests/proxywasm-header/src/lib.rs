//! The filter-cost scenario's proxy-wasm filter, written against the upstream
//! `proxy-wasm` crate only, as an Envoy filter would be: it reads one request header
//! (`x-api-key`, which every request of the load comparison carries) and adds one
//! response header (`x-bench-seen: yes` or `no`). The work is deliberately the least a
//! useful filter does, so that what the benchmark measures is the price of a filter.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

/// The filter's root context: makes one `Seen` per request.
struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Seen { seen: false }))
    }
}

/// One request: whether its `x-api-key` header was there, carried from the request's
/// headers to the response's (the response does not exist yet when they arrive).
struct Seen {
    seen: bool,
}

impl Context for Seen {}

impl HttpContext for Seen {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.seen = self.get_http_request_header("x-api-key").is_some();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let value = if self.seen { "yes" } else { "no" };
        self.add_http_response_header("x-bench-seen", value);
        Action::Continue
    }
}
