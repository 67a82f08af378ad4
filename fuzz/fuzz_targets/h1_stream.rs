//! Our HTTP/1.1 server connection reading one connection's bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::h1_stream(data));
