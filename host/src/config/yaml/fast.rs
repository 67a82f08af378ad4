//! A fast reader for the YAML that configurations are written in: block mappings and
//! sequences, flow mappings and sequences on one line, plain and quoted scalars on one
//! line, comments. It hands the same events to the same [`Builder`] as `yaml-rust2`,
//! with the same lines, straight from the text (no token queue, no char-by-char
//! lookahead): a 50,000-route file reads several times faster.
//!
//! Anything else — anchors and aliases, tags, block scalars, scalars over several
//! lines, escapes, flow collections over several lines, documents markers, directives,
//! tabs, carriage returns, and every syntax error — is [`Unsupported`]: the caller then
//! reads the text again with `yaml-rust2`, so what the fast path does not fully
//! understand reads (or fails, with the parser's message and line) exactly as before.

use yaml_rust2::parser::Event;

use super::{Builder, MAX_DEPTH, Text};

/// The text holds something this reader leaves to `yaml-rust2`.
#[derive(Debug)]
pub(super) struct Unsupported;

type Read<T> = Result<T, Unsupported>;

/// Reads `text` into `out`; on [`Unsupported`], what `out` holds is to be dropped.
pub(super) fn parse(text: &str, out: &mut Builder) -> Read<()> {
    // Tabs (not indentation in YAML), CRs, other control characters and a byte-order
    // mark each have rules of their own.
    if text.bytes().any(|b| b < 0x20 && b != b'\n') || text.starts_with('\u{feff}') {
        return Err(Unsupported);
    }
    // A last line without a break that holds only blanks (or a comment) ends the text
    // on a line of yaml-rust2's own choosing: left to it.
    let last = text.rsplit('\n').next().unwrap_or_default();
    let last = last.trim_start_matches(' ');
    if !text.ends_with('\n') && !text.is_empty() && (last.is_empty() || last.starts_with('#')) {
        return Err(Unsupported);
    }
    let mut r = Reader {
        text,
        next: 0,
        next_no: 1,
        cur: None,
        // yaml-rust2 puts the end a line below the last, and the builder holds every
        // line to the text's last: the end is on that.
        end_line: out.last_line.max(1),
        depth: 0,
        out,
    };
    r.advance()?;
    let Some(first) = r.cur else {
        // Only comments and blank lines: no document at all.
        return Ok(());
    };
    r.emit(Event::DocumentStart, first.no);
    r.block_node(first.col)?;
    if r.cur.is_some() {
        // Something left of the document's own column.
        return Err(Unsupported);
    }
    r.emit(Event::DocumentEnd, r.end_line);
    Ok(())
}

/// What is left of a line with content, from column `col` on.
#[derive(Clone, Copy)]
struct Line<'t> {
    /// 1-based line number.
    no: usize,
    /// Column of `s`'s first character (bytes: everything left of it is ASCII).
    col: usize,
    /// The content, without the line break.
    s: &'t str,
}

struct Reader<'t, 'b> {
    text: &'t str,
    /// Byte offset of the first line not yet looked at.
    next: usize,
    /// Its 1-based number.
    next_no: usize,
    /// The line being read; `None` at the end of the text.
    cur: Option<Line<'t>>,
    /// The line the end of the text is on, as the builder records it.
    end_line: usize,
    depth: usize,
    out: &'b mut Builder,
}

