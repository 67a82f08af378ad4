//! Header maps and properties as a guest hands them over in its memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::host_calls(data));
