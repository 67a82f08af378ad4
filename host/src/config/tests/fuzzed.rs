//! Files the config fuzz target (fuzz/, docs/fuzzing.md) found taking the loading
//! process down: each is now an error naming its file and line.

use super::*;

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // 5,000 levels of `- ` (10 KiB) overflowed the stack of `portcullis check`; the
    // reload thread's is smaller still.
    let deep = format!("{LISTENER}x:\n{}a\n", "- ".repeat(100_000));
    let dir = dir_with(&[("a.yaml", &deep)]);
    assert_eq!(
        errors(dir.path()),
        ["a.yaml:4: invalid YAML: lists and mappings nest more than 128 levels deep"]
    );

    let flow = format!("{LISTENER}x: {}\n", "{a: ".repeat(200));
    let dir = dir_with(&[("a.yaml", &flow)]);
    let found = errors(dir.path());
    assert!(
        found.len() == 1 && found[0].starts_with("a.yaml:3: invalid YAML: "),
        "{found:?}"
    );
}

#[test]
fn alias_bomb_is_an_error_not_an_out_of_memory() {
    // Each line aliases the one before ten times: 480 bytes that built 10^8 nodes and
    // aborted the process when its allocations failed.
    let mut text = format!("{LISTENER}a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let dir = dir_with(&[("a.yaml", &text)]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:6: invalid YAML: aliases expand to too many nodes (an alias copies what it names)"
        ]
    );
}

#[test]
fn aliases_within_the_allowance_still_load() {
    // A shared block aliased by many routes is what anchors are for.
    let mut text = format!("{LISTENER}routes:\n");
    text.push_str("  - &r { name: r0, upstream: echo@internal, priority: 1 }\n");
    for i in 1..2000 {
        text.push_str(&format!(
            "  - {{ <<: *r, name: r{i}, match: {{ path_prefix: /p{i} }} }}\n"
        ));
    }
    let dir = dir_with(&[("a.yaml", &text)]);
    assert_eq!(loaded(dir.path()).routes.len(), 2000);
}

#[test]
fn a_character_yaml_forbids_is_named_by_line_and_column() {
    // The fuzzer's input: a tag holding NULs, on one line without a newline. yaml-rust2
    // takes a NUL for the end of its input, and the error named line 2 of a 1-line file.
    let fuzzed = regression("nul-in-a-tag.yaml");
    let dir = dir_with(&[("a.yaml", &fuzzed)]);
    assert_eq!(
        errors(dir.path()),
        ["a.yaml:1: invalid YAML: character U+0000 (column 58) is not allowed in YAML"]
    );

    // Mid-file, after a CR LF and a lone CR. (`a: 1<NUL>` followed by more lines loaded
    // as `a: 1` alone: the rest of the file was silently dropped.)
    let text = format!("{LISTENER}a: 1\r\nb: 2\rc: \"x\u{7}\"\nroutes: []\n");
    let dir = dir_with(&[("a.yaml", &text)]);
    assert_eq!(
        errors(dir.path()),
        ["a.yaml:5: invalid YAML: character U+0007 (column 6) is not allowed in YAML"]
    );

    // Tabs, NEL and the rest of Unicode are allowed.
    let text = format!("{LISTENER}# caf\u{e9}\u{85}\t\u{1f600}\n");
    let dir = dir_with(&[("a.yaml", &text)]);
    assert!(load(dir.path()).is_ok());
}

#[test]
fn a_tag_at_the_end_of_a_file_is_named_on_its_last_line() {
    // The fuzzer's input: a tag with no value after it and no newline. The parser's
    // event for the empty value is on the line after the file's end.
    let fuzzed = regression("tag-at-the-end.yaml");
    let dir = dir_with(&[("a.yaml", &fuzzed)]);
    let errors = errors(dir.path());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("a.yaml:1: invalid YAML: unsupported YAML tag !N"),
        "{errors:?}"
    );
}

#[test]
fn a_value_left_empty_at_the_end_of_a_file_is_named_on_its_last_line() {
    // The fuzzer's input: `routes:` and an item holding only a comment, with no line
    // break after it. The empty item is an event on the line after the end, and the
    // error about it named line 3 of a 2-line file.
    let text = regression("empty-item-at-the-end.yaml");
    let dir = dir_with(&[("a.yaml", &format!("{LISTENER}{text}"))]);
    let last = LISTENER.lines().count() + 2;
    let found = errors(dir.path());
    assert!(
        found
            .iter()
            .any(|e| e.starts_with(&format!("a.yaml:{last}: routes.0"))),
        "{found:?}"
    );
    // The same with a value left empty by the file's end.
    let dir = dir_with(&[("a.yaml", &format!("{LISTENER}routes:\n  - name:"))]);
    let found = errors(dir.path());
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|e| !e.contains(&format!(":{}:", last + 1))),
        "{found:?}"
    );
}

/// A config input the fuzzer found, kept in `fuzz/regressions/config/`.
fn regression(name: &str) -> String {
    let path = format!(
        "{}/../fuzz/regressions/config/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
