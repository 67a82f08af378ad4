//! `portcullis filter-test`: runs spec files and prints one line per case.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::outcome::show_headers;
use super::spec::{self, CaseReport};
use super::{Outcome, TestkitError};

/// How a set of spec files went, as the command's exit code: 0 every case passed,
/// 1 a case failed, 2 a spec (or its filter) could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every case passed.
    Passed,
    /// Some case did not meet its expectations.
    Failed,
    /// Some spec is malformed, or its filter did not load.
    BadSpec,
}

impl Verdict {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Passed => 0,
            Self::Failed => 1,
            Self::BadSpec => 2,
        }
    }
}

/// Runs every spec in `files`; prints one line per case on stdout (`FILE:LINE: ok
/// NAME`, or `FAIL` followed by what was expected and what came back), and spec
/// errors on stderr as `FILE:LINE: FIELD: message`. With `verbose`, every case's
/// outcome and log lines too.
pub fn run_files(files: &[PathBuf], verbose: bool) -> Verdict {
    let (mut passed, mut failed, mut bad) = (0usize, 0usize, 0usize);
    for file in files {
        let spec = match spec::load(file) {
            Ok(spec) => spec,
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                bad += 1;
                continue;
            }
        };
        let reports = match spec::run(&spec) {
            Ok(r) => r,
            Err(e) => {
                let o = spec.filter.origin();
                eprintln!("{}:{}: {}", o.file, o.line, describe(&e));
                bad += 1;
                continue;
            }
        };
        for r in &reports {
            let ok = r.mismatches.is_empty();
            let word = if ok { "ok" } else { "FAIL" };
            println!("{}:{}: {word} {}", spec.file, r.line, r.name);
            if !ok || verbose {
                print!("{}", details(r, verbose));
            }
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    if bad > 0 {
        println!("filter-test: {passed} passed, {failed} failed, {bad} spec(s) not loaded");
        return Verdict::BadSpec;
    }
    println!("filter-test: {passed} passed, {failed} failed");
    if failed == 0 {
        Verdict::Passed
    } else {
        Verdict::Failed
    }
}

fn describe(e: &TestkitError) -> String {
    match e {
        TestkitError::Configure { name, reason } => format!("filter.{name}: {reason}"),
        other => other.to_string(),
    }
}

/// The indented lines under a case: its mismatches, then (when they help) the outcome.
fn details(r: &CaseReport, verbose: bool) -> String {
    let mut s = String::new();
    for m in &r.mismatches {
        let _ = writeln!(s, "    {m}");
    }
    if verbose || !r.mismatches.is_empty() {
        s.push_str(&outcome(&r.outcome));
    }
    s
}

fn outcome(o: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "    | {o}");
    if let Some(f) = &o.upstream_request {
        let _ = writeln!(
            s,
            "    | upstream request headers: {}",
            show_headers(&f.headers)
        );
    }
    let _ = writeln!(
        s,
        "    | response headers: {}",
        show_headers(&o.response.headers)
    );
    for l in &o.logs {
        let _ = writeln!(s, "    | log [{}] {}", l.level, l.message);
    }
    for m in &o.metrics {
        let _ = writeln!(s, "    | metric {} = {} ({:+})", m.name, m.value, m.delta);
    }
    for c in &o.http_calls {
        let answered = if c.answered { "" } else { " (no answer given)" };
        let _ = writeln!(
            s,
            "    | http_call {} {} {}{answered}",
            c.upstream, c.method, c.path
        );
    }
    s
}