impl<'t> Reader<'t, '_> {
    fn emit(&mut self, event: Event, line: usize) {
        self.out.event(event, line);
    }

    fn scalar(&mut self, (text, plain): (Text, bool), line: usize) {
        self.out.scalar(text, plain, line, 0);
    }

    /// Moves `cur` to the next line with content (comments and blank lines skipped).
    fn advance(&mut self) -> Read<()> {
        while self.next < self.text.len() {
            let rest = &self.text[self.next..];
            let len = rest.find('\n').unwrap_or(rest.len());
            let line = &rest[..len];
            let no = self.next_no;
            self.next += len + 1;
            self.next_no += 1;
            let content = line.trim_start_matches(' ');
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let col = line.len() - content.len();
            if col == 0
                && (content.starts_with('%')
                    || is_marker(content, "---")
                    || is_marker(content, "..."))
            {
                return Err(Unsupported);
            }
            self.cur = Some(Line {
                no,
                col,
                s: content,
            });
            return Ok(());
        }
        self.cur = None;
        Ok(())
    }

    /// The line of the next token: where `yaml-rust2` marks an empty value.
    fn next_token_line(&self) -> usize {
        self.cur.map_or(self.end_line, |l| l.no)
    }

    fn deeper(&mut self) -> Read<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            // Left to the builder's own limit, through the other parser.
            return Err(Unsupported);
        }
        Ok(())
    }

    /// A block sequence or mapping starting at `cur`, which is at column `col`.
    fn block_node(&mut self, col: usize) -> Read<()> {
        let line = self.cur.ok_or(Unsupported)?;
        if line.col != col {
            return Err(Unsupported);
        }
        self.deeper()?;
        if is_dash(line.s) {
            self.block_seq(col)?;
        } else {
            self.block_map(col)?;
        }
        self.depth -= 1;
        Ok(())
    }

    fn block_seq(&mut self, col: usize) -> Read<()> {
        let start = self.cur.ok_or(Unsupported)?;
        self.emit(Event::SequenceStart(0, None), start.no);
        while let Some(line) = self.cur {
            if line.col != col || !is_dash(line.s) {
                break;
            }
            let after = &line.s[1..];
            let body = after.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                self.advance()?;
                self.value_below(col, false)?;
            } else {
                let inner = Line {
                    no: line.no,
                    col: col + 1 + (after.len() - body.len()),
                    s: body,
                };
                self.cur = Some(inner);
                if is_dash(body) || key_end(body).is_some() {
                    self.block_node(inner.col)?;
                } else {
                    self.inline_value(inner)?;
                }
            }
            if self.cur.is_some_and(|l| l.col > col) {
                return Err(Unsupported);
            }
        }
        self.emit(Event::SequenceEnd, self.next_token_line());
        Ok(())
    }

    fn block_map(&mut self, col: usize) -> Read<()> {
        let start = self.cur.ok_or(Unsupported)?;
        self.emit(Event::MappingStart(0, None), start.no);
        while let Some(line) = self.cur {
            if line.col != col {
                break;
            }
            let (key, after) = block_key(line.s)?;
            self.scalar(key, line.no);
            let body = after.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                self.advance()?;
                self.value_below(col, true)?;
            } else {
                self.inline_value(Line {
                    no: line.no,
                    col: 0,
                    s: body,
                })?;
            }
            match self.cur {
                Some(l) if l.col > col => return Err(Unsupported),
                Some(l) if l.col == col && is_dash(l.s) => return Err(Unsupported),
                _ => {}
            }
        }
        self.emit(Event::MappingEnd, self.next_token_line());
        Ok(())
    }

    /// The value of a key (`in_map`) or list item at column `col` that has nothing after
    /// it on its line: a block node on the lines below, or null.
    fn value_below(&mut self, col: usize, in_map: bool) -> Read<()> {
        match self.cur {
            Some(l) if l.col > col => {
                if !is_dash(l.s) && key_end(l.s).is_none() {
                    // A scalar on its own line below its key.
                    return Err(Unsupported);
                }
                self.block_node(l.col)
            }
            // A list may sit at its key's own column.
            Some(l) if in_map && l.col == col && is_dash(l.s) => {
                self.deeper()?;
                self.block_seq(col)?;
                self.depth -= 1;
                Ok(())
            }
            _ => {
                let no = self.next_token_line();
                self.scalar(plain(""), no);
                Ok(())
            }
        }
    }

    /// A scalar or flow collection that makes up the rest of `line` (a comment aside);
    /// moves on to the next line.
    fn inline_value(&mut self, line: Line<'t>) -> Read<()> {
        let s = line.s;
        let rest = match s.as_bytes()[0] {
            b'{' | b'[' => {
                let mut flow = Flow {
                    s,
                    i: 0,
                    no: line.no,
                };
                flow.node(self)?;
                &s[flow.i..]
            }
            b'\'' | b'"' => {
                let (text, end) = quoted(s)?;
                self.scalar((text, false), line.no);
                &s[end..]
            }
            _ => {
                // It ends at the end of the line or at a comment.
                let end = plain_block_end(s)?;
                self.scalar(plain(s[..end].trim_end_matches(' ')), line.no);
                ""
            }
        };
        if !is_line_end(rest) {
            return Err(Unsupported);
        }
        self.advance()
    }
}

