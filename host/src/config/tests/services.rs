//! `services:`: modules on no route, written as filters are, less what only concerns
//! requests.

use super::*;

#[test]
fn services_load_as_filters_do() {
    let dir = dir_with(&[
        ("a.yaml", LISTENER),
        (
            "b.yaml",
            "services:\n  - { name: feeder, builtin: headers, config: { a: 1 }, limits: { callback_timeout: 50ms } }\n",
        ),
    ]);
    let c = loaded(dir.path());
    assert!(c.filters.is_empty());
    let [s] = c.services.as_slice() else {
        panic!("one service expected: {:?}", c.services);
    };
    assert_eq!(s.name, "feeder");
    assert_eq!(s.source, FilterSource::Builtin("headers".into()));
    assert_eq!(s.config, br#"{"a":1}"#);
    assert_eq!(s.limits.callback_timeout, Duration::from_millis(50));
}

#[test]
fn service_errors_name_the_service() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners:\n  - { name: web, address: 127.0.0.1:0 }\n\
         filters:\n  - { name: shared, builtin: headers }\n\
         services:\n  - { name: shared, builtin: headers }\n\
         \x20 - { name: picky, builtin: headers, on_error: allow, async: true }\n\
         \x20 - { name: picky, builtin: headers }\n",
    )]);
    let errs = errors(dir.path()).join("\n");
    for expected in [
        "a.yaml:6: services.shared: a filter is already named `shared` (at a.yaml:4)",
        "a.yaml:7: services.picky.on_error: unknown field",
        "a.yaml:7: services.picky.async: unknown field",
        "a.yaml:8: services.picky: duplicate name `picky` (first declared at a.yaml:7)",
    ] {
        assert!(errs.contains(expected), "missing {expected:?} in:\n{errs}");
    }
}
