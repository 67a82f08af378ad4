//! Values the host hands back, received without entering the module's allocator.
//!
//! A proxy-wasm host returns a value (a header, a property, a foreign function's
//! answer) by calling the module's `proxy_on_memory_allocate` for room to write it:
//! one more entry into the module per value, and a free once the SDK is done with it.
//! Portcullis takes a buffer the module registers once (the foreign function
//! `portcullis_landing`, docs/filters-abi.md) and, for a call whose return slots hold
//! that buffer's address and capacity, writes the value there instead. The slots of
//! every other call (the `proxy-wasm` crate's, which start them at null and 0) keep
//! the usual path, as does every call on a host without the function.
//!
//! A landed value is only lent to a closure, which reads it before any other host call
//! can land another over it.

use std::borrow::Cow;
use std::cell::Cell;

use proxy_wasm::types::{MapType, Status};

/// The foreign function that registers the buffer.
const LANDING: &str = "portcullis_landing";

/// The buffer's size: larger values come through the allocator as before.
const CAPACITY: usize = 1024;

/// Whether the host took the buffer, and where it is.
#[derive(Clone, Copy)]
enum State {
    Unasked,
    Registered(*mut u8),
    Declined,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Unasked) };
}

/// The registered buffer, registering it on first use; `None` on hosts without it.
fn buffer() -> Option<*mut u8> {
    match STATE.with(Cell::get) {
        State::Registered(at) => Some(at),
        State::Declined => None,
        State::Unasked => {
            // Leaked on purpose: the host may write into it for the module's life.
            let at = Box::leak(Box::new([0u8; CAPACITY])).as_mut_ptr();
            let mut args = [0u8; 8];
            args[..4].copy_from_slice(&host::address(at).to_le_bytes());
            args[4..].copy_from_slice(&(CAPACITY as u32).to_le_bytes());
            let mut slots = Slots::plain();
            let state = match host::foreign(LANDING, &args, &mut slots) {
                0 => State::Registered(at),
                _ => State::Declined,
            };
            STATE.with(|s| s.set(state));
            match state {
                State::Registered(at) => Some(at),
                _ => None,
            }
        }
    }
}

/// A host call's two return slots.
pub(crate) struct Slots {
    data: *mut u8,
    size: usize,
    offered: Option<*mut u8>,
}

impl Slots {
    /// Slots that offer the landing buffer when the host has one.
    fn offering() -> Self {
        match buffer() {
            Some(at) => Self {
                data: at,
                size: CAPACITY,
                offered: Some(at),
            },
            None => Self::plain(),
        }
    }

    /// Slots that offer nothing: the value comes from the allocator.
    fn plain() -> Self {
        Self {
            data: std::ptr::null_mut(),
            size: 0,
            offered: None,
        }
    }

    /// The value the host wrote: borrowed from the landing buffer for as long as these
    /// slots are, or owned (it was allocated with `proxy_on_memory_allocate`); empty
    /// for a null pointer.
    fn take(&self) -> Cow<'_, [u8]> {
        if self.data.is_null() || self.size == 0 {
            return Cow::Borrowed(&[]);
        }
        match self.offered {
            Some(at) if at == self.data && self.size <= CAPACITY => {
                // SAFETY: the host wrote `size` bytes into the landing buffer, which
                // lives for the module's life; the borrow ends with these slots, before
                // the next call that offers the buffer (`returned` lends it to a
                // closure that makes no host call).
                Cow::Borrowed(unsafe { std::slice::from_raw_parts(at, self.size) })
            }
            _ => {
                // SAFETY: any other pointer is one the host got from this module's
                // `proxy_on_memory_allocate` (a boxed slice of `size` bytes), handed
                // over to us, as the `proxy-wasm` crate takes it.
                Cow::Owned(unsafe { Vec::from_raw_parts(self.data, self.size, self.size) })
            }
        }
    }
}

