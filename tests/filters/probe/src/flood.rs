//! Modes that push the host past `http`'s limit of distinct header names (about
//! 24,000 per map), found by fuzzing the host's header maps: the host panicked.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

/// Names tried: more than a map can hold.
const NAMES: usize = 30_000;

/// `flood`: adds distinct request headers. The host refuses one past its limit, and
/// the SDK traps on the refusal: the filter fails, the process goes on.
pub fn request_headers() -> Action {
    for i in 0..NAMES {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, &format!("x-f-{i}"), "v");
    }
    Action::Continue
}

/// `flood_local`: answers with a local response of more distinct headers than a map
/// holds.
pub fn local_response() -> Action {
    let names: Vec<String> = (0..NAMES).map(|i| format!("x-f-{i}")).collect();
    let headers = names.iter().map(|n| (n.as_str(), "v")).collect();
    let _ = hostcalls::send_http_response(200, headers, None);
    Action::Pause
}
