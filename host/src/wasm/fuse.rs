//! Fused entries: two exports added to a proxy-wasm module before it is compiled, each
//! running several of its callbacks in one guest entry.
//!
//! Entering a guest costs a few hundred instructions before the guest does anything
//! (wasmtime's trap handler and thread-local state, the deadline, the stream's swap into
//! the store), and a plain proxy-wasm filter is entered for callbacks that always follow
//! each other with nothing for the host to do between them: context create then request
//! headers, and done, log and delete. So the module gets
//!
//! - `__portcullis_begin(ctx, root, headers, eos) -> action`: `proxy_on_context_create`
//!   then `proxy_on_request_headers`;
//! - `__portcullis_finish(ctx)`: `proxy_on_done` (its result dropped, as the host drops
//!   it), `proxy_on_log`, `proxy_on_delete`;
//! - `__portcullis_respond(ctx, headers, body) -> (headers action, body action)`:
//!   `proxy_on_response_headers` (not the end of the stream) and, if it continued,
//!   `proxy_on_response_body` with the whole body (the end of the stream), for a
//!   response whose body is in hand when its head is. Between the two it calls one of
//!   the module's own host imports (`proxy_log`, `proxy_get_header_map_value` or
//!   `proxy_get_buffer_bytes`) with [`MARK`] as its first argument, which no call
//!   passes otherwise: the host then shows the guest what it shows a body callback (the
//!   head gone downstream, the body in its buffer), or answers non-zero when the
//!   headers callback sent a local reply, and the body callback is not made;
//!
//! appended after its own functions, so that no function index or code offset of the
//! module moves (its DWARF stays true for a debugger). The guest sees the same callbacks
//! in the same order with the same arguments; a trap in any of them fails the entry as
//! it would have failed the callback. A module that cannot be fused (another ABI, GC
//! types, a name taken, a section the walk does not understand) compiles unchanged and
//! is called callback by callback.

use wasmparser::{ExternalKind, FuncType, Parser, Payload, TypeRef, ValType};

/// The export that runs context create and request headers.
pub(crate) const BEGIN: &str = "__portcullis_begin";
/// The export that runs done, log and delete.
pub(crate) const FINISH: &str = "__portcullis_finish";
/// The export that runs response headers and, if they continued, the whole body.
pub(crate) const RESPOND: &str = "__portcullis_respond";
/// The first argument of the host call [`RESPOND`] makes between the headers and the
/// body callback (a log level, map or buffer type no call uses).
pub(crate) const MARK: u32 = 0x7fff_0b0d;

/// The imports the mark can go through: name and number of `i32` parameters (each
/// returns an `i32` status). Every SDK's modules import one of them.
const MARKERS: [(&str, u8); 3] = [
    ("proxy_log", 3),
    ("proxy_get_header_map_value", 5),
    ("proxy_get_buffer_bytes", 5),
];

/// `bytes` with the fused entries its callbacks allow, or `None` when it gets none
/// (compile `bytes` as they are).
pub(crate) fn fuse(bytes: &[u8]) -> Option<Vec<u8>> {
    let m = Scan::of(bytes)?;
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Option<u32> {
        let idx = *m.exports.iter().find(|(n, _)| n == name).map(|(_, i)| i)?;
        let ty = m.func_type(idx)?;
        (ty.params() == params && ty.results() == results).then_some(idx)
    };
    use ValType::I32;
    let begin = (|| {
        let create = func("proxy_on_context_create", &[I32, I32], &[])?;
        let headers = func("proxy_on_request_headers", &[I32, I32, I32], &[I32])?;
        Some(Added {
            name: BEGIN,
            params: 4,
            results: 1,
            body: begin_body(create, headers),
        })
    })();
    let finish = (|| {
        let done = func("proxy_on_done", &[I32], &[I32])?;
        let log = func("proxy_on_log", &[I32], &[])?;
        let delete = func("proxy_on_delete", &[I32], &[])?;
        Some(Added {
            name: FINISH,
            params: 1,
            results: 0,
            body: finish_body(done, log, delete),
        })
    })();
    let marker = MARKERS.iter().find_map(|&(name, params)| {
        let &(_, idx) = m.imports.iter().find(|(n, _)| n == name)?;
        let ty = m.types.get(*m.imported_types.get(idx as usize)? as usize)?;
        let all_i32 = ty.params().iter().all(|t| *t == I32);
        (ty.params().len() == usize::from(params) && all_i32 && ty.results() == [I32])
            .then_some((idx, params))
    });
    let respond = marker.and_then(|marker| {
        let headers = func("proxy_on_response_headers", &[I32, I32, I32], &[I32])?;
        let body = func("proxy_on_response_body", &[I32, I32, I32], &[I32])?;
        Some(Added {
            name: RESPOND,
            params: 3,
            results: 2,
            body: respond_body(headers, body, marker),
        })
    });
    let added: Vec<Added> = [begin, finish, respond].into_iter().flatten().collect();
    let taken = [BEGIN, FINISH, RESPOND];
    if added.is_empty() || m.exports.iter().any(|(n, _)| taken.contains(&n.as_str())) {
        return None;
    }
    m.rewrite(bytes, &added)
}

