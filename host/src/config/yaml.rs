//! A YAML document as a small tree that remembers the line of every node, built from
//! `yaml-rust2`'s marked events. The schema decoder walks this tree so that every error
//! can name its line; `yaml-rust2`'s own `Yaml` type forgets where things were.

mod fast;
mod text;

use std::collections::HashMap;

use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub(crate) use text::Text;

/// One YAML node and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// 1-based line of the node's first character.
    pub line: usize,
    /// What the node holds.
    pub kind: Kind,
}

/// The three shapes of YAML data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// A scalar's text; `plain` is false when quoted or a block scalar (always a string).
    Scalar { text: Text, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; keys are scalars (with their own lines).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    /// The key's text.
    pub text: Text,
    /// 1-based line of the key.
    pub line: usize,
}

impl Node {
    /// Whether this is an explicit or implicit null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The node as JSON, resolving plain scalars the way YAML 1.2's core schema does.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Scalar { text, plain: false } => Value::String(text.to_string()),
            Kind::Scalar { text, plain: true } => match Yaml::from_str(text) {
                Yaml::Null => Value::Null,
                Yaml::Boolean(b) => Value::Bool(b),
                Yaml::Integer(i) => Value::from(i),
                Yaml::Real(r) => match r.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Value::Number(n),
                    // .inf and .nan have no JSON form; hand them over as written.
                    None => Value::String(text.to_string()),
                },
                _ => Value::String(text.to_string()),
            },
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.text.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax (or unsupported-feature) error and its line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

/// Parses every document of `text`; an empty file has none.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let (last, forbidden) = scan(text);
    if let Some((at, c)) = forbidden {
        return Err(forbidden_character(text, at, c));
    }
    let mut builder = Builder::ending_at(last);
    if fast::parse(text, &mut builder).is_ok() {
        let read = builder.finish();
        #[cfg(test)]
        assert_eq!(
            read,
            parse_slowly(text),
            "the fast path read {text:?} differently"
        );
        return read;
    }
    read_slowly(text, Builder::ending_at(last))
}

/// [`parse`] with `yaml-rust2`, whatever the text holds.
#[cfg(test)]
fn parse_slowly(text: &str) -> Result<Vec<Node>, SyntaxError> {
    read_slowly(text, Builder::for_text(text))
}

/// The tree of `text` read by `yaml-rust2` into `builder`.
fn read_slowly(text: &str, mut builder: Builder) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    // Event by event, not with `Parser::load`: that recurses once per level of nesting
    // (and would overflow the stack before the builder's depth limit could stop it).
    while builder.error.is_none() {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => builder.on_event(ev, mark),
            Err(e) => {
                return Err(SyntaxError {
                    line: builder.line(e.marker().line()),
                    message: e.info().to_string(),
                });
            }
        }
    }
    builder.finish()
}

/// One pass over `text`: the number of its last line (line breaks as YAML has them: LF,
/// CR LF or a lone CR; not counting the empty line after a final break), and the first
/// character YAML does not allow in a stream, with its position (outside its printable
/// set: control characters other than tab and line breaks, DEL, the C1 controls but
/// NEL, U+FFFE and U+FFFF). `yaml-rust2` takes a NUL for the end of its input: a file
/// holding one was cut short without a word, or errors named lines past the file's
/// end. libyaml refuses them the same way.
fn scan(text: &str) -> (usize, Option<(usize, char)>) {
    let allowed = |c: char| {
        matches!(c, '\t' | ' '..='~' | '\u{85}')
            || (c >= '\u{a0}' && !matches!(c, '\u{fffe}' | '\u{ffff}'))
    };
    let b = text.as_bytes();
    let (mut breaks, mut forbidden) = (0, None);
    for (at, c) in text.char_indices() {
        match c {
            '\n' => breaks += 1,
            '\r' if b.get(at + 1) != Some(&b'\n') => breaks += 1,
            '\r' => {}
            c if allowed(c) => {}
            c => {
                forbidden.get_or_insert((at, c));
            }
        }
    }
    let ends_in_break = matches!(b.last(), Some(b'\n' | b'\r'));
    ((breaks + usize::from(!ends_in_break)).max(1), forbidden)
}

/// The error for character `c`, found at byte `at` of `text`, naming its line and
/// column.
fn forbidden_character(text: &str, at: usize, c: char) -> SyntaxError {
    let before = &text[..at];
    // YAML breaks lines at CR LF, LF and a lone CR.
    let line = before.replace("\r\n", "\n").split(['\n', '\r']).count();
    let start = before.rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let column = before[start..].chars().count() + 1;
    SyntaxError {
        line,
        message: format!(
            "character U+{:04X} (column {column}) is not allowed in YAML",
            u32::from(c)
        ),
    }
}

