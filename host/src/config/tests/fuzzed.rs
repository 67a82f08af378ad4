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