/// A function to append: its export name, signature (all `i32`) and body.
struct Added {
    name: &'static str,
    params: u8,
    results: u8,
    body: Vec<u8>,
}

/// What the rewrite needs to know of a module.
struct Scan {
    types: Vec<FuncType>,
    imported_funcs: u32,
    /// The type of each imported function, by function index.
    imported_types: Vec<u32>,
    /// The module's function imports (`env` ones by name) and their indices.
    imports: Vec<(String, u32)>,
    /// The type of each function the module defines.
    defined: Vec<u32>,
    exports: Vec<(String, u32)>,
    /// The payload offsets of the type, function, export and code sections.
    type_at: Option<usize>,
    function_at: Option<usize>,
    export_at: Option<usize>,
    code_at: Option<usize>,
}

impl Scan {
    fn of(bytes: &[u8]) -> Option<Scan> {
        let mut s = Scan {
            types: Vec::new(),
            imported_funcs: 0,
            imported_types: Vec::new(),
            imports: Vec::new(),
            defined: Vec::new(),
            exports: Vec::new(),
            type_at: None,
            function_at: None,
            export_at: None,
            code_at: None,
        };
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.ok()? {
                Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Module => {
                    return None;
                }
                Payload::TypeSection(r) => {
                    s.type_at = Some(r.range().start);
                    for t in r.into_iter_err_on_gc_types() {
                        s.types.push(t.ok()?);
                    }
                }
                Payload::ImportSection(r) => {
                    for import in r.into_imports() {
                        let import = import.ok()?;
                        if let TypeRef::Func(ty) | TypeRef::FuncExact(ty) = import.ty {
                            if import.module == "env" {
                                s.imports.push((import.name.to_owned(), s.imported_funcs));
                            }
                            s.imported_types.push(ty);
                            s.imported_funcs += 1;
                        }
                    }
                }
                Payload::FunctionSection(r) => {
                    s.function_at = Some(r.range().start);
                    for t in r {
                        s.defined.push(t.ok()?);
                    }
                }
                Payload::ExportSection(r) => {
                    s.export_at = Some(r.range().start);
                    for e in r {
                        let e = e.ok()?;
                        if e.kind == ExternalKind::Func {
                            s.exports.push((e.name.to_owned(), e.index));
                        } else {
                            s.exports.push((e.name.to_owned(), u32::MAX));
                        }
                    }
                }
                Payload::CodeSectionStart { range, .. } => s.code_at = Some(range.start),
                Payload::ComponentSection { .. } | Payload::ModuleSection { .. } => return None,
                _ => {}
            }
        }
        Some(s)
    }

    fn func_type(&self, idx: u32) -> Option<&FuncType> {
        let defined = idx.checked_sub(self.imported_funcs)?;
        let ty = *self.defined.get(defined as usize)?;
        self.types.get(ty as usize)
    }

    /// The module again with `added` appended to its type, function, export and code
    /// sections; every other byte as it was.
    fn rewrite(&self, bytes: &[u8], added: &[Added]) -> Option<Vec<u8>> {
        let (type_at, function_at) = (self.type_at?, self.function_at?);
        let (export_at, code_at) = (self.export_at?, self.code_at?);
        let n = added.len() as u32;
        let first_type = u32::try_from(self.types.len()).ok()?;
        let first_func = self
            .imported_funcs
            .checked_add(u32::try_from(self.defined.len()).ok()?)?;
        let mut out = Vec::with_capacity(bytes.len() + 256);
        out.extend_from_slice(bytes.get(..8)?);
        let mut at = 8;
        let mut rewritten = 0;
        while at < bytes.len() {
            let id = *bytes.get(at)?;
            let (size, len) = leb(bytes.get(at + 1..)?)?;
            let start = at + 1 + len;
            let end = start.checked_add(size as usize)?;
            let payload = bytes.get(start..end)?;
            // Only the four sections rewritten are read as a count and entries.
            let counted = || {
                let (count, width) = leb(payload)?;
                Some((count.checked_add(n)?, width, payload.get(width..)?))
            };
            let mut tail = Vec::new();
            let new = match start {
                s if s == type_at && id == 1 => {
                    for a in added {
                        tail.push(0x60);
                        tail.push(a.params);
                        tail.extend(std::iter::repeat_n(0x7f, a.params as usize));
                        tail.push(a.results);
                        tail.extend(std::iter::repeat_n(0x7f, a.results as usize));
                    }
                    let (count, _, rest) = counted()?;
                    Some((push_leb(Vec::new(), count), rest))
                }
                s if s == function_at && id == 3 => {
                    for i in 0..n {
                        tail = push_leb(tail, first_type + i);
                    }
                    let (count, _, rest) = counted()?;
                    Some((push_leb(Vec::new(), count), rest))
                }
                s if s == export_at && id == 7 => {
                    for (i, a) in (0..n).zip(added) {
                        tail = push_leb(tail, a.name.len() as u32);
                        tail.extend_from_slice(a.name.as_bytes());
                        tail.push(0x00);
                        tail = push_leb(tail, first_func + i);
                    }
                    let (count, _, rest) = counted()?;
                    Some((push_leb(Vec::new(), count), rest))
                }
                s if s == code_at && id == 10 => {
                    for a in added {
                        tail = push_leb(tail, u32::try_from(a.body.len()).ok()?);
                        tail.extend_from_slice(&a.body);
                    }
                    // The count keeps its width, so every body stays at its offset.
                    let (count, width, rest) = counted()?;
                    Some((padded_leb(count, width)?, rest))
                }
                _ => None,
            };
            match new {
                None => out.extend_from_slice(bytes.get(at..end)?),
                Some((head, rest)) => {
                    rewritten += 1;
                    let size = head.len() + rest.len() + tail.len();
                    out.push(id);
                    out = push_leb(out, u32::try_from(size).ok()?);
                    out.extend_from_slice(&head);
                    out.extend_from_slice(rest);
                    out.extend_from_slice(&tail);
                }
            }
            at = end;
        }
        (rewritten == 4).then_some(out)
    }
}

