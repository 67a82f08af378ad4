//! A small typed walker over the marked YAML tree: it takes known keys out of a mapping,
//! converts values, and records every problem (with file, line and field path) instead
//! of stopping at the first, so one load reports everything that is wrong.

use std::cell::OnceCell;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use super::yaml::{Kind, Node};
use super::{ConfigError, Origin, units};

/// The file being decoded and the errors found so far.
pub(crate) struct Cx<'a> {
    /// The file's name as found under the config directory.
    pub file: String,
    /// The directory relative paths in this file are resolved against.
    pub base: PathBuf,
    /// Every error found in this load.
    pub errors: &'a mut Vec<ConfigError>,
    /// Every file a field names, resolved, in the order met (also those that do not
    /// exist yet): [`Field::existing_file`] records them, so what the reload watcher
    /// watches is what the loader reads.
    pub files: &'a mut Vec<PathBuf>,
}

impl Cx<'_> {
    /// Records an error at `line` of this file.
    pub fn error(&mut self, line: usize, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Where something at `line` of this file was declared.
    pub fn origin(&self, line: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
        }
    }
}

/// A value found in the tree: the node, the line of its key (or list item), and its
/// dotted field path.
#[derive(Clone)]
pub(crate) struct Field<'n> {
    pub node: &'n Node,
    pub line: usize,
    pub path: FieldPath<'n>,
}

/// A field's dotted path, put together the first time something reads it (an error,
/// a mapping opened under it). Most fields of a file are read and never fail, and a
/// large routes file has hundreds of thousands of them: formatting each one's path
/// up front was a tenth of its load.
#[derive(Clone)]
pub(crate) struct FieldPath<'n> {
    /// The path of the mapping or list the field is in.
    parent: Rc<str>,
    /// What the field is within it.
    key: PathKey<'n>,
    text: OnceCell<String>,
}

#[derive(Clone, Copy)]
enum PathKey<'n> {
    /// The parent's path is the field's (a document's root).
    Same,
    Key(&'n str),
    Index(usize),
}

impl<'n> FieldPath<'n> {
    fn new(parent: &Rc<str>, key: PathKey<'n>) -> Self {
        Self {
            parent: Rc::clone(parent),
            key,
            text: OnceCell::new(),
        }
    }
}

/// A top-level key's path: the key itself.
impl<'n> From<&'n str> for FieldPath<'n> {
    fn from(key: &'n str) -> Self {
        Self::new(&Rc::from(""), PathKey::Key(key))
    }
}

