//! The fast path against `yaml-rust2`: whatever it reads must read exactly as the
//! parser reads it (the same tree, the same lines), over the repository's YAML, the
//! routing benchmark's tables and mutations of both.

use std::path::{Path, PathBuf};

use super::super::{Builder, Node, SyntaxError, parse_slowly};
use super::parse;

/// What the fast path reads `text` as, or `None` when it leaves it to `yaml-rust2`.
fn fast(text: &str) -> Option<Result<Vec<Node>, SyntaxError>> {
    let mut builder = Builder::for_text(text);
    parse(text, &mut builder).ok().map(|()| builder.finish())
}

/// Whether the fast path took `text`; panics if it read it otherwise than `yaml-rust2`.
fn alike(text: &str) -> bool {
    let Some(read) = fast(text) else {
        return false;
    };
    assert_eq!(
        read,
        parse_slowly(text),
        "the fast path read {text:?} differently"
    );
    true
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, out);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
}

/// Every YAML file of the repository: configurations, examples, fuzz seeds, deploy
/// manifests.
fn repo_yaml() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| Some((p.clone(), std::fs::read_to_string(&p).ok()?)))
        .collect()
}

/// The routing benchmark's tenant table (benches/compare/portbench/routing.py), one
/// flow mapping per route, and the same routes written as blocks.
fn tenant_routes(n: usize, block: bool) -> String {
    let mut out = String::from("routes:\n");
    for i in 0..n {
        if block {
            out.push_str(&format!(
                "  - name: t{i}\n    match:\n      host: t{i}.example.com\n      path_prefix: /api\n    upstream: backend\n"
            ));
        } else {
            out.push_str(&format!(
                "  - {{ name: t{i}, match: {{ host: t{i}.example.com, path_prefix: /api }}, upstream: backend }}\n"
            ));
        }
    }
    out
}

#[test]
fn the_repository_yaml_reads_alike() {
    let files = repo_yaml();
    assert!(files.len() > 20, "found only {} YAML files", files.len());
    let mut taken = Vec::new();
    for (path, text) in &files {
        if alike(text) {
            taken.push(path.clone());
        }
    }
    // Not a vacuous check: the shipped configuration and most others take the fast path.
    assert!(
        taken.iter().any(|p| p.ends_with("conf/portcullis.yaml")),
        "conf/portcullis.yaml left to yaml-rust2"
    );
    assert!(
        taken.len() * 2 > files.len(),
        "only {} of {} files took the fast path",
        taken.len(),
        files.len()
    );
}

#[test]
fn tenant_tables_take_the_fast_path() {
    for block in [false, true] {
        let text = tenant_routes(200, block);
        assert!(alike(&text), "left to yaml-rust2:\n{text}");
    }
}

#[test]
fn constructs_it_does_not_read_are_left_to_yaml_rust2() {
    for text in [
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "a: >\n  text\n",
        "a: plain\n  continued\n",
        "a: 'two\n  lines'\n",
        "a: \"esc\\n\"\n",
        "a: [1,\n  2]\n",
        "---\na: 1\n",
        "a: 1\n---\nb: 2\n",
        "%YAML 1.2\n---\na: 1\n",
        "a:\tb\n",
        "a: 1\r\n",
        "? a\n: b\n",
        "just a scalar\n",
        "a: 1\n b: 2\n",
        "a: [b: c]\n",
        "a: b: c\n",
    ] {
        assert!(fast(text).is_none(), "the fast path read {text:?}");
        // And yaml-rust2's answer stands, as before.
        assert_eq!(super::super::parse(text), parse_slowly(text));
    }
}