/// A flow collection on one line, read from byte `i` of `s`.
struct Flow<'t> {
    s: &'t str,
    i: usize,
    no: usize,
}

impl Flow<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn node(&mut self, r: &mut Reader) -> Read<()> {
        self.skip_spaces();
        match self.peek().ok_or(Unsupported)? {
            b'{' => {
                r.deeper()?;
                self.map(r)?;
                r.depth -= 1;
            }
            b'[' => {
                r.deeper()?;
                self.seq(r)?;
                r.depth -= 1;
            }
            _ => self.scalar(r)?,
        }
        Ok(())
    }

    fn scalar(&mut self, r: &mut Reader) -> Read<()> {
        let rest = &self.s[self.i..];
        match rest.as_bytes().first() {
            Some(b'\'' | b'"') => {
                let (text, end) = quoted(rest)?;
                r.scalar((text, false), self.no);
                self.i += end;
            }
            _ => {
                let end = plain_flow_end(rest)?;
                r.scalar(plain(rest[..end].trim_end_matches(' ')), self.no);
                self.i += end;
            }
        }
        Ok(())
    }

    /// After an entry: `,` (then the next entry, or the end) or the closing bracket.
    /// Returns whether the collection goes on.
    fn separator(&mut self, close: u8) -> Read<bool> {
        self.skip_spaces();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.skip_spaces();
                match self.peek() {
                    Some(b) if b == close => {
                        self.i += 1;
                        Ok(false)
                    }
                    Some(b',') | None => Err(Unsupported),
                    Some(_) => Ok(true),
                }
            }
            Some(b) if b == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Unsupported),
        }
    }

    fn map(&mut self, r: &mut Reader) -> Read<()> {
        r.emit(Event::MappingStart(0, None), self.no);
        self.i += 1;
        self.skip_spaces();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                let key_start = self.i;
                if matches!(self.peek(), Some(b'{' | b'[')) {
                    return Err(Unsupported);
                }
                self.scalar(r)?;
                self.skip_spaces();
                if self.peek() != Some(b':') || self.i - key_start > MAX_KEY {
                    return Err(Unsupported);
                }
                self.i += 1;
                match self.peek() {
                    Some(b' ' | b',' | b'}') => {}
                    _ => return Err(Unsupported),
                }
                self.skip_spaces();
                match self.peek() {
                    Some(b',' | b'}') => r.scalar(plain(""), self.no),
                    _ => self.node(r)?,
                }
                if !self.separator(b'}')? {
                    break;
                }
            }
        }
        r.emit(Event::MappingEnd, self.no);
        Ok(())
    }

    fn seq(&mut self, r: &mut Reader) -> Read<()> {
        r.emit(Event::SequenceStart(0, None), self.no);
        self.i += 1;
        self.skip_spaces();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                self.node(r)?;
                self.skip_spaces();
                if self.peek() == Some(b':') {
                    // A single-pair mapping (`[a: b]`).
                    return Err(Unsupported);
                }
                if !self.separator(b']')? {
                    break;
                }
            }
        }
        r.emit(Event::SequenceEnd, self.no);
        Ok(())
    }
}

/// The longest key read here: YAML limits an implicit key to 1024 characters.
const MAX_KEY: usize = 1000;

/// A plain scalar: its text, and that it is plain.
fn plain(text: &str) -> (Text, bool) {
    (Text::new(text), true)
}

