//! A read-only guard in Zig: GET and HEAD go on upstream with `x-zig-filter: allowed`
//! added; any other method is answered 405 by the filter itself, with `allow: GET, HEAD`.
//!
//! No SDK: the proxy-wasm ABI 0.2.1 functions are declared below as `extern "env"`.
//! Build: ./build.sh (Zig from PyPI: pip install ziglang).

const std = @import("std");

// === Host functions (the proxy-wasm ABI, module "env") ===

const map_request_headers: u32 = 0;
const status_ok: u32 = 0;
const action_continue: u32 = 0;
const action_pause: u32 = 1;

extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, key_len: usize, ret_value: *?[*]u8, ret_len: *usize) u32;
extern "env" fn proxy_add_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;
extern "env" fn proxy_send_local_response(status: u32, details: [*]const u8, details_len: usize, body: [*]const u8, body_len: usize, headers: [*]const u8, headers_len: usize, grpc_status: i32) u32;

// === Exports every filter needs ===

const allocator = std.heap.wasm_allocator;

/// The name tells the host which ABI this module speaks.
export fn proxy_abi_version_0_2_1() void {}

/// The host asks for guest memory here to hand values back (the header below);
/// we return what it gives us with `allocator.free`. 0 tells the host we are out of memory.
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const buf = allocator.alloc(u8, size) catch return null;
    return buf.ptr;
}

export fn proxy_on_context_create(context_id: u32, parent_context_id: u32) void {
    _ = context_id;
    _ = parent_context_id;
}

// === The filter ===

export fn proxy_on_request_headers(context_id: u32, num_headers: usize, end_of_stream: u32) u32 {
    _ = context_id;
    _ = num_headers;
    _ = end_of_stream;

    const name = ":method";
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    if (proxy_get_header_map_value(map_request_headers, name, name.len, &ptr, &len) != status_ok) {
        return action_continue;
    }
    const method: []u8 = if (ptr) |p| p[0..len] else &[_]u8{};
    defer if (ptr != null) allocator.free(method);

    if (std.mem.eql(u8, method, "GET") or std.mem.eql(u8, method, "HEAD")) {
        const key = "x-zig-filter";
        const value = "allowed";
        _ = proxy_add_header_map_value(map_request_headers, key, key.len, value, value.len);
        return action_continue;
    }

    // One extra response header, serialized as the ABI wants: the pair count, each
    // pair's key and value lengths (u32, little-endian), then key NUL value NUL.
    const hkey = "allow";
    const hvalue = "GET, HEAD";
    const headers = comptime serializePair(hkey, hvalue);
    const body = "method not allowed by zig-method-guard\n";
    const details = "zig-method-guard";
    _ = proxy_send_local_response(405, details, details.len, body, body.len, &headers, headers.len, -1);
    // The local response replaces the upstream's: the request stops here.
    return action_pause;
}

fn serializePair(comptime key: []const u8, comptime value: []const u8) [12 + key.len + 1 + value.len + 1]u8 {
    var out: [12 + key.len + 1 + value.len + 1]u8 = undefined;
    std.mem.writeInt(u32, out[0..4], 1, .little);
    std.mem.writeInt(u32, out[4..8], key.len, .little);
    std.mem.writeInt(u32, out[8..12], value.len, .little);
    @memcpy(out[12 .. 12 + key.len], key);
    out[12 + key.len] = 0;
    @memcpy(out[13 + key.len .. 13 + key.len + value.len], value);
    out[13 + key.len + value.len] = 0;
    return out;
}
