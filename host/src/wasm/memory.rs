//! Guest memory access: every pointer and length from the guest is checked here, and
//! values go back to the guest through its allocator.

use wasmtime::Caller;

use super::state::{HostState, Status};

/// A host call's outcome: a proxy-wasm status, or a trap (a failing guest allocator).
pub(crate) type HostResult = wasmtime::Result<i32>;

/// The scratch buffer a host call fills is kept between calls up to this capacity, so
/// that the common path allocates nothing and one large body does not stay resident.
const SCRATCH_KEEP: usize = 16 * 1024;

/// The guest's memory bytes at `ptr..ptr+len`, or `INVALID_MEMORY_ACCESS`.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    view(caller, ptr, len).map(<[u8]>::to_vec)
}

/// A borrowed view of the guest's memory at `ptr..ptr+len`: no copy, for arguments the
/// host only looks at (keys, names, paths).
pub(crate) fn view<'a>(
    caller: &'a Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<&'a [u8], Status> {
    let Some(mem) = caller.data().memory else {
        return Err(Status::InvalidMemoryAccess);
    };
    slice(mem.data(caller), ptr, len)
}

/// Like [`read`], as a string (lossy: header names and values may be any bytes).
pub(crate) fn read_str(
    caller: &Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<String, Status> {
    view(caller, ptr, len).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A bounds-checked view of `data[ptr..ptr+len]`.
pub(crate) fn slice(data: &[u8], ptr: u32, len: u32) -> Result<&[u8], Status> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    data.get(start..end).ok_or(Status::InvalidMemoryAccess)
}

/// A bounds-checked mutable view of `data[ptr..ptr+len]`.
#[inline]
pub(crate) fn slice_mut(data: &mut [u8], ptr: u32, len: usize) -> Result<&mut [u8], Status> {
    let start = ptr as usize;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    data.get_mut(start..end).ok_or(Status::InvalidMemoryAccess)
}

/// Writes `bytes` at `ptr`, bounds-checked.
#[inline]
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), Status> {
    let Some(mem) = caller.data().memory else {
        return Err(Status::InvalidMemoryAccess);
    };
    slice_mut(mem.data_mut(caller), ptr, bytes.len())?.copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32 at `ptr` (a host call's out-parameter: inlined, so that
/// the call writes four bytes rather than calling twice to do it).
#[inline]
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    v: u32,
) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates, and writes its address and size at
/// `ret_ptr` / `ret_size`. A guest whose allocator traps fails the callback. An empty
/// value is handed back as a null pointer and length 0 without entering the guest,
/// as Envoy does (some SDKs' allocators trap on a request for 0 bytes).
pub(crate) fn hand_back(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: u32,
    ret_size: u32,
) -> HostResult {
    // What the guest left in the return slots says whether it offers its landing
    // buffer for this call; reading them also checks them before any guest code runs.
    let offered = match read_pair(caller, ret_ptr, ret_size) {
        Ok(pair) => pair,
        Err(e) => return Ok(e.into()),
    };
    if let Err(e) = write_pair(caller, ret_ptr, ret_size, 0, 0) {
        return Ok(e.into());
    }
    if bytes.is_empty() {
        return Ok(Status::Ok.into());
    }
    let Ok(len) = u32::try_from(bytes.len()) else {
        return Ok(Status::InternalFailure.into());
    };
    let addr = match caller.data().landing {
        // The guest's own buffer, registered and offered: no allocator entry.
        Some((at, capacity)) if offered == (at, capacity) && len <= capacity => at,
        _ => match allocate(caller, len)? {
            0 => return Ok(Status::InternalFailure.into()),
            addr => addr,
        },
    };
    let r =
        write(caller, addr, bytes).and_then(|_| write_pair(caller, ret_ptr, ret_size, addr, len));
    Ok(match r {
        Ok(()) => Status::Ok.into(),
        Err(e) => e.into(),
    })
}

/// The little-endian u32s at `pa` and `pb`.
fn read_pair(caller: &Caller<'_, HostState>, pa: u32, pb: u32) -> Result<(u32, u32), Status> {
    let Some(mem) = caller.data().memory else {
        return Err(Status::InvalidMemoryAccess);
    };
    let data = mem.data(caller);
    let word = |p: u32| {
        slice(data, p, 4)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(Status::InvalidMemoryAccess)
    };
    Ok((word(pa)?, word(pb)?))
}

/// Writes `a` at `pa` and `b` at `pb` (little-endian u32s) with one look at the
/// guest's memory: every value handed back writes two such slots, twice.
fn write_pair(
    caller: &mut Caller<'_, HostState>,
    pa: u32,
    pb: u32,
    a: u32,
    b: u32,
) -> Result<(), Status> {
    let Some(mem) = caller.data().memory else {
        return Err(Status::InvalidMemoryAccess);
    };
    let data = mem.data_mut(caller);
    for (p, v) in [(pa, a), (pb, b)] {
        let start = p as usize;
        data.get_mut(start..start + 4)
            .ok_or(Status::InvalidMemoryAccess)?
            .copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// [`hand_back`] of a value `fill` writes into the VM's scratch buffer from the host
/// state and the guest's memory (for arguments it reads in place): no allocation on
/// the common path. `fill`'s error is the status the guest gets.
pub(crate) fn hand_back_with(
    caller: &mut Caller<'_, HostState>,
    ret_ptr: u32,
    ret_size: u32,
    fill: impl FnOnce(&HostState, &[u8], &mut Vec<u8>) -> Result<(), Status>,
) -> HostResult {
    let mut buf = std::mem::take(&mut caller.data_mut().scratch);
    buf.clear();
    let filled = match caller.data().memory {
        Some(mem) => fill(caller.data(), mem.data(&*caller), &mut buf),
        None => Err(Status::InvalidMemoryAccess),
    };
    let r = match filled {
        Ok(()) => hand_back(caller, &buf, ret_ptr, ret_size),
        Err(code) => Ok(code.into()),
    };
    if buf.capacity() <= SCRATCH_KEEP {
        caller.data_mut().scratch = buf;
    }
    r
}

/// Calls the guest's allocator. A VM that runs its callbacks on a fiber (`async:
/// true`) cannot make a blocking call from inside one: it runs the allocator on a
/// nested fiber, driven here to completion.
fn allocate(caller: &mut Caller<'_, HostState>, len: u32) -> wasmtime::Result<u32> {
    // Moved out for the call rather than cloned: a `TypedFunc` clone copies its
    // registered type (~120 instructions a value). An allocator that calls back into
    // the host for memory meanwhile gets none, as a failed allocation.
    let Some(malloc) = caller.data_mut().malloc.take() else {
        return Ok(0);
    };
    super::vm::count_entry();
    let r = if caller.data().on_fiber {
        super::vm::block_on(malloc.call_async(&mut *caller, len))
    } else {
        malloc.call(&mut *caller, len)
    };
    caller.data_mut().malloc = Some(malloc);
    r
}

/// Serializes pairs in the proxy-wasm map format: count, (key len, value len)*, then
/// each key and value followed by a NUL.
#[cfg(test)]
pub(crate) fn encode_pairs<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_pairs_into(&mut out, || pairs.clone());
    out
}

/// [`encode_pairs`] appended to `out`, which grows once; `pairs` makes the iterator
/// for each of the three passes.
pub(crate) fn encode_pairs_into<'a, I>(out: &mut Vec<u8>, pairs: impl Fn() -> I)
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let (mut n, mut size) = (0usize, 4usize);
    for (k, v) in pairs() {
        n += 1;
        size += 8 + k.len() + v.len() + 2;
    }
    out.reserve(size);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in pairs() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs() {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

/// Parses the proxy-wasm map format; `None` when it is malformed.
pub(crate) fn decode_pairs(data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if data.is_empty() {
        return Some(Vec::new());
    }
    let n = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let mut sizes = Vec::with_capacity(n.min(1024));
    let mut at = 4usize;
    for _ in 0..n {
        let k = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize;
        let v = u32::from_le_bytes(data.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        sizes.push((k, v));
        at += 8;
    }
    let mut out = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = data.get(at..at.checked_add(k)?)?;
        at = at.checked_add(k)?.checked_add(1)?;
        let val = data.get(at..at.checked_add(v)?)?;
        at = at.checked_add(v)?.checked_add(1)?;
        out.push((String::from_utf8_lossy(key).into_owned(), val.to_vec()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_reject_truncation() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/x"), (b"a", b"")];
        let enc = encode_pairs(pairs.iter().copied());
        let dec = decode_pairs(&enc);
        assert_eq!(
            dec,
            Some(vec![
                (":path".to_string(), b"/x".to_vec()),
                ("a".to_string(), vec![])
            ])
        );
        assert_eq!(decode_pairs(&enc[..enc.len() - 3]), None);
        assert_eq!(decode_pairs(&[255, 255, 255, 255]), None);
    }

    #[test]
    fn slice_is_bounds_checked() {
        let data = [0u8; 8];
        assert!(slice(&data, 4, 4).is_ok());
        assert!(slice(&data, 5, 4).is_err());
        assert!(slice(&data, u32::MAX, u32::MAX).is_err());
    }
}
