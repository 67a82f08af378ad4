//! What a shadow filter's header writes replaced, so that they can be taken back
//! after its callback. Copying the whole head before every shadow callback cost more
//! than the filter's own work (a header map clone, a comparison and a move back per
//! callback); a filter writes a header or two, so the journal keeps the value each
//! write replaced, and only a removal or a whole-map replacement (rare) copies a map.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::super::types::MapType;
use crate::wasm::state::StreamIo;

/// Past this many entries a write saves its whole map instead: the look-up for an
/// earlier entry of the same name stays short whatever the guest does.
const MAX_ENTRIES: usize = 16;

/// The writes of the running shadow callback, to undo; off (and empty) for every
/// other callback, whose writes cost one `bool` test more.
#[derive(Default)]
pub(crate) struct Journal {
    on: bool,
    undo: Vec<Undo>,
}

/// What one first write to something replaced.
enum Undo {
    /// A header of a map had this one value, or none (the write added the name last).
    Header(MapType, HeaderName, Option<HeaderValue>),
    /// The whole map, before a removal, a replacement of every pair, or a name with
    /// several values was written.
    Map(MapType, Box<HeaderMap>),
    Method(Method),
    Uri(Uri),
    Status(StatusCode),
}

impl Journal {
    /// Records the writes from now on, until [`settle`].
    pub(crate) fn start(&mut self) {
        self.on = true;
    }

    /// Whether writes are being recorded: the only cost of the journal to a filter
    /// that is not in shadow mode.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// Before `name` of `map` is set, added to or removed (`removes`).
    pub(crate) fn header(
        &mut self,
        ty: MapType,
        map: &HeaderMap,
        name: &HeaderName,
        removes: bool,
    ) {
        if self.has_map(ty) {
            return;
        }
        let mut values = map.get_all(name).iter();
        let (first, more) = (values.next(), values.next().is_some());
        // A removal reorders the map's other names (a swap), which only the whole map
        // can put back; so can a name with several values. Saved after an entry of
        // the same name, it is put back before that entry is.
        if (removes && first.is_some()) || more || self.undo.len() >= MAX_ENTRIES {
            self.undo.push(Undo::Map(ty, Box::new(map.clone())));
            return;
        }
        let noted = self
            .undo
            .iter()
            .any(|u| matches!(u, Undo::Header(t, n, _) if *t == ty && n == name));
        // Removing a name that is not there changes nothing.
        if !removes && !noted {
            self.undo
                .push(Undo::Header(ty, name.clone(), first.cloned()));
        }
    }

    /// Before every pair of `map` is replaced.
    pub(crate) fn map(&mut self, ty: MapType, map: &HeaderMap) {
        if !self.has_map(ty) {
            self.undo.push(Undo::Map(ty, Box::new(map.clone())));
        }
    }

    /// Whether map `ty` is saved whole: later writes to it need no entry.
    fn has_map(&self, ty: MapType) -> bool {
        self.undo
            .iter()
            .any(|u| matches!(u, Undo::Map(t, _) if *t == ty))
    }

    /// Before the request's method is rewritten.
    pub(crate) fn method(&mut self, method: &Method) {
        if !self.undo.iter().any(|u| matches!(u, Undo::Method(_))) {
            self.undo.push(Undo::Method(method.clone()));
        }
    }

    /// Before the request's URI is rewritten.
    pub(crate) fn uri(&mut self, uri: &Uri) {
        if !self.undo.iter().any(|u| matches!(u, Undo::Uri(_))) {
            self.undo.push(Undo::Uri(uri.clone()));
        }
    }

    /// Before the response's status is rewritten.
    pub(crate) fn status(&mut self, status: StatusCode) {
        if !self.undo.iter().any(|u| matches!(u, Undo::Status(_))) {
            self.undo.push(Undo::Status(status));
        }
    }
}

/// Ends the recording: puts back everything the recorded writes replaced, latest
/// first, and says whether the writes changed anything (writes that leave a value as
/// it was, or take back their own, change nothing).
pub(crate) fn settle(io: &mut StreamIo) -> bool {
    io.journal.on = false;
    let mut undo = std::mem::take(&mut io.journal.undo);
    let changed = (0..undo.len()).any(|k| differs(io, &undo, k));
    for u in undo.drain(..).rev() {
        put_back(io, u);
    }
    // Kept for the next shadow callback of the stream: no allocation per callback.
    io.journal.undo = undo;
    changed
}

/// Whether what entry `k` of `undo` covers is now other than before the first write.
fn differs(io: &StreamIo, undo: &[Undo], k: usize) -> bool {
    match &undo[k] {
        Undo::Header(ty, name, old) => {
            // A map saved whole is compared whole.
            if undo.iter().any(|u| matches!(u, Undo::Map(t, _) if t == ty)) {
                return false;
            }
            map_ref(io, *ty).is_some_and(|map| {
                let mut now = map.get_all(name).iter();
                now.next() != old.as_ref() || now.next().is_some()
            })
        }
        Undo::Map(ty, saved) => {
            // Saved after the entries before it had their writes: undone on a copy,
            // they give the map as it was.
            let mut before = (**saved).clone();
            for u in undo[..k].iter().rev() {
                if let Undo::Header(t, name, old) = u
                    && t == ty
                {
                    put_header(&mut before, name.clone(), old.clone());
                }
            }
            map_ref(io, *ty).is_some_and(|map| *map != before)
        }
        Undo::Method(old) => io.request.as_ref().is_some_and(|r| r.method != *old),
        Undo::Uri(old) => io.request.as_ref().is_some_and(|r| r.uri != *old),
        Undo::Status(old) => io.response.as_ref().is_some_and(|r| r.status != *old),
    }
}