/// How deep lists and mappings may nest. A configuration needs a handful of levels;
/// the tree is walked, cloned and dropped recursively, and a file nesting thousands
/// deep (a few KiB of `- - - …`) overflowed the stack of the process loading it.
const MAX_DEPTH: usize = 128;

/// Nodes aliases may copy in, beyond ten per node written out: an alias copies the
/// node it names, so ten lines aliasing each other ten times over ("billion laughs")
/// would otherwise build 10^10 nodes from a few hundred bytes.
const ALIAS_ALLOWANCE: usize = 10_000;

/// A container being filled: a sequence, or a mapping waiting for a key or a value.
/// Its items so far are those of the builder's `items` (or `entries`) from `start` on;
/// `nodes` counts the nodes in it so far, itself included.
enum Open {
    Seq {
        line: usize,
        anchor: usize,
        start: usize,
        nodes: usize,
    },
    Map {
        line: usize,
        anchor: usize,
        start: usize,
        key: Option<Key>,
        nodes: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    /// The items of the open sequences, innermost last: a finished one moves out into a
    /// list of its exact size (a large file's thousands of small mappings would
    /// otherwise each keep a list grown by doubling, and fault in its slack).
    items: Vec<Node>,
    /// The entries of the open mappings, the same way.
    entries: Vec<(Key, Node)>,
    docs: Vec<Node>,
    /// Every anchored node, and the nodes in it.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes the text writes out (scalars, lists and mappings).
    written: usize,
    /// Nodes aliases copied in.
    aliased: usize,
    error: Option<SyntaxError>,
    /// The text's last line ([`last_line`]): the parser puts what it finds at the end
    /// of the text (an empty value, an unclosed bracket) on the line after it, and an
    /// error must name a line the file has. 0: no bound.
    last_line: usize,
}

impl Builder {
    /// A builder for the tree of a text whose last line is `last_line`.
    fn ending_at(last_line: usize) -> Self {
        Self {
            last_line,
            ..Self::default()
        }
    }

    /// A builder for the tree of `text`.
    #[cfg(test)]
    fn for_text(text: &str) -> Self {
        Self::ending_at(scan(text).0)
    }

    /// `line` as nodes and errors name it: 1 to the text's last line.
    fn line(&self, line: usize) -> usize {
        match self.last_line {
            0 => line.max(1),
            last => line.clamp(1, last),
        }
    }

    /// The documents read, or the first error.
    fn finish(self) -> Result<Vec<Node>, SyntaxError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.docs),
        }
    }

    fn fail(&mut self, line: usize, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line,
                message: message.into(),
            });
        }
    }

    /// Hands a finished node of `size` nodes to the container it belongs to (or to the
    /// document list).
    fn push(&mut self, node: Node, size: usize, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq { nodes, .. }) => {
                *nodes += size;
                self.items.push(node);
            }
            Some(Open::Map { key, nodes, .. }) => match key.take() {
                Some(k) => {
                    *nodes += size;
                    self.entries.push((k, node));
                }
                None => match node.kind {
                    Kind::Scalar { text, .. } => {
                        *key = Some(Key {
                            text,
                            line: node.line,
                        })
                    }
                    _ => {
                        let line = node.line;
                        self.fail(line, "a mapping key must be a scalar");
                    }
                },
            },
        }
    }
}

