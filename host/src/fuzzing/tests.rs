//! Every seed and every input a fuzzer found (fuzz/seeds/, fuzz/regressions/) through
//! its target, on the stable toolchain: a regression shows here before any fuzzing.

use std::path::Path;

/// Runs `target` on each file of `fuzz/seeds/NAME` and `fuzz/regressions/NAME`.
fn replay(name: &str, target: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut ran = 0;
    for corpus in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(corpus).join(name)) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // Names the input in the test's output if the target panics on it.
            eprintln!("{}", file.display());
            target(&data);
            ran += 1;
        }
    }
    assert!(ran > 0, "no seed for {name} under {}", fuzz.display());
}

#[test]
fn request_stream_corpus() {
    replay("request_stream", super::request_stream);
}

#[test]
fn h1_stream_corpus() {
    replay("h1_stream", super::h1_stream);
}

#[test]
fn config_corpus() {
    replay("config", super::config);
}

#[test]
fn host_calls_corpus() {
    replay("host_calls", super::host_calls);
}