/// Empty values (marked on the next token's line), nesting, both kinds of quotes,
/// flow collections inside blocks, keys and values that look like other things.
const EDGE_CASES: &[&str] = &[
    "a:\nb: 1\nc:\n  - x\n  -\n  - { k: v, e: }\nd:\n- y\ne: [a, {b: c}, ]\nf: 'it''s' # c\ng: \"q\"\nh:\n\ni: x:y\n",
    "a:\n  b:\n  # comment\nc: 1\n",
    "a:",
    "a:\n",
    "a:\n\n# trailing\n",
    "- a\n- - b\n  - c\n-\n- k: v\n  l:\n    - m\n",
    "  a: 1\n  b: { c: 'x', \"d\": [] , e: {} }\n",
    "a: 127.0.0.1:8080\nb: { address: 127.0.0.1:8080 }\nc: -1\nd: ~\ne: a#b # c\n",
    "\"quoted key\": 1\n'single': 2\nspaced key: 3\n",
    "list:\n- a\n- b\nnext: 1\n",
    "x: []\ny: {}\nz: [ ]\n",
    "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n    tls: { certificates: [{ cert: c.pem, key: k.pem }] }\nupstreams:\n- name: u\n  targets:\n  - { address: 127.0.0.1:1 }\n  - address: 10.0.0.1:80\n    weight: 2\n",
];

#[test]
fn lines_match_the_parser_for_empty_values_and_nesting() {
    for text in EDGE_CASES {
        assert!(alike(text), "left to yaml-rust2: {text:?}");
    }
}

#[test]
fn a_last_line_of_blanks_or_a_comment_is_left_to_yaml_rust2() {
    // The first: a mutation the fast path read with its empty value a line lower than
    // yaml-rust2 (past the end of the text).
    for text in ["- k: v\n  l:\n ", "a:\n  ", "a: 1\n# c"] {
        assert!(fast(text).is_none(), "the fast path took {text:?}");
    }
    // With a final line break they are the fast path's.
    for text in ["- k: v\n  l:\n \n", "a:\n  \n", "a: 1\n# c\n"] {
        assert!(alike(text), "left to yaml-rust2: {text:?}");
    }
}

/// A small deterministic generator (xorshift), so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Pieces of YAML syntax to splice in.
const SNIPPETS: &[&str] = &[
    ": ", ":", "- ", "-", "#", " #", "'", "''", "\"", "{", "}", "[", "]", ",", ", ", " ", "  ",
    "\n", "\n  ", "\n- ", "&a ", "*a", "!!str ", "|", ">", "? ", "---\n", "...\n", "~", "a: b",
    "k:", "{ }", "[ ]", "é", "\\", "%", "@", "`", "<<: ",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..1 + rng.below(3) {
        let mut at = rng.below(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(4) {
            0 => s.insert_str(at, SNIPPETS[rng.below(SNIPPETS.len())]),
            1 => {
                let mut end = (at + 1 + rng.below(8)).min(s.len());
                while !s.is_char_boundary(end) {
                    end += 1;
                }
                s.replace_range(at..end, "");
            }
            2 => {
                // A line indented one step more or less.
                let start = s[..at].rfind('\n').map_or(0, |i| i + 1);
                if s[start..].starts_with("  ") && rng.below(2) == 0 {
                    s.replace_range(start..start + 2, "");
                } else {
                    s.insert_str(start, "  ");
                }
            }
            _ => {
                // A line repeated.
                let start = s[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = s[at..].find('\n').map_or(s.len(), |i| at + i + 1);
                let line = s[start..end].to_string();
                s.insert_str(start, &line);
            }
        }
    }
    s
}

#[test]
fn mutations_read_alike() {
    let mut seeds: Vec<String> = repo_yaml()
        .into_iter()
        .map(|(_, text)| text)
        .filter(|t| t.len() < 20_000)
        .collect();
    seeds.push(tenant_routes(3, false));
    seeds.push(tenant_routes(3, true));
    seeds.extend(EDGE_CASES.iter().map(|s| s.to_string()));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut tried, mut taken) = (0, 0);
    for seed in &seeds {
        for _ in 0..100 {
            let text = mutate(&mut rng, seed);
            tried += 1;
            if alike(&text) {
                taken += 1;
            }
        }
    }
    // Enough mutations must take the fast path, or this checks nothing (about a third
    // do: most break the YAML, and every error is left to yaml-rust2).
    assert!(
        taken * 10 > tried,
        "only {taken} of {tried} mutations took the fast path"
    );
}
