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

#[test]
fn listener_hardening_limits_defaults_and_values() {
    let dir = dir_with(&[("a.yaml", LISTENER)]);
    let l = loaded(dir.path()).listeners[0].limits.clone();
    assert_eq!(l.min_body_rate, 240);
    assert_eq!(l.body_rate_grace, Duration::from_secs(5));
    assert_eq!(l.body_timeout, Duration::from_secs(30));
    assert_eq!(l.max_concurrent_streams, 100);
    assert_eq!(l.max_requests_per_connection, None);
    assert_eq!(l.max_connections_per_ip, None);

    let dir = dir_with(&[(
        "a.yaml",
        "listeners:
  - name: web
    address: 127.0.0.1:0
    limits: { min_body_rate: 1KiB, body_rate_grace: 2s, body_timeout: 10s,
              max_concurrent_streams: 50, max_requests_per_connection: 1000,
              max_connections_per_ip: 64 }
",
    )]);
    let l = loaded(dir.path()).listeners[0].limits.clone();
    assert_eq!(l.min_body_rate, 1024);
    assert_eq!(l.body_rate_grace, Duration::from_secs(2));
    assert_eq!(l.body_timeout, Duration::from_secs(10));
    assert_eq!(l.max_concurrent_streams, 50);
    assert_eq!(l.max_requests_per_connection, Some(1000));
    assert_eq!(l.max_connections_per_ip, Some(64));
}

#[test]
fn listener_hardening_limits_errors() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners:
  - name: web
    address: 127.0.0.1:0
    limits: { min_body_rate: 0, max_concurrent_streams: 0, max_connections_per_ip: -1 }
",
    )]);
    let errors = errors(dir.path());
    assert_eq!(
        errors,
        [
            "a.yaml:4: listeners.web.limits.min_body_rate: must be greater than 0",
            "a.yaml:4: listeners.web.limits.max_concurrent_streams: must be at least 1, found 0",
            "a.yaml:4: listeners.web.limits.max_connections_per_ip: must be at least 1, found -1",
        ],
        "got {errors:#?}"
    );
}

#[test]
fn listener_http2_settings_defaults_and_values() {
    let dir = dir_with(&[("a.yaml", LISTENER)]);
    let h = loaded(dir.path()).listeners[0].http2;
    assert_eq!(h, Http2Settings::default());
    assert_eq!(
        (h.initial_stream_window, h.initial_connection_window),
        (1 << 20, 1 << 20)
    );

    let dir = dir_with(&[(
        "a.yaml",
        "listeners:
  - name: web
    address: 127.0.0.1:0
    http2: { initial_stream_window: 256KiB, initial_connection_window: 4MiB }
",
    )]);
    let h = loaded(dir.path()).listeners[0].http2;
    assert_eq!(h.initial_stream_window, 256 * 1024);
    assert_eq!(h.initial_connection_window, 4 << 20);
}

#[test]
fn listener_http2_settings_errors() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners:
  - name: web
    address: 127.0.0.1:0
    http2: { initial_stream_window: 100, initial_connection_window: 4GiB,
             max_frame_size: 16KiB }
  - name: raw
    address: 127.0.0.1:0
    protocol: tcp
    http2: { initial_stream_window: 64KiB }
",
    )]);
    let errors = errors(dir.path());
    assert_eq!(
        errors,
        [
            "a.yaml:4: listeners.web.http2.initial_stream_window: must be between 1024 and 2147483647 bytes",
            "a.yaml:4: listeners.web.http2.initial_connection_window: must be between 65535 and 2147483647 bytes",
            "a.yaml:5: listeners.web.http2.max_frame_size: unknown field (expected one of: initial_stream_window, initial_connection_window)",
            "a.yaml:9: listeners.raw.http2: HTTP/2 settings are for http listeners; leave http2 out",
        ],
        "got {errors:#?}"
    );
}
