//! The top-level modules of the crate form layers: no module imports, directly or
//! through others, a module that imports it back. Cycles among the files of one module
//! are its own business; a cycle between two modules means neither can be read, tested
//! or changed without the other (docs/architecture.md, "The layers").
//!
//! The test reads the sources, not the compiler's view: every `crate::NAME` path outside
//! comments and test code (`tests.rs`, `tests/`, `#[cfg(test)] mod … { … }`) is an
//! edge from the file's top-level module to `NAME`. Test code may reach across layers,
//! as a dev-dependency may.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One import: the module it points to, and where it was written.
struct Edge {
    to: String,
    at: String,
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    assert!(
        modules.len() > 10,
        "found only {modules:?} under {}",
        src.display()
    );
    let graph = imports(&src, &modules);
    assert!(
        graph
            .get("proxy")
            .is_some_and(|e| e.iter().any(|e| e.to == "wasm")),
        "the reader missed proxy's import of wasm: the test reads nothing"
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules of host/src:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_reader_finds_grouped_and_inline_paths_and_skips_comments_and_tests() {
    let text = "use crate::{alpha, beta::X};\n\
                // crate::gamma in a comment\n\
                fn f() { crate::delta::g(); }\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::epsilon;\n    fn h() { if true { } }\n}\n\
                fn after() { crate::zeta::z() }\n";
    let found: Vec<String> = paths_in(text).into_iter().map(|(m, _)| m).collect();
    assert_eq!(found, ["alpha", "beta", "delta", "zeta"]);

    let mut graph = BTreeMap::new();
    let edge = |to: &str| Edge {
        to: to.into(),
        at: "x.rs:1".into(),
    };
    graph.insert("a".to_string(), vec![edge("b")]);
    graph.insert("b".to_string(), vec![edge("c")]);
    graph.insert("c".to_string(), vec![edge("a")]);
    graph.insert("d".to_string(), vec![edge("a")]);
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("a -> b -> c -> a"), "{found:?}");
}

/// The modules `lib.rs` declares, test-only ones left out.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let mut test_only = false;
    let mut out = BTreeSet::new();
    for line in lib.lines().map(str::trim) {
        let declared = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "));
        if let Some(name) = declared
            && !test_only
        {
            out.insert(name.trim_end_matches(';').to_string());
        }
        test_only = line == "#[cfg(test)]";
    }
    out
}

/// Every module's imports of other top-level modules, from its non-test files.
fn imports(src: &Path, modules: &BTreeSet<String>) -> BTreeMap<String, Vec<Edge>> {
    let mut graph: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
    for module in modules {
        let mut files = vec![src.join(format!("{module}.rs"))];
        rust_files(&src.join(module), &mut files);
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let shown = file
                .strip_prefix(src)
                .unwrap_or(&file)
                .display()
                .to_string();
            for (to, line) in paths_in(&text) {
                if &to != module && modules.contains(&to) {
                    graph.entry(module.clone()).or_default().push(Edge {
                        to,
                        at: format!("host/src/{shown}:{line}"),
                    });
                }
            }
        }
    }
    graph
}

/// The `.rs` files under `dir`, test files and directories left out.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "tests" || name == "tests.rs" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The top-level module named by each `crate::` path of `text` (grouped ones, `use
/// crate::{a, b::c}`, included), with its line; comments and `#[cfg(test)]` inline
/// modules are skipped.
fn paths_in(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut code = String::new();
    let mut lines = Vec::new(); // the line of each byte of `code`
    let mut test_attr = false;
    let mut skip_depth: Option<i32> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or("");
        let trimmed = line.trim();
        if let Some(depth) = skip_depth.as_mut() {
            *depth += braces(line);
            if *depth <= 0 {
                skip_depth = None;
            }
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            test_attr = true;
            continue;
        }
        if test_attr && !trimmed.starts_with("#[") {
            test_attr = false;
            if trimmed.contains("mod ") && trimmed.ends_with('{') {
                skip_depth = Some(braces(line));
                continue;
            }
        }
        code.push_str(line);
        code.push('\n');
        lines.resize(code.len(), n + 1);
    }
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let start = from + i;
        from = start + "crate::".len();
        let prefixed = start > 0 && (bytes[start - 1] == b'$' || is_ident(bytes[start - 1]));
        if prefixed {
            continue;
        }
        let line = lines.get(start).copied().unwrap_or(0);
        if bytes.get(from) == Some(&b'{') {
            let end = code[from..].find('}').map_or(code.len(), |e| from + e);
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in code[from + 1..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        item_start = false;
                        let name = ident_at(&code[from + 1 + j..]);
                        out.push((name, line));
                    }
                    c if !c.is_whitespace() => item_start = false,
                    _ => {}
                }
            }
        } else {
            let name = ident_at(&code[from..]);
            if !name.is_empty() {
                out.push((name, line));
            }
        }
    }
    out
}

fn braces(line: &str) -> i32 {
    line.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn ident_at(s: &str) -> String {
    s.bytes()
        .take_while(|b| is_ident(*b))
        .map(char::from)
        .collect()
}

/// One line per cycle found (one per strongly connected group of modules): the
/// modules around it, then where each import of it is written.
fn cycles(graph: &BTreeMap<String, Vec<Edge>>) -> Vec<String> {
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for start in graph.keys() {
        if reported.contains(start) {
            continue;
        }
        let Some(path) = path_back(graph, start) else {
            continue;
        };
        reported.extend(path.iter().cloned());
        let mut line = path.join(" -> ");
        for pair in path.windows(2) {
            let at = graph
                .get(&pair[0])
                .and_then(|edges| edges.iter().find(|e| e.to == pair[1]))
                .map_or("?", |e| e.at.as_str());
            line.push_str(&format!("\n    {} -> {}: {at}", pair[0], pair[1]));
        }
        out.push(line);
    }
    out
}

/// The shortest import path from `start` back to itself, if any (breadth first).
fn path_back(graph: &BTreeMap<String, Vec<Edge>>, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for edge in graph.get(at).into_iter().flatten() {
            if edge.to == start {
                let mut path = vec![start.to_string(), at.to_string()];
                let mut cur = at;
                while let Some(prev) = came_from.get(cur) {
                    path.push((*prev).to_string());
                    cur = prev;
                }
                path.reverse();
                return Some(path);
            }
            if edge.to != start && !came_from.contains_key(edge.to.as_str()) {
                came_from.insert(&edge.to, at);
                queue.push_back(&edge.to);
            }
        }
    }
    None
}
