//! What the filter targets share: a standard filter's configuration goes through the
//! same two steps as in the proxy (the SDK's JSON parse, then the filter's `new`).

use portcullis_sdk::Filter;

/// Parses `data` as filter `F`'s configuration and validates it; either may refuse,
/// neither may panic.
pub fn filter_config<F: Filter>(data: &[u8]) {
    if let Ok(config) = portcullis_sdk::config::parse::<F::Config>(data) {
        let _ = F::new(config);
    }
}
