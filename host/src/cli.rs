//! The command line: `portcullis run` and `portcullis check`.
//!
//! STUB: the real CLI replaces this.

use std::process::ExitCode;

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    ExitCode::FAILURE
}