/// `local.get` of parameter `i`.
fn get(body: &mut Vec<u8>, i: u8) {
    body.extend_from_slice(&[0x20, i]);
}

/// `call` of function `idx`.
fn call(body: Vec<u8>, idx: u32) -> Vec<u8> {
    let mut body = body;
    body.push(0x10);
    push_leb(body, idx)
}

fn begin_body(create: u32, headers: u32) -> Vec<u8> {
    let mut b = vec![0x00]; // no locals
    get(&mut b, 0);
    get(&mut b, 1);
    b = call(b, create);
    get(&mut b, 0);
    get(&mut b, 2);
    get(&mut b, 3);
    b = call(b, headers);
    b.push(0x0b);
    b
}

fn finish_body(done: u32, log: u32, delete: u32) -> Vec<u8> {
    let mut b = vec![0x00];
    get(&mut b, 0);
    b = call(b, done);
    b.push(0x1a); // drop on_done's result
    get(&mut b, 0);
    b = call(b, log);
    get(&mut b, 0);
    b = call(b, delete);
    b.push(0x0b);
    b
}

/// `h = headers(ctx, n, 0); if h != 0 { return (h, 0) }; if marker(MARK, 0, …) != 0
/// { return (0, 0) }; return (0, body(ctx, size, 1))`.
fn respond_body(headers: u32, body: u32, (marker, params): (u32, u8)) -> Vec<u8> {
    let mut b = vec![0x01, 0x01, 0x7f]; // one i32 local: the headers' action
    get(&mut b, 0);
    get(&mut b, 1);
    b.extend_from_slice(&[0x41, 0x00]);
    b = call(b, headers);
    b.extend_from_slice(&[0x22, 0x03]); // local.tee 3
    b.extend_from_slice(&[0x04, 0x40]); // if (no result)
    b.extend_from_slice(&[0x20, 0x03, 0x41, 0x00, 0x0f]); // local.get 3, i32.const 0, return
    b.push(0x0b); // end if
    b.push(0x41); // i32.const MARK
    b = push_sleb(b, MARK);
    for _ in 1..params {
        b.extend_from_slice(&[0x41, 0x00]);
    }
    b = call(b, marker);
    // A status other than 0: the headers callback answered locally, the body
    // callback is not made.
    b.extend_from_slice(&[0x04, 0x40]); // if (no result)
    b.extend_from_slice(&[0x41, 0x00, 0x41, 0x00, 0x0f]); // i32.const 0 (×2), return
    b.push(0x0b); // end if
    b.extend_from_slice(&[0x41, 0x00]);
    get(&mut b, 0);
    get(&mut b, 2);
    b.extend_from_slice(&[0x41, 0x01]);
    b = call(b, body);
    b.push(0x0b);
    b
}

/// `v` (as an `i32`) in signed LEB128, as `i32.const` takes it.
fn push_sleb(mut out: Vec<u8>, v: u32) -> Vec<u8> {
    let mut v = v as i32;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// An unsigned LEB128 at the start of `b`: its value and width.
fn leb(b: &[u8]) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for (i, byte) in b.iter().take(5).enumerate() {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn push_leb(mut out: Vec<u8>, mut v: u32) -> Vec<u8> {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `v` as a LEB128 exactly `width` bytes wide (continuation bits padding it), or `None`
/// when it does not fit.
fn padded_leb(v: u32, width: usize) -> Option<Vec<u8>> {
    let minimal = push_leb(Vec::new(), v);
    if minimal.len() > width || width > 5 {
        return None;
    }
    let mut out = Vec::with_capacity(width);
    for i in 0..width {
        let byte = ((v >> (7 * i)) & 0x7f) as u8;
        out.push(if i + 1 < width { byte | 0x80 } else { byte });
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