/// Puts back what `u` saved.
fn put_back(io: &mut StreamIo, u: Undo) {
    match u {
        Undo::Header(ty, name, old) => {
            if let Some(map) = super::map_mut(io, ty) {
                put_header(map, name, old);
            }
        }
        Undo::Map(ty, old) => {
            if let Some(map) = super::map_mut(io, ty) {
                *map = *old;
            }
        }
        Undo::Method(old) => {
            if let Some(r) = io.request.as_mut() {
                r.method = old;
            }
        }
        Undo::Uri(old) => {
            if let Some(r) = io.request.as_mut() {
                r.uri = old;
            }
        }
        Undo::Status(old) => {
            if let Some(r) = io.response.as_mut() {
                r.status = old;
            }
        }
    }
}

/// Gives `name` its one value `old` again, in place, or takes it away (a write added
/// it last, and the later additions were taken away first).
fn put_header(map: &mut HeaderMap, name: HeaderName, old: Option<HeaderValue>) {
    match old {
        Some(v) => {
            map.insert(name, v);
        }
        None => {
            map.remove(&name);
        }
    }
}

/// Map `ty` of the stream, if it has it.
fn map_ref(io: &StreamIo, ty: MapType) -> Option<&HeaderMap> {
    match ty {
        MapType::RequestHeaders => io.request.as_ref().map(|r| &r.headers),
        MapType::ResponseHeaders => io.response.as_ref().map(|r| &r.headers),
        MapType::RequestTrailers => io.request_trailers.as_ref(),
        MapType::ResponseTrailers => io.response_trailers.as_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::types::MapType::{
        RequestHeaders, RequestTrailers, ResponseHeaders, ResponseTrailers,
    };
    use super::super::{Edit, edit, set_pairs};
    use super::settle;
    use crate::wasm::abi::fuzz::{head, stream};
    use crate::wasm::state::{HostState, Status};

    /// The fuzz target's stream with three more request headers, so that a removal's
    /// swap shows in the order.
    fn more_headers() -> HostState {
        let mut s = stream();
        for name in ["x-a", "x-b", "x-c"] {
            assert_eq!(
                edit(&mut s, RequestHeaders, name.as_bytes(), b"v", Edit::Add),
                Status::Ok
            );
        }
        s
    }

    #[test]
    fn every_kind_of_write_is_put_back_in_place() {
        let mut s = more_headers();
        let before = head(&s.io);
        s.io.journal.start();
        let writes: [(_, &[u8], &[u8], _); 10] = [
            (RequestHeaders, b"x-b", b"changed", Edit::Replace),
            (RequestHeaders, b"x-new", b"1", Edit::Add),
            (RequestHeaders, b"user-agent", b"", Edit::Remove),
            (RequestHeaders, b"x-new", b"2", Edit::Add),
            (RequestHeaders, b"x-a", b"more", Edit::Add),
            (RequestHeaders, b":path", b"/elsewhere?x=1", Edit::Replace),
            (RequestHeaders, b":method", b"POST", Edit::Replace),
            (
                RequestHeaders,
                b":authority",
                b"other.example",
                Edit::Replace,
            ),
            (ResponseHeaders, b":status", b"503", Edit::Replace),
            (RequestTrailers, b"x-t", b"1", Edit::Add),
        ];
        for (ty, key, value, how) in writes {
            assert_eq!(edit(&mut s, ty, key, value, how), Status::Ok, "{key:?}");
        }
        let pairs = vec![("x-only".to_string(), b"1".to_vec())];
        assert_eq!(set_pairs(&mut s, ResponseHeaders, pairs), Status::Ok);
        assert_ne!(head(&s.io), before, "the writes did not land");
        assert!(settle(&mut s.io), "the writes were not seen as changes");
        assert_eq!(head(&s.io), before);
        assert!(
            !s.io.journal.on(),
            "the journal stays on after its callback"
        );
    }

    #[test]
    fn writes_that_leave_things_as_they_were_change_nothing() {
        let mut s = more_headers();
        let before = head(&s.io);
        s.io.journal.start();
        edit(&mut s, RequestHeaders, b"x-a", b"v", Edit::Replace);
        edit(&mut s, RequestHeaders, b"x-absent", b"", Edit::Remove);
        edit(&mut s, ResponseTrailers, b"x-gone", b"1", Edit::Add);
        edit(&mut s, ResponseTrailers, b"x-gone", b"", Edit::Remove);
        edit(&mut s, RequestHeaders, b":path", b"/a?b=c", Edit::Replace);
        assert!(
            !settle(&mut s.io),
            "a write of what was there counted as a change"
        );
        assert_eq!(head(&s.io), before);
    }

    #[test]
    fn many_names_are_put_back_too() {
        let mut s = more_headers();
        let before = head(&s.io);
        s.io.journal.start();
        for i in 0..100 {
            let name = format!("x-many-{i}");
            edit(&mut s, RequestHeaders, name.as_bytes(), b"v", Edit::Add);
            edit(&mut s, RequestHeaders, b"x-c", name.as_bytes(), Edit::Add);
        }
        assert!(settle(&mut s.io));
        assert_eq!(head(&s.io), before);
    }

    #[test]
    fn an_enforced_filters_writes_stay() {
        let mut s = more_headers();
        edit(&mut s, RequestHeaders, b"x-a", b"changed", Edit::Replace);
        assert!(!settle(&mut s.io), "nothing was recorded");
        let r = s.io.request.as_ref().map(|r| r.headers.get("x-a"));
        assert_eq!(r.flatten().map(|v| v.as_bytes()), Some(&b"changed"[..]));
    }
}
