//! Configuration: a directory of YAML files, parsed with line numbers, merged, and
//! validated into an immutable [`Config`].

mod error;
mod model;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