fn is_marker(s: &str, marker: &str) -> bool {
    s.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// A block sequence entry: `-` alone or followed by a space.
fn is_dash(s: &str) -> bool {
    s == "-" || s.starts_with("- ")
}

/// Only spaces and perhaps a comment (after a space) left.
fn is_line_end(rest: &str) -> bool {
    let trimmed = rest.trim_start_matches(' ');
    trimmed.is_empty() || (trimmed.len() < rest.len() && trimmed.starts_with('#'))
}

/// Whether a plain scalar may start with `s`'s first character: not an indicator, or
/// `-` followed by something that is not a space or a flow indicator (`-1`).
fn plain_may_start(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        None => false,
        Some(b'-') => !matches!(
            b.get(1),
            None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')
        ),
        Some(
            b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
            | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`',
        ) => false,
        Some(_) => true,
    }
}

/// Where a plain scalar in block context that starts `s` ends: at a comment or the end
/// of the line. A `: ` inside would make it a key (a mapping on the same line).
fn plain_block_end(s: &str) -> Read<usize> {
    if !plain_may_start(s) {
        return Err(Unsupported);
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b':' if matches!(b.get(i + 1), None | Some(b' ')) => return Err(Unsupported),
            b'#' if b[i - 1] == b' ' => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Ok(i)
}

/// Where a plain scalar in flow context that starts `s` ends: before a flow indicator,
/// a `:` that ends a key, or a comment. The end of the line leaves the collection open.
fn plain_flow_end(s: &str) -> Read<usize> {
    if !plain_may_start(s) {
        return Err(Unsupported);
    }
    let b = s.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b',' | b'[' | b']' | b'{' | b'}' => return Ok(i),
            b':' if matches!(
                b.get(i + 1),
                None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')
            ) =>
            {
                return Ok(i);
            }
            b'#' if b[i - 1] == b' ' => return Err(Unsupported),
            // `yaml-rust2` refuses a word `-` before a flow indicator (`a -}`).
            b'-' if i > 0
                && b[i - 1] == b' '
                && matches!(
                    b.get(i + 1),
                    None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')
                ) =>
            {
                return Err(Unsupported);
            }
            _ => {}
        }
    }
    Err(Unsupported)
}

/// Where the key of a block mapping entry on `s` ends (its `:`), if `s` is one.
fn key_end(s: &str) -> Option<usize> {
    match s.as_bytes().first()? {
        b'\'' | b'"' => {
            let (_, end) = quoted(s).ok()?;
            let colon = end + (s[end..].len() - s[end..].trim_start_matches(' ').len());
            is_value_colon(s, colon).then_some(colon)
        }
        _ if !plain_may_start(s) => None,
        _ => {
            let b = s.as_bytes();
            for i in 0..b.len() {
                match b[i] {
                    b':' if is_value_colon(s, i) => return Some(i),
                    b'#' if b[i - 1] == b' ' => return None,
                    _ => {}
                }
            }
            None
        }
    }
}

/// Whether byte `i` of `s` is a `:` followed by a space or the end of the line.
fn is_value_colon(s: &str, i: usize) -> bool {
    let b = s.as_bytes();
    b.get(i) == Some(&b':') && matches!(b.get(i + 1), None | Some(b' '))
}

/// The key of a block mapping entry on `s`: its text and whether it is plain, and what
/// follows its `:`.
fn block_key(s: &str) -> Read<((Text, bool), &str)> {
    let colon = key_end(s).ok_or(Unsupported)?;
    if colon > MAX_KEY {
        return Err(Unsupported);
    }
    let key = match s.as_bytes()[0] {
        b'\'' | b'"' => (quoted(s)?.0, false),
        _ => {
            let key = s[..colon].trim_end_matches(' ');
            if key
                .bytes()
                .any(|b| matches!(b, b',' | b'[' | b']' | b'{' | b'}'))
            {
                return Err(Unsupported);
            }
            plain(key)
        }
    };
    Ok((key, &s[colon + 1..]))
}

/// A quoted scalar that starts `s` and ends on the same line: its text and the byte
/// after its closing quote. Double-quoted escapes are left to `yaml-rust2`.
fn quoted(s: &str) -> Read<(Text, usize)> {
    let body = &s[1..];
    if s.starts_with('"') {
        let end = body.find(['"', '\\']).ok_or(Unsupported)?;
        if body.as_bytes()[end] == b'\\' {
            return Err(Unsupported);
        }
        return Ok((Text::new(&body[..end]), end + 2));
    }
    let end = body.find('\'').ok_or(Unsupported)?;
    if body.as_bytes().get(end + 1) != Some(&b'\'') {
        return Ok((Text::new(&body[..end]), end + 2));
    }
    // `''` stands for one quote.
    let mut text = String::new();
    let mut from = 0;
    loop {
        let at = from + body[from..].find('\'').ok_or(Unsupported)?;
        text.push_str(&body[from..at]);
        if body.as_bytes().get(at + 1) == Some(&b'\'') {
            text.push('\'');
            from = at + 2;
        } else {
            return Ok((Text::from(text), at + 2));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