impl Deref for FieldPath<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.text.get_or_init(|| match self.key {
            PathKey::Same => self.parent.to_string(),
            PathKey::Key(key) => join(&self.parent, key),
            PathKey::Index(i) => join(&self.parent, &i.to_string()),
        })
    }
}

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The keys of one mapping, taken one by one; whatever is left over is an unknown field.
pub(crate) struct Fields<'n> {
    path: Rc<str>,
    line: usize,
    entries: Vec<(Field<'n>, &'n str, bool)>,
    known: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    /// Opens `field` as a mapping; records an error and returns `None` if it is not one.
    /// A null value (a key with nothing after it) is an empty mapping.
    pub fn new(cx: &mut Cx, field: &Field<'n>) -> Option<Self> {
        let entries = match &field.node.kind {
            Kind::Map(entries) => entries.as_slice(),
            _ if field.node.is_null() => &[],
            _ => {
                cx.error(
                    field.line,
                    &field.path,
                    format!("expected a mapping, found {}", field.node.type_name()),
                );
                return None;
            }
        };
        let own: Rc<str> = Rc::from(&*field.path);
        let mut out: Vec<(Field<'n>, &'n str, bool)> = Vec::with_capacity(entries.len());
        for (key, node) in entries {
            let path = FieldPath::new(&own, PathKey::Key(&key.text));
            if let Some((first, _, _)) = out.iter().find(|(_, k, _)| *k == key.text.as_str()) {
                let first_line = first.line;
                cx.error(
                    key.line,
                    &path,
                    format!("duplicate key (first at line {first_line})"),
                );
                continue;
            }
            out.push((
                Field {
                    node,
                    line: key.line,
                    path,
                },
                key.text.as_str(),
                false,
            ));
        }
        Some(Self {
            path: own,
            line: field.line,
            entries: out,
            // Once, not grown key by key: a route's decoder asks for about a dozen.
            known: Vec::with_capacity(16),
        })
    }

    /// Takes an optional key. A key given as null counts as absent.
    pub fn take(&mut self, key: &'static str) -> Option<Field<'n>> {
        self.known.push(key);
        let (field, _, taken) = self.entries.iter_mut().find(|(_, k, _)| *k == key)?;
        *taken = true;
        (!field.node.is_null()).then(|| field.clone())
    }

    /// Takes a required key; records "missing required field" when absent.
    pub fn require(&mut self, cx: &mut Cx, key: &'static str) -> Option<Field<'n>> {
        let found = self.take(key);
        if found.is_none() {
            cx.error(self.line, &join(&self.path, key), "missing required field");
        }
        found
    }

    /// Reports every key nobody took as an unknown field.
    pub fn finish(self, cx: &mut Cx) {
        for (field, _, taken) in &self.entries {
            if !taken {
                cx.error(
                    field.line,
                    &field.path,
                    format!("unknown field (expected one of: {})", self.known.join(", ")),
                );
            }
        }
    }
}

/// The `name` of a list item, if it has a readable one.
pub(crate) fn name_of(node: &Node) -> Option<&str> {
    let Kind::Map(entries) = &node.kind else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.text == "name")
        .and_then(|(_, v)| match &v.kind {
            Kind::Scalar { text, .. } if !v.is_null() && !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
}

/// `a` + `.` + `b`, or just `b` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'n> Field<'n> {
    /// A top-level field of a document.
    pub fn root(node: &'n Node) -> Self {
        Self {
            node,
            line: node.line,
            path: FieldPath::new(&Rc::from(""), PathKey::Same),
        }
    }

    fn scalar(&self, cx: &mut Cx, what: &str) -> Option<&'n str> {
        match &self.node.kind {
            Kind::Scalar { text, .. } if !self.node.is_null() => Some(text.as_str()),
            _ => {
                cx.error(
                    self.line,
                    &self.path,
                    format!("expected {what}, found {}", self.node.type_name()),
                );
                None
            }
        }
    }

    /// Records an error about this field's value.
    pub fn error(&self, cx: &mut Cx, message: impl Into<String>) {
        cx.error(self.line, &self.path, message);
    }

    /// A non-empty string. Plain scalars that YAML would read as numbers (`1.2`) are
    /// taken as written.
    pub fn string(&self, cx: &mut Cx) -> Option<String> {
        let text = self.scalar(cx, "a string")?;
        if text.is_empty() {
            self.error(cx, "must not be empty");
            return None;
        }
        Some(text.to_string())
    }

    /// `true` or `false`.
    pub fn bool(&self, cx: &mut Cx) -> Option<bool> {
        match self.scalar(cx, "true or false")? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            other => {
                self.error(cx, format!("expected true or false, found `{other}`"));
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&self, cx: &mut Cx, min: i64, max: i64) -> Option<i64> {
        let text = self.scalar(cx, "an integer")?;
        match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(n) if n < min => {
                self.error(cx, format!("must be at least {min}, found {n}"));
                None
            }
            Ok(n) => {
                self.error(cx, format!("must be at most {max}, found {n}"));
                None
            }
            Err(_) => {
                self.error(cx, format!("expected an integer, found `{text}`"));
                None
            }
        }
    }

    /// A size in bytes (`65536`, `64KiB`, `1MiB`, `2GiB`), at least 1.
    pub fn size(&self, cx: &mut Cx) -> Option<u64> {
        let text = self.scalar(cx, "a size")?;
        match units::parse_size(text) {
            Ok(0) => {
                self.error(cx, "must be greater than 0");
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                self.error(cx, e);
                None
            }
        }
    }

    /// A duration (`250ms`, `2s`, `1m`, `1h`) greater than zero.
    pub fn duration(&self, cx: &mut Cx) -> Option<Duration> {
        let text = self.scalar(cx, "a duration")?;
        match units::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(cx, "must be greater than 0");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(cx, e);
                None
            }
        }
    }

    /// A socket address to bind, `IP:port`.
    pub fn socket_addr(&self, cx: &mut Cx) -> Option<SocketAddr> {
        let text = self.scalar(cx, "an address")?;
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    cx,
                    format!(
                        "`{text}` is not an IP:port address (e.g. 127.0.0.1:8080 or [::1]:8080)"
                    ),
                );
                None
            }
        }
    }

    /// One of `choices`.
    pub fn choice<T: Copy>(&self, cx: &mut Cx, choices: &[(&str, T)]) -> Option<T> {
        let text = self.scalar(cx, "a string")?;
        match choices.iter().find(|(name, _)| *name == text) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.error(cx, format!("`{text}` is not one of: {}", names.join(", ")));
                None
            }
        }
    }

    /// A path to an existing file, resolved against the directory of the file naming
    /// it. Every file-valued field is read through here: the path is recorded in
    /// [`Cx::files`] whether or not the file exists.
    pub fn existing_file(&self, cx: &mut Cx) -> Option<PathBuf> {
        let text = self.string(cx)?;
        let path = cx.base.join(&text);
        cx.files.push(path.clone());
        if path.is_file() {
            Some(path)
        } else if path.exists() {
            self.error(cx, format!("`{text}` is not a file ({})", path.display()));
            None
        } else {
            self.error(cx, format!("file not found: `{text}` ({})", path.display()));
            None
        }
    }

    /// A list; each item comes with its index path (`PATH.0`, `PATH.1`, …).
    pub fn list(&self, cx: &mut Cx) -> Option<Vec<Field<'n>>> {
        match &self.node.kind {
            Kind::Seq(items) => {
                let own: Rc<str> = Rc::from(&*self.path);
                Some(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, node)| Field {
                            node,
                            line: node.line,
                            path: FieldPath::new(&own, PathKey::Index(i)),
                        })
                        .collect(),
                )
            }
            _ => {
                cx.error(
                    self.line,
                    &self.path,
                    format!("expected a list, found {}", self.node.type_name()),
                );
                None
            }
        }
    }

    /// A list of non-empty strings, each with its line; invalid items are reported and
    /// left out.
    pub fn string_list(&self, cx: &mut Cx) -> Option<Vec<(String, usize)>> {
        let items = self.list(cx)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(s) = item.string(cx) {
                out.push((s, item.line));
            }
        }
        Some(out)
    }

    /// A mapping's entries as fields, in order (for free-form maps such as headers).
    pub fn entries(&self, cx: &mut Cx) -> Option<Vec<(String, Field<'n>)>> {
        match &self.node.kind {
            Kind::Map(entries) => {
                let own: Rc<str> = Rc::from(&*self.path);
                Some(
                    entries
                        .iter()
                        .map(|(k, node)| {
                            (
                                k.text.to_string(),
                                Field {
                                    node,
                                    line: k.line,
                                    path: FieldPath::new(&own, PathKey::Key(&k.text)),
                                },
                            )
                        })
                        .collect(),
                )
            }
            _ => {
                cx.error(
                    self.line,
                    &self.path,
                    format!("expected a mapping, found {}", self.node.type_name()),
                );
                None
            }
        }
    }
}

impl<'n> Fields<'n> {
    /// Opens a list item of `section` that has a `name`: its fields are reported under
    /// `SECTION.NAME` when the name is readable, else under `SECTION.INDEX`. Returns the
    /// fields and the name (already checked to be a non-empty string).
    pub fn named(cx: &mut Cx, item: &Field<'n>, section: &str) -> Option<(Self, Option<String>)> {
        let mut item = item.clone();
        if let Some(name) = name_of(item.node) {
            item.path = FieldPath::new(&Rc::from(section), PathKey::Key(name));
        }
        let mut fields = Self::new(cx, &item)?;
        let name = fields.require(cx, "name").and_then(|f| f.string(cx));
        Some((fields, name))
    }

    /// This mapping's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// This mapping's path, shared rather than copied.
    pub fn shared_path(&self) -> Rc<str> {
        Rc::clone(&self.path)
    }

    /// This mapping's line (its key's, or its list item's).
    pub fn line(&self) -> usize {
        self.line
    }
}