/// A status code as the `proxy-wasm` crate names it.
fn status(code: u32) -> Status {
    match code {
        0 => Status::Ok,
        1 => Status::NotFound,
        2 => Status::BadArgument,
        3 => Status::SerializationFailure,
        4 => Status::ParseFailure,
        7 => Status::Empty,
        8 => Status::CasMismatch,
        _ => Status::InternalFailure,
    }
}

/// What a call that returns a value gives back, as `read` makes it of the bytes:
/// `None` for NOT_FOUND. `read` must not call the host.
fn returned<T>(
    code: u32,
    slots: &Slots,
    read: impl FnOnce(Cow<'_, [u8]>) -> T,
) -> Result<Option<T>, Status> {
    match status(code) {
        Status::Ok => Ok(Some(read(slots.take()))),
        Status::NotFound => Ok(None),
        other => Err(other),
    }
}

/// `proxy_get_header_map_value`.
pub(crate) fn header<T>(
    map: MapType,
    name: &str,
    read: impl FnOnce(Cow<'_, [u8]>) -> T,
) -> Result<Option<T>, Status> {
    let mut slots = Slots::offering();
    let code = host::header(map as u32, name.as_bytes(), &mut slots);
    returned(code, &slots, read)
}

/// `proxy_get_property`, the path's parts joined by NUL as the ABI has them. An empty
/// value (a null pointer) reads as absent, as the `proxy-wasm` crate reads it.
pub(crate) fn property<T>(
    path: &[u8],
    read: impl FnOnce(Cow<'_, [u8]>) -> T,
) -> Result<Option<T>, Status> {
    let mut slots = Slots::offering();
    let code = host::property(path, &mut slots);
    if code == 0 && slots.data.is_null() {
        return Ok(None);
    }
    returned(code, &slots, read)
}

/// `proxy_call_foreign_function`: its answer (maybe empty), or the status, NOT_FOUND
/// (no such function on this host) included.
pub(crate) fn foreign<T>(
    name: &str,
    args: &[u8],
    read: impl FnOnce(Cow<'_, [u8]>) -> T,
) -> Result<T, Status> {
    let mut slots = Slots::offering();
    let code = host::foreign(name, args, &mut slots);
    match status(code) {
        Status::Ok => Ok(read(slots.take())),
        other => Err(other),
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    use super::Slots;

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        fn proxy_call_foreign_function(
            name_data: *const u8,
            name_size: usize,
            args_data: *const u8,
            args_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
    }

    /// A guest address as the host sees it (wasm32: a pointer is a u32).
    pub fn address(p: *mut u8) -> u32 {
        p as usize as u32
    }

    pub fn header(map: u32, name: &[u8], slots: &mut Slots) -> u32 {
        // SAFETY: `name` is a live slice for the call; the slots are two live words
        // the host writes.
        unsafe {
            proxy_get_header_map_value(
                map,
                name.as_ptr(),
                name.len(),
                &mut slots.data,
                &mut slots.size,
            )
        }
    }

    pub fn property(path: &[u8], slots: &mut Slots) -> u32 {
        // SAFETY: as above.
        unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut slots.data, &mut slots.size) }
    }

    pub fn foreign(name: &str, args: &[u8], slots: &mut Slots) -> u32 {
        // SAFETY: as above.
        unsafe {
            proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                args.as_ptr(),
                args.len(),
                &mut slots.data,
                &mut slots.size,
            )
        }
    }
}

/// Native builds (unit tests of filter logic): there is no host to call.
#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::Slots;

    const UNIMPLEMENTED: u32 = 12;

    pub fn address(p: *mut u8) -> u32 {
        u32::try_from(p as usize).unwrap_or(0)
    }

    pub fn header(_map: u32, _name: &[u8], _slots: &mut Slots) -> u32 {
        UNIMPLEMENTED
    }

    pub fn property(_path: &[u8], _slots: &mut Slots) -> u32 {
        UNIMPLEMENTED
    }

    pub fn foreign(_name: &str, _args: &[u8], _slots: &mut Slots) -> u32 {
        UNIMPLEMENTED
    }
}
