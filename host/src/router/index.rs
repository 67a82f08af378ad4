//! The index that narrows a request to the few routes that may match it: by host
//! (an exact host by hash, a wildcard by the suffix after the request host's first
//! label, or any host), then within a host by path (an exact path by hash, prefixes in
//! a prefix tree, or no path).
//!
//! Every route has a position in the router's global order (smaller is tried first),
//! and every list here holds positions in ascending order. A lookup keeps the best
//! (smallest) position whose route accepts the request; a list is read only until
//! that position, so each list stops at its first acceptable route and skips what
//! cannot win.

use std::collections::HashMap;

use super::matcher::wildcard_matches;
use crate::config::{HostMatch, PathMatch};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A route's place in the router's order: smaller is tried first.
pub(super) type Pos = u32;

/// Past this many routes, a host's routes are indexed by path rather than read in
/// order: reading a short list costs less than the lookups.
const SCAN_MAX: usize = 8;

/// The smallest position that accepts the request so far, `Pos::MAX` for none.
pub(super) struct Best(pub Pos);

impl Best {
    /// Reads `list` (ascending) until a route that accepts, or one that cannot win.
    fn scan(&mut self, list: &[Pos], accept: &mut impl FnMut(Pos) -> bool) {
        for &pos in list {
            if pos >= self.0 {
                return;
            }
            if accept(pos) {
                self.0 = pos;
                return;
            }
        }
    }
}

// === impl HostIndex ===

/// Every route by its host condition.
#[derive(Debug, Default)]
pub(super) struct HostIndex {
    /// Lower-case host → its routes.
    exact: Map<Box<str>, Group>,
    /// Lower-case suffix with its leading dot (`.example.com` for `*.example.com`).
    wildcard: Map<Box<str>, Group>,
    /// Routes without a host condition.
    any: Group,
    /// Wildcards whose suffix does not start with a dot (never from a configuration
    /// file), checked one by one to keep their meaning.
    odd: Box<[(Pos, Box<str>)]>,
}

/// Collects routes in ascending position, then freezes into a [`HostIndex`].
#[derive(Default)]
pub(super) struct HostIndexBuilder<'a> {
    exact: Map<String, Vec<(Pos, Option<&'a PathMatch>)>>,
    wildcard: Map<String, Vec<(Pos, Option<&'a PathMatch>)>>,
    any: Vec<(Pos, Option<&'a PathMatch>)>,
    odd: Vec<(Pos, Box<str>)>,
}

impl<'a> HostIndexBuilder<'a> {
    /// Adds the route at `pos`; positions must come in ascending order.
    pub fn add(&mut self, pos: Pos, host: Option<&HostMatch>, path: Option<&'a PathMatch>) {
        let entry = (pos, path);
        match host {
            None => self.any.push(entry),
            Some(HostMatch::Exact(h)) => self
                .exact
                .entry(h.to_ascii_lowercase())
                .or_default()
                .push(entry),
            Some(HostMatch::Wildcard(s)) if s.starts_with('.') => self
                .wildcard
                .entry(s.to_ascii_lowercase())
                .or_default()
                .push(entry),
            Some(HostMatch::Wildcard(s)) => self.odd.push((pos, s.to_ascii_lowercase().into())),
        }
    }

    /// The index of what was added.
    pub fn finish(self) -> HostIndex {
        let freeze = |m: Map<String, Vec<_>>| -> Map<Box<str>, Group> {
            let mut out = Map::with_capacity_and_hasher(m.len(), Default::default());
            out.extend(
                m.into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), Group::new(v))),
            );
            out
        };
        HostIndex {
            exact: freeze(self.exact),
            wildcard: freeze(self.wildcard),
            any: Group::new(self.any),
            odd: self.odd.into(),
        }
    }
}

impl HostIndex {
    /// Narrows to the routes for `host` and `path` and offers them to `accept`.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        best: &mut Best,
        accept: &mut impl FnMut(Pos) -> bool,
    ) {
        if let Some(host) = host {
            with_lowercase(host, |host| {
                if let Some(group) = self.exact.get(host) {
                    group.find(path, best, accept);
                }
                // A wildcard covers exactly one label: the suffix starts at the first dot.
                if let Some(dot) = host.find('.').filter(|&d| d > 0)
                    && let Some(group) = host.get(dot..).and_then(|s| self.wildcard.get(s))
                {
                    group.find(path, best, accept);
                }
            });
            for (pos, suffix) in &self.odd {
                if *pos >= best.0 {
                    break;
                }
                if wildcard_matches(suffix, host) && accept(*pos) {
                    best.0 = *pos;
                    break;
                }
            }
        }
        self.any.find(path, best, accept);
    }
}