/// Applies YAML merge keys (`<<: *base`): entries already present win.
fn merge_keys(entries: Vec<(Key, Node)>) -> Result<Vec<(Key, Node)>, SyntaxError> {
    if !entries.iter().any(|(k, _)| k.text == "<<") {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut inherited = Vec::new();
    for (k, v) in entries {
        if k.text != "<<" {
            own.push((k, v));
            continue;
        }
        let sources = match v.kind {
            Kind::Map(m) => vec![m],
            Kind::Seq(items) => {
                let mut maps = Vec::new();
                for item in items {
                    match item.kind {
                        Kind::Map(m) => maps.push(m),
                        _ => return Err(merge_error(k.line)),
                    }
                }
                maps
            }
            _ => return Err(merge_error(k.line)),
        };
        inherited.extend(sources.into_iter().flatten());
    }
    for (k, v) in inherited {
        if !own.iter().any(|(o, _): &(Key, Node)| o.text == k.text) {
            own.push((k, v));
        }
    }
    Ok(own)
}

fn merge_error(line: usize) -> SyntaxError {
    SyntaxError {
        line,
        message: "a merge key (<<) takes a mapping or a list of mappings".into(),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.event(ev, mark.line().max(1));
    }
}

impl Builder {
    /// Takes in a scalar on `line` (`plain` unless quoted, a block scalar or `!!str`).
    fn scalar(&mut self, text: Text, plain: bool, line: usize, anchor: usize) {
        if self.error.is_some() {
            return;
        }
        let line = self.line(line);
        self.written += 1;
        self.push(
            Node {
                line,
                kind: Kind::Scalar { text, plain },
            },
            1,
            anchor,
        );
    }

    /// Takes in one event that starts on `line`.
    fn event(&mut self, ev: Event, line: usize) {
        if self.error.is_some() {
            return;
        }
        let line = self.line(line);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let mut plain = style == TScalarStyle::Plain;
                if let Some(tag) = tag {
                    // `!!str 123` is the one tag worth honouring: it forces a string.
                    if tag.suffix == "str" {
                        plain = false;
                    } else {
                        self.fail(
                            line,
                            format!("unsupported YAML tag {}{}", tag.handle, tag.suffix),
                        );
                        return;
                    }
                }
                self.scalar(Text::from(text), plain, line, anchor);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.fail(
                    line,
                    format!("lists and mappings nest more than {MAX_DEPTH} levels deep"),
                );
            }
            Event::SequenceStart(anchor, _) => {
                self.written += 1;
                self.stack.push(Open::Seq {
                    line,
                    anchor,
                    start: self.items.len(),
                    nodes: 1,
                })
            }
            Event::MappingStart(anchor, _) => {
                self.written += 1;
                self.stack.push(Open::Map {
                    line,
                    anchor,
                    start: self.entries.len(),
                    key: None,
                    nodes: 1,
                })
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq {
                    line,
                    anchor,
                    start,
                    nodes,
                }) => {
                    let items = self.items.drain(start..).collect();
                    self.push(
                        Node {
                            line,
                            kind: Kind::Seq(items),
                        },
                        nodes,
                        anchor,
                    )
                }
                Some(Open::Map {
                    line,
                    anchor,
                    start,
                    nodes,
                    ..
                }) => match merge_keys(self.entries.drain(start..).collect()) {
                    Ok(entries) => self.push(
                        Node {
                            line,
                            kind: Kind::Map(entries),
                        },
                        nodes,
                        anchor,
                    ),
                    Err(e) => self.error = Some(e),
                },
                None => self.fail(line, "unbalanced YAML structure"),
            },
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    return self.fail(line, "alias to an unknown anchor");
                };
                self.aliased = self.aliased.saturating_add(size);
                if self.aliased > self.written.saturating_mul(10) + ALIAS_ALLOWANCE {
                    return self.fail(
                        line,
                        "aliases expand to too many nodes (an alias copies what it names)",
                    );
                }
                if let Some((node, _)) = self.anchors.get(&id).cloned() {
                    self.push(node, size, 0);
                }
            }
            // Anchors are per document.
            Event::DocumentStart => self.anchors.clear(),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Key, Node)] {
        match &node.kind {
            Kind::Map(m) => m,
            other => panic!("expected a mapping, got {other:?}"),
        }
    }

    #[test]
    fn lines_of_keys_and_list_items() {
        let docs = parse("a: 1\nlist:\n  - name: x\n    v: 2\n  - name: y\n").unwrap();
        let top = map(&docs[0]);
        assert_eq!((top[0].0.text.as_str(), top[0].0.line), ("a", 1));
        assert_eq!(top[1].0.line, 2);
        let Kind::Seq(items) = &top[1].1.kind else {
            panic!("expected a list")
        };
        assert_eq!(items[0].line, 3);
        assert_eq!(map(&items[0])[1].0.line, 4);
        assert_eq!(items[1].line, 5);
    }

    #[test]
    fn syntax_error_has_the_parser_line() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        let err = parse("a: 1\nb: {\n").unwrap_err();
        assert_eq!(
            err.line, 2,
            "an error at the end points at the last line: {err:?}"
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let docs = parse("base: &b { x: 1, y: 2 }\nderived:\n  <<: *b\n  y: 3\n").unwrap();
        let derived = &map(&docs[0])[1].1;
        let json = derived.to_json();
        assert_eq!(json, serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn json_resolution_of_plain_and_quoted_scalars() {
        let docs = parse("{ a: 1, b: '1', c: true, d: ~, e: 1.5, f: text, g: [1s] }").unwrap();
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"a": 1, "b": "1", "c": true, "d": null, "e": 1.5, "f": "text", "g": ["1s"]})
        );
    }

    #[test]
    fn empty_file_has_no_documents() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
    }
}
