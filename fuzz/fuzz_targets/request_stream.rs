//! The request-head guard's framing over one HTTP/1 connection's bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::request_stream(data));