/// Calls `f` with `s` in lower case, copying only when it has upper-case letters
/// (on the stack when it fits in a host name's length).
fn with_lowercase<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(s);
    }
    let mut buf = [0u8; 256];
    if let Some(dst) = buf.get_mut(..s.len()) {
        dst.copy_from_slice(s.as_bytes());
        dst.make_ascii_lowercase();
        // Lower-casing ASCII letters keeps UTF-8 valid; the fallback is never taken.
        if let Ok(lower) = std::str::from_utf8(dst) {
            return f(lower);
        }
    }
    f(&s.to_ascii_lowercase())
}

// === impl Group ===

/// The routes of one host (or of any host), in ascending position.
#[derive(Debug)]
enum Group {
    /// Few enough to read in order; each is checked against the path.
    Few(Box<[Pos]>),
    /// Indexed by path.
    Paths(Box<PathIndex>),
}

impl Default for Group {
    fn default() -> Self {
        Group::Few(Box::default())
    }
}

impl Group {
    fn new(routes: Vec<(Pos, Option<&PathMatch>)>) -> Self {
        if routes.len() <= SCAN_MAX {
            Group::Few(routes.into_iter().map(|(pos, _)| pos).collect())
        } else {
            Group::Paths(Box::new(PathIndex::new(routes)))
        }
    }

    fn find(&self, path: &str, best: &mut Best, accept: &mut impl FnMut(Pos) -> bool) {
        match self {
            Group::Few(list) => best.scan(list, accept),
            Group::Paths(index) => index.find(path, best, accept),
        }
    }
}

// === impl PathIndex ===

/// One host's routes by path condition.
#[derive(Debug)]
struct PathIndex {
    exact: Map<Box<str>, Box<[Pos]>>,
    /// Every distinct prefix, sorted by its bytes: a prefix tree whose parent links
    /// lead from a prefix to the longest other prefix it starts with.
    prefixes: Box<[Prefix]>,
    /// Routes without a path condition.
    any: Box<[Pos]>,
}

#[derive(Debug)]
struct Prefix {
    key: Box<str>,
    routes: Box<[Pos]>,
    /// The longest other prefix this one starts with, `u32::MAX` for none.
    parent: u32,
    /// The smallest position here and in every ancestor: when it cannot beat the best
    /// so far, neither can anything further up the chain.
    first: Pos,
}

impl PathIndex {
    fn new(routes: Vec<(Pos, Option<&PathMatch>)>) -> Self {
        let mut exact: Map<&str, Vec<Pos>> = Map::default();
        let mut prefixes: Map<&str, Vec<Pos>> = Map::default();
        let mut any = Vec::new();
        for (pos, path) in routes {
            match path {
                Some(PathMatch::Exact(p)) => exact.entry(p).or_default().push(pos),
                Some(PathMatch::Prefix(p)) => prefixes.entry(p).or_default().push(pos),
                None => any.push(pos),
            }
        }
        let mut sorted: Vec<(&str, Vec<Pos>)> = prefixes.into_iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut tree: Vec<Prefix> = Vec::with_capacity(sorted.len());
        // The chain of prefixes of the previous key; in sorted order, a key's longest
        // stored prefix is on it.
        let mut chain: Vec<u32> = Vec::new();
        for (i, (key, routes)) in sorted.into_iter().enumerate() {
            while let Some(&top) = chain.last() {
                match tree.get(top as usize) {
                    Some(p) if key.starts_with(&*p.key) => break,
                    _ => {
                        chain.pop();
                    }
                }
            }
            let parent = chain.last().copied().unwrap_or(u32::MAX);
            let own = routes.first().copied().unwrap_or(Pos::MAX);
            let inherited = tree.get(parent as usize).map_or(Pos::MAX, |p| p.first);
            tree.push(Prefix {
                key: key.into(),
                routes: routes.into(),
                parent,
                first: own.min(inherited),
            });
            chain.push(i as u32);
        }
        Self {
            exact: exact
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            prefixes: tree.into(),
            any: any.into(),
        }
    }

    fn find(&self, path: &str, best: &mut Best, accept: &mut impl FnMut(Pos) -> bool) {
        if let Some(list) = self.exact.get(path) {
            best.scan(list, accept);
        }
        let mut node = self.longest_prefix(path);
        while let Some(p) = node.and_then(|i| self.prefixes.get(i as usize)) {
            if p.first >= best.0 {
                break;
            }
            best.scan(&p.routes, accept);
            node = Some(p.parent);
        }
        best.scan(&self.any, accept);
    }

    /// The longest stored prefix that `path` starts with.
    ///
    /// The greatest key not above `path` shares with it everything that the answer
    /// can hold: the answer is that key's longest ancestor (itself included) no
    /// longer than their common start.
    fn longest_prefix(&self, path: &str) -> Option<u32> {
        let after = self
            .prefixes
            .partition_point(|p| p.key.as_bytes() <= path.as_bytes());
        let mut i = after.checked_sub(1)?;
        let nearest = self.prefixes.get(i)?;
        let common = nearest
            .key
            .bytes()
            .zip(path.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        loop {
            let p = self.prefixes.get(i)?;
            if p.key.len() <= common {
                return Some(i as u32);
            }
            i = p.parent as usize;
        }
    }
}
