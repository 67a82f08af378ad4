//! Configuration errors, each naming the file, the line and the field.

use std::fmt;

/// One problem found in a configuration, printed as `FILE:LINE: FIELD.PATH: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as found under the config directory (or the directory itself when the
    /// problem is not in one file).
    pub file: String,
    /// 1-based line of the offending key; 0 when there is none (e.g. an unreadable file).
    pub line: usize,
    /// Dotted field path, e.g. `routes.api.upstream` or `filters.auth`.
    pub path: String,
    /// What is wrong, and where useful what would be right.
    pub message: String,
}

impl ConfigError {
    /// An error at `origin`'s file and line.
    pub fn at(origin: &super::Origin, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: origin.file.clone(),
            line: origin.line,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A problem with no field (a YAML syntax error, an unreadable file) has no path.
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.path, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error of one failed load; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
