//! Guest memory access: every pointer and length from the guest is checked here, and
//! values go back to the guest through its allocator.

use wasmtime::Caller;

use super::state::{HostState, status};

/// A host call's outcome: a proxy-wasm status, or a trap (a failing guest allocator).
pub(crate) type HostResult = wasmtime::Result<i32>;

/// The guest's memory bytes at `ptr..ptr+len`, or `INVALID_MEMORY_ACCESS`.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, i32> {
    let Some(mem) = caller.data().memory else {
        return Err(status::INVALID_MEMORY_ACCESS);
    };
    slice(mem.data(caller), ptr, len).map(<[u8]>::to_vec)
}

/// Like [`read`], as a string (lossy: header names and values may be any bytes).
pub(crate) fn read_str(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Result<String, i32> {
    read(caller, ptr, len).map(|v| match String::from_utf8(v) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// A bounds-checked view of `data[ptr..ptr+len]`.
pub(crate) fn slice(data: &[u8], ptr: u32, len: u32) -> Result<&[u8], i32> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(status::INVALID_MEMORY_ACCESS)?;
    data.get(start..end).ok_or(status::INVALID_MEMORY_ACCESS)
}

/// Writes `bytes` at `ptr`, bounds-checked.
pub(crate) fn write(caller: &mut Caller<'_, HostState>, ptr: u32, bytes: &[u8]) -> Result<(), i32> {
    let Some(mem) = caller.data().memory else {
        return Err(status::INVALID_MEMORY_ACCESS);
    };
    let data = mem.data_mut(caller);
    let start = ptr as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(status::INVALID_MEMORY_ACCESS)?;
    data.get_mut(start..end)
        .ok_or(status::INVALID_MEMORY_ACCESS)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32 at `ptr`.
pub(crate) fn write_u32(caller: &mut Caller<'_, HostState>, ptr: u32, v: u32) -> Result<(), i32> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates, and writes its address and size at
/// `ret_ptr` / `ret_size`. A guest whose allocator traps fails the callback.
pub(crate) async fn hand_back(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: u32,
    ret_size: u32,
) -> HostResult {
    // Check the return slots before running guest code for nothing.
    if let Err(e) = write_u32(caller, ret_ptr, 0).and_then(|_| write_u32(caller, ret_size, 0)) {
        return Ok(e);
    }
    let Ok(len) = u32::try_from(bytes.len()) else {
        return Ok(status::INTERNAL_FAILURE);
    };
    let Some(malloc) = caller.data().malloc.clone() else {
        return Ok(status::INTERNAL_FAILURE);
    };
    let addr = malloc.call_async(&mut *caller, len).await?;
    if addr == 0 && len > 0 {
        return Ok(status::INTERNAL_FAILURE);
    }
    let r = write(caller, addr, bytes)
        .and_then(|_| write_u32(caller, ret_ptr, addr))
        .and_then(|_| write_u32(caller, ret_size, len));
    Ok(match r {
        Ok(()) => status::OK,
        Err(e) => e,
    })
}

/// Serializes pairs in the proxy-wasm map format: count, (key len, value len)*, then
/// each key and value followed by a NUL.
pub(crate) fn encode_pairs<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Vec<u8> {
    let n = pairs.clone().count();
    let mut size = 4 + n * 8;
    for (k, v) in pairs.clone() {
        size += k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
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
