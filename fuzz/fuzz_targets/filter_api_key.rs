//! The `api-key` filter's configuration parser and validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::filter_config::<api_key::ApiKey>(data));
