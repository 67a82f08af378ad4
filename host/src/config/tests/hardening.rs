//! The process-wide hardening settings: `shutdown:`.

use super::*;

#[test]
fn shutdown_defaults_and_values() {
    let dir = dir_with(&[("a.yaml", LISTENER)]);
    let s = loaded(dir.path()).shutdown;
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(s.accept_grace, Duration::ZERO);

    let dir = dir_with(&[
        ("a.yaml", LISTENER),
        (
            "b.yaml",
            "shutdown: { drain_timeout: 5s, accept_grace: 250ms }\n",
        ),
    ]);
    let s = loaded(dir.path()).shutdown;
    assert_eq!(s.drain_timeout, Duration::from_secs(5));
    assert_eq!(s.accept_grace, Duration::from_millis(250));
}

#[test]
fn shutdown_errors() {
    let dir = dir_with(&[
        (
            "a.yaml",
            &format!(
                "{LISTENER}shutdown: {{ drain_timeout: 0s, accept_grace: soon, drain: 1s }}\n"
            ),
        ),
        ("b.yaml", "shutdown: { drain_timeout: 1s }\n"),
        ("c.yaml", "shutdown: {}\n"),
    ]);
    let errors = errors(dir.path());
    assert_eq!(
        errors,
        [
            "a.yaml:3: shutdown.drain_timeout: must be greater than 0",
            "a.yaml:3: shutdown.accept_grace: `soon` is not a duration (write e.g. 250ms, 2s, 1m, 1h)",
            "a.yaml:3: shutdown.drain: unknown field (expected one of: drain_timeout, accept_grace)",
            "c.yaml:1: shutdown: shutdown is already set at b.yaml:1",
        ],
        "got {errors:#?}"
    );
}
